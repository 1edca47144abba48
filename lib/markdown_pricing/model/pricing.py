"""Price choice: each active article's candidate discounts, the season each would bring, and the best of them that
the rules allow (model.rules).

Plain pandas: the forecast is passed in as a function, so the pricing logic is tested without a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from markdown_pricing.core.config import RunRules
from markdown_pricing.core.contract import LADDER_SNAP
from markdown_pricing.model import backtest
from markdown_pricing.model.rules import Policy, buyer_constraints, decide, weeks_since_markdown


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


def future_weeks(weekly: pd.DataFrame) -> pd.DataFrame:
    """The weeks to forecast, each with its distance from the run date (the first of them): popularity in these
    rows is frozen at the run date, as it is at a backtest origin."""
    future = weekly[weekly["is_future"]]
    return future.assign(weeks_ahead=backtest.weeks_ahead(future, future["week_start"].min()))


@dataclass(frozen=True)
class Scored:
    """One country's recommendations (core.contract.PREDICTION_COLUMNS), their candidate curves
    (CANDIDATE_COLUMNS) and what was wrong with its buyer rules."""

    predictions: pd.DataFrame
    candidates: pd.DataFrame
    problems: list[str] = field(default_factory=list)


def score(
    weekly: pd.DataFrame,
    predict: Callable[[pd.DataFrame], np.ndarray],
    rules: RunRules,
    buyer_rules: pd.DataFrame | None = None,
    markdown_margin: float = 0.0,
) -> Scored:
    """Predicts every active article's future weeks at each candidate discount and recommends the best markdown
    per article that the buyer rules in force and the run's rules allow, a deeper one only when it beats holding
    by `markdown_margin` of the holding revenue (model.rules.decide)."""
    country = str(weekly["country"].iloc[0])
    future = future_weeks(weekly)
    weeks = candidate_weeks(future, rules.ladder)
    weeks["predicted_units"] = predict(weeks) if len(weeks) else []
    constraints = buyer_constraints(country, weekly, buyer_rules)
    decision = decide(
        simulate_season(weeks, rules.salvage_value_share),
        country=country,
        ladder=rules.ladder,
        salvage_value_share=rules.salvage_value_share,
        weeks_left=future.groupby("article_id")["week_start"].nunique(),
        constraints=constraints.by_article,
        policy=Policy.of(rules, country),
        weeks_since=weeks_since_markdown(weekly),
        markdown_margin=markdown_margin,
    )
    return Scored(decision.predictions, decision.candidates, constraints.problems)
