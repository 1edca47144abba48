"""The ERP writer: one transaction per country replaces its predictions and records the run in the ledger.

The CopyToTable shape: lock, check the ledger, delete the country's rows, COPY the new ones, write the ledger row,
commit; any error rolls the whole country back, so readers see the complete old set or the complete new set.
"""
from __future__ import annotations

import io
import logging
import math
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from typing import Any

import pandas as pd
import psycopg2
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from markdown_pricing.backtest import FORECASTERS
from markdown_pricing.config import ConfigError, ErpSettings
from markdown_pricing.embedded_erp import describe_dsn

log = logging.getLogger(__name__)

APPLICATION_NAME = "markdown-pricing"
PUBLISHED = "published"
ALREADY_PUBLISHED = "already_published"
FAILED = "failed"
# Not published because the quality gate stopped it; its previous rows stay.
BLOCKED = "blocked"

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_FRAME_TEXT_COLUMNS = ("country", "article_id")
_FRAME_NUMERIC_COLUMNS = (
    "current_price",
    "recommended_discount",
    "recommended_price",
    "predicted_units_next_week",
    "expected_revenue",
    "expected_sell_through",
)
FRAME_COLUMNS = _FRAME_TEXT_COLUMNS + _FRAME_NUMERIC_COLUMNS
# Order of the CSV fields and of the COPY column list.
COPY_COLUMNS = ("country", "article_id", "valid_from", *_FRAME_NUMERIC_COLUMNS, "run_id", "model_version")
# Quoted empty fields in these columns are NULL; in text columns they stay empty strings.
_FORCE_NULL_COLUMNS = ("valid_from", *_FRAME_NUMERIC_COLUMNS)
METRIC_KEYS = ("model_wape", "baseline_wape", "model_bias")
# Which model scored the country and, for a fallback, why: text the ledger carries beside the metrics.
MODEL_KEYS = ("model_kind", "fallback_reason")
_LEDGER_STATUS_CHECK = sql.SQL("CHECK (status IN ({}))").format(
    sql.SQL(", ").join(map(sql.Literal, (PUBLISHED, FAILED, BLOCKED)))
)


class ErpUnavailableError(RuntimeError):
    """Raised when the ERP database cannot be reached."""


class PublishLockedError(RuntimeError):
    """Raised when another session holds the publish lock of a run date."""


@contextmanager
def _transaction(conn: Connection) -> Iterator[Cursor]:
    """A cursor inside one transaction: committed when the block ends, rolled back when it raises."""
    if conn.autocommit:
        raise ValueError("the ERP connection is in autocommit mode: each country must be one transaction")
    try:
        with conn.cursor() as cur:
            yield cur
        conn.commit()
    except BaseException:
        # A lost connection has already rolled back on the server; rolling back here would hide why.
        if not conn.closed:
            conn.rollback()
        raise


def _identifier(value: str, what: str) -> sql.Identifier:
    if not _IDENTIFIER.fullmatch(value):
        raise ConfigError(f"erp.{what} {value!r} is not a valid identifier: expected {_IDENTIFIER.pattern}")
    return sql.Identifier(value)


