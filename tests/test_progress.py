"""Following a run: the progress channel from a stage to its Luigi task, the terminal display, structured logs.

The Luigi test runs a real worker against a real `luigid` and a real child process that writes progress files.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode
from pyspark.sql import SparkSession

from markdown_pricing.core.storage import RunLayout, local_path
from markdown_pricing.observe import logs, progress, spark_watch
from markdown_pricing.observe.display import RunDisplay, elapsed_text, stage_line
from markdown_pricing.orchestrate.tasks import MarkerTarget, SparkStage
from servers import luigid_api as api
from servers import running_luigid

RUN_DATE = dt.date(2026, 11, 23)
BIN = Path(sys.executable).parent
T0 = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.timezone.utc)


@pytest.fixture()
def layout(tmp_path: Path) -> RunLayout:
    return RunLayout(raw=str(tmp_path / "raw"), work=str(tmp_path / "work"), run_id="progress")


def document(**fields: Any) -> progress.Document:
    base = {
        "stage": "publish",
        "state": "running",
        "done": 1,
        "total": 4,
        "unit": "countries",
        "message": "DEU ...",
        "started_at": T0.isoformat(),
        "updated_at": (T0 + dt.timedelta(seconds=30)).isoformat(),
    }
    return {**base, **fields}


def test_stage_progress_counts_countries_from_the_submit_time(layout: RunLayout) -> None:
    uri = progress.progress_uri(layout, "publish")
    progress.stage_started(uri, "publish")
    submitted = progress.read_progress(uri)
    assert submitted is not None

    tracker = progress.StageProgress(layout, "publish", total=3)
    tracker.begin("DEU")
    tracker.finish("DEU", "published")
    tracker.begin("FRA")
    tracker.finish("FRA", "blocked")

    reported = progress.read_progress(uri)
    assert reported is not None
    assert (reported["done"], reported["total"], reported["unit"]) == (2, 3, "countries")
    assert reported["message"] == "1 blocked, 1 published (last: FRA blocked)"
    assert reported["started_at"] == submitted["started_at"]


def test_stage_finished_keeps_counts_and_names_the_log_on_failure(layout: RunLayout) -> None:
    uri = progress.progress_uri(layout, "train_score")
    progress.stage_started(uri, "train_score")
    progress.StageProgress(layout, "train_score", total=4).update("training 4 countries")

    failed = progress.stage_finished(uri, "train_score", 1, "/work/logs/train_score.log")

    assert failed["state"] == "failed" and (failed["done"], failed["total"]) == (0, 4)
    assert failed["message"] == "exit code 1, output in /work/logs/train_score.log"
    assert progress.read_progress(uri) == failed


def test_stage_finished_drops_the_submit_message_of_a_silent_stage(layout: RunLayout) -> None:
    uri = progress.progress_uri(layout, "etl")
    progress.stage_started(uri, "etl")
    done = progress.stage_finished(uri, "etl", 0, "etl.log")
    assert (done["state"], done["message"], progress.percentage(done)) == ("done", "", 100)


def test_read_progress_is_none_for_a_missing_or_half_written_file(layout: RunLayout, tmp_path: Path) -> None:
    uri = progress.progress_uri(layout, "etl")
    assert progress.read_progress(uri) is None
    Path(uri).parent.mkdir(parents=True)
    Path(uri).write_text('{"done": 1, "tot')
    assert progress.read_progress(uri) is None


@pytest.mark.parametrize(
    ("fields", "percent", "message"),
    [
        ({}, 25, "1/4 countries - DEU ..."),
        ({"total": None, "unit": "", "message": "submitted to Spark"}, None, "submitted to Spark"),
        ({"state": "done", "done": 4, "message": "4 trained"}, 100, "done - 4/4 countries - 4 trained"),
        ({"state": "failed", "message": "exit code 3"}, 25, "failed - 1/4 countries - exit code 3"),
    ],
)
def test_percentage_and_status_message(fields: dict[str, Any], percent: int | None, message: str) -> None:
    assert progress.percentage(document(**fields)) == percent
    assert progress.status_message(document(**fields)) == message


@pytest.mark.parametrize(("seconds", "text"), [(7.9, "0:07"), (750, "12:30"), (3723, "1:02:03")])
def test_elapsed_text(seconds: float, text: str) -> None:
    assert elapsed_text(seconds) == text


def test_stage_line_shows_state_count_elapsed_and_message() -> None:
    line = stage_line("publish", document(), since=T0, now=T0 + dt.timedelta(seconds=75))
    assert line == "publish      running  1/4 countries        1:15  DEU ..."


def test_stage_line_uses_the_finish_time_once_done() -> None:
    done = document(state="done", done=4, finished_at=(T0 + dt.timedelta(seconds=42)).isoformat())
    line = stage_line("publish", done, since=T0, now=T0 + dt.timedelta(hours=1))
    assert line.split()[:4] == ["publish", "done", "4/4", "countries"] and "0:42" in line


def test_stage_line_tells_earlier_attempts_from_this_one() -> None:
    later = T0 + dt.timedelta(hours=1)
    assert stage_line("publish", None, since=T0, now=T0) == "publish      waiting"
    assert stage_line("publish", document(state="failed"), since=later, now=later) == "publish      waiting"
    assert stage_line("publish", document(state="done"), since=later, now=later).endswith("earlier run")


def write_progress(layout: RunLayout, stage: str, **fields: Any) -> None:
    from markdown_pricing.core.storage import write_json

    stamp = dt.datetime.now(dt.timezone.utc).isoformat()
    fields = {"stage": stage, "started_at": stamp, "updated_at": stamp, **fields}
    write_json(progress.progress_uri(layout, stage), document(**fields))


def test_display_off_a_terminal_prints_plain_lines_only_when_something_changes(layout: RunLayout) -> None:
    out = io.StringIO()
    display = RunDisplay(layout, ["etl", "publish"], out)
    assert not display.live
    display.refresh()
    write_progress(layout, "publish")
    display.refresh()
    display.refresh()
    write_progress(layout, "publish", done=2, message="FRA ...")
    display.write_above("2026-11-23 06:00:00,000 WARNING run=progress stage=publish country=FRA x: careful\n")
    display.refresh()

    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    assert [line.split()[:3] for line in lines] == [
        ["etl", "waiting"],
        ["publish", "waiting"],
        ["publish", "running", "1/4"],
        ["2026-11-23", "06:00:00,000", "WARNING"],
        ["publish", "running", "2/4"],
    ]


def test_display_on_a_terminal_redraws_its_lines_in_place_below_log_lines(layout: RunLayout) -> None:
    out = io.StringIO()
    display = RunDisplay(layout, ["etl", "train_score", "publish"], out, live=True)
    display.refresh()
    first = out.getvalue()
    display.write_above("a warning\n")
    after_warning = out.getvalue()[len(first) :]
    display.refresh(final=True)

    assert first.count("\n") == 3 and "\x1b" not in first
    # Back up the three lines, clear them, print the warning, then the three lines again.
    assert after_warning.startswith("\x1b[3A\r\x1b[Ja warning\netl ")
    assert after_warning.count("\n") == 4
    display.write_above("after the end\n")
    assert out.getvalue().endswith("publish      waiting\nafter the end\n")


def test_display_stream_hands_over_complete_lines_only(layout: RunLayout) -> None:
    out = io.StringIO()
    display = RunDisplay(layout, [], out)
    display.stream.write("half a ")
    assert out.getvalue() == ""
    display.stream.write("line\nand more")
    assert out.getvalue() == "half a line\n"
    display.stream.flush()
    assert out.getvalue() == "half a line\nand more\n"


@pytest.mark.parametrize(
    ("line", "previous", "level"),
    [
        ("2026-11-23 06:00:00,123 INFO run=r stage=etl country=- x: hello\n", logging.ERROR, logging.INFO),
        ("26/11/23 06:00:00 WARN TaskSetManager: Lost task 0.0\n", logging.INFO, logging.WARNING),
        ("26/11/23 06:00:00 ERROR Executor: Exception in task 0.0\n", logging.INFO, logging.ERROR),
        ("\tat org.apache.spark.Executor.run(Executor.scala:1)\n", logging.ERROR, logging.ERROR),
        ("Traceback (most recent call last):\n", logging.INFO, logging.ERROR),
        ("WARNING: Using incubator modules: jdk.incubator.vector\n", logging.INFO, logging.INFO),
        ('{"country": "DEU", "event": "country_result", "status": "trained"}\n', logging.WARNING, logging.INFO),
    ],
)
def test_line_level_of_records_and_continuations(line: str, previous: int, level: int) -> None:
    assert logs.line_level(line, previous) == level


CHILD_OUTPUT = [
    "Using Spark's default log4j profile\n",
    "2026-11-23 06:00:00,001 INFO run=r stage=publish country=DEU p: country DEU: published\n",
    "26/11/23 06:00:01 WARN Utils: Your hostname resolves to a loopback address\n",
    '{"country": "DEU", "event": "country_result", "run_id": "r", "status": "trained"}\n',
    "2026-11-23 06:00:02,001 ERROR run=r stage=publish country=- p: publish failed: boom\n",
    "Traceback (most recent call last):\n",
    "RuntimeError: boom\n",
]


@pytest.mark.parametrize(("show_all", "echoed"), [(False, [CHILD_OUTPUT[2], *CHILD_OUTPUT[4:]]), (True, CHILD_OUTPUT)])
def test_copy_output_files_everything_and_echoes_warnings_and_errors(show_all: bool, echoed: list[str]) -> None:
    log_file, shown = io.StringIO(), []
    logs.copy_output(iter(CHILD_OUTPUT), log_file, shown.append, show_all)
    assert log_file.getvalue() == "".join(CHILD_OUTPUT)
    assert shown == echoed


def test_structured_lines_name_run_stage_and_country(tmp_path: Path) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("2026-11-23", "publish", stream, logging.INFO, tmp_path / "logs" / "publish.log")
        log = logging.getLogger("markdown_pricing.stages.publish")
        log.info("before any country")
        logs.set_country("DEU")
        log.info("country DEU: published")
        logs.set_country(None)
        log.warning("named explicitly", extra={"country": "FRA"})
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)

    lines = stream.getvalue().splitlines()
    assert [line.split(" ", 2)[2].split(" markdown_pricing")[0] for line in lines] == [
        "INFO run=2026-11-23 stage=publish country=-",
        "INFO run=2026-11-23 stage=publish country=DEU",
        "WARNING run=2026-11-23 stage=publish country=FRA",
    ]
    assert (tmp_path / "logs" / "publish.log").read_text().splitlines() == lines


def test_stage_log_of_an_hdfs_run_stays_on_the_local_machine() -> None:
    hdfs = RunLayout(raw="hdfs://nn:8020/raw", work="hdfs://nn:8020/work", run_id="r1")
    path = logs.stage_log_path(hdfs, "etl")
    assert path.parts[-5:] == ("markdown-pricing", "runs", "r1", "logs", "etl.log") and path.is_absolute()


class Recorder(progress.StageProgress):
    """Keeps every message the watcher reports."""

    messages: list[str]

    def update(self, message: str, done: int | None = None) -> None:
        self.messages.append(message)
        super().update(message, done)


def test_spark_task_watcher_reports_tasks_of_the_running_stage(
    spark: SparkSession, layout: RunLayout, tmp_path: Path
) -> None:
    tracker = Recorder(layout, "train_score", total=2)
    tracker.messages = []
    one_done = "training 2 countries: Spark tasks 1/2 done"
    # The second task runs until the watcher has reported the first one done (or a minute passes), however slow
    # the machine: the test waits on what it checks, not on a sleep.
    release = tmp_path / "release"

    def task(index: int) -> None:
        # Defined here, not at module level, so that Spark's workers get it by value.
        deadline = time.monotonic() + 60
        while index == 1 and not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def release_once_seen() -> None:
        deadline = time.monotonic() + 60
        while one_done not in tracker.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        release.touch()

    sc = spark.sparkContext
    sc.setJobGroup("watched", "watcher test")
    releaser = threading.Thread(target=release_once_seen, daemon=True)
    try:
        watcher = spark_watch.SparkTaskWatcher(sc, tracker, "training 2 countries", poll_s=0.1)
        watcher.start()
        releaser.start()
        sc.parallelize([0, 1], 2).foreach(task)
        watcher.stop()
    finally:
        release.touch()
        releaser.join()
        sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
    assert tracker.messages[0] == "training 2 countries"
    assert one_done in tracker.messages


# The fake stage: a real child process that reports four countries over about two seconds, like the publish
# stage, prints log lines of several levels, and leaves a _SUCCESS marker.
FAKE_STAGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from markdown_pricing.observe import display
    from markdown_pricing.observe import logs
    from markdown_pricing.observe import progress
    from markdown_pricing.observe import spark_watch
    from markdown_pricing.core.storage import RunLayout

    work, out = sys.argv[1], Path(sys.argv[2])
    tracker = progress.StageProgress(RunLayout(raw="", work=work, run_id="progress"), "fake", total=4)
    for country in ("DEU", "FRA", "GBR", "ITA"):
        tracker.begin(country)
        time.sleep(0.5)
        print(f"2026-11-23 06:00:00,000 INFO run=progress stage=fake country={country} x: {country} done", flush=True)
        tracker.finish(country, "published")
    print("26/11/23 06:00:01 WARN Fake: something to look at", file=sys.stderr, flush=True)
    out.mkdir(parents=True)
    (out / "_SUCCESS").touch()
    """
)


