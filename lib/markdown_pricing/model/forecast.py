"""Demand forecasting: weekly units per article from LightGBM on weekly history, its features and its tuning.

Plain pandas in, pandas out: no Spark here, so every step is unit-tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from markdown_pricing.core.config import ModelParams
from markdown_pricing.model import backtest

FEATURES = (
    "discount",
    "weeks_since_launch",
    "weeks_to_season_end",
    "article_popularity",
    "article_popularity_everywhere",
    "original_price",
    "category",
    "weeks_ahead",
)
# The pooled model learns from every country at once; the country tells their levels apart.
POOLED_FEATURES = (*FEATURES, "country")
CATEGORICAL = ("category", "country")


@dataclass(frozen=True)
class Encoding:
    """A model's features and the categories of its categorical features, in the order it was trained with."""

    features: tuple[str, ...]
    categories: Mapping[str, list[str]]

    @classmethod
    def of(cls, rows: pd.DataFrame, features: tuple[str, ...]) -> Encoding:
        return cls(features, {c: sorted(rows[c].dropna().unique().tolist()) for c in features if c in CATEGORICAL})

    def as_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "categories": dict(self.categories)}


def prepare(weekly: pd.DataFrame) -> pd.DataFrame:
    """Arrow hands dates over as Python objects; week arithmetic wants datetime64."""
    return weekly.assign(week_start=pd.to_datetime(weekly["week_start"]), country=weekly["country"].astype(str))


def feature_frame(rows: pd.DataFrame, encoding: Encoding) -> pd.DataFrame:
    """The model's inputs, with category codes fixed to the encoding's category lists."""
    frame = rows.loc[:, list(encoding.features)].copy()
    for column, categories in encoding.categories.items():
        frame[column] = pd.Categorical(frame[column], categories=categories)
    return frame.astype({c: "float64" for c in encoding.features if c not in encoding.categories})


def lightgbm_params(
    params: ModelParams,
    num_threads: int,
    device: Mapping[str, Any] | None = None,
    *,
    features: tuple[str, ...] = FEATURES,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """LightGBM settings: count objective, more discount never predicting fewer units, deterministic, threads
    capped to the Spark task's CPUs, on `device` (model.gpu.device_settings; none: CPU), tuned `overrides` last."""
    return {
        "objective": params.objective,
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "monotone_constraints": [1 if feature == "discount" else 0 for feature in features],
        "seed": params.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": num_threads,
        "verbose": -1,
        **(device or {}),
        **(overrides or {}),
    }


def _dataset(rows: pd.DataFrame, encoding: Encoding, reference: lgb.Dataset | None = None) -> lgb.Dataset:
    # The target is demand: returns (negative net units) are not.
    return lgb.Dataset(
        feature_frame(rows, encoding),
        label=rows["units"].clip(lower=0).astype("float64"),
        categorical_feature=list(encoding.categories),
        reference=reference,
        free_raw_data=True,
    )


def fit(rows: pd.DataFrame, encoding: Encoding, settings: Mapping[str, Any], rounds: int) -> lgb.Booster:
    """Trains one booster on weekly units."""
    return lgb.train(dict(settings), _dataset(rows, encoding), num_boost_round=rounds)


def sold_nothing(rows: pd.DataFrame) -> bool:
    """Whether these weeks hold no demand at all: a Poisson model has nothing to fit (LightGBM refuses them)."""
    return bool(rows["units"].clip(lower=0).sum() <= 0)


def forecaster(encoding: Encoding, settings: Mapping[str, Any], rounds: int) -> backtest.Forecast:
    """Fits on the training weeks and predicts the test weeks: the model as the backtest runs it. Training weeks
    without a single sale (a shop closed for weeks) forecast nothing, as any model of them would."""

    def forecast(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
        if sold_nothing(train):
            return np.zeros(len(test))
        return np.asarray(fit(train, encoding, settings, rounds).predict(feature_frame(test, encoding)))

    return forecast


def training_rows(history: pd.DataFrame, params: ModelParams) -> pd.DataFrame:
    """The in-stock past weeks, each seen as a forecast made up to the backtest horizon earlier
    (backtest.as_forecasts): the rows every model trains on, and the backtest and tuning split."""
    return backtest.as_forecasts(history, backtest.in_stock(history), params.backtest_horizon_weeks)


def tune(
    history: pd.DataFrame,
    usable: pd.DataFrame,
    encoding: Encoding,
    params: ModelParams,
    settings: Mapping[str, Any],
    first_origin: Any,
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """Picks the candidate with the lowest mean WAPE over time-series folds before the first backtest origin,
    each with early stopping; returns its settings, its number of rounds and what was tried."""
    tuning = params.tuning
    try:
        fold_origins = backtest.origins(usable, tuning.folds, params.backtest_horizon_weeks, before=first_origin)
    except ValueError as err:
        return dict(settings), params.num_boost_round, {"skipped": str(err)}
    tried: list[dict[str, Any]] = []
    for candidate in tuning.candidates:
        candidate_settings = {**settings, **candidate}
        scores, rounds = [], []
        for _, train, test in backtest.folds(history, usable, fold_origins, params.backtest_horizon_weeks):
            if sold_nothing(train):
                continue
            training = _dataset(train, encoding)
            booster = lgb.train(
                candidate_settings,
                training,
                num_boost_round=params.num_boost_round,
                valid_sets=[_dataset(test, encoding, reference=training)],
                callbacks=[lgb.early_stopping(tuning.early_stopping_rounds, verbose=False)],
            )
            forecast = pd.Series(booster.predict(feature_frame(test, encoding), num_iteration=booster.best_iteration))
            scores.append(backtest.wape(test["units"].clip(lower=0).reset_index(drop=True), forecast))
            rounds.append(booster.best_iteration or params.num_boost_round)
        if scores:
            tried.append({"params": dict(candidate), "wape": float(np.mean(scores)), "rounds": int(np.mean(rounds))})
    if not tried:
        return (
            dict(settings),
            params.num_boost_round,
            {"skipped": "no fold had both training weeks with a sale and test weeks"},
        )
    best = min(tried, key=lambda entry: entry["wape"])
    chosen = {"folds": [str(pd.Timestamp(o).date()) for o in fold_origins], "candidates": tried, "best": best}
    return {**settings, **best["params"]}, max(best["rounds"], 1), chosen


def booster_predictor(booster: lgb.Booster, encoding: Encoding) -> Callable[[pd.DataFrame], np.ndarray]:
    return lambda rows: np.asarray(booster.predict(feature_frame(rows, encoding)))


def baseline_predictor(usable: pd.DataFrame, recent_weeks: int) -> Callable[[pd.DataFrame], np.ndarray]:
    """Units per week at today's price as the same-price baseline sees them: a level with no price response of its
    own (model.response gives it one)."""
    return lambda rows: backtest.same_price(usable, rows, recent_weeks).to_numpy()
