"""Train-and-score stage: curated weekly rows -> one LightGBM model per country -> recommendations."""
from __future__ import annotations

import json
import logging

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from markdown_pricing.country_udf import train_score
from markdown_pricing.schemas import METRIC_COLUMNS, PREDICTION_COLUMNS
from markdown_pricing.stages import RunContext
from markdown_pricing.storage import filesystem, write_json

log = logging.getLogger(__name__)


def run(spark: SparkSession, ctx: RunContext) -> int:
    """Trains every country once, then splits the result into models, metrics and predictions."""
    layout = ctx.layout
    weekly = spark.read.parquet(layout.weekly)
    countries = sorted(row[0] for row in weekly.select("country").distinct().collect())
    spark.sparkContext.setJobGroup(f"train-score-{ctx.run_id}", f"train+score {len(countries)} countries")
    # Written once and read back: every later output comes from this one training pass.
    train_score(weekly, ctx.cfg.model, ctx.cfg.run).write.mode("overwrite").parquet(layout.train_score_output)
    output = spark.read.parquet(layout.train_score_output)

    spark.sparkContext.setJobDescription("train+score: save models and metrics")
    country_rows = output.where(F.col("record") == "country").select(*METRIC_COLUMNS, "model_text").collect()
    results = {}
    for row in country_rows:
        if row["model_text"]:
            filesystem(layout.model_file(row["country"])).write_text(layout.model_file(row["country"]), row["model_text"])
        results[row["country"]] = {column: row[column] for column in METRIC_COLUMNS}
        log.info("country result %s", json.dumps(results[row["country"]]))
    write_json(layout.country_results, results)
    output.where(F.col("record") == "country").select(*METRIC_COLUMNS).write.mode("overwrite").parquet(layout.metrics)

    spark.sparkContext.setJobDescription("train+score: write predictions")
    (
        output.where(F.col("record") == "prediction")
        .select(*PREDICTION_COLUMNS)
        .write.mode("overwrite")
        .partitionBy("country")
        .parquet(layout.predictions)
    )
    failed = sorted(country for country, result in results.items() if result["status"] != "trained")
    if failed:
        log.warning("countries that failed to train: %s", ", ".join(failed))
    return 0
