"""Versioned ERP migrations: `migrate` applies each step once, in order, records it, and upgrades older tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import closing
from typing import Any

import pytest
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from markdown_pricing.core.config import ErpSettings, load_config
from markdown_pricing.erp import schema
from markdown_pricing.erp.connection import connect, transaction
from markdown_pricing.erp.ledger import LEDGER_STATUSES
from markdown_pricing.orchestrate import cli


def _versions(conn: Connection, settings: ErpSettings) -> list[tuple[Any, ...]]:
    with transaction(conn) as cur:
        cur.execute(
            sql.SQL("SELECT version, description, applied_at FROM {}.schema_migrations ORDER BY version").format(
                sql.Identifier(settings.schema)
            )
        )
        return cur.fetchall()


def _definitions(conn: Connection, settings: ErpSettings) -> list[tuple[Any, ...]]:
    """Every table's columns (in order, with types, nullability and defaults) and constraints in the schema."""
    with transaction(conn) as cur:
        cur.execute(
            """
            SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid)
            FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
            JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            LEFT JOIN pg_attrdef AS d ON d.adrelid = c.oid AND d.adnum = a.attnum
            WHERE n.nspname = %s AND c.relkind = 'r'
            UNION ALL
            SELECT c.relname, NULL, con.conname, pg_get_constraintdef(con.oid), NULL, NULL
            FROM pg_constraint AS con JOIN pg_class AS c ON c.oid = con.conrelid
            JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE n.nspname = %s
            ORDER BY 1, 2, 3
            """,
            (settings.schema, settings.schema),
        )
        return cur.fetchall()


def test_migrate_twice_records_each_step_once(erp_settings: ErpSettings) -> None:
    with closing(connect(erp_settings.dsn, 5)) as conn:
        first = schema.migrate(conn, erp_settings)
        versions, definitions = _versions(conn, erp_settings), _definitions(conn, erp_settings)

        again = schema.migrate(conn, erp_settings)

        assert first == [f"migration {step.version}: {step.description}" for step in schema.MIGRATIONS]
        assert again == []
        assert [row[0] for row in versions] == [step.version for step in schema.MIGRATIONS]
        assert _versions(conn, erp_settings) == versions
        assert _definitions(conn, erp_settings) == definitions
        assert schema.is_current(conn, erp_settings)


def test_migrate_creates_the_contract_columns_of_predictions(erp_settings: ErpSettings) -> None:
    with closing(connect(erp_settings.dsn, 5)) as conn:
        schema.migrate(conn, erp_settings)
        columns = {
            name: (kind, not_null)
            for table, _, name, kind, not_null, _ in _definitions(conn, erp_settings)
            if table == erp_settings.predictions_table and not_null is not None
        }

    assert columns == {
        "country": ("text", True),
        "article_id": ("text", True),
        "valid_from": ("date", True),
        "current_price": ("numeric(12,2)", True),
        "recommended_discount": ("numeric(4,3)", True),
        "recommended_price": ("numeric(12,2)", True),
        "predicted_units_next_week": ("double precision", False),
        "expected_revenue": ("double precision", False),
        "expected_sell_through": ("double precision", False),
        "run_id": ("text", True),
        "model_version": ("text", True),
        "hold_expected_revenue": ("double precision", False),
        "gain_over_hold": ("double precision", False),
        "hold_sell_through": ("double precision", False),
        "stock_on_hand": ("integer", False),
        "weeks_to_season_end": ("integer", False),
        "rule_applied": ("text", False),
    }


def _columns(conn: Connection, settings: ErpSettings, table: str) -> list[tuple[str, str, bool]]:
    return [
        (name, kind, not_null)
        for relation, _, name, kind, not_null, _ in _definitions(conn, settings)
        if relation == table and not_null is not None
    ]


def _constraints(conn: Connection, settings: ErpSettings, table: str) -> list[str]:
    """A table's constraints other than NOT NULL (PostgreSQL 18 lists those as constraints too)."""
    return [
        kind
        for relation, position, _, kind, _, _ in _definitions(conn, settings)
        if relation == table and position is None and not kind.startswith("NOT NULL")
    ]


def test_migrate_creates_the_contract_columns_of_candidates_and_article_rules(erp_settings: ErpSettings) -> None:
    with closing(connect(erp_settings.dsn, 5)) as conn:
        schema.migrate(conn, erp_settings)
        candidates = _columns(conn, erp_settings, erp_settings.candidates_table)
        candidate_keys = _constraints(conn, erp_settings, erp_settings.candidates_table)
        rules = _columns(conn, erp_settings, erp_settings.rules_table)
        rule_keys = _constraints(conn, erp_settings, erp_settings.rules_table)

    assert candidates == [
        ("country", "text", True),
        ("article_id", "text", True),
        ("candidate_discount", "numeric(4,3)", True),
        ("candidate_price", "numeric(12,2)", False),
        ("predicted_units_next_week", "double precision", False),
        ("predicted_units_season", "double precision", False),
        ("expected_revenue", "double precision", False),
        ("expected_sell_through", "double precision", False),
        ("ruled_out_by", "text", False),
        ("chosen", "boolean", True),
        ("run_id", "text", True),
    ]
    assert candidate_keys == ["PRIMARY KEY (country, article_id, candidate_discount)"]
    assert rules == [
        ("id", "bigint", True),
        ("country", "text", True),
        ("article_id", "text", False),
        ("category", "text", False),
        ("rule", "text", True),
        ("value", "numeric", False),
        ("valid_from", "date", False),
        ("valid_to", "date", False),
        ("note", "text", False),
    ]
    assert rule_keys == ["PRIMARY KEY (id)"]


