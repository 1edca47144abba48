"""Train-and-score stage: curated weekly rows -> one LightGBM model per country -> recommendations.

A country with too little history is scored by the pooled model in the pool's own task; one whose own model loses to
its baseline gets a second, pooled pass. With `--model-run RUN_ID` the stage trains nothing: it rescores with that
run's saved models and cards.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from contextlib import closing
from functools import partial
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from markdown_pricing.core.config import Config
from markdown_pricing.core.context import RunContext
from markdown_pricing.core.contract import CANDIDATE_COLUMNS, PREDICTION_COLUMNS
from markdown_pricing.core.results import METRIC_COLUMNS, MODEL_VERSION, TRAINED, write_country_results
from markdown_pricing.core.session import spark_job
from markdown_pricing.core.storage import RunLayout, filesystem, read_json, write_json
from markdown_pricing.core.version import git_commit, package_version
from markdown_pricing.erp.connection import connect_configured, start_dsn
from markdown_pricing.erp.rules import rules_in_force
from markdown_pricing.model.response import PriceResponse
from markdown_pricing.observe.progress import StageProgress
from markdown_pricing.observe.spark_watch import watch_spark_tasks
from markdown_pricing.stages.per_country import (
    POOLED_RECORD,
    BuyerRules,
    SavedModels,
    country_sizes,
    fallback_scores,
    largest_first,
    response_statistics,
    sample_shares,
    samples_any,
    train_score,
    training_tasks,
)

log = logging.getLogger(__name__)


def load_saved_models(layout: RunLayout, model_run: str, countries: list[str]) -> SavedModels:
    """Each country's model text and card saved by `model_run` (a country without a card is left out)."""
    saved = {}
    for country in countries:
        card_uri = layout.model_card(country, model_run)
        fs = filesystem(card_uri)
        if not fs.exists(card_uri):
            continue
        card = read_json(card_uri)
        model_uri = layout.model_file(country, model_run)
        saved[country] = (fs.read_text(model_uri) if card.get("model_file") else None, card)
    return saved


def country_line(run_id: str, result: dict[str, Any]) -> str:
    """One JSON line per country on stdout, for any log collector: the run, the model used and its errors."""
    return json.dumps({"event": "country_result", "run_id": run_id, **result}, default=str, sort_keys=True)


def save_model(layout: RunLayout, row: Any, provenance: dict[str, Any]) -> None:
    """models/<run_id>/<country>/: model.txt (none for a baseline) and card.json with where it came from."""
    country = row["country"]
    card = json.loads(row["card_json"]) if row["card_json"] else {"country": country}
    card |= provenance | {"model_file": "model.txt" if row["model_text"] else None, "device": row["device"]}
    card["metrics"] = {column: row[column] for column in METRIC_COLUMNS if column != "country"}
    if row["model_text"]:
        model_file = layout.model_file(country)
        filesystem(model_file).write_text(model_file, row["model_text"])
    write_json(layout.model_card(country), card)


def read_buyer_rules(ctx: RunContext, cfg: Config, countries: list[str]) -> BuyerRules:
    """The buyers' rules in force at the run date (markdown.article_rules), by country; reads only."""
    settings = cfg.erp
    with closing(connect_configured(start_dsn(settings, cfg.paths.work), settings)) as conn:
        conn.set_session(readonly=True)
        rules = rules_in_force(conn, settings, ctx.run_date)
    elsewhere = sorted(set(rules["country"]) - set(countries))
    if elsewhere:
        # Reported, not dropped in silence: a rule for a country the run does not have may be a typo.
        log.warning("buyer rules name countries that are not in this run, not applied: %s", ", ".join(elsewhere))
    log.info(
        "%d buyer rules in force at %s for this run's countries", rules["country"].isin(countries).sum(), ctx.run_date
    )
    return {
        str(country): group.reset_index(drop=True)
        for country, group in rules.groupby("country")
        if country in countries
    }


