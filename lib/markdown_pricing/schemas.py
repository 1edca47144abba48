"""Spark schemas of the raw contract (CONTRACTS.md section 1) and of the datasets the stages exchange."""
from __future__ import annotations

from pyspark.sql import types as T

from markdown_pricing.backtest import FORECASTERS

RAW_DATASETS: dict[str, T.StructType] = {
    "articles": T.StructType(
        [
            T.StructField("article_id", T.StringType()),
            T.StructField("category", T.StringType()),
            T.StructField("season", T.StringType()),
            T.StructField("launch_date", T.DateType()),
            T.StructField("season_end", T.DateType()),
            T.StructField("original_price", T.DoubleType()),
        ]
    ),
    "sales": T.StructType(
        [
            T.StructField("country", T.StringType()),
            T.StructField("article_id", T.StringType()),
            T.StructField("sale_date", T.DateType()),
            T.StructField("units", T.LongType()),
            T.StructField("revenue", T.DoubleType()),
        ]
    ),
    "prices": T.StructType(
        [
            T.StructField("country", T.StringType()),
            T.StructField("article_id", T.StringType()),
            T.StructField("valid_from", T.DateType()),
            T.StructField("price", T.DoubleType()),
        ]
    ),
    "stock": T.StructType(
        [
            T.StructField("country", T.StringType()),
            T.StructField("article_id", T.StringType()),
            T.StructField("snapshot_date", T.DateType()),
            T.StructField("units_on_hand", T.LongType()),
        ]
    ),
}

# Physical Parquet types upstream may deliver for each contract type ("integer columns may arrive as int32 or int64").
ACCEPTED_RAW_TYPES: dict[T.DataType, tuple[T.DataType, ...]] = {
    T.StringType(): (T.StringType(),),
    T.DateType(): (T.DateType(),),
    T.DoubleType(): (T.DoubleType(), T.FloatType()),
    T.LongType(): (T.LongType(), T.IntegerType(), T.ShortType()),
}

QUARANTINE = T.StructType(
    [
        T.StructField("dataset", T.StringType(), False),
        T.StructField("reason", T.StringType(), False),
        T.StructField("row_json", T.StringType(), False),
    ]
)

# One row per (country, article, week): history weeks carry `units`; future weeks (is_future) have units null.
WEEKLY = T.StructType(
    [
        T.StructField("country", T.StringType(), False),
        T.StructField("article_id", T.StringType(), False),
        T.StructField("week_start", T.DateType(), False),
        T.StructField("is_future", T.BooleanType(), False),
        T.StructField("units", T.LongType()),
        T.StructField("stock_on_hand", T.LongType()),
        T.StructField("price", T.DoubleType()),
        T.StructField("original_price", T.DoubleType(), False),
        T.StructField("season_end", T.DateType(), False),
        T.StructField("category", T.StringType()),
        T.StructField("discount", T.DoubleType()),
        T.StructField("weeks_since_launch", T.IntegerType()),
        T.StructField("weeks_to_season_end", T.IntegerType()),
        T.StructField("article_popularity", T.DoubleType()),
    ]
)

# What the per-country function returns: one "prediction" row per active article and one "country" row
# per country (its status, metrics and model), so a country that fails still reports.
TRAIN_SCORE_OUTPUT = T.StructType(
    [
        T.StructField("record", T.StringType(), False),
        T.StructField("country", T.StringType(), False),
        T.StructField("article_id", T.StringType()),
        T.StructField("current_price", T.DoubleType()),
        T.StructField("current_discount", T.DoubleType()),
        T.StructField("recommended_discount", T.DoubleType()),
        T.StructField("recommended_price", T.DoubleType()),
        T.StructField("predicted_units_next_week", T.DoubleType()),
        T.StructField("expected_revenue", T.DoubleType()),
        T.StructField("expected_sell_through", T.DoubleType()),
        T.StructField("stock_on_hand", T.LongType()),
        T.StructField("status", T.StringType()),
        T.StructField("error", T.StringType()),
        # Which model scored the country ("country", "pooled" or "baseline") and, for the last two, why.
        T.StructField("model_kind", T.StringType()),
        T.StructField("fallback_reason", T.StringType()),
        T.StructField("train_rows", T.LongType()),
        # Rolling-origin backtest (backtest.summarize): every forecaster's WAPE, bias and revenue-weighted WAPE.
        T.StructField("backtest_rows", T.LongType()),
        T.StructField("backtest_origins", T.LongType()),
        *(
            T.StructField(f"{forecaster}_{measure}", T.DoubleType())
            for forecaster in FORECASTERS
            for measure in ("wape", "bias", "rwape")
        ),
        T.StructField("baseline", T.StringType()),
        T.StructField("baseline_wape", T.DoubleType()),
        T.StructField("fit_seconds", T.DoubleType()),
        T.StructField("score_seconds", T.DoubleType()),
        # Where the model trained ("cpu", "gpu:1", "cpu (gpu fallback: <why>)") and the GPU addresses Spark
        # gave the task, comma-separated.
        T.StructField("device", T.StringType()),
        T.StructField("task_gpus", T.StringType()),
        T.StructField("model_text", T.StringType()),
        # The model card (model.CountryResult.card) as JSON; the stage adds run, version and commit.
        T.StructField("card_json", T.StringType()),
    ]
)

PREDICTION_COLUMNS = (
    "country",
    "article_id",
    "current_price",
    "current_discount",
    "recommended_discount",
    "recommended_price",
    "predicted_units_next_week",
    "expected_revenue",
    "expected_sell_through",
    "stock_on_hand",
)

PREDICTIONS = T.StructType([field for field in TRAIN_SCORE_OUTPUT.fields if field.name in PREDICTION_COLUMNS])

# A country record's status and measurements: everything but the model and its card.
METRIC_COLUMNS = tuple(
    field.name
    for field in TRAIN_SCORE_OUTPUT.fields
    if field.name not in ("record", "model_text", "card_json") and field.name not in PREDICTION_COLUMNS[1:]
)
