"""Where a run is: each stage writes its progress to a small JSON file that Luigi and the terminal read.

A stage (the spark-submit child) writes `<work>/runs/<run_id>/progress/<stage>.json` as its countries finish:
{"state": "running", "done": 2, "total": 4, "unit": "countries", "message": "..."}. Its Luigi task (the parent)
polls the file to set luigid's status message and progress percentage, and `markdown-pricing run` draws one line
per stage from the same files.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import shutil
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from markdown_pricing import runlog
from markdown_pricing.storage import RunLayout, filesystem, join, write_json

if TYPE_CHECKING:
    from pyspark import SparkContext

WAITING, RUNNING, DONE, FAILED = "waiting", "running", "done", "failed"
POLL_S = 2.0
SUBMITTED = "submitted to Spark"

Document = dict[str, Any]


def progress_uri(layout: RunLayout, stage: str) -> str:
    """The progress file of one stage of a run."""
    return join(layout.run_dir, "progress", f"{stage}.json")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def read_progress(uri: str) -> Document | None:
    """A stage's progress document; None when there is none yet or it cannot be read right now."""
    fs = filesystem(uri)
    try:
        document = json.loads(fs.read_text(uri)) if fs.exists(uri) else None
    except (OSError, ValueError):
        # A reader polls again shortly; a passing read failure must not stop the run it follows.
        return None
    return document if isinstance(document, dict) else None


def stage_started(uri: str, stage: str) -> None:
    """Records that the stage was submitted: elapsed time counts from here."""
    stamp = _now().isoformat()
    write_json(uri, {"stage": stage, "state": RUNNING, "done": 0, "total": None, "unit": "",
                     "message": SUBMITTED, "started_at": stamp, "updated_at": stamp})  # fmt: skip


def stage_finished(uri: str, stage: str, exit_code: int, log_file: str) -> Document:
    """Records how the stage ended, keeping the counts it reported; returns the final document."""
    document = read_progress(uri) or {"stage": stage, "done": 0, "total": None, "unit": ""}
    stamp = _now().isoformat()
    document.update(state=DONE if exit_code == 0 else FAILED, updated_at=stamp, finished_at=stamp)
    document.setdefault("started_at", stamp)
    if exit_code != 0:
        document["message"] = f"exit code {exit_code}, output in {log_file}"
    elif document.get("message") == SUBMITTED:
        # A stage that reports nothing of its own (ETL) ends with nothing more to say.
        document["message"] = ""
    write_json(uri, document)
    return document


class StageProgress:
    """A stage's own reports, written as its units of work (countries) finish."""

    def __init__(self, layout: RunLayout, stage: str, total: int, unit: str = "countries") -> None:
        self.uri = progress_uri(layout, stage)
        # Keeps the start the Luigi task recorded at submit time, so elapsed includes Spark's start-up.
        submitted = read_progress(self.uri) or {}
        fresh = submitted.get("state") == RUNNING and submitted.get("total") is None
        started = submitted.get("started_at") if fresh else None
        started = started or _now().isoformat()
        self._document: Document = {"stage": stage, "state": RUNNING, "done": 0, "total": total, "unit": unit,
                                     "message": "", "started_at": started}  # fmt: skip
        self._outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._write()

    def _write(self) -> None:
        self._document["updated_at"] = _now().isoformat()
        write_json(self.uri, self._document)

    def update(self, message: str, done: int | None = None) -> None:
        """Reports a new message and, when given, how many units are done."""
        with self._lock:
            self._document["message"] = message
            if done is not None:
                self._document["done"] = done
            self._write()

    def begin(self, country: str) -> None:
        """Starts work on one country: the following log lines name it."""
        runlog.set_country(country)
        self.update(f"{country} ...")

    def finish(self, country: str, outcome: str) -> None:
        """One country is done, with its outcome (e.g. published, blocked)."""
        runlog.set_country(None)
        with self._lock:
            self._outcomes[outcome] += 1
            tally = ", ".join(f"{count} {name}" for name, count in sorted(self._outcomes.items()))
            self._document["done"] += 1
            self._document["message"] = f"{tally} (last: {country} {outcome})"
            self._write()

    def watch_spark_tasks(self, sc: SparkContext, doing: str) -> SparkTaskWatcher:
        """Reports Spark's task counts of the current job group while countries are inside Spark tasks."""
        watcher = SparkTaskWatcher(sc, self, doing)
        watcher.start()
        return watcher