def _scored(
    spark: SparkSession,
    ctx: RunContext,
    cfg: Config,
    weekly: DataFrame,
    sizes: tuple[dict[str, int], dict[str, int]],
    tracker: StageProgress,
    buyer_rules: BuyerRules,
) -> DataFrame:
    """Trains (or rescores) every country once, the pooled model beside them on a bounded sample of every
    country's history, its task then scoring the countries too new to train; the countries whose own model lost
    are then scored by it and replace their country records."""
    rows, weeks = sizes
    layout = ctx.layout
    countries = sorted(rows)
    job = partial(spark_job, spark, f"train-score-{ctx.run_id}")
    saved = load_saved_models(layout, ctx.model_run, countries) if ctx.model_run else None
    settings = cfg.model.price_response
    sampled = sample_shares(rows, settings.max_rows)
    with job("train+score: price response from past markdowns"):
        statistics = response_statistics(weekly, settings.event_window_weeks, sampled).toPandas()
    response = PriceResponse.estimate(statistics, settings.max_elasticity, settings.beyond_deepest)
    log.info(
        "price response from %d markdown events in %d countries (%s) on the %s curve (squared log lift errors: %s): "
        "elasticity %.2f overall, by category %s; countries differ by %.2f (standard deviation of their true "
        "offsets); yearly cycle of log demand: %s",
        statistics["events"].sum(),
        statistics["country"].nunique(),
        f"articles sampled to model.price_response.max_rows = {settings.max_rows:,} weekly rows"
        if samples_any(sampled)
        else "every article",
        response.curve,
        ", ".join(f"{curve} {misfit:.2f}" for curve, misfit in response.curve_misfits.items()),
        response.overall,
        ", ".join(f"{category} {value:.2f}" for category, value in sorted(response.by_category.items())),
        response.country_spread**0.5,
        f"amplitude {response.season_amplitude():.3f}, peak on day {response.season_peak_day():.0f} of the year"
        if response.season_amplitude()
        else "none shown beyond noise",
    )
    # A rescore trains nothing: its fallback countries have the pooled model their model run saved.
    shares, tasks, too_new = None, dict(rows), {}
    if saved is None:
        shares, tasks, too_new = training_tasks(rows, weeks, cfg.model)
    # Spark starts tasks in this order: the largest first, so none of them is left to run alone at the end.
    order = largest_first(tasks) if cfg.schedule.start_order == "largest_first" else sorted(tasks)
    # Written once and read back: every later output comes from this one training pass. A folder per record, so
    # each later read opens only its own files (the countries' few records, or the predictions, or the candidates).
    with job(f"train+score {len(countries)} countries"):
        watcher = watch_spark_tasks(tracker, spark.sparkContext, f"training {len(countries)} countries")
        scored = train_score(
            weekly, cfg.model, cfg.run, cfg.gpu.mode, order, saved, buyer_rules, response, shares, too_new
        )
        scored.write.mode("overwrite").partitionBy("record").parquet(layout.train_score_output)
        watcher.stop()
    output = spark.read.parquet(layout.train_score_output)
    pending = output.where(
        ((F.col("record") == "country") & (F.col("status") == "needs_fallback")) | (F.col("record") == POOLED_RECORD)
    ).collect()
    pooled = next((row for row in pending if row["record"] == POOLED_RECORD), None)
    if pooled is not None and pooled["status"] == "failed":
        log.warning("the pooled model failed; fallback countries take their baselines' level: %s", pooled["error"])
    elif pooled is not None:
        log.info(
            "pooled model trained in %.1f s on %d training rows of its sample",
            pooled["fit_seconds"],
            json.loads(pooled["card_json"])["training_rows"],
        )
    if too_new:
        log.info("the pooled model's task scored the countries too new to train: %s", ", ".join(sorted(too_new)))
    fallback = {row["country"]: row["fallback_reason"] for row in pending if row["record"] == "country"}
    output = output.where(F.col("record") != POOLED_RECORD)
    if not fallback:
        return output
    with job(f"train+score: pooled model scores {', '.join(sorted(fallback))}"):
        tracker.update(f"pooled model scores {len(fallback)} fallback countries")
        scores = fallback_scores(weekly, fallback, order, pooled, cfg.model, cfg.run, response, buyer_rules)
        scores.write.mode("overwrite").parquet(layout.pooled_output)
    return output.where(~F.col("country").isin(list(fallback))).unionByName(spark.read.parquet(layout.pooled_output))


def run(spark: SparkSession, ctx: RunContext, cfg: Config) -> int:
    """Trains every country, then splits the result into models and cards, metrics and predictions."""
    layout = ctx.layout
    job = partial(spark_job, spark, f"train-score-{ctx.run_id}")
    with job("train+score: find countries"):
        weekly = spark.read.parquet(layout.weekly)
        sizes = country_sizes(weekly)
    countries = sorted(sizes[0])
    tracker = StageProgress(layout, "train_score", total=len(countries))
    output = _scored(spark, ctx, cfg, weekly, sizes, tracker, read_buyer_rules(ctx, cfg, countries))
    tracker.update("saving models, metrics and predictions", done=len(countries))

    with job("train+score: save models and metrics"):
        country_rows = output.where(F.col("record") == "country").select(*METRIC_COLUMNS, "model_text", "card_json")
        provenance = {
            "run_id": ctx.run_id,
            "run_date": ctx.run_date.isoformat(),
            "package_version": package_version(),
            "git_commit": git_commit(cfg.project_root),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        }
        results = {}
        # One partition at a time: the driver never holds every country's model text at once.
        for row in country_rows.toLocalIterator():
            country = row["country"]
            results[country] = {column: row[column] for column in METRIC_COLUMNS}
            if row["status"] == TRAINED:
                # A rescore publishes against the models it used; they stay where their run saved them.
                results[country][MODEL_VERSION] = f"{ctx.model_run or ctx.run_id}/{country}"
                if not ctx.model_run:
                    save_model(layout, row, provenance)
            print(country_line(ctx.run_id, results[country]), file=sys.stdout, flush=True)
            if "fallback" in (row["device"] or ""):
                log.warning("country %s trained on %s", country, row["device"])
            for problem in (row["rule_problems"] or "").splitlines():
                log.warning("country %s, buyer rules: %s", country, problem)
        write_country_results(layout.country_results, results)

    with job("train+score: write predictions"):
        (
            output.where(F.col("record") == "prediction")
            .select(*PREDICTION_COLUMNS)
            .write.mode("overwrite")
            .partitionBy("country")
            .parquet(layout.predictions)
        )
    with job("train+score: write candidates"):
        (
            output.where(F.col("record") == "candidate")
            .select(*CANDIDATE_COLUMNS)
            .write.mode("overwrite")
            .partitionBy("country")
            .parquet(layout.candidates)
        )
    failed = sorted(country for country, result in results.items() if result["status"] != TRAINED)
    fallback = sorted(c for c, result in results.items() if result["model_kind"] in ("pooled", "baseline"))
    tracker.update(f"{len(results) - len(failed)} trained ({len(fallback)} by a fallback), {len(failed)} failed")
    for country in fallback:
        log.warning(
            "country %s scored by the %s fallback: %s",
            country,
            results[country]["model_kind"],
            results[country]["fallback_reason"],
        )
    if failed:
        log.warning("countries that failed to train: %s", ", ".join(failed))
    return 0
