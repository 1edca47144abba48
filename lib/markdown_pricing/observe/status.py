"""`markdown-pricing status`: the last runs in the ERP ledger, per country, as a terminal table or as JSON."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import pandas as pd
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from markdown_pricing.core.config import ErpSettings
from markdown_pricing.erp import ledger, tables
from markdown_pricing.erp.connection import connect_configured, running_dsn

# Statuses the writer knows come first; any other the ledger holds follows alphabetically, so a new one shows up.
KNOWN_STATUSES = (ledger.PUBLISHED, ledger.SUPERSEDED, ledger.BLOCKED, ledger.FAILED, ledger.MISSING_INPUT)
# Long messages (the quality gate's reasons) are cut in the table; --json has them whole.
MESSAGE_WIDTH = 100


@dataclass(frozen=True)
class CountryStatus:
    """One country's ledger row of a run."""

    country: str
    status: str
    rows: int | None
    recorded_at: dt.datetime
    gate_override: bool
    message: str | None


@dataclass(frozen=True)
class RunStatus:
    """One run in the ledger: its countries and when the last of them was recorded."""

    run_id: str
    run_date: dt.date
    recorded_at: dt.datetime
    countries: tuple[CountryStatus, ...]

    def counts(self) -> dict[str, int]:
        """Countries per status, known statuses first."""
        counts = Counter(country.status for country in self.countries)
        return {status: counts[status] for status in sorted(counts, key=_status_order)}


def _status_order(status: str) -> tuple[int, str]:
    return (KNOWN_STATUSES.index(status), "") if status in KNOWN_STATUSES else (len(KNOWN_STATUSES), status)


def recent_runs(conn: Connection, settings: ErpSettings, limit: int) -> list[RunStatus]:
    """The `limit` runs with the latest ledger writes, newest first; empty when there is no ledger yet."""
    ledger_table = tables.ledger(settings)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (ledger_table.as_string(conn),))
        if cur.fetchone()[0] is None:
            return []
        cur.execute(
            sql.SQL(
                """
                WITH recent AS (
                    SELECT run_id, max(recorded_at) AS last_recorded FROM {ledger}
                    GROUP BY run_id ORDER BY last_recorded DESC, run_id DESC LIMIT %s
                )
                SELECT l.run_id, l.run_date, recent.last_recorded, l.country, l.status, l.rows, l.recorded_at,
                       l.gate_override, l.message
                FROM {ledger} AS l JOIN recent USING (run_id)
                ORDER BY recent.last_recorded DESC, l.run_id DESC, l.country
                """
            ).format(ledger=ledger_table),
            (limit,),
        )
        found = cur.fetchall()
    runs: dict[str, tuple[dt.date, dt.datetime, list[CountryStatus]]] = {}
    for run_id, run_date, last_recorded, country, status, rows, recorded_at, gate_override, message in found:
        entry = runs.setdefault(run_id, (run_date, _utc(last_recorded), []))
        entry[2].append(CountryStatus(country, status, rows, _utc(recorded_at), bool(gate_override), message))
    return [RunStatus(run_id, date, last, tuple(countries)) for run_id, (date, last, countries) in runs.items()]


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.timezone.utc)


