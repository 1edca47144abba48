"""One country's model: backtest it against the baselines, and when it wins, recommend a markdown per article.

A country with too little history, or whose model loses, comes back as `needs_fallback` for the pooled pass
(model.fallback). Plain pandas in, pandas out.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import pandas as pd

from markdown_pricing.core.config import ModelParams, RunRules
from markdown_pricing.model import backtest
from markdown_pricing.model.forecast import (
    FEATURES,
    Encoding,
    baseline_predictor,
    booster_predictor,
    fit,
    forecaster,
    lightgbm_params,
    prepare,
    training_rows,
    tune,
)
from markdown_pricing.model.pricing import Scored, score
from markdown_pricing.model.response import PriceResponse, learned_from, markdown_events, markdown_margin


@dataclass(frozen=True)
class CountryResult:
    """One country's outcome: its recommendations and their candidate curves (none when it needs a fallback), its
    flat metrics (the country record's fields), the LightGBM model that scored it, its model card and what was
    wrong with its buyer rules."""

    country: str
    predictions: pd.DataFrame
    metrics: dict[str, Any]
    model_text: str | None = None
    card: dict[str, Any] = field(default_factory=dict)
    candidates: pd.DataFrame = field(default_factory=pd.DataFrame)
    rule_problems: list[str] = field(default_factory=list)


def fingerprint(weekly: pd.DataFrame) -> str:
    """sha256 of the rows a model was trained and scored on, independent of their order and of how Arrow typed
    their numbers (an integer column comes as floats where any row of the task's group, another country's in the
    pool's task, is null)."""
    rows = weekly.sort_values(["country", "article_id", "week_start"], kind="stable")
    rows = rows.astype({name: "float64" for name in rows.select_dtypes("number").columns})
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
        "rows": {
            "input": len(weekly),
            "train": len(usable),
            "articles": int(usable["article_id"].nunique()),
            "scored_articles": int(weekly.loc[weekly["is_future"], "article_id"].nunique()),
        },
        "data_fingerprint": fingerprint(weekly),
    }


def country_response(
    shared: PriceResponse, history: pd.DataFrame, params: ModelParams
) -> tuple[PriceResponse, dict[str, Any]]:
    """The price response this country recommends with, chosen by the markdown-event backtest on its own past
    markdowns (the shared one, or with the country's own offset: PriceResponse.chosen_for), and what its model card
    says about it: the response, how it fits those markdowns and the choice."""
    events = markdown_events(history, params.price_response.event_window_weeks)
    response, choice = shared.chosen_for(events)
    check = response.checked_against(events)
    return response, {"price_response": response.as_dict(), "markdown_event_backtest": check | {"choice": choice}}


def level_wape(kind: str, summary: Mapping[str, Any]) -> float | None:
    """The backtest WAPE of what gives a country's level: its baseline's for a baseline, else its model's."""
    return summary.get("baseline_wape" if kind == "baseline" else "model_wape")


def result_metrics(
    status: str,
    kind: str | None,
    reason: str | None,
    usable: pd.DataFrame,
    summary: Mapping[str, Any],
    **timings: float,
) -> dict[str, Any]:
    return {
        "status": status,
        "model_kind": kind,
        "fallback_reason": reason,
        "train_rows": len(usable),
        **summary,
        **timings,
    }


def model_card(
    encoding: Encoding, settings: Mapping[str, Any], rounds: int, params: ModelParams, tuning: Any
) -> dict[str, Any]:
    # Thread count and device are how it ran, not what it is.
    shown = {k: v for k, v in settings.items() if k not in ("num_threads", "device_type", "gpu_device_id")}
    return {
        **encoding.as_dict(),
        "lightgbm_params": shown,
        "num_boost_round": rounds,
        "forecast_horizon_weeks": params.backtest_horizon_weeks,
        "tuning": tuning,
    }


def too_little_history(weeks: int, params: ModelParams) -> str | None:
    """Why a country with `weeks` of in-stock history (its training window's) cannot train a model of its own, if it
    cannot: known before it trains, so the pooled model's task can score it."""
    if weeks >= params.min_history_weeks:
        return None
    return f"{weeks} weeks of in-stock history, fewer than min_history_weeks = {params.min_history_weeks}"


def train_country(
    weekly: pd.DataFrame,
    params: ModelParams,
    rules: RunRules,
    num_threads: int,
    device: Mapping[str, Any] | None = None,
    buyer_rules: pd.DataFrame | None = None,
    response: PriceResponse | None = None,
) -> CountryResult:
    """Backtests the country's model against the baselines (after tuning it, when on); when the model wins,
    refits on all weeks and recommends a markdown per active article within its buyer rules and the run's, the
    model giving units at today's price and `response` (the one shared by every country, else this country's own,
    with the country's offset where its event backtest chooses it: country_response) the change at each candidate
    price. A country with too little history, or whose model loses, comes back with
    status `needs_fallback` and why, for the pooled model to score."""
    weekly = prepare(weekly)
    country = weekly["country"].iloc[0]
    history = weekly[~weekly["is_future"]]
    usable = training_rows(history, params)
    card = {"country": country, **data_card(weekly, usable)}
    reason = too_little_history(card["training_window"]["weeks"], params)
    if reason:
        return needs_fallback(country, reason, usable, {}, card)
    started = time.perf_counter()
    encoding = Encoding.of(weekly, FEATURES)
    settings, rounds = lightgbm_params(params, num_threads, device), params.num_boost_round
    origins = backtest.origins(usable, params.backtest_origins, params.backtest_horizon_weeks)
    tuning = None
    if params.tuning.enabled:
        settings, rounds, tuning = tune(history, usable, encoding, params, settings, origins[0])
    errors = backtest.backtest(
        history,
        usable,
        forecaster(encoding, settings, rounds),
        origins_=origins,
        horizon_weeks=params.backtest_horizon_weeks,
        recent_weeks=params.recent_average_weeks,
    )
    summary = backtest.summarize(errors)
    card |= {
        "model": model_card(encoding, settings, rounds, params, tuning),
        "backtest": {**summary, "by_origin": backtest.by_origin(errors)},
    }
    if summary["model_wape"] >= summary["baseline_wape"]:
        reason = (
            f"the country model loses to its {summary['baseline']} baseline in the backtest: "
            f"WAPE {summary['model_wape']:.3f} >= {summary['baseline_wape']:.3f}"
        )
        return needs_fallback(country, reason, usable, summary, card)
    booster = fit(usable, encoding, settings, rounds)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    # Only a country that trains needs a response: a fallback country gets the pooled pass's.
    response, response_record = country_response(
        response or learned_from(history, params.price_response), history, params
    )
    margin = markdown_margin(params.price_response, summary["model_wape"])
    card |= {**response_record, "markdown_margin": margin}
    scored = score(
        weekly,
        response.applied_to(booster_predictor(booster, encoding)),
        rules,
        buyer_rules=buyer_rules,
        markdown_margin=margin,
    )
    metrics = result_metrics(
        "trained",
        "country",
        None,
        usable,
        summary,
        fit_seconds=fit_seconds,
        score_seconds=time.perf_counter() - started,
    )
    return scored_result(country, scored, metrics, booster.model_to_string(), card | {"model_kind": "country"})


def scored_result(
    country: str, scored: Scored, metrics: dict[str, Any], model_text: str | None, card: dict[str, Any]
) -> CountryResult:
    """A trained country's result from its scores; its metrics carry its card's markdown-event backtest."""
    check = card.get("markdown_event_backtest") or {}
    metrics = metrics | {
        "markdown_events": check.get("events"),
        "markdown_lift_error": check.get("log_lift_error"),
        "markdown_lift_bias": check.get("log_lift_bias"),
    }
    return CountryResult(
        country, scored.predictions, metrics, model_text, card, scored.candidates, list(scored.problems)
    )


def needs_fallback(
    country: str, reason: str, usable: pd.DataFrame, summary: Mapping[str, Any], card: dict[str, Any]
) -> CountryResult:
    metrics = result_metrics("needs_fallback", None, reason, usable, summary)
    return CountryResult(country, pd.DataFrame(), metrics, None, card | {"fallback_reason": reason})


def rescore(
    weekly: pd.DataFrame,
    model_text: str | None,
    card: Mapping[str, Any],
    params: ModelParams,
    rules: RunRules,
    buyer_rules: pd.DataFrame | None = None,
    response: PriceResponse | None = None,
) -> CountryResult:
    """Recommends with a saved model and its card, without training: the card says which features and
    categories it was trained with and the price response it recommended with (a card from before price
    responses were saved takes `response`, else this country's own; a baseline card has no model)."""
    weekly = prepare(weekly)
    country = weekly["country"].iloc[0]
    history = weekly[~weekly["is_future"]]
    usable = backtest.in_stock(history)
    if "price_response" in card:
        response = PriceResponse.of(card["price_response"])
    response = response or learned_from(history, params.price_response)
    started = time.perf_counter()
    if card["model_kind"] == "baseline":
        level = baseline_predictor(usable, params.recent_average_weeks)
    else:
        encoding = Encoding(tuple(card["model"]["features"]), card["model"]["categories"])
        level = booster_predictor(lgb.Booster(model_str=model_text), encoding)
    summary = {key: value for key, value in card.get("backtest", {}).items() if key != "by_origin"}
    margin = card.get(
        "markdown_margin", markdown_margin(params.price_response, level_wape(card["model_kind"], summary))
    )
    scored = score(weekly, response.applied_to(level), rules, buyer_rules=buyer_rules, markdown_margin=margin)
    metrics = result_metrics(
        "trained",
        card["model_kind"],
        card.get("fallback_reason"),
        usable,
        summary,
        score_seconds=time.perf_counter() - started,
    )
    return scored_result(country, scored, metrics, model_text, dict(card))