def table(settings: ErpSettings, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(_identifier(settings.schema, "schema"), _identifier(name, "table name"))


def _tables(settings: ErpSettings) -> tuple[sql.Composed, sql.Composed]:
    """The qualified predictions and ledger tables, after checking every configured name."""
    schema = _identifier(settings.schema, "schema")
    return (
        sql.SQL("{}.{}").format(schema, _identifier(settings.predictions_table, "predictions_table")),
        sql.SQL("{}.{}").format(schema, _identifier(settings.ledger_table, "ledger_table")),
    )


def _lock(cur: Cursor, *key: str) -> None:
    """Takes a transaction-scoped advisory lock named by key (a hash collision only costs some waiting)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("/".join((APPLICATION_NAME, *key)),))


def connect(dsn: str, timeout_s: int, *, attempts: int = 1, backoff_s: float = 0.0) -> Connection:
    """Opens a connection to the ERP (the caller closes it), trying `attempts` times with exponential backoff.

    An ERP still unreachable after the last attempt raises ErpUnavailableError; only the password-free
    description of the DSN is ever logged or raised.
    """
    target = describe_dsn(dsn)
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return psycopg2.connect(dsn, connect_timeout=timeout_s, application_name=APPLICATION_NAME)
        except psycopg2.OperationalError as err:
            # libpq messages name host and port, never the password.
            reason = " ".join(str(err).split())
            if attempt == attempts:
                raise ErpUnavailableError(
                    f"cannot connect to the ERP database at {target} after {attempts} attempt(s) over "
                    f"{time.monotonic() - started:.1f} s: {reason}"
                ) from err
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning(
                "ERP at %s unreachable (attempt %d of %d): %s; retrying in %.1f s",
                target,
                attempt,
                attempts,
                reason,
                delay,
            )
            time.sleep(delay)
    # Reached only when the loop never ran.
    raise ValueError(f"connect attempts must be at least 1, not {attempts}")


def publisher_name(run_id: str) -> str:
    """How a publishing session shows itself in pg_stat_activity.application_name: run, then pid@host."""
    # PostgreSQL keeps 63 bytes of it, so the likeliest to be cut (a long host name) comes last.
    return f"{APPLICATION_NAME} publish run={run_id} {os.getpid()}@{socket.gethostname()}"


def _run_lock_keys(settings: ErpSettings, run_date: date) -> tuple[str, int]:
    """The two keys of a run date's advisory lock: a hash of the schema's namespace and the date's ordinal."""
    # The date as its own key: two run dates can never collide, only two schemas can (and then merely wait).
    return "/".join((APPLICATION_NAME, "run", settings.schema)), run_date.toordinal()


def _lock_holders(cur: Cursor, keys: tuple[str, int]) -> list[str]:
    """Who holds a run lock, from pg_locks and pg_stat_activity (application_name is visible to every role)."""
    cur.execute(
        """
        SELECT a.pid, a.application_name, a.client_addr, a.backend_start, a.state
        FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid = hashtext(%s)::oid AND l.objid = %s::oid
        """,
        keys,
    )
    holders = []
    for pid, name, client, started, state in cur.fetchall():
        since = f" connected since {started.isoformat(sep=' ', timespec='seconds')}" if started else ""
        holders.append(f"backend pid {pid} '{name}' from {client or 'a local socket'}{since} ({state})")
    return holders


@contextmanager
def publish_run_lock(conn: Connection, settings: ErpSettings, run_date: date, holder: str) -> Iterator[None]:
    """Holds the session advisory lock of (schema, run date) for the block; PublishLockedError names another holder.

    A session lock, not a transaction one, so it spans the per-country transactions; it goes with the session,
    so a killed publisher or a restarted database never leaves it behind.
    """
    keys = _run_lock_keys(settings, run_date)
    with _transaction(conn) as cur:
        # Named before trying, so whoever finds the lock taken can read who holds it.
        cur.execute("SELECT set_config('application_name', %s, false)", (holder,))
        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s), %s)", keys)
        acquired = bool(cur.fetchone()[0])
        if not acquired:
            holders = _lock_holders(cur, keys)
            cur.execute("SELECT set_config('application_name', %s, false)", (APPLICATION_NAME,))
    if not acquired:
        raise PublishLockedError(
            f"another publisher holds the publish lock of run date {run_date} in schema {settings.schema}: "
            f"{'; '.join(holders) or 'a session that has just finished, so try again'}. "
            "Wait for it to finish; if it hangs, end that backend with SELECT pg_terminate_backend(<pid>)"
        )
    try:
        yield
    finally:
        _release_run_lock(conn, keys)


