"""The ERP writer: one transaction per country replaces its predictions and records the run in the ledger.

The CopyToTable shape: lock, check the ledger, delete the country's rows, COPY the new ones, write the ledger row,
commit; any error rolls the whole country back, so readers see the complete old set or the complete new set.
"""
from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from typing import Any

import pandas as pd
import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from markdown_pricing.config import ConfigError, ErpSettings
from markdown_pricing.embedded_erp import describe_dsn

APPLICATION_NAME = "markdown-pricing"
PUBLISHED = "published"
ALREADY_PUBLISHED = "already_published"
FAILED = "failed"

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
_COPY_COLUMNS = ("country", "article_id", "valid_from", *_FRAME_NUMERIC_COLUMNS, "run_id", "model_version")
# Quoted empty fields in these columns are NULL; in text columns they stay empty strings.
_FORCE_NULL_COLUMNS = ("valid_from", *_FRAME_NUMERIC_COLUMNS)
METRIC_KEYS = ("model_wape", "baseline_wape", "model_bias")


class ErpUnavailableError(RuntimeError):
    """Raised when the ERP database cannot be reached."""


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
        conn.rollback()
        raise


def _identifier(value: str, what: str) -> sql.Identifier:
    if not _IDENTIFIER.fullmatch(value):
        raise ConfigError(f"erp.{what} {value!r} is not a valid identifier: expected {_IDENTIFIER.pattern}")
    return sql.Identifier(value)


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


def connect(dsn: str, timeout_s: int) -> Connection:
    """Opens a connection to the ERP (the caller closes it); an unreachable ERP raises ErpUnavailableError."""
    try:
        return psycopg2.connect(dsn, connect_timeout=timeout_s, application_name=APPLICATION_NAME)
    except psycopg2.OperationalError as err:
        raise ErpUnavailableError(f"cannot connect to the ERP database at {describe_dsn(dsn)}: {err}".strip()) from err


def ensure_schema(conn: Connection, settings: ErpSettings) -> None:
    """Creates the schema, the predictions table and the ledger table when missing."""
    predictions, ledger = _tables(settings)
    with _transaction(conn) as cur:
        # CREATE ... IF NOT EXISTS still fails when two sessions race on the same name.
        _lock(cur, "ddl", settings.schema)
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(settings.schema)))
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
                    status text NOT NULL CHECK (status IN ({}, {})),
                    rows integer,
                    model_version text,
                    model_wape double precision,
                    baseline_wape double precision,
                    model_bias double precision,
                    message text,
                    recorded_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (run_id, country)
                )
                """
            ).format(ledger, sql.Literal(PUBLISHED), sql.Literal(FAILED))
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


def _csv_field(value: Any) -> str:
    """The CSV text of one value; None and NaN become the empty string."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    # repr of a float round-trips exactly into double precision.
    return repr(value) if isinstance(value, float) else str(value)


def _as_csv(frame: pd.DataFrame, *, run_date: date, run_id: str, model_version: str) -> io.StringIO:
    """The rows in COPY column order as quoted CSV, so text such as '' or \\N stays text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
    values = frame.astype(object).where(frame.notna(), None)
    for row in values.itertuples(index=False):
        record = row._asdict()
        writer.writerow(
            _csv_field(value)
            for value in (
                record["country"],
                record["article_id"],
                run_date.isoformat(),
                *(record[column] for column in _FRAME_NUMERIC_COLUMNS),
                run_id,
                model_version,
            )
        )
    buffer.seek(0)
    return buffer


def _metric(metrics: Mapping[str, float | None], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None or math.isnan(value) else float(value)


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
) -> str:
    """Replaces one country's predictions and records the run in one transaction; idempotent per (run, country)."""
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
                sql.SQL(", ").join(map(sql.Identifier, _COPY_COLUMNS)),
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
                     model_wape, baseline_wape, model_bias, message, recorded_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, now())
                ON CONFLICT (run_id, country) DO UPDATE SET
                    run_date = EXCLUDED.run_date, status = EXCLUDED.status, rows = EXCLUDED.rows,
                    model_version = EXCLUDED.model_version, model_wape = EXCLUDED.model_wape,
                    baseline_wape = EXCLUDED.baseline_wape, model_bias = EXCLUDED.model_bias,
                    message = NULL, recorded_at = EXCLUDED.recorded_at
                """
            ).format(ledger_table),
            (
                run_id,
                country,
                run_date,
                PUBLISHED,
                len(frame),
                model_version,
                *(_metric(metrics, key) for key in METRIC_KEYS),
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
) -> None:
    """Records that a run did not publish a country; a 'published' ledger row for that run and country stays."""
    _, ledger_table = _tables(settings)
    with _transaction(conn) as cur:
        _lock(cur, "publish", settings.schema, country)
        cur.execute(
            sql.SQL(
                """
                INSERT INTO {} AS ledger
                    (run_id, country, run_date, status, rows, model_version,
                     model_wape, baseline_wape, model_bias, message, recorded_at)
                VALUES (%s, %s, %s, %s, NULL, NULL, %s, %s, %s, %s, now())
                ON CONFLICT (run_id, country) DO UPDATE SET
                    run_date = EXCLUDED.run_date, status = EXCLUDED.status, rows = NULL, model_version = NULL,
                    model_wape = EXCLUDED.model_wape, baseline_wape = EXCLUDED.baseline_wape,
                    model_bias = EXCLUDED.model_bias, message = EXCLUDED.message,
                    recorded_at = EXCLUDED.recorded_at
                WHERE ledger.status <> %s
                """
            ).format(ledger_table),
            (run_id, country, run_date, FAILED, *(_metric(metrics, key) for key in METRIC_KEYS), message, PUBLISHED),
        )


def ledger(conn: Connection, settings: ErpSettings, run_id: str) -> dict[str, str]:
    """Country -> ledger status ('published' or 'failed') for one run."""
    _, ledger_table = _tables(settings)
    with _transaction(conn) as cur:
        cur.execute(sql.SQL("SELECT country, status FROM {} WHERE run_id = %s").format(ledger_table), (run_id,))
        return {str(country): str(status) for country, status in cur.fetchall()}