def _migrated_to(conn: Connection, settings: ErpSettings, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema as `migrate` of a release whose last step was `version` left it."""
    with monkeypatch.context() as patched:
        patched.setattr(schema, "MIGRATIONS", tuple(step for step in schema.MIGRATIONS if step.version <= version))
        schema.migrate(conn, settings)


def test_later_migrations_upgrade_a_schema_of_version_2_and_keep_its_rows(
    erp_settings: ErpSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = dataclasses.replace(erp_settings, schema=f"{erp_settings.schema}_fresh")
    with closing(connect(erp_settings.dsn, 5)) as conn:
        _migrated_to(conn, erp_settings, 2, monkeypatch)
        with transaction(conn) as cur:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {}.{} (country, article_id, valid_from, current_price, recommended_discount,"
                    " recommended_price, run_id, model_version)"
                    " VALUES ('DE', 'a1', '2026-11-23', 10, 0.2, 8, 'r1', 'm')"
                ).format(sql.Identifier(erp_settings.schema), sql.Identifier(erp_settings.predictions_table))
            )
        assert not schema.is_current(conn, erp_settings)
        assert [row[0] for row in _versions(conn, erp_settings)] == [1, 2]

        done = schema.migrate(conn, erp_settings)

        assert done == [f"migration {step.version}: {step.description}" for step in schema.MIGRATIONS[2:]]
        assert schema.is_current(conn, erp_settings)
        assert [row[0] for row in _versions(conn, erp_settings)] == [step.version for step in schema.MIGRATIONS]
        with transaction(conn) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT article_id, run_id, hold_expected_revenue, stock_on_hand, rule_applied FROM {}.{}"
                ).format(sql.Identifier(erp_settings.schema), sql.Identifier(erp_settings.predictions_table))
            )
            assert cur.fetchall() == [("a1", "r1", None, None, None)]
        try:
            schema.migrate(conn, fresh)
            assert _definitions(conn, erp_settings) == _definitions(conn, fresh)
        finally:
            with transaction(conn) as cur:
                cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(fresh.schema)))


def test_migration_4_adds_the_markdown_event_backtest_to_the_ledger_and_keeps_its_rows(
    erp_settings: ErpSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = sql.SQL("{}.{}").format(sql.Identifier(erp_settings.schema), sql.Identifier(erp_settings.ledger_table))
    with closing(connect(erp_settings.dsn, 5)) as conn:
        _migrated_to(conn, erp_settings, 3, monkeypatch)
        with transaction(conn) as cur:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (run_id, country, run_date, status, model_wape) VALUES ('r1', 'DE', '2026-11-23',"
                    " 'published', 0.3)"
                ).format(ledger)
            )
        assert schema.migrate(conn, erp_settings) == [f"migration 4: {schema.MIGRATIONS[3].description}"]
        with transaction(conn) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT run_id, model_wape, markdown_events, markdown_lift_error, markdown_lift_bias FROM {}"
                ).format(ledger)
            )
            assert cur.fetchall() == [("r1", 0.3, None, None, None)]


def test_migration_3_leaves_the_erp_teams_own_rules_table_as_it_is(
    erp_settings: ErpSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with closing(connect(erp_settings.dsn, 5)) as conn:
        _migrated_to(conn, erp_settings, 2, monkeypatch)
        # Created by the ERP team before the pipeline's step, with an id and audit columns of its own.
        with transaction(conn) as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE {}.{} (rule_id serial PRIMARY KEY, country text NOT NULL, article_id text,"
                    " category text, rule text NOT NULL, value numeric, valid_from date, valid_to date, note text,"
                    " entered_by text NOT NULL DEFAULT current_user, entered_at timestamptz DEFAULT now())"
                ).format(sql.Identifier(erp_settings.schema), sql.Identifier(erp_settings.rules_table))
            )
            cur.execute(
                sql.SQL("INSERT INTO {}.{} (country, article_id, rule) VALUES ('DE', 'a1', 'hold')").format(
                    sql.Identifier(erp_settings.schema), sql.Identifier(erp_settings.rules_table)
                )
            )
        before = _columns(conn, erp_settings, erp_settings.rules_table)

        schema.migrate(conn, erp_settings)

        assert _columns(conn, erp_settings, erp_settings.rules_table) == before
        assert [name for name, _, _ in before][:2] == ["rule_id", "country"]
        assert schema.is_current(conn, erp_settings)
        with transaction(conn) as cur:
            cur.execute(
                sql.SQL("SELECT country, article_id, rule FROM {}.{}").format(
                    sql.Identifier(erp_settings.schema), sql.Identifier(erp_settings.rules_table)
                )
            )
            assert cur.fetchall() == [("DE", "a1", "hold")]


def _tables_of_before_versioning(cur: Cursor, settings: ErpSettings) -> None:
    """What migrate left before it recorded versions: the tables, no version table."""
    schema.MIGRATIONS[0].apply(cur, settings)


def _ledger_of_before_the_quality_gate(cur: Cursor, settings: ErpSettings) -> None:
    cur.execute(
        sql.SQL(
            "CREATE TABLE {}.{} (run_id text NOT NULL, country text NOT NULL, run_date date NOT NULL, "
            "status text NOT NULL CHECK (status IN ('published', 'failed')), rows integer, "
            "model_version text, model_wape double precision, baseline_wape double precision, "
            "model_bias double precision, message text, recorded_at timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY (run_id, country))"
        ).format(sql.Identifier(settings.schema), sql.Identifier(settings.ledger_table))
    )


@pytest.mark.parametrize("older", [_tables_of_before_versioning, _ledger_of_before_the_quality_gate])
def test_migrate_upgrades_older_tables_to_what_it_creates(
    erp_dsn: str, erp_settings: ErpSettings, older: Callable[[Cursor, ErpSettings], None]
) -> None:
    fresh = dataclasses.replace(erp_settings, schema=f"{erp_settings.schema}_fresh")
    with closing(connect(erp_dsn, 5)) as conn:
        with transaction(conn) as cur:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(erp_settings.schema)))
            older(cur, erp_settings)
            cur.execute(
                sql.SQL(
                    "INSERT INTO {}.{} (run_id, country, run_date, status, rows) "
                    "VALUES ('r1', 'DE', '2026-11-23', 'published', 3)"
                ).format(sql.Identifier(erp_settings.schema), sql.Identifier(erp_settings.ledger_table))
            )
        assert not schema.is_current(conn, erp_settings)

        schema.migrate(conn, erp_settings)
        try:
            schema.migrate(conn, fresh)
            assert _definitions(conn, erp_settings) == _definitions(conn, fresh)
        finally:
            with transaction(conn) as cur:
                cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(fresh.schema)))
        assert schema.is_current(conn, erp_settings)
        assert [row[0] for row in _versions(conn, erp_settings)] == [step.version for step in schema.MIGRATIONS]
        with transaction(conn) as cur:
            cur.execute(
                sql.SQL("SELECT run_id, status, rows FROM {}.{}").format(
                    sql.Identifier(erp_settings.schema), sql.Identifier(erp_settings.ledger_table)
                )
            )
            assert cur.fetchall() == [("r1", "published", 3)]


def test_migrate_allows_a_new_ledger_status_without_a_new_step(
    erp_settings: ErpSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with closing(connect(erp_settings.dsn, 5)) as conn:
        monkeypatch.setattr(schema, "LEDGER_STATUSES", LEDGER_STATUSES[:-1])
        schema.migrate(conn, erp_settings)
        monkeypatch.undo()
        versions = _versions(conn, erp_settings)
        assert not schema.is_current(conn, erp_settings)

        done = schema.migrate(conn, erp_settings)

        assert len(done) == 1 and done[0].endswith(f"allows {LEDGER_STATUSES[-1]}")
        assert schema.is_current(conn, erp_settings)
        assert _versions(conn, erp_settings) == versions


def test_prepare_migrates_a_fresh_database_by_itself(erp_settings: ErpSettings) -> None:
    with closing(connect(erp_settings.dsn, 5)) as conn:
        schema.prepare(conn, erp_settings)

        assert schema.is_current(conn, erp_settings)


def test_erp_migrate_command_says_what_it_applied_then_that_nothing_was_left(
    erp_settings: ErpSettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = dataclasses.replace(load_config("local"), erp=erp_settings)
    monkeypatch.setattr(cli, "load_config", lambda env: cfg)

    assert cli.main(["erp", "migrate"]) == 0
    first = capsys.readouterr().out
    assert cli.main(["erp", "migrate"]) == 0
    second = capsys.readouterr().out

    applied = [f"applied migration {step.version}: {step.description}" for step in schema.MIGRATIONS]
    assert first.splitlines()[:-1] == applied
    assert first.splitlines()[-1].startswith(f"ERP tables in schema {erp_settings.schema} at ")
    assert first.splitlines()[-1].endswith(" are current")
    assert second.splitlines() == [first.splitlines()[-1].replace(" are current", " were already current")]
