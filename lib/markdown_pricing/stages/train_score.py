"""Train-and-score stage: curated weekly rows -> one LightGBM model per country -> recommendations."""
from __future__ import annotations

import json
import logging
from functools import partial

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from markdown_pricing.country_udf import largest_first, train_score
from markdown_pricing.progress import StageProgress
from markdown_pricing.schemas import METRIC_COLUMNS, PREDICTION_COLUMNS
from markdown_pricing.spark import spark_job
from markdown_pricing.stages import RunContext
from markdown_pricing.storage import filesystem, write_json

log = logging.getLogger(__name__)


def run(spark: SparkSession, ctx: RunContext) -> int:
    """Trains every country once, then splits the result into models, metrics and predictions."""
    layout = ctx.layout
    job = partial(spark_job, spark, f"train-score-{ctx.run_id}")
    with job("train+score: find countries"):
        weekly = spark.read.parquet(layout.weekly)
        rows = {row["country"]: row["count"] for row in weekly.groupBy("country").count().collect()}
        countries = sorted(rows)
    # Spark starts tasks in this order: the largest countries first, so none of them is left to run alone at the end.
    order = largest_first(rows) if ctx.cfg.schedule.start_order == "largest_first" else countries
    tracker = StageProgress(layout, "train_score", total=len(countries))
    # Written once and read back: every later output comes from this one training pass.
    with job(f"train+score {len(countries)} countries"):
        watcher = tracker.watch_spark_tasks(spark.sparkContext, f"training {len(countries)} countries")
        scored = train_score(weekly, ctx.cfg.model, ctx.cfg.run, ctx.cfg.gpu.mode, order)
        scored.write.mode("overwrite").parquet(layout.train_score_output)
        watcher.stop()
    tracker.update("saving models, metrics and predictions", done=len(countries))

    with job("train+score: save models and metrics"):
        output = spark.read.parquet(layout.train_score_output)
        country_rows = output.where(F.col("record") == "country").select(*METRIC_COLUMNS, "model_text").collect()
        results = {}
        for row in country_rows:
            if row["model_text"]:
                model_file = layout.model_file(row["country"])
                filesystem(model_file).write_text(model_file, row["model_text"])
            results[row["country"]] = {column: row[column] for column in METRIC_COLUMNS}
            log.info("country result %s", json.dumps(results[row["country"]]))
            if "fallback" in (row["device"] or ""):
                log.warning("country %s trained on %s", row["country"], row["device"])
        write_json(layout.country_results, results)
        metrics = output.where(F.col("record") == "country").select(*METRIC_COLUMNS)
        metrics.write.mode("overwrite").parquet(layout.metrics)

    with job("train+score: write predictions"):
        (
            output.where(F.col("record") == "prediction")
            .select(*PREDICTION_COLUMNS)
            .write.mode("overwrite")
            .partitionBy("country")
            .parquet(layout.predictions)
        )
    failed = sorted(country for country, result in results.items() if result["status"] != "trained")
    tracker.update(f"{len(results) - len(failed)} trained, {len(failed)} failed")
    if failed:
        log.warning("countries that failed to train: %s", ", ".join(failed))
    return 0
