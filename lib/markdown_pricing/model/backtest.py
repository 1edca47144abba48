"""Rolling-origin backtests: how a forecaster would have done had it run at each of the last few weekly origins.

A forecaster sees only the weeks before its origin; features that summarise the past (article popularity) are
frozen at the origin, exactly as they are at the run date when the pipeline scores future weeks. Two baselines
stand for what a buyer does without a model: an article's recent average, and its average at today's price.
Plain pandas, no Spark and no LightGBM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import pandas as pd

from markdown_pricing.core.contract import BASELINES, FORECASTERS

WEEK = np.timedelta64(7, "D")
# The features that summarise an article's past: a forecast knows them as of its origin.
POPULARITY = ("article_popularity", "article_popularity_everywhere")


def in_stock(history: pd.DataFrame) -> pd.DataFrame:
    """Past weeks that were in stock: a week without stock says nothing about demand."""
    usable = history["stock_on_hand"].isna() | (history["stock_on_hand"] > 0)
    return history[usable].sort_values(["week_start", "article_id"], kind="stable")


def history_weeks(history: pd.DataFrame) -> np.ndarray:
    return np.sort(history["week_start"].unique())


def origins(history: pd.DataFrame, count: int, horizon_weeks: int, *, before: Any = None) -> list[Any]:
    """The `count` origins whose horizons tile the last `count` x `horizon_weeks` weeks (before `before`, if set).

    Raises ValueError when the weeks before the first origin would leave nothing to train on.
    """
    weeks = history_weeks(history)
    if before is not None:
        weeks = weeks[weeks < before]
    needed = count * horizon_weeks
    if len(weeks) <= needed:
        raise ValueError(f"only {len(weeks)} weeks of history, need more than {needed} to backtest")
    return [weeks[len(weeks) - k * horizon_weeks] for k in range(count, 0, -1)]


def weeks_ahead(rows: pd.DataFrame, origin: Any) -> pd.Series:
    """How many weeks after the origin each row's week starts: 0 for the origin's own week."""
    weeks: pd.Series = ((rows["week_start"] - origin) // WEEK).astype("int64")
    return weeks


def seen_ahead(history: pd.DataFrame, rows: pd.DataFrame, ahead: pd.Series) -> pd.DataFrame:
    """`rows` as a forecast made `ahead` weeks before each row's week sees them: with that `weeks_ahead` and the
    popularities the history's row of that earlier week carries (means of the weeks before it; NaN when the
    article had no row then). Only weeks up to each row's own are read."""
    known_at = rows["week_start"].to_numpy() - ahead.to_numpy() * WEEK
    popularity = history.set_index(["country", "article_id", "week_start"])[list(POPULARITY)]
    known = popularity.reindex(pd.MultiIndex.from_arrays([rows["country"], rows["article_id"], known_at]))
    return rows.assign(weeks_ahead=ahead.to_numpy(), **{name: known[name].to_numpy() for name in POPULARITY})


