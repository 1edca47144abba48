"""Luigi tasks for one weekly run. They know stages only as spark-submit command lines and targets.

    luigi --module markdown_pricing.tasks WeeklyRun --run-date 2026-11-23 --local-scheduler
    luigi --module markdown_pricing.tasks WeeklyBackfill --start 2026-11-02 --end 2026-11-23 --local-scheduler
"""
from __future__ import annotations

import datetime as dt
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
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager, suppress
from functools import cached_property
from pathlib import Path
from types import FrameType

import luigi

from markdown_pricing import erp, progress, runlog
from markdown_pricing.config import ENVIRONMENTS, load_config, with_paths
from markdown_pricing.embedded_erp import resolve_dsn
from markdown_pricing.schemas import RAW_DATASETS
from markdown_pricing.stages import RunContext
from markdown_pricing.storage import SUCCESS_MARKER, filesystem, join, read_json
from markdown_pricing.submit import spark_submit_command, submit_environment

log = logging.getLogger("luigi-interface")

# The status message and percentage last sent to the scheduler.
Shown = tuple[str, int | None]
# How long the task waits for a finished job's last output lines.
OUTPUT_GRACE_S = 30.0
# How long an interrupted job gets to stop after SIGTERM before its process group is killed.
TERMINATE_GRACE_S = 10.0
# How long `yarn application -kill` may take.
YARN_KILL_TIMEOUT_S = 60.0
# The command that kills a YARN application; default HADOOP_HOME/bin/yarn, else `yarn` on PATH.
YARN_BIN_ENV = "MARKDOWN_YARN_BIN"
# spark-submit's YARN client names the application it started ("Submitted application application_..._...").
YARN_APPLICATION = re.compile(r"\b(application_\d+_\d+)\b")
TRACKING_URL = re.compile(r"tracking URL: (\S+)")


class MarkerTarget(luigi.Target):
    """A dataset folder's _SUCCESS marker, on any filesystem storage.py serves."""

    def __init__(self, folder: str) -> None:
        self.path = join(folder, SUCCESS_MARKER)

    def exists(self) -> bool:
        return filesystem(self.path).exists(self.path)


