"""The end-of-run summary: per country, rows in the ERP, model error against the best baseline, discount mix."""
from __future__ import annotations

from contextlib import closing
from typing import Any

from psycopg2 import sql

from markdown_pricing import erp
from markdown_pricing.embedded_erp import describe_dsn, psql_binary, resolve_dsn
from markdown_pricing.stages import RunContext
from markdown_pricing.storage import filesystem, read_json


def erp_rows(conn: Any, ctx: RunContext) -> dict[str, dict[float, int]]:
    """Per country, how many of the run's published rows recommend each discount."""
    settings = ctx.cfg.erp
    query = sql.SQL(
        "SELECT country, recommended_discount::float8, count(*) FROM {}.{} WHERE run_id = %s GROUP BY 1, 2"
    ).format(sql.Identifier(settings.schema), sql.Identifier(settings.predictions_table))
    mix: dict[str, dict[float, int]] = {}
    with conn.cursor() as cursor:
        cursor.execute(query, (ctx.run_id,))
        for country, discount, count in cursor.fetchall():
            mix.setdefault(country, {})[discount] = count
    return mix


def format_summary(results: dict[str, dict[str, Any]], ledger: dict[str, str], mix: dict[str, dict[float, int]]) -> str:
    """A fixed-width table, one line per country."""
    lines = [f"{'country':<8}{'status':<12}{'model':<10}{'rows':>7}{'model WAPE':>12}{'base WAPE':>12}  discount mix"]
    for country in sorted(results):
        result, counts = results[country], mix.get(country, {})
        total = sum(counts.values())
        shares = " ".join(f"{discount:.0%}:{count / total:.0%}" for discount, count in sorted(counts.items()))
        model_wape, baseline_wape = result.get("model_wape"), result.get("baseline_wape")
        lines.append(
            f"{country:<8}{ledger.get(country, result['status']):<12}{result.get('model_kind') or '-':<10}{total:>7}"
            f"{model_wape if model_wape is None else f'{model_wape:.3f}':>12}"
            f"{baseline_wape if baseline_wape is None else f'{baseline_wape:.3f}':>12}  {shares}"
        )
    return "\n".join(lines)


def print_run_summary(ctx: RunContext) -> None:
    """Prints the run's per-country summary and how to look at the ERP table."""
    uri = ctx.layout.country_results
    if not filesystem(uri).exists(uri):
        print(f"run {ctx.run_id}: no train-and-score results at {uri}")
        return
    settings = ctx.cfg.erp
    dsn = resolve_dsn(settings, ctx.cfg.paths.work)
    with closing(erp.connect(dsn, settings.connect_timeout_s)) as conn:
        erp.ensure_schema(conn, settings)
        ledger, mix = erp.ledger(conn, settings, ctx.run_id), erp_rows(conn, ctx)
    print(f"\nrun {ctx.run_id} (run date {ctx.run_date}):")
    print(format_summary(read_json(uri), ledger, mix))
    table = f"{settings.schema}.{settings.predictions_table}"
    query = f"SELECT * FROM {table} ORDER BY country, article_id LIMIT 20"
    print(f'\nLook at the table:  {psql_binary()} "{describe_dsn(dsn)}" -c "{query}"')