def split(
    history: pd.DataFrame, usable: pd.DataFrame, origin: Any, horizon_weeks: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training rows before the origin and test rows in its horizon, seen from the origin: popularity frozen
    there and each test week's distance from it (`weeks_ahead`).

    `history` is every past week (popularity is read there, out-of-stock weeks included); `usable` the in-stock
    weeks that are trained on and scored. An article first seen after the origin has no known popularity (NaN).
    """
    end = origin + horizon_weeks * WEEK
    train = usable[usable["week_start"] < origin]
    test = usable[(usable["week_start"] >= origin) & (usable["week_start"] < end)]
    return train, seen_ahead(history, test, weeks_ahead(test, origin))


def as_forecasts(history: pd.DataFrame, rows: pd.DataFrame, horizon_weeks: int) -> pd.DataFrame:
    """Training rows as forecasts made 0 to horizon_weeks - 1 weeks before their week would see them.

    A forecast reads popularity frozen at its origin (the backtest's, or the run date when scoring), so a model
    trained only on popularity as of the week before learns that a young article's low early mean means a weak
    article, and under-forecasts every week after the origin. Here each row is seen_ahead by a `weeks_ahead`
    that is a hash of the row's keys, so the same rows give the same training set in any order.
    """
    keys = rows[["country", "article_id", "week_start"]]
    ahead = pd.util.hash_pandas_object(keys, index=False) % horizon_weeks
    return seen_ahead(history, rows, ahead.astype("int64"))


def _per_article_mean(rows: pd.DataFrame) -> pd.Series:
    return rows.groupby(["country", "article_id"])["units"].mean().clip(lower=0.0)


def _lookup(test: pd.DataFrame, means: pd.Series) -> pd.Series:
    keys = pd.MultiIndex.from_frame(test[["country", "article_id"]])
    return pd.Series(means.reindex(keys).to_numpy(), index=test.index, dtype="float64")


def recent_average(train: pd.DataFrame, test: pd.DataFrame, weeks: int) -> pd.Series:
    """An article's mean units over its last `weeks` training weeks; a new article gets its category's mean in
    its country (0 in a country with no history yet)."""
    recent = train.groupby(["country", "article_id"]).tail(weeks)
    per_article = recent.groupby(["country", "article_id"]).agg(units=("units", "mean"), category=("category", "first"))
    per_article["units"] = per_article["units"].clip(lower=0.0)
    by_category = per_article.reset_index().groupby(["country", "category"])["units"].mean()
    category_mean = by_category.reindex(pd.MultiIndex.from_frame(test[["country", "category"]])).to_numpy()
    return _lookup(test, per_article["units"]).fillna(pd.Series(category_mean, index=test.index)).fillna(0.0)


def same_price(train: pd.DataFrame, test: pd.DataFrame, recent_weeks: int) -> pd.Series:
    """An article's mean units over the training weeks at the discount it has at the origin (markdowns never
    go back, so these are the weeks since its last price change); falls back to the recent average."""
    last_discount = train.groupby(["country", "article_id"])["discount"].transform("last")
    at_current_price = train[(train["discount"] - last_discount).abs() < 1e-9]
    return _lookup(test, _per_article_mean(at_current_price)).fillna(recent_average(train, test, recent_weeks))


def baseline_forecasts(train: pd.DataFrame, test: pd.DataFrame, recent_weeks: int) -> dict[str, pd.Series]:
    return {
        "recent_average": recent_average(train, test, recent_weeks),
        "same_price": same_price(train, test, recent_weeks),
    }


def wape(actual: pd.Series, forecast: pd.Series, weight: pd.Series | None = None) -> float:
    """Weighted absolute percentage error: sum |error| / sum actual, each row weighted (by price: revenue-weighted)."""
    w = np.ones(len(actual)) if weight is None else weight.to_numpy(dtype="float64")
    errors = np.abs(forecast.to_numpy(dtype="float64") - actual.to_numpy(dtype="float64"))
    return float((errors * w).sum() / max((actual.to_numpy(dtype="float64") * w).sum(), 1.0))


def bias(actual: pd.Series, forecast: pd.Series) -> float:
    """Signed error relative to actual volume: positive means over-forecasting."""
    return float((forecast.to_numpy() - actual.to_numpy()).sum() / max(actual.sum(), 1.0))


Forecast = Callable[[pd.DataFrame, pd.DataFrame], np.ndarray]


def folds(
    history: pd.DataFrame, usable: pd.DataFrame, fold_origins: list[Any], horizon_weeks: int
) -> Iterator[tuple[Any, pd.DataFrame, pd.DataFrame]]:
    for origin in fold_origins:
        train, test = split(history, usable, origin, horizon_weeks)
        if len(train) and len(test):
            yield origin, train, test


def backtest(
    history: pd.DataFrame,
    usable: pd.DataFrame,
    model: Forecast,
    *,
    origins_: list[Any],
    horizon_weeks: int,
    recent_weeks: int,
) -> pd.DataFrame:
    """One row per (origin, country, article, week) forecast: actual demand, its price, and every forecaster's."""
    frames = []
    for origin, train, test in folds(history, usable, origins_, horizon_weeks):
        forecasts = {"model": pd.Series(model(train, test), index=test.index)}
        forecasts |= baseline_forecasts(train, test, recent_weeks)
        frames.append(
            test[["country", "article_id", "week_start", "price"]].assign(
                origin=origin, actual=test["units"].clip(lower=0).astype("float64"), **forecasts
            )
        )
    if not frames:
        return pd.DataFrame(columns=["country", "article_id", "week_start", "price", "origin", "actual", *FORECASTERS])
    return pd.concat(frames, ignore_index=True)


def summarize(errors: pd.DataFrame) -> dict[str, Any]:
    """Every forecaster's WAPE, bias and revenue-weighted WAPE over all origins, and the best baseline."""
    actual, price = errors["actual"], errors["price"]
    summary: dict[str, Any] = {"backtest_rows": len(errors), "backtest_origins": int(errors["origin"].nunique())}
    for name in FORECASTERS:
        summary[f"{name}_wape"] = wape(actual, errors[name])
        summary[f"{name}_bias"] = bias(actual, errors[name])
        summary[f"{name}_rwape"] = wape(actual, errors[name], price)
    best = min(BASELINES, key=lambda name: summary[f"{name}_wape"])
    summary["baseline"] = best
    summary["baseline_wape"] = summary[f"{best}_wape"]
    return summary


def by_origin(errors: pd.DataFrame) -> list[dict[str, Any]]:
    """Per origin, every forecaster's WAPE: the model card's evidence that the result is stable over time."""
    return [
        {
            "origin": str(pd.Timestamp(cast(Any, origin)).date()),
            "rows": len(rows),
            **{name: round(wape(rows["actual"], rows[name]), 4) for name in FORECASTERS},
        }
        for origin, rows in errors.groupby("origin", sort=True)
    ]
