"""`markdown-pricing gc`: the pure plan of what goes and why, and gc over a work folder of ten weeks against a real
embedded PostgreSQL whose current rows come from an old week's run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from markdown_pricing.core.config import Config, ConfigError, ErpSettings, RetentionSettings, load_config
from markdown_pricing.core.storage import LocalFileSystem, RunLayout
from markdown_pricing.erp import locks, tables
from markdown_pricing.erp.connection import connect
from markdown_pricing.erp.retention import CurrentRows
from markdown_pricing.erp.schema import migrate
from markdown_pricing.orchestrate import cli
from markdown_pricing.orchestrate.retention import (
    EVENT_LOG,
    MODELS,
    RUN,
    EventLog,
    FoundRun,
    Removal,
    WorkFolder,
    event_log_application,
    human_size,
    plan_removals,
)

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOTHING_CURRENT = CurrentRows(frozenset(), frozenset())
# Ten Mondays, oldest first: with eight kept, the first two weeks go.
WEEKS = [dt.date(2026, 9, 21) + dt.timedelta(weeks=week) for week in range(10)]
OLD_WEEK, GONE_WEEK = WEEKS[0].isoformat(), WEEKS[1].isoformat()
RERUN = f"{GONE_WEEK}-rerun"
SCORE = f"{WEEKS[-1].isoformat()}-score-{GONE_WEEK}"


def runs_of(*dated: tuple[str, str]) -> tuple[FoundRun, ...]:
    return tuple(FoundRun(run_id, dt.date.fromisoformat(day)) for run_id, day in dated)


# The pure plan


def test_plan_removals_keeps_every_run_id_of_the_most_recent_weeks() -> None:
    found = WorkFolder(
        runs=runs_of(("a", "2026-11-09"), ("b", "2026-11-16"), ("b2", "2026-11-16"), ("c", "2026-11-23")),
        model_runs=("a", "b", "b2", "c"),
        event_logs=(),
    )

    plan = plan_removals(found, NOTHING_CURRENT, 2, NOW)

    assert plan.removals == (
        Removal(RUN, "a", "run a of 2026-11-09: older than the 2 most recent weeks"),
        Removal(MODELS, "a", "models of run a of 2026-11-09: no kept run and no current ERP row uses them"),
    )
    assert plan.unknown_runs == ()


def test_plan_removals_keeps_the_runs_and_models_the_erps_current_rows_come_from() -> None:
    # "old" published AUT; "score" rescored DEU with the models of "older", and is itself current.
    found = WorkFolder(
        runs=runs_of(("older", "2026-10-26"), ("old", "2026-11-02"), ("score", "2026-11-09"), ("new", "2026-11-23")),
        model_runs=("older", "old", "new"),
        event_logs=(),
    )
    current = CurrentRows(frozenset({"old", "score"}), frozenset({"old/AUT", "older/DEU"}))

    plan = plan_removals(found, current, 1, NOW)

    assert [(removal.kind, removal.name) for removal in plan.removals] == [(RUN, "older")]
    assert plan.removals[0].reason == "run older of 2026-10-26: older than the most recent week"


def test_plan_removals_keeps_the_models_a_kept_rescore_uses() -> None:
    found = WorkFolder(
        runs=(
            FoundRun("m", dt.date(2026, 11, 2)),
            FoundRun("unused", dt.date(2026, 11, 2)),
            FoundRun("s", dt.date(2026, 11, 23), model_runs=frozenset({"m"})),
        ),
        model_runs=("m", "unused", "orphan"),
        event_logs=(),
    )

    plan = plan_removals(found, NOTHING_CURRENT, 1, NOW)

    assert [(removal.kind, removal.name) for removal in plan.removals] == [
        (RUN, "m"),
        (RUN, "unused"),
        (MODELS, "orphan"),
        (MODELS, "unused"),
    ]
    assert plan.removals[2].reason == "no run folder, no kept run and no current ERP row uses them"


def test_plan_removals_never_removes_a_run_it_cannot_date_nor_what_it_names() -> None:
    found = WorkFolder(
        runs=(
            FoundRun("undated", None, model_runs=frozenset({"m"}), application_ids=frozenset({"local-1"})),
            FoundRun("m", dt.date(2026, 1, 5)),
            FoundRun("new", dt.date(2026, 11, 23)),
        ),
        model_runs=("undated", "m"),
        event_logs=(EventLog("eventlog_v2_local-1", "local-1", NOW - dt.timedelta(weeks=50)),),
    )

    plan = plan_removals(found, NOTHING_CURRENT, 1, NOW)

    assert [(removal.kind, removal.name) for removal in plan.removals] == [(RUN, "m")]
    assert plan.unknown_runs == ("undated",)


def test_plan_removals_takes_the_event_logs_of_removed_runs_and_old_ones_no_run_names() -> None:
    found = WorkFolder(
        runs=(
            FoundRun("old", dt.date(2026, 11, 2), application_ids=frozenset({"application_1_0001"})),
            FoundRun("new", dt.date(2026, 11, 23), application_ids=frozenset({"local-3"})),
        ),
        model_runs=(),
        event_logs=(
            EventLog("application_1_0001_1.zstd", "application_1_0001", NOW),
            EventLog("eventlog_v2_local-3", "local-3", NOW - dt.timedelta(weeks=30)),
            EventLog("local-8", "local-8", NOW - dt.timedelta(weeks=1, seconds=1)),
            EventLog("local-9", "local-9", NOW - dt.timedelta(days=6)),
        ),
    )

    plan = plan_removals(found, NOTHING_CURRENT, 1, NOW)

    assert plan.removals[1:] == (
        Removal(EVENT_LOG, "application_1_0001_1.zstd", "event log of removed run old of 2026-11-02"),
        Removal(EVENT_LOG, "local-8", "no run names it, and it is older than 1 week"),
    )
    # In a shared history folder (a configured spark.eventLog.dir), only the logs of our removed runs go.
    shared = plan_removals(found, NOTHING_CURRENT, 1, NOW, own_event_logs=False)
    assert shared.removals[1:] == plan.removals[1:2]


@pytest.mark.parametrize(
    ("name", "application"),
    [
        ("eventlog_v2_local-1796095522559", "local-1796095522559"),
        ("local-1796095522559.zstd.inprogress", "local-1796095522559"),
        ("app-20261123101500-0003", "app-20261123101500-0003"),
        ("application_1700000000000_0001", "application_1700000000000_0001"),
        ("application_1700000000000_0001_1.lz4", "application_1700000000000_0001"),
        ("eventlog_v2_application_1700000000000_0002_2", "application_1700000000000_0002"),
        ("README", None),
        ("local-12.txt~", None),
    ],
)
def test_event_log_application_reads_sparks_names(name: str, application: str | None) -> None:
    assert event_log_application(name) == application


def test_human_size_uses_binary_units() -> None:
    assert [human_size(size) for size in (0, 1023, 1024, 12_897_485, 3 * 1024**4)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "12.3 MiB",
        "3.0 TiB",
    ]


def test_retention_settings_refuse_keeping_no_week() -> None:
    with pytest.raises(ConfigError, match="retention.keep_weeks must be at least 1"):
        RetentionSettings(keep_weeks=0)
    with pytest.raises(ConfigError, match="retention.ledger_keep_days"):
        RetentionSettings(ledger_keep_days=-1)
    assert load_config("local").retention == RetentionSettings(keep_weeks=8, ledger_keep_days=730)


def test_local_filesystem_size_and_delete_stay_inside_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x" * 100)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a" * 10)
    (folder / "sub" / "b.txt").write_text("b" * 5)
    (folder / "link").symlink_to(outside, target_is_directory=True)
    fs = LocalFileSystem()

    assert fs.size(folder.as_uri()) == 15
    assert fs.size(str(folder / "a.txt")) == 10
    fs.delete(folder.as_uri())
    fs.delete(folder.as_uri())

    assert not folder.exists()
    assert fs.size(str(folder)) == 0
    assert (outside / "keep.txt").read_text() == "x" * 100


# gc over a work folder of ten weeks


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_run(work: Path, run_id: str, day: str, applications: list[str], model_run: str | None = None) -> None:
    """A run folder as the stages leave it, with small files, and its models unless it rescored another run's."""
    run = work / "runs" / run_id
    write(
        run / "run.json",
        json.dumps({"run_id": run_id, "run_date": day, **({"model_run": model_run} if model_run else {})}),
    )
    write(run / "curated" / "weekly" / "part-0.parquet", "w" * 300)
    write(run / "quarantine" / "sales" / "part-0.parquet", "q" * 50)
    write(run / "predictions" / "country=AUT" / "part-0.parquet", "p" * 200)
    for stage, application in zip(("etl", "train_score", "publish"), applications, strict=False):
        write(run / "stages" / f"{stage}.json", json.dumps({"stage": stage, "application_id": application}))
        write(work / "spark-events" / f"eventlog_v2_{application}" / f"events_1_{application}.zstd", "e" * 40)
    models = model_run or run_id
    results = {
        country: {"country": country, "status": "trained", "model_version": f"{models}/{country}"}
        for country in ("AUT", "DEU")
    }
    write(run / "country_results.json", json.dumps(results))
    if model_run is None:
        for country in ("AUT", "DEU"):
            write(work / "models" / run_id / country / "model.txt", "m" * 120)
            write(work / "models" / run_id / country / "card.json", "{}")


