"""The pooled fallback: one model over every country's history scores the countries that cannot use their own."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pandas as pd

from markdown_pricing.core.config import ModelParams, RunRules
from markdown_pricing.model import backtest
from markdown_pricing.model.country import (
    CountryResult,
    data_card,
    level_wape,
    model_card,
    response_card,
    result_metrics,
    scored_result,
)
from markdown_pricing.model.forecast import (
    POOLED_FEATURES,
    Encoding,
    baseline_predictor,
    booster_predictor,
    fit,
    forecaster,
    lightgbm_params,
    prepare,
    training_rows,
)
from markdown_pricing.model.pricing import score
from markdown_pricing.model.response import PriceResponse, learned_from, markdown_margin


def train_pooled(
    weekly: pd.DataFrame,
    fallback: Mapping[str, str],
    params: ModelParams,
    rules: RunRules,
    num_threads: int,
    device: Mapping[str, Any] | None = None,
    buyer_rules: Mapping[str, pd.DataFrame] | None = None,
    response: PriceResponse | None = None,
) -> list[CountryResult]:
    """Scores the `fallback` countries (country -> why) with one model trained on every country's history, the
    country as a feature, within each country's `buyer_rules` (country -> its rules in force); a fallback country
    where the pooled model loses to its baseline in the backtest is scored by the baseline's level. Either level
    takes `response` (else the one these rows' markdowns give) for the change at each candidate price, so a
    fallback country gets markdowns where they pay too."""
    weekly = prepare(weekly)
    history = weekly[~weekly["is_future"]]
    usable = training_rows(history, params)
    response = response or learned_from(history, params.price_response)
    started = time.perf_counter()
    encoding = Encoding.of(weekly, POOLED_FEATURES)
    settings = lightgbm_params(params, num_threads, device, features=POOLED_FEATURES)
    rounds = params.num_boost_round
    errors = backtest.backtest(
        history,
        usable,
        forecaster(encoding, settings, rounds),
        origins_=backtest.origins(usable, params.backtest_origins, params.backtest_horizon_weeks),
        horizon_weeks=params.backtest_horizon_weeks,
        recent_weeks=params.recent_average_weeks,
    )
    booster = fit(usable, encoding, settings, rounds)
    fit_seconds = time.perf_counter() - started
    model = model_card(encoding, settings, rounds, params, None)
    results = []
    for country, reason in sorted(fallback.items()):
        started = time.perf_counter()
        rows, own = weekly[weekly["country"] == country], usable[usable["country"] == country]
        measured = errors[errors["country"] == country]
        own_rules = (buyer_rules or {}).get(country)
        summary = backtest.summarize(measured) if len(measured) else {}
        card = {
            "country": country,
            **data_card(rows, own),
            "model": model,
            "pooled_training_rows": len(usable),
            **response_card(response, history[history["country"] == country], params),
        }
        if summary and summary["model_wape"] >= summary["baseline_wape"]:
            kind, model_text = "baseline", None
            reason += (
                f"; the pooled model loses too: WAPE {summary['model_wape']:.3f} >= "
                f"{summary['baseline']} baseline {summary['baseline_wape']:.3f}, so the baseline's level scores it"
            )
            level = baseline_predictor(own, params.recent_average_weeks)
        else:
            kind, model_text = "pooled", booster.model_to_string()
            level = booster_predictor(booster, encoding)
        card["markdown_margin"] = markdown_margin(params.price_response, level_wape(kind, summary))
        scored = score(
            rows, response.applied_to(level), rules, buyer_rules=own_rules, markdown_margin=card["markdown_margin"]
        )
        if len(measured):
            card["backtest"] = {**summary, "by_origin": backtest.by_origin(measured)}
        metrics = result_metrics(
            "trained", kind, reason, own, summary, fit_seconds=fit_seconds, score_seconds=time.perf_counter() - started
        )
        card |= {"model_kind": kind, "fallback_reason": reason}
        results.append(scored_result(country, scored, metrics, model_text, card))
    return results
