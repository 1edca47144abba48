"""The ERP writer: one transaction per country replaces its predictions and candidates and records the run in the
ledger.

The CopyToTable shape: lock, check the ledger, delete the country's rows, COPY the new ones, write the ledger row,
commit; any error rolls the whole country back, so readers see the complete old set or the complete new set, and
never candidates of one run beside predictions of another."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from pandas.api.types import infer_dtype
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from markdown_pricing.core.config import ErpSettings
from markdown_pricing.core.contract import FORECASTERS, MEASURES
from markdown_pricing.core.results import metric
from markdown_pricing.erp import tables
from markdown_pricing.erp.connection import one_value, transaction
from markdown_pricing.erp.ledger import ALREADY_PUBLISHED, BLOCKED, FAILED, MISSING_INPUT, PUBLISHED, SUPERSEDED
from markdown_pricing.erp.locks import lock

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
# The explanation of each recommendation (migration 3): NULL where a frame lacks them, so older callers still publish.
_EXPLANATION_FLOAT_COLUMNS = ("hold_expected_revenue", "gain_over_hold", "hold_sell_through")
_EXPLANATION_INTEGER_COLUMNS = ("stock_on_hand", "weeks_to_season_end")
# Text where an empty string means the same as none: NULL either way.
_EXPLANATION_LABEL_COLUMNS = ("rule_applied",)
EXPLANATION_COLUMNS = _EXPLANATION_FLOAT_COLUMNS + _EXPLANATION_INTEGER_COLUMNS + _EXPLANATION_LABEL_COLUMNS
# Order of the CSV fields and of the COPY column list.
COPY_COLUMNS = (
    "country",
    "article_id",
    "valid_from",
    *_FRAME_NUMERIC_COLUMNS,
    "run_id",
    "model_version",
    *EXPLANATION_COLUMNS,
)
# Quoted empty fields in these columns are NULL; in text columns they stay empty strings.
_FORCE_NULL_COLUMNS = ("valid_from", *_FRAME_NUMERIC_COLUMNS, *EXPLANATION_COLUMNS)

# One row per (article, candidate discount) of a country, as core.contract.CANDIDATE_COLUMNS.
_CANDIDATE_FLOAT_COLUMNS = (
    "candidate_discount",
    "candidate_price",
    "predicted_units_next_week",
    "predicted_units_season",
    "expected_revenue",
    "expected_sell_through",
)
CANDIDATE_FRAME_COLUMNS = (*_FRAME_TEXT_COLUMNS, *_CANDIDATE_FLOAT_COLUMNS, "chosen")
# The rule that forbids a candidate: NULL where the frame lacks it.
_CANDIDATE_LABEL_COLUMNS = ("ruled_out_by",)
CANDIDATE_COPY_COLUMNS = (*CANDIDATE_FRAME_COLUMNS, *_CANDIDATE_LABEL_COLUMNS, "run_id")
_CANDIDATE_FORCE_NULL_COLUMNS = (*_CANDIDATE_FLOAT_COLUMNS, *_CANDIDATE_LABEL_COLUMNS)
# What COPY sends per read of the encoded rows: fewer round trips through Python than psycopg2's default 8 kB.
_COPY_READ_BYTES = 1 << 20
# The scale of candidate_discount in the table: two discounts equal at it are one candidate.
_DISCOUNT_DECIMALS = 3
METRIC_KEYS = (
    "model_wape",
    "baseline_wape",
    "model_bias",
    "markdown_events",
    "markdown_lift_error",
    "markdown_lift_bias",
)
# Which model scored the country and, for a fallback, why: text the ledger carries beside the metrics.
MODEL_KEYS = ("model_kind", "fallback_reason")
# What record_not_published may record: superseded is decided inside publish_country, under the country's lock.
NOT_PUBLISHED_STATUSES = (FAILED, BLOCKED, MISSING_INPUT)
# What the ledger records of a country's train+score result.
LEDGER_METRICS = (*METRIC_KEYS, *MODEL_KEYS)


def _checked_frame(predictions: pd.DataFrame, country: str) -> pd.DataFrame:
    """The publishable columns of one country's predictions, the explanation columns it lacks missing (NULL);
    refuses frames that would corrupt the table."""
    missing = [column for column in FRAME_COLUMNS if column not in predictions.columns]
    if missing:
        raise ValueError(f"predictions for {country} lack columns: {', '.join(missing)}")
    frame = predictions.reindex(columns=[*FRAME_COLUMNS, *EXPLANATION_COLUMNS])
    if frame.empty:
        raise ValueError(f"no predictions for {country}: record the country as not published instead")
    others = sorted({str(value) for value in frame["country"] if value != country})
    if others:
        raise ValueError(f"predictions for {country} contain rows of other countries: {', '.join(others)}")
    duplicated = frame["article_id"][frame["article_id"].duplicated()]
    if not duplicated.empty:
        shown = ", ".join(map(str, duplicated.unique()[:10]))
        raise ValueError(f"predictions for {country} repeat article_ids: {shown}")
    integers = frame.loc[:, list(_EXPLANATION_INTEGER_COLUMNS)].astype("float64")
    fractional = [column for column in _EXPLANATION_INTEGER_COLUMNS if (integers[column].dropna() % 1 != 0).any()]
    if fractional:
        raise ValueError(f"predictions for {country} hold fractions in integer columns: {', '.join(fractional)}")
    return frame


def _checked_candidates(candidates: pd.DataFrame | None, country: str, articles: pd.Series) -> pd.DataFrame | None:
    """The candidates of the published articles (`articles`, the predictions' article_id), or None when there are
    none to write; refuses candidates that would corrupt the table or belong to another country."""
    if candidates is None:
        return None
    missing = [column for column in CANDIDATE_FRAME_COLUMNS if column not in candidates.columns]
    if missing:
        raise ValueError(f"candidates for {country} lack columns: {', '.join(missing)}")
    countries = candidates["country"]
    others = sorted({str(value) for value in countries[countries != country].unique()})
    if others:
        raise ValueError(f"candidates for {country} contain rows of other countries: {', '.join(others)}")
    key = pd.DataFrame(
        {
            "article_id": candidates["article_id"].astype(str),
            "candidate_discount": candidates["candidate_discount"].astype("float64").round(_DISCOUNT_DECIMALS),
        }
    )
    duplicated = key[key.duplicated()]
    if not duplicated.empty:
        shown = ", ".join(f"{a} at {d:g}" for a, d in duplicated.drop_duplicates().head(10).itertuples(index=False))
        raise ValueError(f"candidates for {country} repeat (article_id, candidate_discount): {shown}")
    # Vectorised: "boolean" only when every value is a bool, none missing.
    if len(candidates) and infer_dtype(candidates["chosen"], skipna=False) != "boolean":
        raise ValueError(f"candidates for {country}: chosen must be true or false in every row")
    # An article without a recommendation (a buyer rule excluded it) has no explanation in the ERP either.
    published = key["article_id"].isin(set(articles.astype(str)))
    return candidates.loc[published.to_numpy()]


def _text(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Text columns as strings, a missing value as an empty string (quoted in the CSV, so it stays text)."""
    return frame.loc[:, list(columns)].fillna("").astype(str)


def _labels(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Optional text columns as strings, empty where missing; FORCE_NULL makes every empty one NULL."""
    present = frame.reindex(columns=list(columns)).astype(object)
    return present.where(present.notna(), "").astype(str)


def _as_csv(frame: pd.DataFrame, *, run_date: date, run_id: str, model_version: str) -> bytes:
    """The predictions in COPY column order as CSV (see _write_csv); explanation columns the frame lacks are NULL."""
    constants = {"valid_from": run_date.isoformat(), "run_id": run_id, "model_version": model_version}
    rows = pd.concat(
        [
            _text(frame, _FRAME_TEXT_COLUMNS),
            frame.loc[:, list(_FRAME_NUMERIC_COLUMNS)].astype("float64"),
            frame.loc[:, list(_EXPLANATION_FLOAT_COLUMNS)].astype("float64"),
            # Nullable integers, written without a fraction (_checked_frame refused any).
            frame.loc[:, list(_EXPLANATION_INTEGER_COLUMNS)].astype("float64").astype("Int64"),
            _labels(frame, _EXPLANATION_LABEL_COLUMNS),
        ],
        axis=1,
    )
    return _write_csv(rows.assign(**constants).loc[:, list(COPY_COLUMNS)])


def _candidates_csv(frame: pd.DataFrame, *, run_id: str) -> bytes:
    """The candidates in COPY column order as CSV (see _write_csv)."""
    rows = pd.concat(
        [
            _text(frame, _FRAME_TEXT_COLUMNS),
            frame.loc[:, list(_CANDIDATE_FLOAT_COLUMNS)].astype("float64"),
            frame["chosen"].astype(bool),
            _labels(frame, _CANDIDATE_LABEL_COLUMNS),
        ],
        axis=1,
    )
    return _write_csv(rows.assign(run_id=run_id).loc[:, list(CANDIDATE_COPY_COLUMNS)])


def _write_csv(rows: pd.DataFrame) -> bytes:
    """The rows as CSV: every value quoted, so text such as '' or \\N stays text; a missing number is an unquoted
    empty field, which COPY reads as NULL.

    Written by Arrow in one vectorised pass: the publish benchmark measured a Python csv.writer loop at a fifth of
    the speed of the COPY it feeds. Arrow writes each double in its shortest form that round-trips exactly.
    """
    buffer = io.BytesIO()
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    pacsv.write_csv(pa.Table.from_pandas(rows, preserve_index=False), buffer, options)
    return buffer.getvalue()


def _ledger_values(metrics: Mapping[str, Any]) -> tuple[Any, ...]:
    return (*(metric(metrics, key) for key in METRIC_KEYS), *(metrics.get(key) for key in MODEL_KEYS))


def record_metrics(
    conn: Connection, settings: ErpSettings, *, run_id: str, run_date: date, results: Mapping[str, Mapping[str, Any]]
) -> None:
    """Every country's backtest errors, one row per forecaster, in one transaction; a rerun replaces them."""
    rows = [
        (
            run_id,
            run_date,
            country,
            forecaster,
            result.get("model_kind"),
            *(metric(result, f"{forecaster}_{measure}") for measure in MEASURES),
            result.get("backtest_rows"),
        )
        for country, result in sorted(results.items())
        for forecaster in FORECASTERS
        if result.get(f"{forecaster}_wape") is not None
    ]
    with transaction(conn) as cur:
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
            ).format(tables.metrics(settings)),
            rows,
        )


