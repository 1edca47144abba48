"""The ERP tables' versioned migrations (`markdown-pricing erp migrate`, the tables' owner's step), and `prepare`, a
weekly run's check before any Spark work that its tables are current and its role holds every privilege it needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from markdown_pricing.core.config import ErpSettings
from markdown_pricing.erp import tables
from markdown_pricing.erp.connection import one_value, transaction
from markdown_pricing.erp.ledger import LEDGER_STATUSES
from markdown_pricing.erp.locks import lock

MIGRATE_COMMAND = "markdown-pricing erp migrate"
# The table in the ERP schema that records which migrations the schema has had.
VERSIONS_TABLE = "schema_migrations"
# What a run does to the rows of each table it writes: replaces predictions and candidates, upserts ledger and
# metrics rows.
DATA_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
# What it does with the buyers' rules, which the ERP team owns: reads them.
READ_PRIVILEGES = ("SELECT",)
# Columns added to the ledger after its first version, with their types: an older ledger gains them.
_ADDED_LEDGER_COLUMNS = (
    ("gate_override", "boolean NOT NULL DEFAULT false"),
    ("model_kind", "text"),
    ("fallback_reason", "text"),
)
# Columns added to the predictions by migration 3: how the recommendation compares with holding today's price, and
# the rule that bound it. Nullable, so rows of runs from before them stay valid.
ADDED_PREDICTION_COLUMNS = (
    ("hold_expected_revenue", "double precision"),
    ("gain_over_hold", "double precision"),
    ("hold_sell_through", "double precision"),
    ("stock_on_hand", "integer"),
    ("weeks_to_season_end", "integer"),
    ("rule_applied", "text"),
)

# Ledger columns added by migration 4: the markdown-event backtest of the price response a country was scored with.
MARKDOWN_EVENT_COLUMNS = (
    ("markdown_events", "integer"),
    ("markdown_lift_error", "double precision"),
    ("markdown_lift_bias", "double precision"),
)


class ErpNotReadyError(RuntimeError):
    """Raised before a run writes anything: its tables are not current, or its role lacks a privilege it needs."""


@dataclass(frozen=True)
class Migration:
    """One numbered step; idempotent on its own, so tables migrated before versions were recorded upgrade cleanly."""

    version: int
    description: str
    apply: Callable[[Cursor, ErpSettings], None]


def _status_check() -> sql.Composed:
    """The ledger's status CHECK: every status of LEDGER_STATUSES, read when called so that a new one needs no step."""
    return sql.SQL("CHECK (status IN ({}))").format(sql.SQL(", ").join(map(sql.Literal, LEDGER_STATUSES)))


def _create_tables(cur: Cursor, settings: ErpSettings) -> None:
    """The predictions, run ledger and model metrics tables, each where missing."""
    cur.execute(
        sql.SQL(
            """
            CREATE TABLE IF NOT EXISTS {} (
                country text NOT NULL,
                article_id text NOT NULL,
                valid_from date NOT NULL,
                current_price numeric(12,2) NOT NULL,
                recommended_discount numeric(4,3) NOT NULL,
                recommended_price numeric(12,2) NOT NULL,
                predicted_units_next_week double precision,
                expected_revenue double precision,
                expected_sell_through double precision,
                run_id text NOT NULL,
                model_version text NOT NULL,
                PRIMARY KEY (country, article_id)
            )
            """
        ).format(tables.predictions(settings))
    )
    cur.execute(
        sql.SQL(
            """
            CREATE TABLE IF NOT EXISTS {} (
                run_id text NOT NULL,
                country text NOT NULL,
                run_date date NOT NULL,
                status text NOT NULL {},
                rows integer,
                model_version text,
                model_wape double precision,
                baseline_wape double precision,
                model_bias double precision,
                message text,
                recorded_at timestamptz NOT NULL DEFAULT now(),
                gate_override boolean NOT NULL DEFAULT false,
                model_kind text,
                fallback_reason text,
                PRIMARY KEY (run_id, country)
            )
            """
        ).format(tables.ledger(settings), _status_check())
    )
    cur.execute(
        sql.SQL(
            """
            CREATE TABLE IF NOT EXISTS {} (
                run_id text NOT NULL,
                run_date date NOT NULL,
                country text NOT NULL,
                forecaster text NOT NULL,
                model_kind text,
                wape double precision,
                bias double precision,
                revenue_weighted_wape double precision,
                backtest_rows integer,
                recorded_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (run_id, country, forecaster)
            )
            """
        ).format(tables.metrics(settings))
    )