def ten_weeks(work: Path) -> None:
    """Ten weekly runs; a second run id and a rescore of the models of week 2; a folder without run.json; models of
    no run; event logs no run names, one old, one fresh; and the embedded ERP's folder, which gc never touches."""
    for number, week in enumerate(WEEKS, 1):
        make_run(work, week.isoformat(), week.isoformat(), [f"local-{number}00{stage}" for stage in (1, 2, 3)])
    make_run(work, RERUN, GONE_WEEK, ["application_1700000000000_0001"])
    # A cluster-mode driver's event log: a single file carrying its attempt.
    (work / "spark-events" / "eventlog_v2_application_1700000000000_0001").rename(
        work / "spark-events" / "application_1700000000000_0001_1.zstd"
    )
    make_run(work, SCORE, WEEKS[-1].isoformat(), ["local-9901"], model_run=GONE_WEEK)
    write(work / "runs" / "half-written" / "curated" / "weekly" / "part-0.parquet", "h" * 10)
    write(work / "models" / "orphan" / "AUT" / "model.txt", "o" * 70)
    write(work / "spark-events" / "eventlog_v2_local-77" / "events_1_local-77.zstd", "e" * 30)
    write(work / "spark-events" / "eventlog_v2_local-78" / "events_1_local-78.zstd", "e" * 30)
    write(work / "spark-events" / "README", "not an event log")
    long_ago = time.time() - 30 * 7 * 86400
    for entry in ("eventlog_v2_local-77", "README"):
        os.utime(work / "spark-events" / entry, (long_ago, long_ago))
    write(work / "erp" / "pgdata" / "PG_VERSION", "16")


