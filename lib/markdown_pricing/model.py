"""One country's model: train LightGBM on weekly history, measure it, and recommend a markdown per article.

Plain pandas in, pandas out: no Spark here, so every step is unit-tested without a cluster.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from markdown_pricing import backtest
from markdown_pricing.config import ModelParams, RunRules

FEATURES = (
    "discount",
    "weeks_since_launch",
    "weeks_to_season_end",
    "article_popularity",
    "original_price",
    "category",
    "weeks_ahead",
)
# The pooled model learns from every country at once; the country tells their levels apart.
POOLED_FEATURES = (*FEATURES, "country")
CATEGORICAL = ("category", "country")
LADDER_SNAP = 0.005  # a price rounded to cents sits within half a cent of its ladder step
MODEL_KINDS = ("country", "pooled", "baseline")


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


@dataclass(frozen=True)
class CountryResult:
    """One country's outcome: its recommendations (none when it needs a fallback), its flat metrics (the
    country record's fields), the LightGBM model that scored it and its model card."""

    country: str
    predictions: pd.DataFrame
    metrics: dict[str, Any]
    model_text: str | None = None
    card: dict[str, Any] = field(default_factory=dict)


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
    capped to the Spark task's CPUs, on `device` (gpu.device_settings; none: CPU), tuned `overrides` last."""
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


def forecaster(encoding: Encoding, settings: Mapping[str, Any], rounds: int) -> backtest.Forecast:
    """Fits on the training weeks and predicts the test weeks: the model as the backtest runs it."""
    return lambda train, test: fit(train, encoding, settings, rounds).predict(feature_frame(test, encoding))


def training_rows(history: pd.DataFrame, params: ModelParams) -> pd.DataFrame:
    """The in-stock past weeks, each seen as a forecast made up to the backtest horizon earlier
    (backtest.as_forecasts): the rows every model trains on, and the backtest and tuning split."""
    return backtest.as_forecasts(history, backtest.in_stock(history), params.backtest_horizon_weeks)