class LedgerTarget(luigi.Target):
    """Complete when the ERP ledger shows every country of the run published."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def exists(self) -> bool:
        results_uri = self.ctx.layout.country_results
        if not filesystem(results_uri).exists(results_uri):
            return False
        expected = set(read_json(results_uri))
        settings = self.ctx.cfg.erp
        try:
            dsn = resolve_dsn(settings, self.ctx.cfg.paths.work)
            with closing(erp.connect(dsn, settings.connect_timeout_s)) as conn:
                erp.ensure_schema(conn, settings)
                statuses = erp.ledger(conn, settings, self.ctx.run_id)
        except erp.ErpUnavailableError:
            return False
        return bool(expected) and all(statuses.get(country) == "published" for country in expected)


class PipelineParameters:
    """Where a run reads and writes and how it treats its inputs and gates: shared by runs and backfills."""

    # Not `raw`/`work`: the luigi command line would read `--work` as an abbreviation of `--worker-*`.
    raw_uri = luigi.Parameter(default="")
    work_uri = luigi.Parameter(default="")
    env = luigi.ChoiceParameter(choices=ENVIRONMENTS, default="local")
    override_gate = luigi.Parameter(
        default="", description="comma-separated countries whose quality gate is overridden"
    )
    wait_for_inputs = luigi.FloatParameter(
        default=-1.0, significant=False, description="seconds to wait for raw _SUCCESS markers; -1: configured"
    )


class RunParameters(PipelineParameters):
    """Parameters every task of a weekly run shares."""

    run_date = luigi.DateParameter()
    run_id = luigi.Parameter(default="")
    model_run = luigi.Parameter(default="", description="rescore with this earlier run's saved models; empty: train")

    @property
    def priority(self) -> int:
        # Older weeks first, so in a backfill an older week never replaces a newer week's ERP rows. Positive:
        # Luigi raises a task's priority to its dependents', and a WrapperTask's default is 0.
        return dt.date.max.toordinal() - self.run_date.toordinal()

    @cached_property
    def ctx(self) -> RunContext:
        cfg = with_paths(load_config(self.env), raw=self.raw_uri or None, work=self.work_uri or None)
        overrides = tuple(sorted({c.strip() for c in self.override_gate.split(",") if c.strip()}))
        return RunContext(
            cfg=cfg,
            run_date=self.run_date,
            run_id=self.run_id or self.run_date.isoformat(),
            gate_overrides=overrides,
            model_run=self.model_run or None,
        )

    def run_arguments(self) -> list[str]:
        """The command-line form of this run, for the job entry points."""
        paths = self.ctx.cfg.paths
        return [
            "--run-date", self.run_date.isoformat(), "--run-id", self.ctx.run_id,
            "--raw", paths.raw, "--work", paths.work, "--env", self.env,
            *(part for country in self.ctx.gate_overrides for part in ("--override-gate", country)),
            *(("--model-run", self.model_run) if self.model_run else ()),
        ]  # fmt: skip


class RawDataset(luigi.ExternalTask):
    """An upstream export, complete once its _SUCCESS marker is there; waits for it like an HDFS sensor."""

    dataset = luigi.ChoiceParameter(choices=tuple(RAW_DATASETS))
    raw_uri = luigi.Parameter()
    wait_s = luigi.FloatParameter(default=0.0, significant=False)
    poll_s = luigi.FloatParameter(default=60.0, significant=False)

    def output(self) -> MarkerTarget:
        return MarkerTarget(join(self.raw_uri, self.dataset))

    def complete(self) -> bool:
        deadline = time.monotonic() + self.wait_s
        # The first wait is a warning: a quiet terminal would otherwise look stuck for up to an hour.
        level = logging.WARNING
        while not self.output().exists():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.error(
                    "input dataset %r is missing: no %s after waiting %.0f s",
                    self.dataset,
                    self.output().path,
                    self.wait_s,
                )
                return False
            log.log(level, "waiting for %s (%.0f s left)", self.output().path, remaining)
            level = logging.INFO
            time.sleep(min(self.poll_s, remaining))
        return True


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


def kill_yarn_application(application_id: str) -> None:
    """Kills a YARN application, logging what an operator must do by hand when that is not possible."""
    command = yarn_kill_command(application_id)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=YARN_KILL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("could not run %s (%s): kill YARN application %s by hand", shlex.join(command), err, application_id)
        return
    if result.returncode != 0:
        log.error(
            "%s exited with %d: %s; kill YARN application %s by hand",
            shlex.join(command), result.returncode, (result.stderr or result.stdout).strip()[-500:], application_id,
        )  # fmt: skip
        return
    log.warning("killed YARN application %s", application_id)


def stop_job(process: subprocess.Popen[str], application_id: str | None) -> None:
    """Stops a job's whole process group, then the YARN application it started, if it named one."""
    # spark-submit may leave the driver, a Python worker or the YARN client in its group: all of them go.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # In cluster mode the application outlives spark-submit; in client mode its driver may not have stopped it.
    if application_id is not None:
        kill_yarn_application(application_id)


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


