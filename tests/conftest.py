"""Shared fixtures: one local SparkSession and one embedded PostgreSQL for the whole test session."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import closing

import pytest
from psycopg2 import sql
from pyspark.sql import SparkSession

from markdown_pricing import embedded_erp, erp
from markdown_pricing.config import ErpSettings, load_config
from markdown_pricing.spark import build_session


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = build_session(load_config("local"), "tests", extra_conf={"spark.sql.shuffle.partitions": "2"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def erp_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pgdata = tmp_path_factory.mktemp("erp") / "pgdata"
    yield embedded_erp.ensure_running(pgdata)
    embedded_erp.stop(pgdata)


@pytest.fixture
def erp_settings(erp_dsn: str) -> Iterator[ErpSettings]:
    """ERP settings with a schema of the test's own, dropped afterwards."""
    settings = ErpSettings(
        dsn=erp_dsn,
        schema=f"t_{uuid.uuid4().hex[:8]}",
        predictions_table="predictions",
        ledger_table="publish_ledger",
        connect_timeout_s=5,
    )
    yield settings
    with closing(erp.connect(erp_dsn, 5)) as conn, conn, conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(settings.schema)))