def _release_run_lock(conn: Connection, keys: tuple[str, int]) -> None:
    """Releases a run lock; on a lost connection the lock has already gone with its session."""
    if conn.closed:
        return
    try:
        with _transaction(conn) as cur:
            cur.execute("SELECT pg_advisory_unlock(hashtext(%s), %s)", keys)
            cur.execute("SELECT set_config('application_name', %s, false)", (APPLICATION_NAME,))
    except psycopg2.Error as err:
        # Raising here would hide the error that ended the block; the lock ends with the session anyway.
        log.warning("could not release the publish lock (%s); it is released when the connection closes", err)


def ensure_schema(conn: Connection, settings: ErpSettings) -> None:
    """Creates the schema, the predictions table and the ledger table when missing."""
    predictions, ledger = _tables(settings)
    with _transaction(conn) as cur:
        # CREATE ... IF NOT EXISTS still fails when two sessions race on the same name.
        _lock(cur, "ddl", settings.schema)
        # Only when missing: even CREATE SCHEMA IF NOT EXISTS needs CREATE on the database, which a
        # least-privilege role owning its schema does not have.
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (settings.schema,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(settings.schema)))
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
            ).format(table(settings, settings.metrics_table))
        )


def _migrate_ledger(cur: Cursor, settings: ErpSettings, ledger: sql.Composed) -> None:
    """Brings an older ledger up to date: the gate_override, model_kind and fallback_reason columns and the
    'blocked' status."""
    for column, kind in (("gate_override", "boolean NOT NULL DEFAULT false"), ("model_kind", "text"),
                         ("fallback_reason", "text")):  # fmt: skip
        cur.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
            " AND column_name = %s",
            (settings.schema, settings.ledger_table, column),
        )
        if cur.fetchone() is None:
            cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} " + kind).format(ledger, sql.Identifier(column)))
    # Checked first so that an up-to-date ledger is not locked exclusively on every run.
    cur.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'"
        " AND pg_get_constraintdef(oid) LIKE %s AND pg_get_constraintdef(oid) NOT LIKE %s",
        (ledger.as_string(cur), "%status%", f"%'{BLOCKED}'%"),
    )
    for (name,) in cur.fetchall():
        cur.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}, ADD CONSTRAINT {} {}").format(
                ledger, sql.Identifier(name), sql.Identifier(name), _LEDGER_STATUS_CHECK
            )
        )


def _checked_frame(predictions: pd.DataFrame, country: str) -> pd.DataFrame:
    """The publishable columns of one country's predictions; refuses frames that would corrupt the table."""
    missing = [column for column in FRAME_COLUMNS if column not in predictions.columns]
    if missing:
        raise ValueError(f"predictions for {country} lack columns: {', '.join(missing)}")
    frame = predictions.loc[:, list(FRAME_COLUMNS)]
    if frame.empty:
        raise ValueError(f"no predictions for {country}: record the country as not published instead")
    others = sorted({str(value) for value in frame["country"] if value != country})
    if others:
        raise ValueError(f"predictions for {country} contain rows of other countries: {', '.join(others)}")
    duplicated = frame["article_id"][frame["article_id"].duplicated()]
    if not duplicated.empty:
        shown = ", ".join(map(str, duplicated.unique()[:10]))
        raise ValueError(f"predictions for {country} repeat article_ids: {shown}")
    return frame


def _as_csv(frame: pd.DataFrame, *, run_date: date, run_id: str, model_version: str) -> io.BytesIO:
    """The rows in COPY column order as CSV: every value quoted, so text such as '' or \\N stays text; a missing
    number is an unquoted empty field, which COPY reads as NULL.

    Written by Arrow in one vectorised pass: the publish benchmark measured a Python csv.writer loop at a fifth of
    the speed of the COPY it feeds. Arrow writes each double in its shortest form that round-trips exactly.
    """
    text = frame.loc[:, list(_FRAME_TEXT_COLUMNS)].fillna("").astype(str)
    numbers = frame.loc[:, list(_FRAME_NUMERIC_COLUMNS)].astype("float64")
    constants = {"valid_from": run_date.isoformat(), "run_id": run_id, "model_version": model_version}
    rows = pd.concat([text, numbers], axis=1).assign(**constants).loc[:, list(COPY_COLUMNS)]
    buffer = io.BytesIO()
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    pacsv.write_csv(pa.Table.from_pandas(rows, preserve_index=False), buffer, options)
    buffer.seek(0)
    return buffer