class SparkStage(RunParameters, luigi.Task):
    """Runs one job through spark-submit with the environment's settings from conf/.

    While the job runs, the task shows the job's progress file on luigid (status message, progress percentage);
    the job's output goes to its log file, and only its warnings and errors to the terminal unless verbose.
    Interrupted (Ctrl-C, SIGTERM), it stops the job's process group and kills the YARN application it started.
    """

    job: str = ""
    # How often the progress file is read while the job runs.
    poll_s: float = progress.POLL_S
    # Capped in conf/luigi.cfg [resources]: how many Spark applications run at once (the role of an Airflow pool).
    resources = {"spark_applications": 1}

    def command(self) -> list[str]:
        return spark_submit_command(self.ctx.cfg, self.job, self.run_arguments(), self.run_date.isoformat())

    def run(self) -> None:
        command = self.command()
        log.info("submitting %s", " ".join(command))
        channel = progress.progress_uri(self.ctx.layout, self.job)
        log_path = runlog.stage_log_path(self.ctx.layout, self.job)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        progress.stage_started(channel, self.job)
        shown = self._show(progress.read_progress(channel), ("", None))
        # The environment (it may hold PGPASSWORD) is never logged.
        env = {**submit_environment(self.ctx.cfg), runlog.CAPTURED_ENV: "1"}
        with log_path.open("a", encoding="utf-8") as log_file:
            log_file.write(f"--- {dt.datetime.now(dt.timezone.utc).isoformat()} {shlex.join(command)}\n")
            log_file.flush()
            # A session of its own: stopping the job reaches every process it started, and Ctrl-C reaches it
            # only through this task, which then also kills the YARN application.
            process = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                start_new_session=True,
            )  # fmt: skip
            assert process.stdout is not None
            launched = LaunchedApplication()
            # Resolved at each write: `markdown-pricing run` points sys.stderr above its progress display.
            pump = threading.Thread(
                target=runlog.copy_output,
                args=(launched.watch(process.stdout), log_file, lambda line: sys.stderr.write(line), _verbose()),
                daemon=True,
            )
            pump.start()
            try:
                with sigterm_raises():
                    code, shown = self._wait(process, channel, shown, launched)
            except BaseException:
                log.error("%s for run %s interrupted: stopping it", self.job, self.ctx.run_id)
                stop_job(process, launched.application_id)
                raise
            finally:
                # Bounded: a process the job started may hold its output open after the job ended.
                pump.join(OUTPUT_GRACE_S)
        self._show(progress.stage_finished(channel, self.job, code, str(log_path)), shown)
        if code != 0:
            raise RuntimeError(
                f"{self.job} for run {self.ctx.run_id} failed with exit code {code}; its output is in {log_path}"
            )

    def _wait(
        self, process: subprocess.Popen[str], channel: str, shown: Shown, launched: LaunchedApplication
    ) -> tuple[int, Shown]:
        """Waits for the job's exit code, showing its progress file and YARN tracking URL on luigid meanwhile."""
        tracking_url = None
        while True:
            try:
                return process.wait(timeout=self.poll_s), shown
            except subprocess.TimeoutExpired:
                shown = self._show(progress.read_progress(channel), shown)
                if launched.tracking_url != tracking_url and self.set_tracking_url is not None:
                    tracking_url = launched.tracking_url
                    self.set_tracking_url(tracking_url)

    def _show(self, document: progress.Document | None, shown: Shown) -> Shown:
        """Sends the document's status message and percentage to the scheduler where they changed."""
        if document is None:
            return shown
        message, percent = progress.status_message(document), progress.percentage(document)
        # Each call is a request to luigid. Both setters are None when the task runs outside a Luigi worker.
        if message != shown[0] and self.set_status_message is not None:
            self.set_status_message(message)
        if percent is not None and percent != shown[1] and self.set_progress_percentage is not None:
            self.set_progress_percentage(percent)
        return message, percent if percent is not None else shown[1]


def _verbose() -> bool:
    return os.environ.get(runlog.VERBOSE_ENV) == "1"


class Etl(SparkStage):
    job = "etl"

    def requires(self) -> list[RawDataset]:
        rules = self.ctx.cfg.run
        wait_s = rules.wait_for_inputs_s if self.wait_for_inputs < 0 else self.wait_for_inputs
        return [
            RawDataset(dataset=name, raw_uri=self.ctx.cfg.paths.raw, wait_s=wait_s, poll_s=rules.input_poll_s)
            for name in RAW_DATASETS
        ]

    def output(self) -> MarkerTarget:
        return MarkerTarget(self.ctx.layout.weekly)


class TrainScore(SparkStage):
    job = "train_score"

    def requires(self) -> Etl:
        return self.clone(Etl)

    def output(self) -> MarkerTarget:
        return MarkerTarget(self.ctx.layout.predictions)


class Publish(SparkStage):
    job = "publish"
    # One publisher at a time talks to the ERP, whatever the scheduler runs besides.
    resources = {"spark_applications": 1, "erp_connections": 1}

    def requires(self) -> TrainScore:
        return self.clone(TrainScore)

    def output(self) -> LedgerTarget:
        return LedgerTarget(self.ctx)


class WeeklyRun(RunParameters, luigi.WrapperTask):
    """One weekly markdown run: ETL, train and score per country, publish to the ERP."""

    def requires(self) -> Publish:
        return self.clone(Publish)


def mondays(start: dt.date, end: dt.date) -> list[dt.date]:
    """The Mondays from start to end, both included, oldest first."""
    for day, name in ((start, "start"), (end, "end")):
        if day.weekday() != 0:
            raise ValueError(f"backfill {name} {day} is a {day:%A}, not a Monday")
    if end < start:
        raise ValueError(f"backfill end {end} is before its start {start}")
    return [start + dt.timedelta(weeks=week) for week in range((end - start).days // 7 + 1)]


class WeeklyBackfill(PipelineParameters, luigi.WrapperTask):
    """The weekly runs of a range of Mondays, each with its run date as run id; older weeks publish first."""

    start = luigi.DateParameter(description="first Monday")
    end = luigi.DateParameter(description="last Monday, included")

    def requires(self) -> list[WeeklyRun]:
        return [
            WeeklyRun(
                run_date=day,
                raw_uri=self.raw_uri,
                work_uri=self.work_uri,
                env=self.env,
                override_gate=self.override_gate,
                wait_for_inputs=self.wait_for_inputs,
            )
            for day in mondays(self.start, self.end)
        ]