def _add_ledger_columns(cur: Cursor, settings: ErpSettings) -> None:
    """The columns a ledger created before the quality gate lacks (step 1 leaves such a ledger as it is)."""
    for column, kind in _missing_ledger_columns(cur, settings):
        cur.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN {} " + kind).format(tables.ledger(settings), sql.Identifier(column))
        )


def _add_columns_where_missing(cur: Cursor, table: sql.Composable, columns: tuple[tuple[str, str], ...]) -> None:
    """One ALTER TABLE adding each (column, type) the table lacks."""
    cur.execute(
        sql.SQL("ALTER TABLE {} ").format(table)
        + sql.SQL(", ").join(
            sql.SQL("ADD COLUMN IF NOT EXISTS {} " + kind).format(sql.Identifier(column)) for column, kind in columns
        )
    )


def _add_rules_and_candidates(cur: Cursor, settings: ErpSettings) -> None:
    """The predictions' explanation columns, the candidates table and the buyers' rules table, each where missing.

    The ERP team owns the rules table: one it created beforehand, with audit columns of its own, stays as it is.
    """
    _add_columns_where_missing(cur, tables.predictions(settings), ADDED_PREDICTION_COLUMNS)
    cur.execute(
        sql.SQL(
            """
            CREATE TABLE IF NOT EXISTS {} (
                country text NOT NULL,
                article_id text NOT NULL,
                candidate_discount numeric(4,3) NOT NULL,
                candidate_price numeric(12,2),
                predicted_units_next_week double precision,
                predicted_units_season double precision,
                expected_revenue double precision,
                expected_sell_through double precision,
                ruled_out_by text,
                chosen boolean NOT NULL,
                run_id text NOT NULL,
                PRIMARY KEY (country, article_id, candidate_discount)
            )
            """
        ).format(tables.candidates(settings))
    )
    cur.execute(
        sql.SQL(
            """
            CREATE TABLE IF NOT EXISTS {} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                country text NOT NULL,
                article_id text,
                category text,
                rule text NOT NULL,
                value numeric,
                valid_from date,
                valid_to date,
                note text
            )
            """
        ).format(tables.rules(settings))
    )


def _add_markdown_event_columns(cur: Cursor, settings: ErpSettings) -> None:
    """The ledger's markdown-event backtest columns, where missing."""
    _add_columns_where_missing(cur, tables.ledger(settings), MARKDOWN_EVENT_COLUMNS)


# In order; append new steps, never change an applied one. The ledger's status CHECK is not a step: `migrate` widens
# it whenever LEDGER_STATUSES gains a status.
MIGRATIONS = (
    Migration(1, "predictions, run ledger and model metrics tables", _create_tables),
    Migration(2, "ledger columns gate_override, model_kind and fallback_reason", _add_ledger_columns),
    Migration(3, "predictions' explanation columns, candidates and buyer rules tables", _add_rules_and_candidates),
    Migration(4, "ledger columns of the markdown-event backtest", _add_markdown_event_columns),
)


def _check_names(settings: ErpSettings) -> None:
    """ConfigError for a configured name that is not a plain identifier, before any SQL runs."""
    for table in (tables.predictions, tables.ledger, tables.metrics, tables.candidates, tables.rules):
        table(settings)


def _relation(cur: Cursor, settings: ErpSettings, name: str) -> int | None:
    """The oid of a table in the ERP schema, or None; from the catalog, which any role may read without USAGE."""
    cur.execute(
        "SELECT c.oid FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (settings.schema, name),
    )
    row = cur.fetchone()
    return None if row is None else int(row[0])


