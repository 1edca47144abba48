"""The roles documented in conf/erp/: a run needs data privileges only on current tables, and says what it lacks."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import psycopg2
import pytest
from psycopg2 import sql

from markdown_pricing.core.config import ErpSettings, load_config, project_root
from markdown_pricing.core.context import RunContext
from markdown_pricing.core.contract import CANDIDATE_COLUMNS
from markdown_pricing.erp import connection, ledger, rules, schema, writer
from markdown_pricing.erp.schema import ErpNotReadyError
from markdown_pricing.orchestrate import cli
from markdown_pricing.orchestrate.tasks import Etl

ROLE_DDL = project_root() / "conf" / "erp" / "least_privilege_role.sql"
DATA_ROLE_DDL = project_root() / "conf" / "erp" / "data_role.sql"
OWNER, RUNNER = "markdown_pricing_owner", "markdown_pricing_run"
RUN_DATE = dt.date(2026, 11, 23)


def as_user(dsn: str, user: str, dbname: str) -> str:
    socket = parse_qs(urlparse(dsn).query)
    return f"host={socket['host'][0]} port={socket['port'][0]} user={user} dbname={dbname}"


def _database_set_up_by(erp_dsn: str, name: str, ddl: str) -> None:
    """A new database `name` in which a DBA has run `ddl`."""
    with closing(connection.connect(erp_dsn, 5)) as admin:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with closing(psycopg2.connect(as_user(erp_dsn, "postgres", name))) as dba, dba, dba.cursor() as cur:
        cur.execute(ddl)


def _frame(country: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "country": country,
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


def _publish(conn: psycopg2.extensions.connection, settings: ErpSettings, country: str) -> str:
    return writer.publish_country(
        conn,
        settings,
        run_id="r1",
        run_date=RUN_DATE,
        country=country,
        predictions=_frame(country),
        model_version=f"r1/{country}",
        metrics={},
    )


def test_least_privilege_role_publishes_into_its_schema_only(erp_dsn: str, erp_settings: ErpSettings) -> None:
    _database_set_up_by(erp_dsn, "role_check", ROLE_DDL.read_text())
    with closing(psycopg2.connect(as_user(erp_dsn, "postgres", "role_check"))) as dba, dba, dba.cursor() as cur:
        cur.execute("CREATE SCHEMA finance; CREATE TABLE finance.ledger (amount numeric)")

    settings = dataclasses.replace(
        erp_settings, dsn=as_user(erp_dsn, "markdown_pricing", "role_check"), schema="markdown"
    )
    with closing(connection.connect(settings.dsn, 5)) as conn:
        # It owns its schema, so a run creates the missing tables by itself.
        schema.prepare(conn, settings)
        assert _publish(conn, settings, "DEU") == "published"
        for statement in ("CREATE TABLE public.intruder (x int)", "SELECT * FROM finance.ledger"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cur:
                cur.execute(statement)
            conn.rollback()


@pytest.fixture
def data_roles(erp_dsn: str, erp_settings: ErpSettings) -> Iterator[tuple[ErpSettings, ErpSettings]]:
    """Settings of the owner and of the run in a new database set up by conf/erp/data_role.sql, no tables yet."""
    _database_set_up_by(erp_dsn, "data_role_check", DATA_ROLE_DDL.read_text())
    owner, run = (
        dataclasses.replace(erp_settings, dsn=as_user(erp_dsn, user, "data_role_check"), schema="markdown")
        for user in (OWNER, RUNNER)
    )
    yield owner, run


def _owner_executes(owner: ErpSettings, statement: sql.Composable) -> None:
    with closing(connection.connect(owner.dsn, 5)) as conn, conn, conn.cursor() as cur:
        cur.execute(statement)


def _migrated_then_revoked(owner: ErpSettings, *revoked: tuple[str, str]) -> None:
    """The owner migrates the tables, then takes each (privilege, table) back from the run role."""
    with closing(connection.connect(owner.dsn, 5)) as conn:
        schema.migrate(conn, owner)
    _owner_executes(
        owner,
        sql.SQL("; ").join(
            sql.SQL("REVOKE {} ON markdown.{} FROM {}").format(
                sql.SQL(privilege), sql.Identifier(table), sql.Identifier(RUNNER)
            )
            for privilege, table in revoked
        ),
    )


def _ledger_rows(owner: ErpSettings) -> list[tuple[str, str]]:
    with closing(connection.connect(owner.dsn, 5)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT country, status FROM markdown.{} ORDER BY country").format(
                sql.Identifier(owner.ledger_table)
            )
        )
        return cur.fetchall()


def test_data_role_runs_the_week_on_current_tables_without_ddl(data_roles: tuple[ErpSettings, ErpSettings]) -> None:
    owner, run = data_roles
    with closing(connection.connect(owner.dsn, 5)) as conn:
        schema.migrate(conn, owner)

    with closing(connection.connect(run.dsn, 5)) as conn:
        with conn, conn.cursor() as cur:
            # It may create nothing anywhere, so any DDL of prepare's would fail.
            cur.execute(
                "SELECT has_database_privilege(current_database(), 'CREATE'),"
                " has_schema_privilege('markdown', 'CREATE'), has_schema_privilege('public', 'CREATE')"
            )
            assert cur.fetchone() == (False, False, False)
        schema.prepare(conn, run)
        writer.record_metrics(conn, run, run_id="r1", run_date=RUN_DATE, results={"DEU": {"model_wape": 0.2}})
        assert _publish(conn, run, "DEU") == ledger.PUBLISHED
        assert _publish(conn, run, "DEU") == ledger.ALREADY_PUBLISHED
        writer.record_not_published(
            conn, run, run_id="r1", run_date=RUN_DATE, country="FRA", message="failed: x", metrics={}
        )
    assert _ledger_rows(owner) == [("DEU", ledger.PUBLISHED), ("FRA", ledger.FAILED)]


def _candidates(country: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (country, "A1", discount, 50.0 * (1 - discount), 3.0, 9.0, 120.0, 0.8, None, discount == 0.1)
            for discount in (0.0, 0.1, 0.2)
        ],
        columns=list(CANDIDATE_COLUMNS),
    )


def _as_dba(erp_dsn: str, statement: str) -> None:
    with closing(psycopg2.connect(as_user(erp_dsn, "postgres", "data_role_check"))) as dba, dba, dba.cursor() as cur:
        cur.execute(statement)


def test_data_role_publishes_candidates_and_reads_the_buyers_rules_without_ddl(
    erp_dsn: str, data_roles: tuple[ErpSettings, ErpSettings]
) -> None:
    owner, run = data_roles
    with closing(connection.connect(owner.dsn, 5)) as conn:
        schema.migrate(conn, owner)
    # What conf/erp/data_role.sql suggests once the table exists: the run only reads the rules, the role behind the
    # ERP's rule screens writes them (no privilege on the identity's sequence needed).
    _as_dba(
        erp_dsn,
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'erp_rules_editor') THEN"
        " CREATE ROLE erp_rules_editor LOGIN; END IF; END $$;"
        " GRANT CONNECT ON DATABASE data_role_check TO erp_rules_editor;"
        " GRANT USAGE ON SCHEMA markdown TO erp_rules_editor;"
        f" GRANT SELECT, INSERT, UPDATE, DELETE ON markdown.{owner.rules_table} TO erp_rules_editor;"
        f" REVOKE INSERT, UPDATE, DELETE ON markdown.{owner.rules_table} FROM {RUNNER};",
    )
    editor = as_user(erp_dsn, "erp_rules_editor", "data_role_check")
    with closing(psycopg2.connect(editor)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO markdown.{} (country, article_id, rule, value, note) VALUES ('DEU', 'A1', 'max_discount',"
                " 0.1, 'brand agreement')"
            ).format(sql.Identifier(owner.rules_table))
        )

    with closing(connection.connect(run.dsn, 5)) as conn:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT has_schema_privilege('markdown', 'CREATE'), has_table_privilege(%s, 'INSERT')",
                (f"markdown.{run.rules_table}",),
            )
            assert cur.fetchone() == (False, False)
        schema.prepare(conn, run)
        in_force = rules.rules_in_force(conn, run, RUN_DATE)
        outcome = writer.publish_country(
            conn,
            run,
            run_id="r1",
            run_date=RUN_DATE,
            country="DEU",
            predictions=_frame("DEU").assign(rule_applied=["max_discount 0.1 [article]"]),
            candidates=_candidates("DEU"),
            model_version="r1/DEU",
            metrics={},
        )

    assert in_force[["country", "article_id", "rule", "value", "note"]].to_dict("records") == [
        {"country": "DEU", "article_id": "A1", "rule": "max_discount", "value": 0.1, "note": "brand agreement"}
    ]
    assert outcome == ledger.PUBLISHED
    with closing(connection.connect(owner.dsn, 5)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT candidate_discount::float8, chosen, run_id FROM markdown.{} ORDER BY 1").format(
                sql.Identifier(owner.candidates_table)
            )
        )
        assert cur.fetchall() == [(0.0, False, "r1"), (0.1, True, "r1"), (0.2, False, "r1")]


def test_prepare_names_a_missing_delete_on_candidates_and_read_on_the_rules(
    data_roles: tuple[ErpSettings, ErpSettings],
) -> None:
    owner, run = data_roles
    _migrated_then_revoked(owner, ("DELETE", owner.candidates_table), ("SELECT", owner.rules_table))

    with closing(connection.connect(run.dsn, 5)) as conn:
        with pytest.raises(ErpNotReadyError) as refused:
            schema.prepare(conn, run)

    assert str(refused.value) == (
        f"role {RUNNER} lacks privileges the weekly run needs: DELETE on markdown.{run.candidates_table}, "
        f"SELECT on markdown.{run.rules_table}; the tables' owner must grant them (conf/erp/data_role.sql shows how)"
    )


def test_data_role_asks_the_owner_to_migrate_tables_from_before_versioning(
    data_roles: tuple[ErpSettings, ErpSettings],
) -> None:
    owner, run = data_roles
    with closing(connection.connect(owner.dsn, 5)) as conn:
        with connection.transaction(conn) as cur:
            schema.MIGRATIONS[0].apply(cur, owner)

        with closing(connection.connect(run.dsn, 5)) as run_conn:
            with pytest.raises(ErpNotReadyError, match="must run `markdown-pricing erp migrate`") as refused:
                schema.prepare(run_conn, run)
            schema.migrate(conn, owner)
            schema.prepare(run_conn, run)

    assert "migration 1" in str(refused.value) and RUNNER in str(refused.value)


@pytest.mark.parametrize("schema_name", ["markdown", "elsewhere"])
def test_prepare_without_tables_asks_the_owner_to_migrate(
    data_roles: tuple[ErpSettings, ErpSettings], schema_name: str
) -> None:
    run = dataclasses.replace(data_roles[1], schema=schema_name)
    with closing(connection.connect(run.dsn, 5)) as conn:
        with pytest.raises(ErpNotReadyError) as refused:
            schema.prepare(conn, run)

    message = str(refused.value)
    assert f"schema {schema_name} are not current" in message
    assert "migration 1 (predictions, run ledger and model metrics tables)" in message
    assert f"role {RUNNER} may not create" in message
    assert "the tables' owner must run `markdown-pricing erp migrate`" in message


def test_prepare_names_every_privilege_the_run_lacks_before_writing(
    data_roles: tuple[ErpSettings, ErpSettings],
) -> None:
    owner, run = data_roles
    _migrated_then_revoked(owner, ("DELETE", owner.predictions_table), ("UPDATE", owner.ledger_table))

    with closing(connection.connect(run.dsn, 5)) as conn:
        with pytest.raises(ErpNotReadyError) as refused:
            schema.prepare(conn, run)

    assert str(refused.value) == (
        f"role {RUNNER} lacks privileges the weekly run needs: DELETE on markdown.{run.predictions_table}, "
        f"UPDATE on markdown.{run.ledger_table}; the tables' owner must grant them (conf/erp/data_role.sql shows how)"
    )
    assert _ledger_rows(owner) == []


def test_prepare_names_a_missing_usage_on_the_schema(data_roles: tuple[ErpSettings, ErpSettings]) -> None:
    owner, run = data_roles
    with closing(connection.connect(owner.dsn, 5)) as conn:
        schema.migrate(conn, owner)
    _owner_executes(owner, sql.SQL("REVOKE USAGE ON SCHEMA markdown FROM {}").format(sql.Identifier(RUNNER)))

    with closing(connection.connect(run.dsn, 5)) as conn:
        with pytest.raises(ErpNotReadyError, match=f"role {RUNNER} lacks privileges .*: USAGE on schema markdown;"):
            schema.prepare(conn, run)


def test_migrate_as_the_run_role_says_the_owner_must_run_it(
    data_roles: tuple[ErpSettings, ErpSettings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = data_roles[1]
    monkeypatch.setattr(cli, "load_config", lambda env: dataclasses.replace(load_config("local"), erp=run))

    assert cli.main(["erp", "migrate"]) == 1

    assert capsys.readouterr().err == (
        f"markdown-pricing erp migrate: role {RUNNER} may not create or upgrade the ERP tables in schema markdown "
        "(permission denied for schema markdown): run `markdown-pricing erp migrate` as the tables' owner\n"
    )


def test_a_run_whose_role_lacks_a_privilege_stops_before_any_spark_work(
    data_roles: tuple[ErpSettings, ErpSettings], tmp_path: Path
) -> None:
    owner, run = data_roles
    _migrated_then_revoked(owner, ("INSERT", owner.ledger_table))
    ctx = RunContext.create(RUN_DATE, raw=str(tmp_path / "raw"), work=str(tmp_path / "work"))
    etl = Etl.from_context(ctx, wait_for_inputs=0)
    etl.cfg = dataclasses.replace(etl.cfg, erp=run)

    with pytest.raises(ErpNotReadyError, match=f"INSERT on markdown.{run.ledger_table}"):
        etl.run()

    # Refused before the job was submitted: no stage ran, no run folder was claimed.
    assert not (tmp_path / "work").exists()