class FakeStage(SparkStage):
    """A SparkStage whose command is the fake stage above instead of spark-submit."""

    job = "fake"
    poll_s = 0.2

    def command(self) -> list[str]:
        script = local_path(self.ctx.work) / "fake_stage.py"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(FAKE_STAGE)
        return [sys.executable, str(script), str(local_path(self.ctx.work)), str(local_path(self.ctx.work) / "out")]

    def output(self) -> MarkerTarget:
        return MarkerTarget(str(local_path(self.ctx.work) / "out"))


@pytest.fixture()
def luigid(tmp_path: Path) -> Iterator[int]:
    with running_luigid(tmp_path) as port:
        yield port


def test_spark_stage_shows_progress_on_luigid_while_running_and_when_done(
    luigid: int, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, erp_dsn: str
) -> None:
    # The stage task checks the session's ERP before it starts its job: no embedded server under the work folder.
    monkeypatch.setenv("MARKDOWN_ERP_DSN", erp_dsn)
    work = tmp_path / "work"
    task = FakeStage(run_date=RUN_DATE, run_id="progress", raw_uri=str(tmp_path / "raw"), work_uri=str(work))
    running: list[tuple[int | None, str | None]] = []
    finished = threading.Event()

    def watch_luigid() -> None:
        while not finished.wait(0.1):
            tasks = api(luigid, "task_list", status="RUNNING").values()
            running.extend((t["progress_percentage"], t["status_message"]) for t in tasks)

    watcher = threading.Thread(target=watch_luigid)
    watcher.start()
    try:
        result = luigi.build([task], scheduler_host="127.0.0.1", scheduler_port=luigid, detailed_summary=True)
    finally:
        finished.set()
        watcher.join()

    assert result.status == LuigiStatusCode.SUCCESS
    # Seen while the child ran, e.g. (50, "2/4 countries - 2 published (last: FRA published)").
    assert any(pct in (25, 50, 75) and (msg or "").startswith(f"{pct // 25}/4 countries") for pct, msg in running)
    done = api(luigid, "task_list", status="DONE")[task.task_id]
    assert done["progress_percentage"] == 100
    assert done["status_message"] == "done - 4/4 countries - 4 published (last: ITA published)"

    log_text = logs.stage_log_path(task.ctx.layout, "fake").read_text()
    assert "country=ITA x: ITA done" in log_text and "WARN Fake: something to look at" in log_text
    terminal = capfd.readouterr().err
    assert "WARN Fake: something to look at" in terminal
    assert "x: ITA done" not in terminal