@dataclass(frozen=True)
class EncodedCountry:
    """One country's predictions and the candidates behind them, checked and encoded as the CSV its COPYs read:
    all a publish does before its transaction, so that another country's can run while this one's COPY does."""

    run_id: str
    run_date: date
    country: str
    model_version: str
    rows: int
    predictions: bytes
    candidates: bytes | None


def encode_country(
    *,
    run_id: str,
    run_date: date,
    country: str,
    predictions: pd.DataFrame,
    model_version: str,
    candidates: pd.DataFrame | None = None,
) -> EncodedCountry:
    """Checks and encodes one country's rows; ValueError says what would corrupt the tables.

    `candidates` (core.contract.CANDIDATE_COLUMNS) explain the predictions: those of articles without a prediction
    row (a buyer rule excluded them) are not written; None writes none, so the table never keeps another run's.
    """
    frame = _checked_frame(predictions, country)
    explained = _checked_candidates(candidates, country, frame["article_id"])
    return EncodedCountry(
        run_id=run_id,
        run_date=run_date,
        country=country,
        model_version=model_version,
        rows=len(frame),
        predictions=_as_csv(frame, run_date=run_date, run_id=run_id, model_version=model_version),
        candidates=None if explained is None or explained.empty else _candidates_csv(explained, run_id=run_id),
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
    candidates: pd.DataFrame | None = None,
    gate_override: bool = False,
    message: str | None = None,
    rollback: bool = False,
    repair: bool = False,
) -> str:
    """encode_country, then write_country."""
    encoded = encode_country(
        run_id=run_id,
        run_date=run_date,
        country=country,
        predictions=predictions,
        model_version=model_version,
        candidates=candidates,
    )
    return write_country(
        conn,
        settings,
        encoded,
        metrics=metrics,
        gate_override=gate_override,
        message=message,
        rollback=rollback,
        repair=repair,
    )


