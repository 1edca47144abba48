"""Publish stage: each country's predictions into the ERP in one transaction, recorded in the ledger."""
from __future__ import annotations

import logging
from contextlib import closing
from typing import Any

import pandas as pd
import psycopg2
from pyspark.sql import SparkSession

from markdown_pricing import erp
from markdown_pricing.embedded_erp import resolve_dsn
from markdown_pricing.schemas import PREDICTIONS
from markdown_pricing.stages import RunContext
from markdown_pricing.storage import read_json

log = logging.getLogger(__name__)

PUBLISHED = ("published", "already_published")
LEDGER_METRICS = ("model_wape", "baseline_wape", "model_bias")


def model_version(ctx: RunContext, country: str) -> str:
    """Points at models/<run_id>/<country>/ under the work folder."""
    return f"{ctx.run_id}/{country}"


def not_publishable_because(result: dict[str, Any], rows: pd.DataFrame) -> str | None:
    """Why a country's result must not replace its ERP rows, or None when it may."""
    if result["status"] != "trained":
        return f"training failed: {result.get('error')}"
    if rows.empty:
        return "no active articles to recommend for: previous recommendations kept"
    return None


def run(spark: SparkSession, ctx: RunContext) -> int:
    """Publishes every trained country; returns non-zero when any country was not published."""
    results: dict[str, dict[str, Any]] = read_json(ctx.layout.country_results)
    if not results:
        log.error("no country reached the publish stage for run %s", ctx.run_id)
        return 1
    spark.sparkContext.setJobDescription(f"publish: read predictions of {len(results)} countries")
    predictions = spark.read.schema(PREDICTIONS).parquet(ctx.layout.predictions).toPandas()
    settings = ctx.cfg.erp
    outcomes: dict[str, str] = {}
    with closing(erp.connect(resolve_dsn(settings, ctx.cfg.paths.work), settings.connect_timeout_s)) as conn:
        erp.ensure_schema(conn, settings)
        for country, result in sorted(results.items()):
            metrics = {key: result.get(key) for key in LEDGER_METRICS}
            common = {"run_id": ctx.run_id, "run_date": ctx.run_date, "country": country, "metrics": metrics}
            rows = predictions[predictions["country"] == country]
            problem = not_publishable_because(result, rows)
            if problem is None:
                try:
                    outcomes[country] = erp.publish_country(
                        conn, settings, predictions=rows, model_version=model_version(ctx, country), **common
                    )
                except (ValueError, psycopg2.DataError, psycopg2.IntegrityError) as err:
                    problem = f"publish rejected: {err}"
            if problem is not None:
                erp.record_not_published(conn, settings, message=problem, **common)
                outcomes[country] = "failed"
            log.info("country %s: %s%s", country, outcomes[country], f" ({problem.splitlines()[0]})" if problem else "")
    not_published = sorted(country for country, outcome in outcomes.items() if outcome not in PUBLISHED)
    if not_published:
        log.error("not published (previous ERP rows kept): %s", ", ".join(not_published))
        return 1
    return 0
