"""Running one spark-submit job as a supervised child: its output into the stage's log file (warnings and errors
to the terminal), its YARN application noted, and on an interrupt its whole process group stopped and the YARN
application killed."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

from markdown_pricing.core.hadoop_conf import hadoop_properties, http_url
from markdown_pricing.observe import logs

log = logging.getLogger("luigi-interface")

# How long the supervisor waits for a finished job's last output lines.
OUTPUT_GRACE_S = 30.0
# The exit code of a job stopped for running past its limit, as timeout(1) has it.
TIMED_OUT_EXIT_CODE = 124
# How long an interrupted job gets to stop after SIGTERM before its process group is killed.
TERMINATE_GRACE_S = 10.0
# How long `yarn application -kill` may take.
YARN_KILL_TIMEOUT_S = 60.0
# The command that kills a YARN application; default HADOOP_HOME/bin/yarn, else `yarn` on PATH.
YARN_BIN_ENV = "MARKDOWN_YARN_BIN"
# spark-submit's YARN client names the application it started ("Submitted application application_..._...").
YARN_APPLICATION = re.compile(r"\b(application_\d+_\d+)\b")
TRACKING_URL = re.compile(r"tracking URL: (\S+)")


class StageInterrupted(Exception):
    """The worker running a stage was told to stop (SIGTERM: Luigi's task kill or timeout, a supervisor)."""


class LaunchedApplication:
    """The YARN application and tracking URL a spark-submit process reports in its output."""

    def __init__(self) -> None:
        self.application_id: str | None = None
        self.tracking_url: str | None = None

    def watch(self, lines: Iterable[str]) -> Iterator[str]:
        """Passes the lines on, noting the first application id and tracking URL among them."""
        for line in lines:
            if self.application_id is None and (found := YARN_APPLICATION.search(line)):
                self.application_id = found.group(1)
            if self.tracking_url is None and (found := TRACKING_URL.search(line)):
                self.tracking_url = found.group(1)
            yield line


def yarn_kill_command(application_id: str) -> list[str]:
    """The command that kills a YARN application: MARKDOWN_YARN_BIN, else HADOOP_HOME/bin/yarn, else `yarn`."""
    binary = os.environ.get(YARN_BIN_ENV)
    if not binary and (home := os.environ.get("HADOOP_HOME")):
        binary = str(Path(home) / "bin" / "yarn")
    return [binary or shutil.which("yarn") or "yarn", "application", "-kill", application_id]


def resourcemanager_url() -> str | None:
    """The ResourceManager's web address from HADOOP_CONF_DIR (its REST API kills applications), if it names one."""
    address = hadoop_properties().get("yarn.resourcemanager.webapp.address")
    return http_url(address) if address else None


def kill_yarn_application(application_id: str) -> None:
    """Kills a YARN application: through the ResourceManager's REST API when HADOOP_CONF_DIR names it (and no yarn
    binary is configured), else with `yarn application -kill`; logs what an operator must do when neither works."""
    rest = resourcemanager_url()
    if rest and not os.environ.get(YARN_BIN_ENV):
        _kill_through_rest(rest, application_id)
        return
    command = yarn_kill_command(application_id)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=YARN_KILL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("could not run %s (%s): kill YARN application %s by hand", shlex.join(command), err, application_id)
        return
    if result.returncode != 0:
        log.error(
            "%s exited with %d: %s; kill YARN application %s by hand",
            shlex.join(command),
            result.returncode,
            (result.stderr or result.stdout).strip()[-500:],
            application_id,
        )
        return
    log.warning("killed YARN application %s", application_id)


def _kill_through_rest(resourcemanager: str, application_id: str) -> None:
    url = f"{resourcemanager}/ws/v1/cluster/apps/{application_id}/state"
    request = urllib.request.Request(
        url, data=json.dumps({"state": "KILLED"}).encode(), method="PUT", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=YARN_KILL_TIMEOUT_S) as response:
            state = json.load(response).get("state")
    except (OSError, ValueError) as err:
        log.error("could not kill YARN application %s through %s (%s): kill it by hand", application_id, url, err)
        return
    log.warning("killed YARN application %s (ResourceManager: %s)", application_id, state)


def stop_job(process: subprocess.Popen[str], application_id: str | None) -> None:
    """Kills the YARN application the job started, if it named one, then stops the job's whole process group."""
    # First: a client-mode driver stopped by SIGTERM would unregister its application as FINISHED, and in cluster
    # mode the application outlives spark-submit. Killed first, YARN records what happened: KILLED.
    if application_id is not None:
        kill_yarn_application(application_id)
    # spark-submit may leave the driver, a Python worker or the YARN client in its group: all of them go.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turns SIGTERM into StageInterrupted while a job runs, so the job is stopped before the worker goes."""
    # Signal handlers can only be set from the main thread; elsewhere the worker's own handling applies.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise StageInterrupted(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_job(
    command: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    *,
    name: str,
    poll_s: float,
    on_poll: Callable[[LaunchedApplication], None],
    timeout_s: float | None = None,
) -> int:
    """Runs the command in a session of its own and returns its exit code, calling `on_poll` every `poll_s` while
    it runs. Interrupted (Ctrl-C, SIGTERM), it stops the job's process group and the YARN application it started;
    past `timeout_s` it does the same and returns TIMED_OUT_EXIT_CODE."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log_file:
        log_file.write(f"--- {dt.datetime.now(dt.timezone.utc).isoformat()} {shlex.join(command)}\n")
        log_file.flush()
        # A session of its own: stopping the job reaches every process it started, and Ctrl-C reaches it only
        # through this supervisor, which then also kills the YARN application.
        process = subprocess.Popen(
            list(command),
            env={**env, logs.CAPTURED_ENV: "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        assert process.stdout is not None
        launched = LaunchedApplication()
        # Resolved at each write: `markdown-pricing run` points sys.stderr above its progress display.
        pump = threading.Thread(
            target=logs.copy_output,
            args=(launched.watch(process.stdout), log_file, lambda line: sys.stderr.write(line), _verbose()),
            daemon=True,
        )
        pump.start()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            with sigterm_raises():
                while True:
                    wait_s = poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic()))
                    try:
                        return process.wait(timeout=wait_s)
                    except subprocess.TimeoutExpired:
                        on_poll(launched)
                    if deadline is not None and time.monotonic() >= deadline:
                        log.error("%s ran past its limit of %.0f s: stopping it", name, timeout_s)
                        stop_job(process, launched.application_id)
                        return TIMED_OUT_EXIT_CODE
        except BaseException:
            log.error("%s interrupted: stopping it", name)
            stop_job(process, launched.application_id)
            raise
        finally:
            # Bounded: a process the job started may hold its output open after the job ended.
            pump.join(OUTPUT_GRACE_S)


def _verbose() -> bool:
    return os.environ.get(logs.VERBOSE_ENV) == "1"