class SparkTaskWatcher:
    """Polls Spark's status tracker in a driver thread for the running stages of one job group.

    Countries finish inside Spark tasks, one country to a task (country_udf.by_task), and the running stages
    include the scan before the shuffle, so the driver reports tasks done of tasks in those stages, not countries.
    """

    def __init__(self, sc: SparkContext, progress: StageProgress, doing: str, poll_s: float = POLL_S) -> None:
        self._sc = sc
        self._progress = progress
        self._doing = doing
        self._poll_s = poll_s
        # Job groups are per thread: read the caller's now, the polling thread has none.
        self._group = sc.getLocalProperty("spark.jobGroup.id")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="spark-task-watcher", daemon=True)

    def start(self) -> None:
        """Starts polling."""
        self._progress.update(self._doing)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling; safe to call more than once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def tasks(self) -> tuple[int, int] | None:
        """(tasks done, tasks) over the running stages of the job group; None when none is running."""
        tracker = self._sc.statusTracker()
        job_ids = tracker.getJobIdsForGroup(self._group) if self._group else tracker.getActiveJobsIds()
        active = set(tracker.getActiveStageIds())
        stages = [
            tracker.getStageInfo(stage_id)
            for job in filter(None, map(tracker.getJobInfo, job_ids))
            for stage_id in job.stageIds
            if stage_id in active
        ]
        stages = [stage for stage in stages if stage is not None]
        if not stages:
            return None
        return sum(stage.numCompletedTasks for stage in stages), sum(stage.numTasks for stage in stages)

    def _watch(self) -> None:
        last = ""
        while not self._stop.wait(self._poll_s):
            try:
                tasks = self.tasks()
            except Exception:  # the SparkContext stopped under us (py4j errors): nothing left to watch
                return
            message = self._doing if tasks is None else f"{self._doing}: Spark tasks {tasks[0]}/{tasks[1]} done"
            if message != last:
                self._progress.update(message)
                last = message


def percentage(document: Document) -> int | None:
    """Progress in percent: units done of the total; 100 once done; None while the total is unknown."""
    if document.get("state") == DONE:
        return 100
    total = document.get("total")
    if not total:
        return None
    return min(100, int(100 * int(document.get("done") or 0) / int(total)))


def count_text(document: Document) -> str:
    """E.g. '2/4 countries'; empty while the stage has not said how many."""
    total = document.get("total")
    if total is None:
        return ""
    return f"{document.get('done') or 0}/{total} {document.get('unit') or ''}".rstrip()


def status_message(document: Document) -> str:
    """The one-line message luigid shows for a stage's task."""
    state = document.get("state", RUNNING)
    parts = [state if state != RUNNING else "", count_text(document), str(document.get("message") or "")]
    return " - ".join(part for part in parts if part)


def _parse(stamp: Any) -> dt.datetime | None:
    return dt.datetime.fromisoformat(stamp) if isinstance(stamp, str) and stamp else None