def write_country(
    conn: Connection,
    settings: ErpSettings,
    encoded: EncodedCountry,
    *,
    metrics: Mapping[str, float | None],
    gate_override: bool = False,
    message: str | None = None,
    rollback: bool = False,
    repair: bool = False,
) -> str:
    """Replaces one country's predictions and candidates and records the run in one transaction; idempotent per
    (run, country).

    The newest week wins: where the table holds a later week than the run date, nothing changes and the country is
    recorded `superseded`, unless `rollback` (an operator's deliberate return to an older week, recorded).
    `gate_override` records that an operator published despite the quality gate; `message` says what was overridden.
    `repair` publishes again over this run's own `published` ledger row, whose rows left the table behind its back.
    """
    predictions_table, ledger_table = tables.predictions(settings), tables.ledger(settings)
    candidates_table = tables.candidates(settings)
    run_id, run_date, country = encoded.run_id, encoded.run_date, encoded.country
    with transaction(conn) as cur:
        lock(cur, "publish", settings.schema, country)
        cur.execute(
            sql.SQL("SELECT status FROM {} WHERE run_id = %s AND country = %s").format(ledger_table),
            (run_id, country),
        )
        found = cur.fetchone()
        if found is not None and found[0] == PUBLISHED and not repair:
            return ALREADY_PUBLISHED
        # Under the country's lock: of two runs racing, the later week always has the last word.
        cur.execute(sql.SQL("SELECT max(valid_from) FROM {} WHERE country = %s").format(predictions_table), (country,))
        held = one_value(cur)
        if held is not None and held > run_date:
            if not rollback:
                _record_not_published(
                    cur,
                    settings,
                    run_id=run_id,
                    run_date=run_date,
                    country=country,
                    metrics=metrics,
                    status=SUPERSEDED,
                    message=f"the ERP holds the newer week {held}: its rows kept",
                )
                return SUPERSEDED
            rolled_back = f"rollback by operator: replaced the newer week {held}"
            message = f"{message}; {rolled_back}" if message else rolled_back
        cur.execute(sql.SQL("DELETE FROM {} WHERE country = %s").format(predictions_table), (country,))
        cur.execute(sql.SQL("DELETE FROM {} WHERE country = %s").format(candidates_table), (country,))
        _copy(cur, predictions_table, COPY_COLUMNS, _FORCE_NULL_COLUMNS, encoded.predictions)
        if encoded.candidates is not None:
            _copy(cur, candidates_table, CANDIDATE_COPY_COLUMNS, _CANDIDATE_FORCE_NULL_COLUMNS, encoded.candidates)
        cur.execute(
            sql.SQL(
                """
                INSERT INTO {} AS ledger
                    (run_id, country, run_date, status, rows, model_version,
                     model_wape, baseline_wape, model_bias, markdown_events, markdown_lift_error,
                     markdown_lift_bias, model_kind, fallback_reason, message, recorded_at, gate_override)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), %s)
                ON CONFLICT (run_id, country) DO UPDATE SET
                    run_date = EXCLUDED.run_date, status = EXCLUDED.status, rows = EXCLUDED.rows,
                    model_version = EXCLUDED.model_version, model_wape = EXCLUDED.model_wape,
                    baseline_wape = EXCLUDED.baseline_wape, model_bias = EXCLUDED.model_bias,
                    markdown_events = EXCLUDED.markdown_events, markdown_lift_error = EXCLUDED.markdown_lift_error,
                    markdown_lift_bias = EXCLUDED.markdown_lift_bias,
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
                encoded.rows,
                encoded.model_version,
                *_ledger_values(metrics),
                message,
                gate_override,
            ),
        )
    return PUBLISHED


def _copy(cur: Cursor, table: sql.Composed, columns: tuple[str, ...], force_null: tuple[str, ...], rows: bytes) -> None:
    """COPYs CSV rows (from _write_csv) into the columns of a table."""
    cur.copy_expert(
        sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, FORCE_NULL ({}))")
        .format(
            table,
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(map(sql.Identifier, force_null)),
        )
        .as_string(cur),
        io.BytesIO(rows),
        size=_COPY_READ_BYTES,
    )


def _record_not_published(
    cur: Cursor,
    settings: ErpSettings,
    *,
    run_id: str,
    run_date: date,
    country: str,
    message: str,
    metrics: Mapping[str, float | None],
    status: str,
) -> None:
    """The ledger row of a country the run did not publish, inside the caller's transaction and country lock."""
    cur.execute(
        sql.SQL(
            """
            INSERT INTO {} AS ledger
                (run_id, country, run_date, status, rows, model_version,
                 model_wape, baseline_wape, model_bias, markdown_events, markdown_lift_error, markdown_lift_bias,
                 model_kind, fallback_reason, message, recorded_at)
            VALUES (%s, %s, %s, %s, NULL, NULL, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
            ON CONFLICT (run_id, country) DO UPDATE SET
                run_date = EXCLUDED.run_date, status = EXCLUDED.status, rows = NULL, model_version = NULL,
                model_wape = EXCLUDED.model_wape, baseline_wape = EXCLUDED.baseline_wape,
                model_bias = EXCLUDED.model_bias, markdown_events = EXCLUDED.markdown_events,
                markdown_lift_error = EXCLUDED.markdown_lift_error, markdown_lift_bias = EXCLUDED.markdown_lift_bias,
                model_kind = EXCLUDED.model_kind,
                fallback_reason = EXCLUDED.fallback_reason, message = EXCLUDED.message,
                recorded_at = EXCLUDED.recorded_at, gate_override = false
            WHERE ledger.status <> %s
            """
        ).format(tables.ledger(settings)),
        (run_id, country, run_date, status, *_ledger_values(metrics), message, PUBLISHED),
    )


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
    if status not in NOT_PUBLISHED_STATUSES:
        raise ValueError(f"a country that was not published is one of {NOT_PUBLISHED_STATUSES}, not {status!r}")
    with transaction(conn) as cur:
        lock(cur, "publish", settings.schema, country)
        _record_not_published(
            cur,
            settings,
            run_id=run_id,
            run_date=run_date,
            country=country,
            message=message,
            metrics=metrics,
            status=status,
        )
