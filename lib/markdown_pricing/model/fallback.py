"""The pooled fallback: one model over every country's history scores the countries that cannot use their own."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from markdown_pricing.core.config import ModelParams, RunRules
from markdown_pricing.model import backtest
from markdown_pricing.model.country import (
    CountryResult,
    country_response,
    data_card,
    level_wape,
    model_card,
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


@dataclass(frozen=True)
class PooledModel:
    """The pooled model, trained once on every country's history (or a bounded sample of it), with its backtest
    by country: all that scoring a fallback country needs, small enough to ship to each task that scores one."""

    model_text: str
    card: dict[str, Any]
    training_rows: int
    fit_seconds: float
    # Country -> backtest.summarize of its rows, with "by_origin".
    backtests: dict[str, dict[str, Any]]

    def as_json(self) -> str:
        """Everything but the model text, which travels beside it."""
        return json.dumps(
            {
                "card": self.card,
                "training_rows": self.training_rows,
                "fit_seconds": self.fit_seconds,
                "backtests": self.backtests,
            },
            default=str,
        )

    @classmethod
    def of(cls, model_text: str, document: str) -> PooledModel:
        return cls(model_text=model_text, **json.loads(document))

    def level(self) -> Callable[[pd.DataFrame], np.ndarray]:
        encoding = Encoding(tuple(self.card["features"]), self.card["categories"])
        return booster_predictor(lgb.Booster(model_str=self.model_text), encoding)


def fit_pooled(
    history: pd.DataFrame,
    params: ModelParams,
    num_threads: int,
    device: Mapping[str, Any] | None = None,
    countries: Collection[str] = (),
) -> PooledModel:
    """One model over the history rows of every country, the country as a feature, backtested like a country's
    model. `countries` are the ones it may score, whether or not they have history here."""
    history = prepare(history)
    usable = training_rows(history, params)
    started = time.perf_counter()
    encoding = Encoding.of(history, POOLED_FEATURES)
    encoding = replace(
        encoding, categories={**encoding.categories, "country": sorted({*encoding.categories["country"], *countries})}
    )
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
    backtests = {
        str(country): {**backtest.summarize(measured), "by_origin": backtest.by_origin(measured)}
        for country, measured in errors.groupby("country")
    }
    return PooledModel(
        model_text=booster.model_to_string(),
        card=model_card(encoding, settings, rounds, params, None),
        training_rows=len(usable),
        fit_seconds=time.perf_counter() - started,
        backtests=backtests,
    )


def score_fallback(
    weekly: pd.DataFrame,
    reason: str,
    pooled: PooledModel | None,
    params: ModelParams,
    rules: RunRules,
    response: PriceResponse,
    buyer_rules: pd.DataFrame | None = None,
    pooled_failure: str | None = None,
) -> CountryResult:
    """Scores one country that cannot use its own model (`reason` says why) within its `buyer_rules`: by the
    pooled model's level, or by its baseline's where the pooled model loses to it in the backtest (or failed:
    `pooled_failure`). A country whose history is no longer than the backtest's span has no week before the first
    origin, so the backtest cannot judge its level out of sample: the pooled model scores it, with the margin of
    a level without a backtest. Either level takes the shared `response` (with the country's offset where its
    event backtest chooses it) for the change at each candidate price, so a fallback country gets markdowns where
    they pay too."""
    started = time.perf_counter()
    weekly = prepare(weekly)
    country = str(weekly["country"].iloc[0])
    history = weekly[~weekly["is_future"]]
    own = training_rows(history, params)
    measured = pooled.backtests.get(country, {}) if pooled else {}
    summary = {key: value for key, value in measured.items() if key != "by_origin"}
    response, response_record = country_response(response, history, params)
    card = {
        "country": country,
        **data_card(weekly, own),
        "model": pooled.card if pooled else None,
        "pooled_training_rows": pooled.training_rows if pooled else 0,
        **response_record,
    }
    weeks, span = card["training_window"]["weeks"], params.backtest_origins * params.backtest_horizon_weeks
    judged = weeks > span
    if pooled is None:
        kind, model_text = "baseline", None
        reason += f"; the pooled model failed ({pooled_failure}), so the baseline's level scores it"
    elif not judged:
        # Its figures measure weeks the pooled model knew nothing of this country in: not the level it scores with.
        kind, model_text, summary = "pooled", pooled.model_text, {}
        reason += (
            f"; its {weeks} weeks are no more than the backtest's span ({span}), which cannot judge its level, so the "
            "pooled model scores it"
        )
    elif summary and summary["model_wape"] >= summary["baseline_wape"]:
        kind, model_text = "baseline", None
        reason += (
            f"; the pooled model loses too: WAPE {summary['model_wape']:.3f} >= "
            f"{summary['baseline']} baseline {summary['baseline_wape']:.3f}, so the baseline's level scores it"
        )
    else:
        kind, model_text = "pooled", pooled.model_text
    level = pooled.level() if kind == "pooled" and pooled else baseline_predictor(own, params.recent_average_weeks)
    card["markdown_margin"] = markdown_margin(params.price_response, level_wape(kind, summary))
    scored = score(
        weekly, response.applied_to(level), rules, buyer_rules=buyer_rules, markdown_margin=card["markdown_margin"]
    )
    if measured and judged:
        card["backtest"] = measured
    metrics = result_metrics(
        "trained",
        kind,
        reason,
        own,
        summary,
        fit_seconds=pooled.fit_seconds if pooled else 0.0,
        score_seconds=time.perf_counter() - started,
    )
    card |= {"model_kind": kind, "fallback_reason": reason}
    return scored_result(country, scored, metrics, model_text, card)


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
    """Both steps in one process: the pooled model on every country's history scores each `fallback` country
    (country -> why) with `response` (else the one these rows' markdowns give)."""
    weekly = prepare(weekly)
    history = weekly[~weekly["is_future"]]
    response = response or learned_from(history, params.price_response)
    pooled = fit_pooled(history, params, num_threads, device, countries=fallback)
    return [
        score_fallback(
            weekly[weekly["country"] == country],
            reason,
            pooled,
            params,
            rules,
            response,
            buyer_rules=(buyer_rules or {}).get(country),
        )
        for country, reason in sorted(fallback.items())
    ]
