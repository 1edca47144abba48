"""Where a run is: each stage writes its progress to a small JSON file that Luigi and the terminal read.

A stage (the spark-submit child) writes `<work>/runs/<run_id>/progress/<stage>.json` as its countries finish:
{"state": "running", "done": 2, "total": 4, "unit": "countries", "message": "..."}. Its Luigi task (the parent)
polls the file to set luigid's status message and progress percentage, and `markdown-pricing run` draws one line
per stage from the same files (observe.display).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import Counter
from typing import Any

from markdown_pricing.core.storage import RunLayout, filesystem, join, write_json
from markdown_pricing.observe import logs

WAITING, RUNNING, DONE, FAILED = "waiting", "running", "done", "failed"
POLL_S = 2.0
SUBMITTED = "submitted to Spark"

Document = dict[str, Any]


def progress_uri(layout: RunLayout, stage: str) -> str:
    """The progress file of one stage of a run."""
    return join(layout.run_dir, "progress", f"{stage}.json")


def now() -> dt.datetime:
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
    stamp = now().isoformat()
    write_json(
        uri,
        {
            "stage": stage,
            "state": RUNNING,
            "done": 0,
            "total": None,
            "unit": "",
            "message": SUBMITTED,
            "started_at": stamp,
            "updated_at": stamp,
        },
    )


def stage_finished(uri: str, stage: str, exit_code: int, log_file: str, problem: str | None = None) -> Document:
    """Records how the stage ended, keeping the counts it reported, and for a failure what went wrong where known
    (a time limit, an input problem); returns the final document."""
    document = read_progress(uri) or {"stage": stage, "done": 0, "total": None, "unit": ""}
    stamp = now().isoformat()
    document.update(state=DONE if exit_code == 0 else FAILED, updated_at=stamp, finished_at=stamp)
    document.setdefault("started_at", stamp)
    document["problem"] = problem if exit_code != 0 else None
    if exit_code != 0:
        document["message"] = f"{f'{problem}; ' if problem else ''}exit code {exit_code}, output in {log_file}"
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
        started = started or now().isoformat()
        self._document: Document = {
            "stage": stage,
            "state": RUNNING,
            "done": 0,
            "total": total,
            "unit": unit,
            "message": "",
            "started_at": started,
        }
        self._outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._write()

    def _write(self) -> None:
        self._document["updated_at"] = now().isoformat()
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
        logs.set_country(country)
        self.update(f"{country} ...")

    def finish(self, country: str, outcome: str) -> None:
        """One country is done, with its outcome (e.g. published, blocked)."""
        logs.set_country(None)
        with self._lock:
            self._outcomes[outcome] += 1
            tally = ", ".join(f"{count} {name}" for name, count in sorted(self._outcomes.items()))
            self._document["done"] += 1
            self._document["message"] = f"{tally} (last: {country} {outcome})"
            self._write()


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
