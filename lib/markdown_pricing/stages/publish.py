"""Publish stage: each country's predictions into the ERP in one transaction, recorded in the ledger."""
from __future__ import annotations

import logging
from contextlib import closing
from typing import Any

from pyspark.sql import SparkSession

from markdown_pricing import erp
from markdown_pricing.embedded_erp import resolve_dsn
from markdown_pricing.stages import RunContext
from markdown_pricing.storage import read_json

log = logging.getLogger(__name__)

PUBLISHED = ("published", "already_published")
LEDGER_METRICS = ("model_wape", "baseline_wape", "model_bias")


def model_version(ctx: RunContext, country: str) -> str:
    """Points at models/<run_id>/<country>/ under the work folder."""
    return f"{ctx.run_id}/{country}"


def run(spark: SparkSession, ctx: RunContext) -> int:
    """Publishes every trained country; returns non-zero when any country was not published."""
    results: dict[str, dict[str, Any]] = read_json(ctx.layout.country_results)
    if not results:
        log.error("no country reached the publish stage for run %s", ctx.run_id)
        return 1
    spark.sparkContext.setJobDescription(f"publish: read predictions of {len(results)} countries")
    predictions = spark.read.parquet(ctx.layout.predictions).toPandas()
    settings = ctx.cfg.erp
    outcomes: dict[str, str] = {}
    with closing(erp.connect(resolve_dsn(settings, ctx.cfg.paths.work), settings.connect_timeout_s)) as conn:
        erp.ensure_schema(conn, settings)
        for country, result in sorted(results.items()):
            metrics = {key: result.get(key) for key in LEDGER_METRICS}
            common = {"run_id": ctx.run_id, "run_date": ctx.run_date, "country": country, "metrics": metrics}
            if result["status"] == "trained":
                outcomes[country] = erp.publish_country(
                    conn,
                    settings,
                    predictions=predictions[predictions["country"] == country],
                    model_version=model_version(ctx, country),
                    **common,
                )
            else:
                erp.record_not_published(conn, settings, message=str(result.get("error")), **common)
                outcomes[country] = result["status"]
            log.info("country %s: %s", country, outcomes[country])
    not_published = sorted(country for country, outcome in outcomes.items() if outcome not in PUBLISHED)
    if not_published:
        log.error("not published (previous ERP rows kept): %s", ", ".join(not_published))
        return 1
    return 0