@pytest.fixture
def conn(erp_settings: ErpSettings) -> Iterator[Connection]:
    with closing(connect(erp_settings.dsn, 5)) as connection:
        migrate(connection, erp_settings)
        yield connection


@pytest.fixture
def gc_config(erp_settings: ErpSettings, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The CLI's configuration with the test's own ERP schema, reached through MARKDOWN_ERP_DSN."""
    monkeypatch.setenv("MARKDOWN_ERP_DSN", erp_settings.dsn)
    cfg = load_config("local")
    assert cfg.erp.dsn == erp_settings.dsn
    cfg = dataclasses.replace(cfg, erp=erp_settings)
    monkeypatch.setattr(cli, "load_config", lambda env: cfg)
    return cfg


def erp_rows(conn: Connection, settings: ErpSettings) -> None:
    """AUT's current rows come from week 1's run, DEU's from the rescore with week 2's models; ledger and metrics
    rows of 800 days ago for the weeks gc removes and for AUT's current run, and fresh ones."""
    old = dt.datetime.now(UTC) - dt.timedelta(days=800)
    now = dt.datetime.now(UTC)
    with conn, conn.cursor() as cur:
        for country, run_id, model_version in (
            ("AUT", OLD_WEEK, f"{OLD_WEEK}/AUT"),
            ("DEU", SCORE, f"{GONE_WEEK}/DEU"),
        ):
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (country, article_id, valid_from, current_price, recommended_discount, "
                    "recommended_price, run_id, model_version) VALUES (%s, 'A1', %s, 50, 0.1, 45, %s, %s)"
                ).format(tables.predictions(settings)),
                (country, WEEKS[0], run_id, model_version),
            )
        for run_id, country, recorded_at in (
            (OLD_WEEK, "AUT", old),
            (GONE_WEEK, "AUT", old),
            (RERUN, "DEU", old),
            (WEEKS[-1].isoformat(), "AUT", now),
        ):
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (run_id, country, run_date, status, recorded_at) "
                    "VALUES (%s, %s, %s, 'published', %s)"
                ).format(tables.ledger(settings)),
                (run_id, country, WEEKS[0], recorded_at),
            )
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (run_id, run_date, country, forecaster, recorded_at) "
                    "VALUES (%s, %s, %s, 'model', %s)"
                ).format(tables.metrics(settings)),
                (run_id, WEEKS[0], country, recorded_at),
            )


