"""What `markdown-pricing run` shows in the terminal: one line per stage, drawn from the stages' progress files."""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import shutil
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from markdown_pricing.core.storage import RunLayout
from markdown_pricing.observe import logs
from markdown_pricing.observe.progress import DONE, RUNNING, WAITING, Document, count_text, progress_uri, read_progress
from markdown_pricing.observe.progress import now as _now


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

    saved = {name: os.environ.get(name) for name in (logs.VERBOSE_ENV, logs.SPARK_LOG_LEVEL_ENV)}
    if verbose:
        os.environ[logs.VERBOSE_ENV] = "1"
        os.environ.setdefault(logs.SPARK_LOG_LEVEL_ENV, "INFO")
    original_stderr = sys.stderr
    display = RunDisplay(layout, stages, original_stderr)
    print(f"run {layout.run_id}: logs in {logs.log_folder(layout)}", file=original_stderr)
    # Luigi's own setup would add a handler in its format at its configured level; ours follows --verbose.
    luigi.configuration.get_config().set("core", "no_configure_logging", "true")
    logs.configure(layout.run_id, "run", display.stream, logging.INFO if verbose else logging.WARNING)
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
        logs.configure(layout.run_id, "run", original_stderr, logging.INFO if verbose else logging.WARNING)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
