"""One country's model: train LightGBM on weekly history, measure it, and recommend a markdown per article.

Plain pandas in, pandas out: no Spark here, so every step is unit-tested without a cluster.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from markdown_pricing.config import ModelParams, RunRules

FEATURES = (
    "discount",
    "weeks_since_launch",
    "week_of_year",
    "weeks_to_season_end",
    "article_popularity",
    "original_price",
    "category",
)
CATEGORICAL = ("category",)
# More discount may never predict fewer units.
MONOTONE = tuple(1 if feature == "discount" else 0 for feature in FEATURES)
LADDER_SNAP = 0.005  # a price rounded to cents sits within half a cent of its ladder step


@dataclass(frozen=True)
class CountryResult:
    predictions: pd.DataFrame
    metrics: dict[str, Any]
    model_text: str


def feature_frame(rows: pd.DataFrame, categories: list[str]) -> pd.DataFrame:
    """The model's inputs, with category codes fixed to the country's category list."""
    frame = rows.loc[:, list(FEATURES)].copy()
    for column in CATEGORICAL:
        frame[column] = pd.Categorical(frame[column], categories=categories)
    return frame.astype({c: "float64" for c in FEATURES if c not in CATEGORICAL})


def training_rows(weekly: pd.DataFrame) -> pd.DataFrame:
    """Past weeks that were in stock: a week without stock says nothing about demand."""
    history = weekly[~weekly["is_future"]]
    in_stock = history["stock_on_hand"].isna() | (history["stock_on_hand"] > 0)
    return history[in_stock].sort_values(["week_start", "article_id"], kind="stable")


def holdout_split(history: pd.DataFrame, holdout_weeks: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Splits off the last `holdout_weeks` weeks; popularity in the holdout is frozen at the cutoff."""
    weeks = np.sort(history["week_start"].unique())
    if len(weeks) <= holdout_weeks:
        raise ValueError(f"only {len(weeks)} weeks of history, need more than {holdout_weeks} to hold out")
    cutoff = weeks[-holdout_weeks]
    train = history[history["week_start"] < cutoff]
    holdout = history[history["week_start"] >= cutoff].sort_values(["article_id", "week_start"], kind="stable")
    frozen = holdout.groupby("article_id")["article_popularity"].transform("first")
    return train, holdout.assign(article_popularity=frozen)


def naive_forecast(train: pd.DataFrame, holdout: pd.DataFrame) -> pd.Series:
    """Each article's last observed weekly units, carried forward (0 for articles new in the holdout)."""
    last = train.sort_values("week_start", kind="stable").groupby("article_id")["units"].last()
    return holdout["article_id"].map(last).fillna(0.0).astype("float64")


def wape(actual: pd.Series, forecast: pd.Series) -> float:
    """Weighted absolute percentage error: sum |error| / sum actual."""
    return float(np.abs(forecast.to_numpy() - actual.to_numpy()).sum() / max(actual.sum(), 1.0))


def bias(actual: pd.Series, forecast: pd.Series) -> float:
    """Signed error relative to actual volume: positive means over-forecasting."""
    return float((forecast.to_numpy() - actual.to_numpy()).sum() / max(actual.sum(), 1.0))