def _shorten(text: str | None, width: int = MESSAGE_WIDTH) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_status(runs: list[RunStatus]) -> str:
    """A table per run, newest first, readable in a terminal; times in UTC."""
    if not runs:
        return "no runs in the ledger yet"
    blocks = []
    for run in runs:
        counts = ", ".join(f"{status} {count}" for status, count in run.counts().items())
        lines = [
            f"run {run.run_id}  (run date {run.run_date.isoformat()}, last recorded "
            f"{run.recorded_at:%Y-%m-%d %H:%M:%S} UTC)  {counts}",
            f"  {'country':<8}{'status':<11}{'rows':>7}  {'recorded at (UTC)':<21}message",
        ]
        for country in run.countries:
            rows = "-" if country.rows is None else str(country.rows)
            lines.append(
                f"  {country.country:<8}{country.status:<11}{rows:>7}  {country.recorded_at:%Y-%m-%d %H:%M:%S}  "
                f"{_shorten(country.message)}".rstrip()
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def status_document(runs: list[RunStatus]) -> list[dict[str, Any]]:
    """The runs as JSON-ready dictionaries, newest first, times as ISO 8601 in UTC."""
    return [
        {
            "run_id": run.run_id,
            "run_date": run.run_date.isoformat(),
            "recorded_at": run.recorded_at.isoformat(),
            "counts": run.counts(),
            "countries": [
                {
                    "country": country.country,
                    "status": country.status,
                    "rows": country.rows,
                    "recorded_at": country.recorded_at.isoformat(),
                    "gate_override": country.gate_override,
                    "message": country.message,
                }
                for country in run.countries
            ],
        }
        for run in runs
    ]


ERROR_COLUMNS = ("run_id", "run_date", "country", "model_kind", "model_wape", "recent_average_wape", "same_price_wape")


def recent_errors(conn: Connection, settings: ErpSettings, limit: int) -> pd.DataFrame:
    """The last `limit` runs' backtest errors per country: model, both baselines and the model's kind."""
    metrics = tables.metrics(settings)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (metrics.as_string(conn),))
        if cur.fetchone()[0] is None:
            return pd.DataFrame(columns=list(ERROR_COLUMNS))
        cur.execute(
            sql.SQL(
                """
                WITH runs AS (
                    SELECT run_id, max(recorded_at) AS recorded_at FROM {metrics}
                    GROUP BY run_id ORDER BY recorded_at DESC LIMIT %s
                )
                SELECT m.run_id, m.run_date, m.country, max(m.model_kind) AS model_kind,
                       max(m.wape) FILTER (WHERE m.forecaster = 'model') AS model_wape,
                       max(m.wape) FILTER (WHERE m.forecaster = 'recent_average') AS recent_average_wape,
                       max(m.wape) FILTER (WHERE m.forecaster = 'same_price') AS same_price_wape
                FROM {metrics} m JOIN runs USING (run_id)
                GROUP BY m.run_id, m.run_date, m.country, runs.recorded_at
                ORDER BY runs.recorded_at DESC, m.country
                """
            ).format(metrics=metrics),
            (limit,),
        )
        columns = [column.name for column in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=columns)


def format_errors(errors: pd.DataFrame) -> str:
    """The runs' backtest WAPE per country: model, both baselines, and the model's gain on the better one."""
    if errors.empty:
        return "no runs with backtest metrics in the ERP yet"
    best = errors[["recent_average_wape", "same_price_wape"]].min(axis=1)
    shown = errors.assign(gain_vs_best_baseline=1 - errors["model_wape"] / best)
    return shown.to_string(index=False, float_format=lambda value: f"{value:.3f}", na_rep="-")


def read_only(settings: ErpSettings, work: str, read: Callable[[Connection], Any]) -> Any:
    """Runs `read` on the configured ERP (the running embedded one under `work` when none is), changing nothing."""
    with closing(connect_configured(running_dsn(settings, work), settings)) as conn:
        conn.set_session(readonly=True)
        found = read(conn)
        conn.rollback()
    return found


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"--limit must be at least 1, not {limit}")


def show_status(settings: ErpSettings, work: str, *, limit: int, as_json: bool) -> str:
    """The last `limit` runs of the ledger of the configured ERP (the embedded one under `work` when none is)."""
    _check_limit(limit)
    runs = read_only(settings, work, lambda conn: recent_runs(conn, settings, limit))
    return json.dumps(status_document(runs), indent=2) if as_json else format_status(runs)


def show_runs(settings: ErpSettings, work: str, *, limit: int, as_json: bool) -> str:
    """The last `limit` runs' backtest errors per country, from the metrics table."""
    _check_limit(limit)
    errors = read_only(settings, work, lambda conn: recent_errors(conn, settings, limit))
    if as_json:
        return errors.astype({"run_date": str}).to_json(orient="records", indent=2)
    return format_errors(errors)