def elapsed_text(seconds: float) -> str:
    """E.g. '0:07', '12:30', '1:02:03'."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def stage_line(stage: str, document: Document | None, since: dt.datetime, now: dt.datetime) -> str:
    """One display line: stage, state, countries done/total, elapsed and the stage's message.

    A document from before `since` (this invocation's start) tells of an earlier attempt: a stage done then is
    shown done, anything else is waiting to run again.
    """
    updated = _parse((document or {}).get("updated_at"))
    if document is None or updated is None or (updated < since and document.get("state") != DONE):
        return f"{stage:<12} {WAITING}"
    started = _parse(document.get("started_at")) or updated
    finished = _parse(document.get("finished_at"))
    elapsed = elapsed_text(((finished or now) - started).total_seconds())
    message = "earlier run" if updated < since else str(document.get("message") or "")
    line = f"{stage:<12} {document.get('state', RUNNING):<8} {count_text(document):<16} {elapsed:>8}  {message}"
    return line.rstrip()


class RunDisplay:
    """One line per stage while a run works: redrawn in place on a terminal, printed when it changes elsewhere.

    While it runs, whatever is written through `stream` (log lines, a stage's warnings) appears above the lines.
    """

    def __init__(
        self, layout: RunLayout, stages: Sequence[str], out: TextIO, *, live: bool | None = None, poll_s: float = 1.0
    ) -> None:
        self._uris = {stage: progress_uri(layout, stage) for stage in stages}
        self._out = out
        self.live = out.isatty() if live is None else live
        self._poll_s = poll_s
        self._since = _now()
        self._lock = threading.Lock()
        self._drawn = 0
        self._last: list[str] = []
        self._printed: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="run-display", daemon=True)
        self.stream: TextIO = _Above(self)

    def lines(self) -> list[str]:
        """The current line of every stage."""
        now = _now()
        return [stage_line(stage, read_progress(uri), self._since, now) for stage, uri in self._uris.items()]

    def __enter__(self) -> RunDisplay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.refresh(final=True)

    def _loop(self) -> None:
        while True:
            self.refresh()
            if self._stop.wait(self._poll_s):
                return

    def refresh(self, final: bool = False) -> None:
        """Redraws the lines (terminal) or prints those whose state, count or message changed (elsewhere)."""
        lines = self.lines()
        with self._lock:
            if self.live:
                self._draw(lines, above="", final=final)
                return
            for stage, line in zip(self._uris, lines, strict=True):
                # Elapsed time alone changes every second: not worth a line in a CI log.
                key = _without_elapsed(line)
                if self._printed.get(stage) != key:
                    self._printed[stage] = key
                    self._out.write(line + "\n")
            self._out.flush()

    def write_above(self, text: str) -> None:
        """Writes complete lines above the display."""
        with self._lock:
            if self.live:
                self._draw(self._last if self._drawn else [], above=text, final=not self._drawn)
            else:
                self._out.write(text)
                self._out.flush()

    def _draw(self, lines: list[str], above: str, final: bool) -> None:
        width = max(20, shutil.get_terminal_size().columns - 1)
        # Up to the first line of the display and clear to the end of the screen, then print anew.
        erase = f"\x1b[{self._drawn}A\r\x1b[J" if self._drawn else ""
        block = "".join(line[:width] + "\n" for line in lines)
        self._out.write(erase + above + block)
        self._out.flush()
        self._last = lines
        self._drawn = 0 if final else len(lines)


def _without_elapsed(line: str) -> str:
    return " ".join(part for part in line.split() if not (":" in part and part.replace(":", "").isdigit()))


class _Above(io.TextIOBase):
    """A text stream that hands complete lines to the display, to be written above it."""

    def __init__(self, display: RunDisplay) -> None:
        self._display = display
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        complete, newline, rest = self._pending.rpartition("\n")
        if newline:
            self._pending = rest
            self._display.write_above(complete + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._display.write_above(self._pending + "\n")
            self._pending = ""


@contextmanager
def following_run(layout: RunLayout, stages: Sequence[str], *, verbose: bool) -> Iterator[RunDisplay]:
    """Shows the run's progress on stderr, with our, Luigi's and the stages' log lines above it.

    Quiet by default: warnings and errors only, the full output of each stage in its log file. `verbose` shows
    INFO lines, everything each stage prints, and raises Spark's own log level to INFO.
    """
    import luigi.configuration

    saved = {name: os.environ.get(name) for name in (runlog.VERBOSE_ENV, runlog.SPARK_LOG_LEVEL_ENV)}
    if verbose:
        os.environ[runlog.VERBOSE_ENV] = "1"
        os.environ.setdefault(runlog.SPARK_LOG_LEVEL_ENV, "INFO")
    original_stderr = sys.stderr
    display = RunDisplay(layout, stages, original_stderr)
    print(f"run {layout.run_id}: logs in {runlog.log_folder(layout)}", file=original_stderr)
    # Luigi's own setup would add a handler in its format at its configured level; ours follows --verbose.
    luigi.configuration.get_config().set("core", "no_configure_logging", "true")
    runlog.configure(layout.run_id, "run", display.stream, logging.INFO if verbose else logging.WARNING)
    try:
        with display:
            # The Luigi tasks echo their stages' lines to whatever sys.stderr is when they write.
            sys.stderr = display.stream
            try:
                yield display
            finally:
                sys.stderr = original_stderr
                display.stream.flush()
    finally:
        runlog.configure(layout.run_id, "run", original_stderr, logging.INFO if verbose else logging.WARNING)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