def lightgbm_params(
    params: ModelParams, num_threads: int, device: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """LightGBM settings: count objective, deterministic, threads capped to the Spark task's CPUs, on `device`
    (gpu.device_settings; none: CPU)."""
    return {
        "objective": params.objective,
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "monotone_constraints": list(MONOTONE),
        "seed": params.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": num_threads,
        "verbose": -1,
        **(device or {}),
    }


def fit(
    rows: pd.DataFrame,
    categories: list[str],
    params: ModelParams,
    num_threads: int,
    device: Mapping[str, Any] | None = None,
) -> lgb.Booster:
    """Trains one booster on weekly units (returns clipped: the target is demand, not net sales)."""
    data = lgb.Dataset(
        feature_frame(rows, categories),
        label=rows["units"].clip(lower=0).astype("float64"),
        categorical_feature=list(CATEGORICAL),
        free_raw_data=True,
    )
    return lgb.train(lightgbm_params(params, num_threads, device), data, num_boost_round=params.num_boost_round)


def candidate_discounts(current: float, ladder: tuple[float, ...]) -> list[float]:
    """The current discount (snapped to the ladder when it sits on a step) and every step above it."""
    snapped = next((step for step in ladder if abs(step - current) <= LADDER_SNAP), round(current, 3))
    return [snapped, *(step for step in ladder if step > snapped + LADDER_SNAP)]


def candidate_weeks(future: pd.DataFrame, ladder: tuple[float, ...]) -> pd.DataFrame:
    """Future weeks of each active article repeated once per candidate discount."""
    per_article = future.groupby("article_id")["discount"].first()
    candidates = pd.DataFrame(
        [(article, step) for article, current in per_article.items() for step in candidate_discounts(current, ladder)],
        columns=["article_id", "candidate"],
    )
    expanded = future.merge(candidates, on="article_id", how="inner")
    return expanded.assign(current_discount=expanded["discount"], discount=expanded["candidate"])


def simulate_season(weeks: pd.DataFrame, salvage_value_share: float) -> pd.DataFrame:
    """Expected season revenue per (article, candidate).

    Each week sells min(predicted, remaining stock) at the candidate price; because the price is held,
    units sold over the season are min(sum of predictions, stock). Leftover stock earns the salvage value.
    """
    first_week = weeks["week_start"].min()
    grouped = weeks.groupby(["article_id", "candidate"], sort=True)
    season = grouped.agg(
        predicted_season_units=("predicted_units", "sum"),
        stock_on_hand=("stock_on_hand", "first"),
        original_price=("original_price", "first"),
        current_price=("price", "first"),
        current_discount=("current_discount", "first"),
    )
    season["predicted_units_next_week"] = (
        weeks[weeks["week_start"] == first_week].groupby(["article_id", "candidate"])["predicted_units"].sum()
    ).reindex(season.index, fill_value=0.0)
    stock = season["stock_on_hand"].astype("float64")
    sold = np.minimum(season["predicted_season_units"], stock)
    unit_price = season["original_price"] * (1 - season.index.get_level_values("candidate"))
    season["expected_revenue"] = sold * unit_price + (stock - sold) * season["original_price"] * salvage_value_share
    season["expected_sell_through"] = np.where(stock > 0, sold / stock.where(stock > 0, 1.0), 0.0)
    return season.reset_index()


def recommend(season: pd.DataFrame) -> pd.DataFrame:
    """Per article, the candidate with the highest expected revenue; ties go to the smaller discount."""
    best = season.sort_values(
        ["article_id", "expected_revenue", "candidate"], ascending=[True, False, True], kind="stable"
    ).drop_duplicates("article_id")
    return best.assign(
        recommended_discount=best["candidate"].round(3),
        recommended_price=(best["original_price"] * (1 - best["candidate"])).round(2),
    ).reset_index(drop=True)


def train_and_recommend(
    weekly: pd.DataFrame,
    params: ModelParams,
    rules: RunRules,
    num_threads: int,
    device: Mapping[str, Any] | None = None,
) -> CountryResult:
    """Holds out the last weeks to measure the model against the naive baseline, refits on all weeks,
    predicts every active article at every candidate discount and recommends the best markdown."""
    categories = sorted(weekly["category"].dropna().unique().tolist())
    history = training_rows(weekly)
    train, holdout = holdout_split(history, params.holdout_weeks)
    started = time.perf_counter()
    holdout_model = fit(train, categories, params, num_threads, device)
    holdout_forecast = pd.Series(holdout_model.predict(feature_frame(holdout, categories)), index=holdout.index)
    baseline_forecast = naive_forecast(train, holdout)
    booster = fit(history, categories, params, num_threads, device)
    fit_seconds = time.perf_counter() - started

    future = weekly[weekly["is_future"]]
    weeks = candidate_weeks(future, rules.ladder)
    weeks["predicted_units"] = booster.predict(feature_frame(weeks, categories)) if len(weeks) else []
    predictions = recommend(simulate_season(weeks, rules.salvage_value_share))
    predictions.insert(0, "country", weekly["country"].iloc[0])
    demand = holdout["units"].clip(lower=0)
    metrics = {
        "train_rows": len(history),
        "holdout_rows": len(holdout),
        "model_wape": wape(demand, holdout_forecast),
        "model_bias": bias(demand, holdout_forecast),
        "baseline_wape": wape(demand, baseline_forecast),
        "fit_seconds": fit_seconds,
    }
    return CountryResult(predictions=predictions, metrics=metrics, model_text=booster.model_to_string())
