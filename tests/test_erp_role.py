"""The least-privilege role documented in conf/erp/ can run the pipeline's publish and nothing beyond its schema."""

from __future__ import annotations

import dataclasses
import datetime as dt
from contextlib import closing
from urllib.parse import parse_qs, urlparse

import pandas as pd
import psycopg2
import pytest

from markdown_pricing.core.config import ErpSettings, project_root
from markdown_pricing.erp import connection, writer
from markdown_pricing.erp.schema import migrate

ROLE_DDL = project_root() / "conf" / "erp" / "least_privilege_role.sql"


def as_user(dsn: str, user: str, dbname: str) -> str:
    socket = parse_qs(urlparse(dsn).query)
    return f"host={socket['host'][0]} port={socket['port'][0]} user={user} dbname={dbname}"


def test_least_privilege_role_publishes_into_its_schema_only(erp_dsn: str, erp_settings: ErpSettings) -> None:
    with closing(connection.connect(erp_dsn, 5)) as admin:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS role_check")
            cur.execute("CREATE DATABASE role_check")
    with closing(psycopg2.connect(as_user(erp_dsn, "postgres", "role_check"))) as dba, dba, dba.cursor() as cur:
        cur.execute(ROLE_DDL.read_text())
        cur.execute("CREATE SCHEMA finance; CREATE TABLE finance.ledger (amount numeric)")

    role_dsn = as_user(erp_dsn, "markdown_pricing", "role_check")
    settings = dataclasses.replace(erp_settings, dsn=role_dsn, schema="markdown")
    frame = pd.DataFrame(
        [
            {
                "country": "DEU",
                "article_id": "A1",
                "current_price": 50.0,
                "recommended_discount": 0.1,
                "recommended_price": 45.0,
                "predicted_units_next_week": 3.0,
                "expected_revenue": 120.0,
                "expected_sell_through": 0.8,
            }
        ]
    )
    with closing(connection.connect(settings.dsn, 5)) as conn:
        migrate(conn, settings)
        outcome = writer.publish_country(
            conn,
            settings,
            run_id="r1",
            run_date=dt.date(2026, 11, 23),
            country="DEU",
            predictions=frame,
            model_version="r1/DEU",
            metrics={},
        )
        assert outcome == "published"
        for statement in ("CREATE TABLE public.intruder (x int)", "SELECT * FROM finance.ledger"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cur:
                cur.execute(statement)
            conn.rollback()
