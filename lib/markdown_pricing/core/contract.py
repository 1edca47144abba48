"""The names the stages agree on: raw datasets, prediction columns, forecasters and the ladder's rounding.

Plain Python, no Spark: the Luigi side, the model and the ERP writer read these, the Spark schemas are built from them.
"""

from __future__ import annotations

# The upstream exports of the raw landing zone (CONTRACTS.md section 1), each a folder with a _SUCCESS marker.
RAW_DATASET_NAMES = ("articles", "sales", "prices", "stock")

# The forecasters every backtest measures: the model and the two baselines it must beat.
BASELINES = ("recent_average", "same_price")
FORECASTERS = ("model", *BASELINES)
# Per forecaster: weighted absolute percentage error, bias, and WAPE weighted by revenue.
MEASURES = ("wape", "bias", "rwape")

# Which model gave a country's level: its own, the pooled fallback, or the same-price baseline.
MODEL_KINDS = ("country", "pooled", "baseline")

# One row per active article of a trained country that no rule excludes, as train+score writes them and publish
# reads them: the recommendation, what holding today's price would bring, and the rule that bound it (if any).
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
    "hold_expected_revenue",
    "gain_over_hold",
    "hold_sell_through",
    "weeks_to_season_end",
    "rule_applied",
)
# One row per (active article, candidate discount): the curve a recommendation was chosen from, each candidate with
# the rule that forbids it (if any). Articles a rule excludes keep theirs, marked "exclude", so that publish knows them.
CANDIDATE_COLUMNS = (
    "country",
    "article_id",
    "candidate_discount",
    "candidate_price",
    "predicted_units_next_week",
    "predicted_units_season",
    "expected_revenue",
    "expected_sell_through",
    "ruled_out_by",
    "chosen",
)
# The label a candidate of an excluded article carries in ruled_out_by.
EXCLUDED = "exclude"

# A price rounded to cents sits within half a cent of its ladder step: a current discount this close to a step is
# that step, so a recommendation may lie this far below the current discount without reversing a markdown.
LADDER_SNAP = 0.005
