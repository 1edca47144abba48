"""Spark schemas of the raw contract (CONTRACTS.md section 1) and of the datasets the stages exchange."""

from __future__ import annotations

from pyspark.sql import types as T

from markdown_pricing.core.contract import CANDIDATE_COLUMNS, PREDICTION_COLUMNS
from markdown_pricing.core.drift import PROFILE_FIELDS
from markdown_pricing.core.results import RESULT_FIELDS

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
        T.StructField("article_popularity_everywhere", T.DoubleType()),
    ]
)

# A country record's fields as Spark types (core.results names them and their Python types).
_SPARK_TYPES: dict[type, T.DataType] = {str: T.StringType(), int: T.LongType(), float: T.DoubleType()}

# One row per country: its input measures of the week before the run date (core.drift names them and their types).
INPUT_PROFILE = T.StructType(
    [
        T.StructField("country", T.StringType(), False),
        *(T.StructField(name, _SPARK_TYPES[kind]) for name, kind in PROFILE_FIELDS.items()),
    ]
)

# Columns that are not doubles; every other prediction and candidate column is.
_COLUMN_TYPES: dict[str, T.DataType] = {
    "country": T.StringType(),
    "article_id": T.StringType(),
    "stock_on_hand": T.LongType(),
    "weeks_to_season_end": T.LongType(),
    "rule_applied": T.StringType(),
    "ruled_out_by": T.StringType(),
    "chosen": T.BooleanType(),
}


def _columns(names: tuple[str, ...]) -> T.StructType:
    return T.StructType(
        [T.StructField(name, _COLUMN_TYPES.get(name, T.DoubleType()), name != "country") for name in names]
    )


PREDICTIONS = _columns(PREDICTION_COLUMNS)
CANDIDATES = _columns(CANDIDATE_COLUMNS)

# What the per-country function returns: one "prediction" row per recommended article, one "candidate" row per
# (article, candidate discount) and one "country" row per country (its status, metrics and model), so a country that
# fails still reports.
TRAIN_SCORE_OUTPUT = T.StructType(
    [
        T.StructField("record", T.StringType(), False),
        *PREDICTIONS.fields,
        *(field for field in CANDIDATES.fields if field.name not in PREDICTION_COLUMNS),
        *(T.StructField(name, _SPARK_TYPES[kind]) for name, kind in RESULT_FIELDS.items() if name != "country"),
        T.StructField("model_text", T.StringType()),
        # The model card (model.country.CountryResult.card) as JSON; the stage adds run, version and commit.
        T.StructField("card_json", T.StringType()),
    ]
)