def _metric(metrics: Mapping[str, float | None], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None or math.isnan(value) else float(value)


def _ledger_values(metrics: Mapping[str, Any]) -> tuple[Any, ...]:
    return (*(_metric(metrics, key) for key in METRIC_KEYS), *(metrics.get(key) for key in MODEL_KEYS))


def record_metrics(
    conn: Connection, settings: ErpSettings, *, run_id: str, run_date: date, results: Mapping[str, Mapping[str, Any]]
) -> None:
    """Every country's backtest errors, one row per forecaster, in one transaction; a rerun replaces them."""
    rows = [
        (run_id, run_date, country, forecaster, result.get("model_kind"),
         *(_metric(result, f"{forecaster}_{measure}") for measure in ("wape", "bias", "rwape")),
         result.get("backtest_rows"))
        for country, result in sorted(results.items())
        for forecaster in FORECASTERS
        if result.get(f"{forecaster}_wape") is not None
    ]  # fmt: skip
    with _transaction(conn) as cur:
        cur.executemany(
            sql.SQL(
                """
                INSERT INTO {} (run_id, run_date, country, forecaster, model_kind, wape, bias,
                                revenue_weighted_wape, backtest_rows, recorded_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())
                ON CONFLICT (run_id, country, forecaster) DO UPDATE SET
                    run_date = EXCLUDED.run_date, model_kind = EXCLUDED.model_kind, wape = EXCLUDED.wape,
                    bias = EXCLUDED.bias, revenue_weighted_wape = EXCLUDED.revenue_weighted_wape,
                    backtest_rows = EXCLUDED.backtest_rows, recorded_at = EXCLUDED.recorded_at
                """
            ).format(table(settings, settings.metrics_table)),
            rows,
        )


def publish_country(
    conn: Connection,
    settings: ErpSettings,
    *,
    run_id: str,
    run_date: date,
    country: str,
    predictions: pd.DataFrame,
    model_version: str,
    metrics: Mapping[str, float | None],
    gate_override: bool = False,
    message: str | None = None,
) -> str:
    """Replaces one country's predictions and records the run in one transaction; idempotent per (run, country).

    `gate_override` records that an operator published despite the quality gate; `message` says what was overridden.
    """
    predictions_table, ledger_table = _tables(settings)
    frame = _checked_frame(predictions, country)
    rows = _as_csv(frame, run_date=run_date, run_id=run_id, model_version=model_version)
    with _transaction(conn) as cur:
        _lock(cur, "publish", settings.schema, country)
        cur.execute(
            sql.SQL("SELECT status FROM {} WHERE run_id = %s AND country = %s").format(ledger_table),
            (run_id, country),
        )
        found = cur.fetchone()
        if found is not None and found[0] == PUBLISHED:
            return ALREADY_PUBLISHED
        cur.execute(sql.SQL("DELETE FROM {} WHERE country = %s").format(predictions_table), (country,))
        cur.copy_expert(
            sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, FORCE_NULL ({}))")
            .format(
                predictions_table,
                sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS)),
                sql.SQL(", ").join(map(sql.Identifier, _FORCE_NULL_COLUMNS)),
            )
            .as_string(conn),
            rows,
        )
        cur.execute(
            sql.SQL(
                """
                INSERT INTO {} AS ledger
                    (run_id, country, run_date, status, rows, model_version,
                     model_wape, baseline_wape, model_bias, model_kind, fallback_reason, message, recorded_at,
                     gate_override)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), %s)
                ON CONFLICT (run_id, country) DO UPDATE SET
                    run_date = EXCLUDED.run_date, status = EXCLUDED.status, rows = EXCLUDED.rows,
                    model_version = EXCLUDED.model_version, model_wape = EXCLUDED.model_wape,
                    baseline_wape = EXCLUDED.baseline_wape, model_bias = EXCLUDED.model_bias,
                    model_kind = EXCLUDED.model_kind, fallback_reason = EXCLUDED.fallback_reason,
                    message = EXCLUDED.message, recorded_at = EXCLUDED.recorded_at,
                    gate_override = EXCLUDED.gate_override
                """
            ).format(ledger_table),
            (
                run_id,
                country,
                run_date,
                PUBLISHED,
                len(frame),
                model_version,
                *_ledger_values(metrics),
                message,
                gate_override,
            ),
        )
    return PUBLISHED