def _missing_ledger_columns(cur: Cursor, settings: ErpSettings) -> list[tuple[str, str]]:
    """The columns added after the ledger's first version that it lacks, with their types."""
    cur.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::oid AND attnum > 0 AND NOT attisdropped",
        (_relation(cur, settings, settings.ledger_table),),
    )
    present = {name for (name,) in cur.fetchall()}
    return [(column, kind) for column, kind in _ADDED_LEDGER_COLUMNS if column not in present]


def _outdated_status_checks(cur: Cursor, settings: ErpSettings) -> dict[str, list[str]]:
    """The ledger's status CHECK constraints that lack a status of LEDGER_STATUSES, with the statuses they lack."""
    cur.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::oid AND contype = 'c' AND pg_get_constraintdef(oid) LIKE %s",
        (_relation(cur, settings, settings.ledger_table), "%status%"),
    )
    lacking = {str(name): [status for status in LEDGER_STATUSES if f"'{status}'" not in text] for name, text in cur}
    return {name: statuses for name, statuses in lacking.items() if statuses}


def _allow_every_status(cur: Cursor, settings: ErpSettings) -> list[str]:
    """Widens each outdated status CHECK of the ledger; says what it widened."""
    outdated = _outdated_status_checks(cur, settings)
    for name in outdated:
        cur.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}, ADD CONSTRAINT {} {}").format(
                tables.ledger(settings), sql.Identifier(name), sql.Identifier(name), _status_check()
            )
        )
    return [f"ledger status check {name} allows {', '.join(statuses)}" for name, statuses in outdated.items()]


def _versions_table(settings: ErpSettings) -> sql.Composed:
    return sql.SQL("{}.{}").format(tables.schema(settings), sql.Identifier(VERSIONS_TABLE))


def _applied_versions(cur: Cursor, settings: ErpSettings) -> set[int]:
    """The versions the schema has had; none before its first versioned migrate."""
    if _relation(cur, settings, VERSIONS_TABLE) is None:
        return set()
    cur.execute(sql.SQL("SELECT version FROM {}").format(_versions_table(settings)))
    return {int(version) for (version,) in cur.fetchall()}


def _pending(cur: Cursor, settings: ErpSettings) -> list[str]:
    """What `migrate` would do: the steps not recorded and the ledger's outdated status checks."""
    applied = _applied_versions(cur, settings)
    steps = [f"migration {step.version} ({step.description})" for step in MIGRATIONS if step.version not in applied]
    checks = [
        f"ledger status check {name} lacks {', '.join(statuses)}"
        for name, statuses in _outdated_status_checks(cur, settings).items()
    ]
    return steps + checks


def migrate(conn: Connection, settings: ErpSettings) -> list[str]:
    """Creates the schema when missing, applies the steps not recorded in order and records each; says what it did,
    nothing when the tables are current. The tables' owner's step: `markdown-pricing erp migrate`."""
    _check_names(settings)
    try:
        with transaction(conn) as cur:
            return _migrate(cur, settings)
    except psycopg2.errors.InsufficientPrivilege as err:
        reason = str(err).splitlines()[0]
        raise ErpNotReadyError(
            f"role {conn.info.user} may not create or upgrade the ERP tables in schema {settings.schema} ({reason}): "
            f"run `{MIGRATE_COMMAND}` as the tables' owner"
        ) from err


