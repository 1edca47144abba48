"""Creating and upgrading the ERP tables (`markdown-pricing erp migrate`), and checking whether they are current."""

from __future__ import annotations

from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from markdown_pricing.core.config import ErpSettings
from markdown_pricing.erp import tables
from markdown_pricing.erp.connection import one_value, transaction
from markdown_pricing.erp.ledger import LEDGER_STATUSES
from markdown_pricing.erp.locks import lock

# Columns added to the ledger after its first version, with their types: an older ledger gains them.
_ADDED_LEDGER_COLUMNS = (
    ("gate_override", "boolean NOT NULL DEFAULT false"),
    ("model_kind", "text"),
    ("fallback_reason", "text"),
)
_LEDGER_STATUS_CHECK = sql.SQL("CHECK (status IN ({}))").format(sql.SQL(", ").join(map(sql.Literal, LEDGER_STATUSES)))


def migrate(conn: Connection, settings: ErpSettings) -> None:
    """Creates the schema and every table when missing and brings older tables up to date; idempotent."""
    predictions, ledger = tables.predictions(settings), tables.ledger(settings)
    with transaction(conn) as cur:
        # CREATE ... IF NOT EXISTS still fails when two sessions race on the same name.
        lock(cur, "ddl", settings.schema)
        # Only when missing: even CREATE SCHEMA IF NOT EXISTS needs CREATE on the database, which a
        # least-privilege role owning its schema does not have.
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (settings.schema,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(tables.schema(settings)))
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
            ).format(predictions)
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
            ).format(ledger, _LEDGER_STATUS_CHECK)
        )
        _migrate_ledger(cur, settings, ledger)
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


def _missing_ledger_columns(cur: Cursor, settings: ErpSettings) -> list[tuple[str, str]]:
    """The columns added after the ledger's first version that it lacks, with their types."""
    cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (settings.schema, settings.ledger_table),
    )
    present = {name for (name,) in cur.fetchall()}
    return [(column, kind) for column, kind in _ADDED_LEDGER_COLUMNS if column not in present]


def _outdated_status_checks(cur: Cursor, ledger: sql.Composed) -> list[str]:
    """The ledger's status CHECK constraints that do not allow every status yet ('blocked', 'superseded')."""
    cur.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'"
        " AND pg_get_constraintdef(oid) LIKE %s",
        (ledger.as_string(cur), "%status%"),
    )
    return [str(name) for name, text in cur.fetchall() if any(f"'{status}'" not in text for status in LEDGER_STATUSES)]


def _migrate_ledger(cur: Cursor, settings: ErpSettings, ledger: sql.Composed) -> None:
    """Brings an older ledger up to date: the gate_override, model_kind and fallback_reason columns and every
    status."""
    for column, kind in _missing_ledger_columns(cur, settings):
        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} " + kind).format(ledger, sql.Identifier(column)))
    # Checked first so that an up-to-date ledger is not locked exclusively on every run.
    for name in _outdated_status_checks(cur, ledger):
        cur.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}, ADD CONSTRAINT {} {}").format(
                ledger, sql.Identifier(name), sql.Identifier(name), _LEDGER_STATUS_CHECK
            )
        )


def is_current(conn: Connection, settings: ErpSettings) -> bool:
    """Whether every table exists as `migrate` leaves it; reads the catalog only."""
    with transaction(conn) as cur:
        for table in (tables.predictions(settings), tables.ledger(settings), tables.metrics(settings)):
            cur.execute("SELECT to_regclass(%s)", (table.as_string(cur),))
            if one_value(cur) is None:
                return False
        return not _missing_ledger_columns(cur, settings) and not _outdated_status_checks(cur, tables.ledger(settings))


def ensure_current(conn: Connection, settings: ErpSettings) -> None:
    """Migrates only when something is missing: a run on current tables needs data privileges only."""
    if not is_current(conn, settings):
        migrate(conn, settings)