def record_not_published(
    conn: Connection,
    settings: ErpSettings,
    *,
    run_id: str,
    run_date: date,
    country: str,
    message: str,
    metrics: Mapping[str, float | None],
    status: str = FAILED,
) -> None:
    """Records that a run did not publish a country; a 'published' ledger row for that run and country stays."""
    if status not in (FAILED, BLOCKED):
        raise ValueError(f"a country that was not published is {FAILED!r} or {BLOCKED!r}, not {status!r}")
    _, ledger_table = _tables(settings)
    with _transaction(conn) as cur:
        _lock(cur, "publish", settings.schema, country)
        cur.execute(
            sql.SQL(
                """
                INSERT INTO {} AS ledger
                    (run_id, country, run_date, status, rows, model_version,
                     model_wape, baseline_wape, model_bias, model_kind, fallback_reason, message, recorded_at)
                VALUES (%s, %s, %s, %s, NULL, NULL, %s, %s, %s, %s, %s, %s, now())
                ON CONFLICT (run_id, country) DO UPDATE SET
                    run_date = EXCLUDED.run_date, status = EXCLUDED.status, rows = NULL, model_version = NULL,
                    model_wape = EXCLUDED.model_wape, baseline_wape = EXCLUDED.baseline_wape,
                    model_bias = EXCLUDED.model_bias, model_kind = EXCLUDED.model_kind,
                    fallback_reason = EXCLUDED.fallback_reason, message = EXCLUDED.message,
                    recorded_at = EXCLUDED.recorded_at, gate_override = false
                WHERE ledger.status <> %s
                """
            ).format(ledger_table),
            (run_id, country, run_date, status, *_ledger_values(metrics), message, PUBLISHED),
        )


def ledger(conn: Connection, settings: ErpSettings, run_id: str) -> dict[str, str]:
    """Country -> ledger status ('published', 'failed' or 'blocked') for one run."""
    _, ledger_table = _tables(settings)
    with _transaction(conn) as cur:
        cur.execute(sql.SQL("SELECT country, status FROM {} WHERE run_id = %s").format(ledger_table), (run_id,))
        return {str(country): str(status) for country, status in cur.fetchall()}


def last_published_rows(conn: Connection, settings: ErpSettings, before_run_id: str) -> dict[str, int]:
    """Country -> row count of its most recent publish by a run other than `before_run_id` (what the ERP holds)."""
    _, ledger_table = _tables(settings)
    with _transaction(conn) as cur:
        cur.execute(
            sql.SQL(
                """
                SELECT DISTINCT ON (country) country, rows FROM {}
                WHERE status = %s AND run_id <> %s AND rows IS NOT NULL
                ORDER BY country, recorded_at DESC
                """
            ).format(ledger_table),
            (PUBLISHED, before_run_id),
        )
        return {str(country): int(rows) for country, rows in cur.fetchall()}