def _migrate(cur: Cursor, settings: ErpSettings) -> list[str]:
    # CREATE ... IF NOT EXISTS still fails when two sessions race on the same name.
    lock(cur, "ddl", settings.schema)
    # Only when missing: even CREATE SCHEMA IF NOT EXISTS needs CREATE on the database, which a
    # least-privilege role owning its schema does not have.
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (settings.schema,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(tables.schema(settings)))
    if _relation(cur, settings, VERSIONS_TABLE) is None:
        cur.execute(
            sql.SQL(
                "CREATE TABLE {} (version integer PRIMARY KEY, description text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(_versions_table(settings))
        )
    applied, done = _applied_versions(cur, settings), []
    for step in MIGRATIONS:
        if step.version not in applied:
            step.apply(cur, settings)
            cur.execute(
                sql.SQL("INSERT INTO {} (version, description) VALUES (%s, %s)").format(_versions_table(settings)),
                (step.version, step.description),
            )
            done.append(f"migration {step.version}: {step.description}")
    return done + _allow_every_status(cur, settings)


def is_current(conn: Connection, settings: ErpSettings) -> bool:
    """Whether `migrate` has nothing to do; reads the catalog and the version table only."""
    with transaction(conn) as cur:
        return not _pending(cur, settings)


def _run_privileges(settings: ErpSettings) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each table a run touches with the privileges it needs there: it writes the data tables, reads the buyers' rules
    and the versions."""
    written = (settings.predictions_table, settings.candidates_table, settings.ledger_table, settings.metrics_table)
    read = (settings.rules_table, VERSIONS_TABLE)
    return (*((name, DATA_PRIVILEGES) for name in written), *((name, READ_PRIVILEGES) for name in read))


def _missing_privileges(cur: Cursor, settings: ErpSettings) -> list[str]:
    """Each privilege a run needs on the schema and its existing tables that the current role lacks."""
    cur.execute("SELECT has_schema_privilege(oid, 'USAGE') FROM pg_namespace WHERE nspname = %s", (settings.schema,))
    usage = cur.fetchone()
    missing = [f"USAGE on schema {settings.schema}"] if usage is not None and not usage[0] else []
    for name, privileges in _run_privileges(settings):
        oid = _relation(cur, settings, name)
        if oid is None:
            continue
        cur.execute(
            "SELECT p FROM unnest(%s::text[]) WITH ORDINALITY AS u(p, i)"
            " WHERE NOT has_table_privilege(%s::oid, p) ORDER BY i",
            (list(privileges), oid),
        )
        missing += [f"{privilege} on {settings.schema}.{name}" for (privilege,) in cur.fetchall()]
    return missing


def _may_migrate(cur: Cursor, settings: ErpSettings) -> bool:
    """Whether the current role may create tables in the schema (it owns it or has CREATE), or create the schema."""
    cur.execute(
        "SELECT pg_has_role(nspowner, 'USAGE') OR has_schema_privilege(oid, 'CREATE') FROM pg_namespace"
        " WHERE nspname = %s",
        (settings.schema,),
    )
    row = cur.fetchone()
    if row is None:
        cur.execute("SELECT has_database_privilege(current_database(), 'CREATE')")
        return bool(one_value(cur))
    return bool(row[0])


def prepare(conn: Connection, settings: ErpSettings) -> None:
    """Readies the ERP for a weekly run, before any Spark work; ErpNotReadyError says what is missing.

    On current tables it reads the catalog and the version table only and issues no DDL, so data privileges suffice.
    Missing or outdated tables are migrated when this role may create them (the embedded default, a fresh database);
    otherwise their owner must run `markdown-pricing erp migrate`. Every privilege a run needs and lacks is named.
    """
    _check_names(settings)
    with transaction(conn) as cur:
        cur.execute("SELECT current_user")
        role = str(one_value(cur))
        missing = _missing_privileges(cur, settings)
        pending = [] if missing else _pending(cur, settings)
        may_migrate = bool(pending) and _may_migrate(cur, settings)
    if missing:
        raise ErpNotReadyError(
            f"role {role} lacks privileges the weekly run needs: {', '.join(missing)}; the tables' owner must grant "
            "them (conf/erp/data_role.sql shows how)"
        )
    if pending and not may_migrate:
        raise ErpNotReadyError(
            f"the ERP tables in schema {settings.schema} are not current ({'; '.join(pending)}) and role {role} may "
            f"not create or upgrade them: the tables' owner must run `{MIGRATE_COMMAND}`"
        )
    if pending:
        migrate(conn, settings)
