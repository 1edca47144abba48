"""The end-of-run summary: per country, rows in the ERP, model error against the best baseline, discount mix."""

from __future__ import annotations

from contextlib import closing
from typing import Any

from psycopg2 import sql

from markdown_pricing.core.config import ErpSettings
from markdown_pricing.core.context import RunContext
from markdown_pricing.core.results import CountryResults, read_country_results
from markdown_pricing.core.storage import filesystem
from markdown_pricing.erp import ledger, tables
from markdown_pricing.erp.connection import ErpUnavailableError, connect, describe_dsn, running_dsn
from markdown_pricing.erp.embedded import psql_binary


def erp_rows(conn: Any, settings: ErpSettings, run_id: str) -> dict[str, dict[float, int]]:
    """Per country, how many of the run's published rows recommend each discount."""
    mix: dict[str, dict[float, int]] = {}
    query = sql.SQL(
        "SELECT country, recommended_discount::float8, count(*) FROM {} WHERE run_id = %s GROUP BY 1, 2"
    ).format(tables.predictions(settings))
    with conn.cursor() as cursor:
        cursor.execute(query, (run_id,))
        for country, discount, count in cursor.fetchall():
            mix.setdefault(country, {})[discount] = count
    conn.rollback()
    return mix


def format_summary(results: dict[str, dict[str, Any]], ledger: dict[str, str], mix: dict[str, dict[float, int]]) -> str:
    """A fixed-width table, one line per country."""
    lines = [f"{'country':<8}{'status':<12}{'model':<10}{'rows':>7}{'model WAPE':>12}{'base WAPE':>12}  discount mix"]
    # A country in the ledger alone was missing from the run's input.
    for country in sorted(set(results) | set(ledger)):
        result, counts = results.get(country) or {"status": ledger[country]}, mix.get(country, {})
        total = sum(counts.values())
        shares = " ".join(f"{discount:.0%}:{count / total:.0%}" for discount, count in sorted(counts.items()))
        model_wape, baseline_wape = result.get("model_wape"), result.get("baseline_wape")
        lines.append(
            f"{country:<8}{ledger.get(country, result['status']):<12}{result.get('model_kind') or '-':<10}{total:>7}"
            f"{'-' if model_wape is None else f'{model_wape:.3f}':>12}"
            f"{'-' if baseline_wape is None else f'{baseline_wape:.3f}':>12}  {shares}"
        )
    return "\n".join(lines)


def print_run_summary(ctx: RunContext, settings: ErpSettings) -> None:
    """Prints the run's per-country summary and how to look at the ERP table; reads only, starts nothing."""
    uri = ctx.layout.country_results
    if not filesystem(uri).exists(uri):
        print(f"run {ctx.run_id}: no train-and-score results at {uri}")
        return
    results: CountryResults = read_country_results(uri)
    try:
        dsn = running_dsn(settings, ctx.work)
        with closing(connect(dsn, settings.connect_timeout_s)) as conn:
            conn.set_session(readonly=True)
            statuses = ledger.run_statuses(conn, settings, ctx.run_id)
            # No ledger rows: the run published nothing, or the tables do not exist yet (before the first migrate).
            mix = erp_rows(conn, settings, ctx.run_id) if statuses else {}
    except ErpUnavailableError as err:
        print(f"\nrun {ctx.run_id}: ERP not read ({err})")
        statuses, mix, dsn = {}, {}, None
    print(f"\nrun {ctx.run_id} (run date {ctx.run_date}):")
    print(format_summary(results, statuses, mix))
    if dsn is not None:
        query = f"SELECT * FROM {settings.schema}.{settings.predictions_table} ORDER BY country, article_id LIMIT 20"
        print(f'\nLook at the table:  {psql_binary()} "{describe_dsn(dsn)}" -c "{query}"')