def run_ids(conn: Connection, table: sql.Composed) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT run_id FROM {} ORDER BY run_id").format(table))
        found = [run_id for (run_id,) in cur.fetchall()]
    conn.rollback()
    return found


def tree(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def bytes_under(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def gc_lines(capsys: pytest.CaptureFixture[str], *arguments: str) -> list[str]:
    assert cli.main(["gc", *arguments]) == 0
    return capsys.readouterr().out.splitlines()


def test_gc_dry_run_lists_what_gc_then_removes_and_the_erps_models_stay(
    tmp_path: Path,
    conn: Connection,
    erp_settings: ErpSettings,
    gc_config: Config,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    ten_weeks(work)
    erp_rows(conn, erp_settings)
    uri = work.as_uri()
    expected = [
        (f"{uri}/runs/{GONE_WEEK}", f"run {GONE_WEEK}: older than the 8 most recent weeks"),
        (f"{uri}/runs/{RERUN}", f"run {RERUN} of {GONE_WEEK}: older than the 8 most recent weeks"),
        (
            f"{uri}/models/{RERUN}",
            f"models of run {RERUN} of {GONE_WEEK}: no kept run and no current ERP row uses them",
        ),
        (f"{uri}/models/orphan", "no run folder, no kept run and no current ERP row uses them"),
        (
            f"{uri}/spark-events/application_1700000000000_0001_1.zstd",
            f"event log of removed run {RERUN} of {GONE_WEEK}",
        ),
        *(
            (f"{uri}/spark-events/eventlog_v2_local-200{stage}", f"event log of removed run {GONE_WEEK}")
            for stage in (1, 2, 3)
        ),
        (f"{uri}/spark-events/eventlog_v2_local-77", "no run names it, and it is older than 8 weeks"),
    ]
    freed = sum(bytes_under(Path(target.removeprefix("file://"))) for target, _ in expected)
    before = tree(work)

    dry = gc_lines(capsys, "--dry-run", "--work", str(work))

    assert [line.split("  ")[:2] for line in dry[: len(expected)]] == [
        ["would remove", target] for target, _ in expected
    ]
    assert [line.split("  ")[-1] for line in dry[: len(expected)]] == [reason for _, reason in expected]
    assert dry[len(expected) :] == [
        f"skipped  {uri}/runs/half-written  unknown: no readable run.json gives its run date",
        "would prune  2 ledger rows and 2 metrics rows recorded more than 730 days ago "
        "(the runs of the ERP's current predictions keep theirs)",
        f"would free {human_size(freed)}",
    ]
    assert tree(work) == before
    assert run_ids(conn, tables.ledger(erp_settings)) == sorted([OLD_WEEK, GONE_WEEK, RERUN, WEEKS[-1].isoformat()])

    done = gc_lines(capsys, "--work", str(work))

    assert [line.replace("would remove", "remove", 1) for line in dry[: len(expected)]] == done[: len(expected)]
    assert done[-2].startswith("pruned  2 ledger rows and 2 metrics rows")
    assert done[-1] == f"freed {human_size(freed)}"
    removed = [str(Path(target.removeprefix("file://")).relative_to(work)) for target, _ in expected]
    assert tree(work) == {
        path for path in before if not any(path.startswith(f"{gone}/") or path == gone for gone in removed)
    }
    # The ERP's current models: AUT's from week 1 (its run folder stays too) and DEU's from week 2, by the rescore.
    assert (work / "models" / OLD_WEEK / "AUT" / "model.txt").exists()
    assert (work / "runs" / OLD_WEEK / "run.json").exists()
    assert (work / "models" / GONE_WEEK / "DEU" / "model.txt").exists()
    assert (work / "erp" / "pgdata" / "PG_VERSION").read_text() == "16"
    assert (work / "spark-events" / "README").exists()
    assert run_ids(conn, tables.ledger(erp_settings)) == [OLD_WEEK, WEEKS[-1].isoformat()]
    assert run_ids(conn, tables.metrics(erp_settings)) == [OLD_WEEK, WEEKS[-1].isoformat()]

    again = gc_lines(capsys, "--work", str(work))

    assert again[0] == f"nothing to remove under {uri}"
    assert again[-1] == "freed 0 B"


def test_gc_of_a_work_folder_without_runs_says_nothing_to_remove(
    tmp_path: Path, conn: Connection, gc_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = gc_lines(capsys, "--dry-run", "--work", str(tmp_path))

    assert lines[0] == f"nothing to remove under {tmp_path.as_uri()}"
    assert lines[-1] == "would free 0 B"


def test_gc_stops_before_removing_anything_when_the_erp_cannot_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable in ("MARKDOWN_ERP_DSN", "PGHOST", "PGHOSTADDR", "PGSERVICE"):
        monkeypatch.delenv(variable, raising=False)
    work = tmp_path / "work"
    make_run(work, OLD_WEEK, OLD_WEEK, ["local-1"])
    make_run(work, WEEKS[-1].isoformat(), WEEKS[-1].isoformat(), ["local-2"])
    before = tree(work)

    assert cli.main(["gc", "--keep-weeks", "1", "--work", str(work)]) == 1

    assert tree(work) == before
    error = capsys.readouterr().err
    assert error.startswith("markdown-pricing gc: no ERP is configured and the embedded PostgreSQL"), error


def test_gc_stops_when_the_erp_has_no_predictions_table(
    tmp_path: Path, erp_settings: ErpSettings, gc_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    make_run(work, OLD_WEEK, OLD_WEEK, ["local-1"])

    assert cli.main(["gc", "--work", str(work)]) == 1

    assert (work / "runs" / OLD_WEEK).exists()
    assert f"the ERP has no table {erp_settings.schema}.predictions:" in capsys.readouterr().err


def test_gc_refuses_keeping_no_week(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["gc", "--keep-weeks", "0"]) == 2
    assert "--keep-weeks must be at least 1" in capsys.readouterr().err


def test_gc_leaves_a_run_a_stage_is_running_now_with_its_models_and_event_logs(
    tmp_path: Path,
    conn: Connection,
    erp_settings: ErpSettings,
    gc_config: Config,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    for number, week in enumerate(WEEKS[:3], 1):
        make_run(work, week.isoformat(), week.isoformat(), [f"local-{number}00{stage}" for stage in (1, 2, 3)])
    backfilled, removed = WEEKS[0].isoformat(), WEEKS[1].isoformat()
    # A backfill of the oldest week is running a stage: its task holds the run folder's lock, as SparkStage does.
    run_dir = RunLayout(raw="", work=work.as_uri(), run_id=backfilled).run_dir
    with closing(connect(erp_settings.dsn, 5)) as stage, locks.run_folder_lock(stage, backfilled, run_dir, "etl"):
        lines = gc_lines(capsys, "--keep-weeks", "1", "--work", str(work))

    assert f"skipped  {work.as_uri()}/runs/{backfilled}  busy: a process is running a stage of it" in lines
    assert (work / "runs" / backfilled / "run.json").exists()
    assert (work / "models" / backfilled / "AUT" / "model.txt").exists()
    assert (work / "spark-events" / "eventlog_v2_local-1001").exists()
    # The other old week goes.
    assert not (work / "runs" / removed).exists() and not (work / "models" / removed).exists()
