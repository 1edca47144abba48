"""The pooled fallback: trained on a bounded sample beside the countries' tasks, then scoring each fallback country
in a task of its own."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from markdown_pricing.core.contract import PREDICTION_COLUMNS
from markdown_pricing.model.fallback import fit_pooled, score_fallback, train_pooled
from markdown_pricing.model.forecast import prepare, training_rows
from markdown_pricing.model.response import PriceResponse
from markdown_pricing.stages.per_country import (
    POOL,
    POOLED_RECORD,
    country_sizes,
    fallback_scores,
    largest_first,
    sample_shares,
    sampled_history,
    train_score,
    training_tasks,
    with_pool,
)
from test_model import PARAMS, RULES, elastic_world

RESPONSE = PriceResponse(2.0, {}, {})


def as_spark(spark: SparkSession, weekly: pd.DataFrame) -> DataFrame:
    return spark.createDataFrame(weekly.assign(week_start=pd.to_datetime(weekly["week_start"])))


def test_sample_shares_bound_the_pool_and_keep_small_countries_whole() -> None:
    rows = {"DEU": 1000, "FRA": 500, "LUX": 10}
    shares = sample_shares(rows, 400)
    # LUX keeps its 10 rows; the 390 left go half to each of the larger two.
    assert shares == pytest.approx({"LUX": 1.0, "FRA": 195 / 500, "DEU": 195 / 1000})
    assert sum(rows[c] * shares[c] for c in rows) == pytest.approx(400)
    assert sample_shares(rows, 2000) == {"DEU": 1.0, "FRA": 1.0, "LUX": 1.0}
    assert sample_shares({"NEW": 0, "DEU": 1000}, 100) == {"NEW": 1.0, "DEU": pytest.approx(0.1)}


def test_the_pool_samples_whole_past_articles_at_each_countrys_share(spark: SparkSession) -> None:
    weekly = pd.concat(
        [
            elastic_world(seed=1, articles=600, weeks=3),
            elastic_world(seed=2, articles=20, weeks=3).assign(country="LUX"),
        ]
    )
    shares = {"DEU": 0.25, "LUX": 1.0}
    sample = as_spark(spark, weekly).where(sampled_history(shares)).toPandas()
    assert not sample["is_future"].any()
    weeks_per_article = sample.groupby(["country", "article_id"]).size()
    assert (weeks_per_article == 3).all()
    kept = weeks_per_article.groupby("country").size()
    assert kept["LUX"] == 20
    assert 0.2 * 600 < kept["DEU"] < 0.3 * 600
    # The same articles every time: the hash of their key, not a random draw.
    again = as_spark(spark, weekly).where(sampled_history(shares)).select("country", "article_id").distinct()
    kept_articles = spark.createDataFrame(weeks_per_article.index.to_frame(index=False))
    assert_df_equality(again, kept_articles, ignore_row_order=True, ignore_nullable=True)


def test_the_pooled_model_trains_beside_the_countries_and_scores_the_fallback_one(spark: SparkSession) -> None:
    # A shop opened two weeks ago: too little history of its own, so the pooled model scores it.
    small = elastic_world(seed=5, articles=10, weeks=2).assign(country="LUX")
    pandas_weekly = pd.concat([elastic_world(seed=1), small], ignore_index=True)
    weekly = as_spark(spark, pandas_weekly)
    rows = {"DEU": int((pandas_weekly["country"] == "DEU").sum()), "LUX": len(small)}
    shares, tasks = with_pool(rows, PARAMS.pooled_max_rows)
    order = largest_first(tasks)
    output = train_score(weekly, PARAMS, RULES, order=order, response=RESPONSE, pool_shares=shares)
    records = output.where(F.col("record").isin("country", POOLED_RECORD)).toPandas().set_index("country")
    assert records.loc["DEU", "status"] == "trained" and records.loc["LUX", "status"] == "needs_fallback"
    pooled = output.where(F.col("record") == POOLED_RECORD).collect()
    assert len(pooled) == 1 and pooled[0]["status"] == "trained" and pooled[0]["model_text"]
    # A sampled row goes to its country's task and to the pool's: DEU saw every one of its rows, the pool its sample.
    assert json.loads(records.loc["DEU", "card_json"])["rows"]["input"] == rows["DEU"]
    sample = prepare(weekly.where(sampled_history(shares)).toPandas())
    assert set(sample["country"]) == {"DEU", "LUX"}
    assert json.loads(pooled[0]["card_json"])["training_rows"] == len(training_rows(sample, PARAMS))
    # Each task's whole function, from its rows as pandas to its records, takes at least the fit and score it records.
    deu = records.loc["DEU"]
    assert deu["function_seconds"] >= deu["fit_seconds"] + deu["score_seconds"]
    assert pooled[0]["function_seconds"] >= pooled[0]["fit_seconds"]
    assert output.where((F.col("record") == "prediction") & (F.col("country") == POOL)).count() == 0

    fallback = {"LUX": records.loc["LUX", "fallback_reason"]}
    scored = fallback_scores(weekly, fallback, order, pooled[0], PARAMS, RULES, RESPONSE).toPandas()
    record = scored[scored["record"] == "country"].set_index("country").loc["LUX"]
    assert (record["status"], record["model_kind"]) == ("trained", "pooled")
    assert record["train_rows"] > 0
    predicted = scored[scored["record"] == "prediction"]
    assert sorted(predicted["article_id"]) == sorted(small["article_id"].unique())
    # What one process gives with the whole pool: the same country, model kind and articles.
    [alone] = train_pooled(pandas_weekly, fallback, PARAMS, RULES, num_threads=1, response=RESPONSE)
    assert alone.metrics["model_kind"] == "pooled"
    assert sorted(alone.predictions["article_id"]) == sorted(predicted["article_id"])


def test_a_country_too_new_to_train_is_scored_in_the_pools_task_as_the_fallback_pass_would(spark: SparkSession) -> None:
    small = elastic_world(seed=5, articles=10, weeks=2).assign(country="LUX")
    pandas_weekly = pd.concat([elastic_world(seed=1), small], ignore_index=True)
    # A week with no stock is no week of history to train on.
    pandas_weekly.loc[
        (pandas_weekly["country"] == "LUX") & (pandas_weekly["week_start"] == small["week_start"].min()),
        "stock_on_hand",
    ] = 0
    weekly = as_spark(spark, pandas_weekly)
    rows, weeks = country_sizes(weekly)
    shares, tasks, too_new = training_tasks(rows, weeks, PARAMS)
    assert too_new == {"LUX": f"1 weeks of in-stock history, fewer than min_history_weeks = {PARAMS.min_history_weeks}"}
    assert set(tasks) == {"DEU", POOL} and tasks[POOL] > rows["LUX"]
    output = train_score(
        weekly, PARAMS, RULES, order=largest_first(tasks), response=RESPONSE, pool_shares=shares, too_new=too_new
    )
    records = output.where(F.col("record") == "country").toPandas().set_index("country")
    # The weeks counted before training are the ones the country's own training window has.
    assert json.loads(records.loc["DEU", "card_json"])["training_window"]["weeks"] == weeks["DEU"] == 30
    lux = records.loc["LUX"]
    assert (lux["status"], lux["model_kind"]) == ("trained", "pooled")
    assert lux["fallback_reason"].startswith(too_new["LUX"] + "; ")
    # The pooled model trained on its sample alone, not on the rows it was given to score.
    [pooled] = output.where(F.col("record") == POOLED_RECORD).collect()
    sample = prepare(weekly.where(sampled_history(shares)).toPandas())
    assert json.loads(pooled["card_json"])["training_rows"] == len(training_rows(sample, PARAMS))
    assert pooled["status"] == "trained" and lux["function_seconds"] >= lux["score_seconds"] > 0
    # The same recommendations the pass after every country gives with the same pooled model.
    after = fallback_scores(weekly, too_new, ["LUX"], pooled, PARAMS, RULES, RESPONSE)
    predictions = list(PREDICTION_COLUMNS)
    assert_df_equality(
        output.where((F.col("record") == "prediction") & (F.col("country") == "LUX")).select(*predictions),
        after.where(F.col("record") == "prediction").select(*predictions),
        ignore_row_order=True,
    )


def test_a_failed_pooled_model_leaves_a_fallback_country_its_baselines_level_and_the_shared_response() -> None:
    tiny = elastic_world(seed=5, articles=10, weeks=2).assign(country="LUX")
    tiny.loc[tiny["is_future"], "stock_on_hand"] = 5_000
    result = score_fallback(
        tiny, "too little history", None, PARAMS, RULES, PriceResponse(2.5, {}, {}), pooled_failure="MemoryError: x"
    )
    assert result.metrics["status"] == "trained" and result.metrics["model_kind"] == "baseline"
    assert result.metrics["fallback_reason"] == (
        "too little history; the pooled model failed (MemoryError: x), so the baseline's level scores it"
    )
    assert result.model_text is None
    # Overstocked: the shared response still says a markdown sells them.
    assert (result.predictions["recommended_discount"] > result.predictions["current_discount"]).any()


def test_a_shop_too_new_for_the_backtest_to_judge_is_scored_by_the_pooled_model() -> None:
    small = elastic_world(seed=5, articles=10, weeks=2).assign(country="LUX")
    both = pd.concat([elastic_world(seed=1), small], ignore_index=True)
    pooled = fit_pooled(both[~both["is_future"]], PARAMS, num_threads=1, countries=["LUX"])
    # Whatever its backtest measured in LUX, it measured weeks before the model knew anything of LUX.
    measured = {"model_wape": 0.9, "baseline_wape": 0.5, "baseline": "recent_average", "by_origin": []}
    losing = dataclasses.replace(pooled, backtests={"LUX": measured})
    result = score_fallback(small, "too little history", losing, PARAMS, RULES, RESPONSE)
    assert result.metrics["model_kind"] == "pooled" and result.model_text == pooled.model_text
    assert result.metrics["fallback_reason"] == (
        "too little history; its 2 weeks are no more than the backtest's span (12), which cannot judge its level, "
        "so the pooled model scores it"
    )
    assert result.metrics.get("model_wape") is None
    assert result.card["markdown_margin"] == PARAMS.price_response.margin_per_wape