def tune(
    history: pd.DataFrame, usable: pd.DataFrame, encoding: Encoding, params: ModelParams, settings: Mapping[str, Any],
    first_origin: Any,
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """Picks the candidate with the lowest mean WAPE over time-series folds before the first backtest origin,
    each with early stopping; returns its settings, its number of rounds and what was tried."""
    tuning = params.tuning
    try:
        fold_origins = backtest.origins(usable, tuning.folds, params.backtest_horizon_weeks, before=first_origin)
    except ValueError as err:
        return dict(settings), params.num_boost_round, {"skipped": str(err)}
    tried = []
    for candidate in tuning.candidates:
        candidate_settings = {**settings, **candidate}
        scores, rounds = [], []
        for _, train, test in backtest.folds(history, usable, fold_origins, params.backtest_horizon_weeks):
            training = _dataset(train, encoding)
            booster = lgb.train(
                candidate_settings, training, num_boost_round=params.num_boost_round,
                valid_sets=[_dataset(test, encoding, reference=training)],
                callbacks=[lgb.early_stopping(tuning.early_stopping_rounds, verbose=False)],
            )  # fmt: skip
            forecast = pd.Series(booster.predict(feature_frame(test, encoding), num_iteration=booster.best_iteration))
            scores.append(backtest.wape(test["units"].clip(lower=0).reset_index(drop=True), forecast))
            rounds.append(booster.best_iteration or params.num_boost_round)
        if scores:
            tried.append({"params": dict(candidate), "wape": float(np.mean(scores)), "rounds": int(np.mean(rounds))})
    if not tried:
        return dict(settings), params.num_boost_round, {"skipped": "no fold had both training and test weeks"}
    best = min(tried, key=lambda entry: entry["wape"])
    chosen = {"folds": [str(pd.Timestamp(o).date()) for o in fold_origins], "candidates": tried, "best": best}
    return {**settings, **best["params"]}, max(best["rounds"], 1), chosen


def candidate_discounts(current: float, ladder: tuple[float, ...]) -> list[float]:
    """The current discount (snapped to the ladder when it sits on a step) and every step above it."""
    snapped = next((step for step in ladder if abs(step - current) <= LADDER_SNAP), round(current, 3))
    return [snapped, *(step for step in ladder if step > snapped + LADDER_SNAP)]


def candidate_weeks(future: pd.DataFrame, ladder: tuple[float, ...], hold_price: bool = False) -> pd.DataFrame:
    """Future weeks of each active article repeated once per candidate discount (only today's, snapped to the
    ladder like every first candidate, when holding the price)."""
    per_article = future.groupby("article_id")["discount"].first()
    kept = 1 if hold_price else None
    candidates = pd.DataFrame(
        [(article, step) for article, current in per_article.items()
         for step in candidate_discounts(current, ladder)[:kept]],
        columns=["article_id", "candidate"],
    )  # fmt: skip
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


def future_weeks(weekly: pd.DataFrame) -> pd.DataFrame:
    """The weeks to forecast, each with its distance from the run date (the first of them): popularity in these
    rows is frozen at the run date, as it is at a backtest origin."""
    future = weekly[weekly["is_future"]]
    return future.assign(weeks_ahead=backtest.weeks_ahead(future, future["week_start"].min()))


def score(weekly: pd.DataFrame, predict: Callable[[pd.DataFrame], np.ndarray], rules: RunRules,
          hold_price: bool = False) -> pd.DataFrame:
    """Predicts every active article's future weeks at each candidate discount (today's only when holding the
    price) and recommends the best markdown per article."""
    weeks = candidate_weeks(future_weeks(weekly), rules.ladder, hold_price)
    weeks["predicted_units"] = predict(weeks) if len(weeks) else []
    predictions = recommend(simulate_season(weeks, rules.salvage_value_share))
    predictions.insert(0, "country", weekly["country"].iloc[0])
    return predictions


def booster_predictor(booster: lgb.Booster, encoding: Encoding) -> Callable[[pd.DataFrame], np.ndarray]:
    return lambda rows: booster.predict(feature_frame(rows, encoding))


def baseline_predictor(usable: pd.DataFrame, recent_weeks: int) -> Callable[[pd.DataFrame], np.ndarray]:
    """Units per week at today's price as the same-price baseline sees them: no price response, so the baseline
    only ever holds today's price."""
    return lambda rows: backtest.same_price(usable, rows, recent_weeks).to_numpy()


def fingerprint(weekly: pd.DataFrame) -> str:
    """sha256 of the rows a model was trained and scored on, independent of their order."""
    rows = weekly.sort_values(["country", "article_id", "week_start"], kind="stable")
    return hashlib.sha256(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()).hexdigest()


def data_card(weekly: pd.DataFrame, usable: pd.DataFrame) -> dict[str, Any]:
    """What a model card says about the data: the training window, row counts and a fingerprint."""
    weeks = backtest.history_weeks(usable)
    return {
        "training_window": {
            "first_week": str(pd.Timestamp(weeks[0]).date()) if len(weeks) else None,
            "last_week": str(pd.Timestamp(weeks[-1]).date()) if len(weeks) else None,
            "weeks": len(weeks),
        },
        "rows": {"input": len(weekly), "train": len(usable), "articles": int(usable["article_id"].nunique()),
                 "scored_articles": int(weekly.loc[weekly["is_future"], "article_id"].nunique())},
        "data_fingerprint": fingerprint(weekly),
    }  # fmt: skip


def _metrics(status: str, kind: str | None, reason: str | None, usable: pd.DataFrame,
             summary: Mapping[str, Any], **timings: float) -> dict[str, Any]:
    return {"status": status, "model_kind": kind, "fallback_reason": reason, "train_rows": len(usable),
            **summary, **timings}  # fmt: skip


def _model_card(encoding: Encoding, settings: Mapping[str, Any], rounds: int, params: ModelParams,
                tuning: Any) -> dict[str, Any]:
    # Thread count and device are how it ran, not what it is.
    shown = {k: v for k, v in settings.items() if k not in ("num_threads", "device_type", "gpu_device_id")}
    return {**encoding.as_dict(), "lightgbm_params": shown, "num_boost_round": rounds,
            "forecast_horizon_weeks": params.backtest_horizon_weeks, "tuning": tuning}  # fmt: skip


def train_country(
    weekly: pd.DataFrame,
    params: ModelParams,
    rules: RunRules,
    num_threads: int,
    device: Mapping[str, Any] | None = None,
) -> CountryResult:
    """Backtests the country's model against the baselines (after tuning it, when on); when the model wins,
    refits on all weeks and recommends a markdown per active article. A country with too little history, or
    whose model loses, comes back with status `needs_fallback` and why, for the pooled model to score."""
    weekly = prepare(weekly)
    country = weekly["country"].iloc[0]
    history = weekly[~weekly["is_future"]]
    usable = training_rows(history, params)
    card = {"country": country, **data_card(weekly, usable)}
    weeks = card["training_window"]["weeks"]
    if weeks < params.min_history_weeks:
        reason = f"{weeks} weeks of in-stock history, fewer than min_history_weeks = {params.min_history_weeks}"
        return _needs_fallback(country, reason, usable, {}, card)
    started = time.perf_counter()
    encoding = Encoding.of(weekly, FEATURES)
    settings, rounds = lightgbm_params(params, num_threads, device), params.num_boost_round
    origins = backtest.origins(usable, params.backtest_origins, params.backtest_horizon_weeks)
    tuning = None
    if params.tuning.enabled:
        settings, rounds, tuning = tune(history, usable, encoding, params, settings, origins[0])
    errors = backtest.backtest(
        history, usable, forecaster(encoding, settings, rounds), origins_=origins,
        horizon_weeks=params.backtest_horizon_weeks, recent_weeks=params.recent_average_weeks,
    )  # fmt: skip
    summary = backtest.summarize(errors)
    card |= {"model": _model_card(encoding, settings, rounds, params, tuning),
             "backtest": {**summary, "by_origin": backtest.by_origin(errors)}}  # fmt: skip
    if summary["model_wape"] >= summary["baseline_wape"]:
        reason = (f"the country model loses to its {summary['baseline']} baseline in the backtest: "
                  f"WAPE {summary['model_wape']:.3f} >= {summary['baseline_wape']:.3f}")  # fmt: skip
        return _needs_fallback(country, reason, usable, summary, card)
    booster = fit(usable, encoding, settings, rounds)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    predictions = score(weekly, booster_predictor(booster, encoding), rules)
    metrics = _metrics("trained", "country", None, usable, summary, fit_seconds=fit_seconds,
                       score_seconds=time.perf_counter() - started)  # fmt: skip
    return CountryResult(country, predictions, metrics, booster.model_to_string(), card | {"model_kind": "country"})


def _needs_fallback(country: str, reason: str, usable: pd.DataFrame, summary: Mapping[str, Any],
                    card: dict[str, Any]) -> CountryResult:
    metrics = _metrics("needs_fallback", None, reason, usable, summary)
    return CountryResult(country, pd.DataFrame(), metrics, None, card | {"fallback_reason": reason})


def train_pooled(
    weekly: pd.DataFrame,
    fallback: Mapping[str, str],
    params: ModelParams,
    rules: RunRules,
    num_threads: int,
    device: Mapping[str, Any] | None = None,
) -> list[CountryResult]:
    """Scores the `fallback` countries (country -> why) with one model trained on every country's history, the
    country as a feature; a fallback country where the pooled model loses to its baseline in the backtest holds
    today's prices, as the baseline sees them."""
    weekly = prepare(weekly)
    history = weekly[~weekly["is_future"]]
    usable = training_rows(history, params)
    started = time.perf_counter()
    encoding = Encoding.of(weekly, POOLED_FEATURES)
    settings = lightgbm_params(params, num_threads, device, features=POOLED_FEATURES)
    rounds = params.num_boost_round
    errors = backtest.backtest(
        history, usable, forecaster(encoding, settings, rounds),
        origins_=backtest.origins(usable, params.backtest_origins, params.backtest_horizon_weeks),
        horizon_weeks=params.backtest_horizon_weeks, recent_weeks=params.recent_average_weeks,
    )  # fmt: skip
    booster = fit(usable, encoding, settings, rounds)
    fit_seconds = time.perf_counter() - started
    model = _model_card(encoding, settings, rounds, params, None)
    results = []
    for country, reason in sorted(fallback.items()):
        started = time.perf_counter()
        rows, own = weekly[weekly["country"] == country], usable[usable["country"] == country]
        measured = errors[errors["country"] == country]
        summary = backtest.summarize(measured) if len(measured) else {}
        card = {"country": country, **data_card(rows, own), "model": model, "pooled_training_rows": len(usable)}
        if summary and summary["model_wape"] >= summary["baseline_wape"]:
            kind, model_text = "baseline", None
            reason += (f"; the pooled model loses too: WAPE {summary['model_wape']:.3f} >= "
                       f"{summary['baseline']} baseline {summary['baseline_wape']:.3f}, so today's prices hold")
            predictions = score(rows, baseline_predictor(own, params.recent_average_weeks), rules, hold_price=True)
        else:
            kind, model_text = "pooled", booster.model_to_string()
            predictions = score(rows, booster_predictor(booster, encoding), rules)
        if len(measured):
            card["backtest"] = {**summary, "by_origin": backtest.by_origin(measured)}
        metrics = _metrics("trained", kind, reason, own, summary, fit_seconds=fit_seconds,
                           score_seconds=time.perf_counter() - started)  # fmt: skip
        card |= {"model_kind": kind, "fallback_reason": reason}
        results.append(CountryResult(country, predictions, metrics, model_text, card))
    return results


def rescore(weekly: pd.DataFrame, model_text: str | None, card: Mapping[str, Any], params: ModelParams,
            rules: RunRules) -> CountryResult:
    """Recommends with a saved model and its card, without training: the card says which features and
    categories it was trained with (a baseline card has no model and holds today's prices)."""
    weekly = prepare(weekly)
    country = weekly["country"].iloc[0]
    usable = backtest.in_stock(weekly[~weekly["is_future"]])
    started = time.perf_counter()
    if card["model_kind"] == "baseline":
        predictions = score(weekly, baseline_predictor(usable, params.recent_average_weeks), rules, hold_price=True)
    else:
        encoding = Encoding(tuple(card["model"]["features"]), card["model"]["categories"])
        predictions = score(weekly, booster_predictor(lgb.Booster(model_str=model_text), encoding), rules)
    summary = {key: value for key, value in card.get("backtest", {}).items() if key != "by_origin"}
    metrics = _metrics("trained", card["model_kind"], card.get("fallback_reason"), usable, summary,
                       score_seconds=time.perf_counter() - started)  # fmt: skip
    return CountryResult(country, predictions, metrics, model_text, dict(card))
