"""Structured logs of a run: every line names its run, stage and country, and each stage's output goes to a file.

A stage logs to `<work>/runs/<run_id>/logs/<stage>.log`. Under `markdown-pricing run` (or `luigi`), the Luigi task
captures everything the spark-submit process prints into that file, Spark's own lines included, and shows only
warnings and errors unless verbose; run by hand, the stage writes its own lines there.
"""

from __future__ import annotations

import contextvars
import logging
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO
from urllib.parse import urlparse

from markdown_pricing.core.storage import RunLayout, join, local_path

# Set by the Luigi task for its spark-submit child: the task files the child's output, the child writes no file.
CAPTURED_ENV = "MARKDOWN_LOG_CAPTURED"
# "1": show everything a stage prints, not only its warnings and errors.
VERBOSE_ENV = "MARKDOWN_VERBOSE"
# Spark's own log level in a stage (log4j2.properties reads it too); unset: WARN.
SPARK_LOG_LEVEL_ENV = "MARKDOWN_SPARK_LOG_LEVEL"

LOG_FORMAT = "%(asctime)s %(levelname)s run=%(run_id)s stage=%(stage)s country=%(country)s %(name)s: %(message)s"
NO_COUNTRY = "-"

_country: contextvars.ContextVar[str] = contextvars.ContextVar("country", default=NO_COUNTRY)

# A new record of our logging ("2026-11-23 10:00:00,123 INFO ...") or of Spark's log4j ("26/11/23 10:00:00 WARN ...").
RECORD_START = re.compile(r"^\d{2,4}[-/]\d{2}[-/]\d{2}[ T]\d{2}:\d{2}:\d{2}\S*\s+(?P<level>[A-Z]+)\b")
# Printed without a log record when a process dies of an exception: always an error.
CRASH_START = re.compile(r"^(Traceback \(most recent call last\)|Exception in thread )")
# A stage's JSON record for log collectors (train+score's `country_result` lines): a record of its own at INFO, never
# the continuation of whatever warning came before it.
JSON_RECORD_START = re.compile(r'^\{"[^"]+":')
LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
    "CRITICAL": logging.CRITICAL,
}


class RunFields(logging.Filter):
    """Adds run id, stage and country to every record a handler emits, so each line can be grouped by them."""

    def __init__(self, run_id: str, stage: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.stage = stage

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = self.run_id
        record.stage = self.stage
        # A call may name its country with `extra={"country": ...}`; otherwise the country being worked on.
        record.country = getattr(record, "country", None) or _country.get()
        return True


def set_country(country: str | None) -> None:
    """Names the country the following log lines of this thread are about; None: no country."""
    _country.set(country or NO_COUNTRY)


def configure(run_id: str, stage: str, stream: TextIO, level: int, log_file: Path | None = None) -> None:
    """Sends every log record, as one structured line, to `stream` and to `log_file` when given."""
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.addFilter(RunFields(run_id, stage))
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=handlers, force=True)


def log_folder(layout: RunLayout) -> Path:
    """The run's log folder: under the run folder when that is local, else under the local temp folder."""
    uri = join(layout.run_dir, "logs")
    if urlparse(uri).scheme in ("", "file"):
        return local_path(uri)
    # Appending line by line to HDFS through WebHDFS is not worth it: the logs stay on the submitting machine.
    return Path(tempfile.gettempdir(), "markdown-pricing", "runs", layout.run_id, "logs")


def stage_log_path(layout: RunLayout, stage: str) -> Path:
    """The log file of one stage of a run."""
    return log_folder(layout) / f"{stage}.log"


def line_level(line: str, previous: int) -> int:
    """The level of one line of a stage's output: its own for a new record, the previous one's for a continuation."""
    if CRASH_START.match(line):
        return logging.ERROR
    if JSON_RECORD_START.match(line):
        return logging.INFO
    match = RECORD_START.match(line)
    if match is None:
        return previous
    return LEVELS.get(match.group("level"), previous)


def copy_output(lines: Iterable[str], log_file: TextIO, echo: Callable[[str], None], show_all: bool) -> None:
    """Files every line of a stage's output and echoes warnings and errors (everything when `show_all`)."""
    # Output before the first record is JVM and launcher chatter.
    level = logging.INFO
    for line in lines:
        log_file.write(line)
        log_file.flush()
        level = line_level(line, level)
        if show_all or level >= logging.WARNING:
            echo(line)
