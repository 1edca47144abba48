"""The price response shared by every country: how units change with the price, learned from past markdowns.

Trees extrapolate flat beyond the discounts they saw, and a country sees few markdown steps per article, so the
forecast models give the level (units at today's price) and this module the response to a candidate price. At
every past price change where the price held for `window_weeks` before and after and the article stayed in stock,
the log of units after over units before is compared with the log of the price ratio; the same weeks of the
category's articles whose price held (in the same country) correct for the season's own movement (a difference
in differences). One elasticity per category, the slope through the origin, comes from every country's
events together, shrunk towards the all-category slope by how noisy each category's own is (empirical Bayes).
It is fitted on two demand curves, log units linear in the log of the price (power, constant elasticity) and in the
price itself (exponential: each step of discount lifts by the same factor, so deep discounts lift less than the
power law says), and the curve whose fit misses the events less is used. The response is monotone (deeper
discount, more units). Beyond the deepest discount a category's articles were seen at (in any country), a
parametric curve is a guess: the lift stops growing `beyond_deepest` past it, so a deeper candidate sells no more
than that one and is never chosen for a lift nobody saw. Plain pandas: the statistics are sums and maxima, so each
country computes its own and the driver combines them.

Countries may respond differently to the same discount. A country's own events give it an offset on every
category's elasticity, shrunk towards none by how much countries truly differ beyond their noise (the same
empirical Bayes, one level down), so a thin country keeps the shared response. The markdown-event backtest
decides whether a country uses its offset: fitted on its earlier events, the offset must predict the lifts of its
later ones better than the shared response alone.

Demand also follows the time of year, which the forecast models, trained a few weeks ahead, do not see over a
season. Week over week, the same articles at a steady price, in stock and in season, sell in a ratio that is
their aging plus the calendar's change; over every country's weeks, chained, those ratios give one yearly harmonic
of the calendar, kept only where the data show it beyond noise, and a forecast made at one week is carried to a
later one by the cycle's change between the two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from markdown_pricing.core.config import PriceResponseSettings

# Sufficient statistics of the regressions through the origin of y (log lift) on x (log price ratio) and on z (price
# change over the original price), per group, and the deepest discount the group's articles were seen at.
STATISTICS = ("events", "sxx", "sxy", "syy", "szz", "szy")
STATISTIC_COLUMNS = ("country", "category", *STATISTICS, "deepest")
# Per week, the units of the steady pairs (steady_pairs) in that week and in the week before.
PAIR_COLUMNS = ("country", "week_start", "now", "before")
# A country's statistics as one frame: per category its events' sums (week_start null), per week its steady pairs'
# sums (category null).
COUNTRY_STATISTIC_COLUMNS = (*STATISTIC_COLUMNS, "week_start", "now", "before")
# The weekly columns that country_statistics reads.
EVENT_COLUMNS = (
    "country",
    "category",
    "article_id",
    "week_start",
    "units",
    "stock_on_hand",
    "price",
    "discount",
    "weeks_since_launch",
    "weeks_to_season_end",
)


# The demand curves a response may take, each with its regressor and that regressor's sums: log units linear in the
# log of the price (power: a constant elasticity) or in the price itself (exponential: deep discounts lift less).
CURVES = {"power": ("x", "sxx", "sxy"), "exponential": ("z", "szz", "szy")}
# Prices closer than this are the same price.
PRICE_STEP = 0.005
# The launch ramp: an article's first weeks sell more each week whatever the calendar does.
RAMP_WEEKS = 3
# A week's row stands for its middle day on the calendar.
MID_WEEK_DAYS = 3
YEAR_DAYS = 365.25
# The fewest weeks of steady pairs to fit the yearly cycle to, and the chi-square (2 degrees of freedom, 95 %)
# its two coefficients must reach together to be told from noise.
MIN_CYCLE_WEEKS = 26
CYCLE_CHI2 = 5.99
# A swing of log demand below this changes no recommendation; below it, weeks that never change give a cycle of
# rounding errors.
MIN_CYCLE_AMPLITUDE = 0.005
# The fewest events on each side of the markdown-event backtest's split for it to judge a country's own offset:
# fewer say nothing a single article's noise could not.
MIN_CHECKED_EVENTS = 10


def markdown_events(history: pd.DataFrame, window_weeks: int) -> pd.DataFrame:
    """One row per price change with the price steady and the article in stock (not sold out) over `window_weeks`
    before and after: its country, category, x = log(new price / old price), z = (new price - old price) / original
    price and y = log(units after / units before) less the same log ratio of the category's steady articles in those
    weeks (0 when there are none)."""
    columns = ["country", "category", "article_id", "week_start", "x", "z", "y"]
    rows = history.sort_values(["country", "article_id", "week_start"], kind="stable").reset_index(drop=True)
    if rows.empty:
        return pd.DataFrame(columns=columns)
    # Stock known and not sold out: demand was seen whole (no stock figure is the launch week's ramp-up).
    rows["clear"] = (rows["units"] < rows["stock_on_hand"]).astype("float64")
    k = window_weeks
    # Rows are sorted by article and week, one row per week: a window is whole where the article has k weeks
    # before the row (t-k .. t-1), or k-1 weeks after it (t .. t+k-1).
    article = rows.groupby(["country", "article_id"], observed=True, sort=False)
    whole_before, whole_after = article.cumcount() >= k, article.cumcount(ascending=False) >= k - 1

    def windows(column: str, how: str) -> tuple[pd.Series, pd.Series]:
        rolled = rows[column].rolling(k).agg(how)
        return rolled.shift(1).where(whole_before), rolled.shift(-(k - 1)).where(whole_after)

    units_before, units_after = windows("units", "sum")
    high_before, high_after = windows("price", "max")
    low_before, low_after = windows("price", "min")
    clear_before, clear_after = windows("clear", "min")
    steady = (
        (high_before - low_before < PRICE_STEP)
        & (high_after - low_after < PRICE_STEP)
        & (clear_before == 1)
        & (clear_after == 1)
    )
    moved = (high_after - high_before).abs() >= PRICE_STEP
    windowed = rows.assign(
        units_before=units_before,
        units_after=units_after,
        price_before=high_before,
        price_after=high_after,
        original_price=rows["price"] / (1 - rows["discount"]),
    )
    keys = ["country", "category", "week_start"]
    # Steady at one price over all 2k weeks: the category's own movement in those weeks.
    control = windowed[steady & ~moved].groupby(keys, observed=True)[["units_before", "units_after"]].sum()
    events = windowed[steady & moved & (units_before > 0) & (units_after > 0)]
    events = events.join(control.add_prefix("control_"), on=keys)
    ratio = events["control_units_after"] / events["control_units_before"]
    ratio = ratio.where((ratio > 0) & (ratio < np.inf), 1.0).fillna(1.0)
    return events.assign(
        x=np.log(events["price_after"] / events["price_before"]),
        z=(events["price_after"] - events["price_before"]) / events["original_price"],
        y=np.log(events["units_after"] / events["units_before"] / ratio),
    )[columns].reset_index(drop=True)


def event_statistics(history: pd.DataFrame, window_weeks: int) -> pd.DataFrame:
    """Per country and category, the number of markdown events, their sums and the deepest discount at which an
    article sold (STATISTIC_COLUMNS)."""
    events = markdown_events(history, window_weeks)
    sums = events.assign(
        events=1,
        sxx=events["x"] * events["x"],
        sxy=events["x"] * events["y"],
        syy=events["y"] * events["y"],
        szz=events["z"] * events["z"],
        szy=events["z"] * events["y"],
    )
    keys = ["country", "category"]
    grouped = sums.groupby(keys, observed=True)[list(STATISTICS)].sum().join(_deepest(history), how="outer")
    grouped = grouped.fillna({name: 0 for name in STATISTICS}).reset_index()
    return grouped.astype({"country": str, "category": str, "events": "int64"})[list(STATISTIC_COLUMNS)]


def _deepest(history: pd.DataFrame) -> pd.Series:
    sold = history.loc[history["units"] > 0, ["country", "category", "discount"]]
    return sold.groupby(["country", "category"], observed=True)["discount"].max().rename("deepest")


def deepest_sold(history: pd.DataFrame) -> pd.DataFrame:
    """Per country and category, the deepest discount at which an article sold, as statistics rows of no events
    (STATISTIC_COLUMNS): added to the statistics of a sample of the articles, the response extrapolates as far as
    every article's history allows, no further."""
    deepest = _deepest(history).reset_index().assign(**{name: 0.0 for name in STATISTICS})
    return deepest.astype({"country": str, "category": str, "events": "int64"})[list(STATISTIC_COLUMNS)]


def steady_pairs(history: pd.DataFrame) -> pd.DataFrame:
    """Per country and week, the units of the articles that sold in the week before at the same price, in stock and
    not sold out in both weeks, past their launch ramp and in season (PAIR_COLUMNS): what the calendar and aging
    alone did to demand that week."""
    rows = history.sort_values(["country", "article_id", "week_start"], kind="stable")
    columns = ["week_start", "units", "price", "stock_on_hand"]
    before = rows.groupby(["country", "article_id"], observed=True, sort=False)[columns].shift(1)
    pair = (
        (rows["week_start"] - before["week_start"] == pd.Timedelta(weeks=1))
        & ((rows["price"] - before["price"]).abs() < PRICE_STEP)
        & (rows["units"] < rows["stock_on_hand"])
        & (before["units"] < before["stock_on_hand"])
        & (before["units"] > 0)
        & (rows["weeks_since_launch"] >= RAMP_WEEKS)
        & (rows["weeks_to_season_end"] >= 1)
    )
    pairs = pd.DataFrame(
        {"country": rows["country"], "week_start": rows["week_start"], "now": rows["units"], "before": before["units"]}
    )[pair]
    summed = pairs.groupby(["country", "week_start"], observed=True)[["now", "before"]].sum().reset_index()
    return summed.astype({"country": str, "now": "float64", "before": "float64"})[list(PAIR_COLUMNS)]


def country_statistics(history: pd.DataFrame, window_weeks: int) -> pd.DataFrame:
    """One country's (or more) event statistics and steady pairs in one frame (COUNTRY_STATISTIC_COLUMNS), for the
    driver to combine into the shared response."""
    parts = [event_statistics(history, window_weeks), steady_pairs(history)]
    combined = pd.concat([part for part in parts if not part.empty] or parts[:1], ignore_index=True)
    combined = combined.reindex(columns=list(COUNTRY_STATISTIC_COLUMNS))
    # A country without events, or without steady pairs, leaves the other part's columns all missing: typed still.
    return combined.astype({"events": "Int64", "week_start": "datetime64[ns]"})


def _phase(weeks: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    days = np.asarray(pd.DatetimeIndex(weeks).dayofyear, dtype="float64") + MID_WEEK_DAYS
    phase: np.ndarray = 2 * np.pi * days / YEAR_DAYS
    return phase


def yearly_cycle(pairs: pd.DataFrame) -> tuple[float, float]:
    """The yearly harmonic (cosine and sine coefficients of log demand over the day of the year's angle) that every
    country's steady pairs show. Their weekly log ratios, chained, trace log demand of an aging assortment: a line
    (aging) plus the harmonic, by least squares. (0, 0) with too few weeks, or where the two coefficients together
    are within noise, counting the residuals' correlation from week to week."""
    weekly = pairs.groupby("week_start")[["now", "before"]].sum().sort_index()
    weekly = weekly[(weekly["now"] > 0) & (weekly["before"] > 0)]
    if len(weekly) < MIN_CYCLE_WEEKS:
        return 0.0, 0.0
    weeks = pd.DatetimeIndex(weekly.index)
    elapsed = ((weeks - weeks[0]).days / 7.0).to_numpy("float64")
    # A week without pairs breaks the chain: each unbroken stretch of weeks is chained from its own start.
    stretch = np.cumsum(np.diff(elapsed, prepend=elapsed[0] - 1) != 1)
    change = np.log(weekly["now"].to_numpy("float64") / weekly["before"].to_numpy("float64"))
    chained = pd.Series(change).groupby(stretch).cumsum().to_numpy()
    starts = (stretch[:, None] == np.unique(stretch)[None, :]).astype("float64")
    phase = _phase(weeks)
    design = np.column_stack([starts, elapsed, np.cos(phase), np.sin(phase)])
    information = design.T @ design
    if np.linalg.matrix_rank(information) < design.shape[1]:
        return 0.0, 0.0
    coefficients, *_ = np.linalg.lstsq(design, chained, rcond=None)
    residual = chained - design @ coefficients
    variance = residual @ residual / (len(weeks) - design.shape[1])
    # Neighbouring weeks share most of their articles, so their residuals move together: fewer independent weeks.
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = np.nan_to_num(np.corrcoef(residual[1:], residual[:-1])[0, 1])
        cycle = coefficients[-2:]
        precision = np.linalg.inv(np.linalg.inv(information)[-2:, -2:])
        evidence = cycle @ precision @ cycle / variance
    correlation = float(np.clip(correlation, 0.0, 0.95))
    shown = evidence * (1 - correlation) / (1 + correlation) >= CYCLE_CHI2
    if not shown or np.hypot(*cycle) < MIN_CYCLE_AMPLITUDE:
        return 0.0, 0.0
    return float(cycle[0]), float(cycle[1])


@dataclass(frozen=True)
class PriceResponse:
    """Units at a candidate price = units at today's price x (candidate price / today's price) ^ -elasticity on the
    power curve, x exp(elasticity x (candidate discount - today's discount)) on the exponential one, with
    the category's elasticity (the overall one for a category without events) plus the country's offset (none in the
    shared response), within [0, max_elasticity]; the candidate's discount counts at
    most `beyond_deepest` past the deepest its category sold at (`deepest`; for a category not in it, the deepest of
    any category)."""

    overall: float
    by_category: Mapping[str, float]
    events: Mapping[str, int]
    deepest: Mapping[str, float] = field(default_factory=dict)
    beyond_deepest: float = 0.0
    # The variance of the countries' true offsets (estimate) and the offset this country's events add to every
    # category's elasticity (with_country_offset).
    country_spread: float = 0.0
    country_offset: float = 0.0
    # No elasticity, a country's offset included, goes beyond this (estimate's max_elasticity; None: no bound).
    max_elasticity: float | None = None
    # The yearly cycle of log demand: season_cos x cos + season_sin x sin of the day of the year's angle.
    season_cos: float = 0.0
    season_sin: float = 0.0
    # The demand curve (CURVES) and how far each curve's fit misses the events (sum of squared log lift errors).
    curve: str = "power"
    curve_misfits: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def estimate(cls, statistics: pd.DataFrame, max_elasticity: float, beyond_deepest: float = 0.0) -> PriceResponse:
        """Elasticities from every country's event statistics, each category's shrunk towards the overall one, on the
        curve that fits the events better (CURVES), the deepest discount each category was seen at in any country,
        and the yearly cycle of their steady pairs (country_statistics' rows by week; none without them)."""
        pairs = statistics[statistics["week_start"].notna()] if "week_start" in statistics else statistics.iloc[:0]
        # Plain floats: a nullable count's arithmetic would keep 0 / 0 as a NaN that fillna leaves alone.
        statistics = statistics[statistics["category"].notna()].astype({name: "float64" for name in STATISTICS})
        season_cos, season_sin = yearly_cycle(pairs) if len(pairs) else (0.0, 0.0)
        fits = {curve: cls._fitted_on(curve, statistics, max_elasticity, beyond_deepest) for curve in CURVES}
        misfits = {curve: misfit for curve, (misfit, _) in fits.items()}
        # The first curve (power) on a tie: without events to tell them apart, the constant elasticity stands.
        events = fits[min(misfits, key=lambda curve: misfits[curve])][1]
        return replace(
            events,
            season_cos=season_cos,
            season_sin=season_sin,
            max_elasticity=max_elasticity,
            curve_misfits=misfits,
        )

    @classmethod
    def _fitted_on(
        cls, curve: str, statistics: pd.DataFrame, max_elasticity: float, beyond_deepest: float
    ) -> tuple[float, PriceResponse]:
        """The response on one curve and its events' sum of squared log lift errors under its shrunk elasticities."""
        _, sxx, sxy = CURVES[curve]
        on_curve = statistics.assign(sxx=statistics[sxx], sxy=statistics[sxy])
        fitted = replace(cls._events_only(on_curve, max_elasticity, beyond_deepest), curve=curve)
        _, misfit = _residual_sums(on_curve, fitted.elasticity(on_curve["category"]))
        return float(misfit.sum()), fitted

    @classmethod
    def _events_only(cls, statistics: pd.DataFrame, max_elasticity: float, beyond_deepest: float) -> PriceResponse:
        per_category = statistics.groupby("category")[list(STATISTICS)].sum()
        deepest = statistics.groupby("category")["deepest"].max().dropna()
        seen = {str(c): float(d) for c, d in deepest.items()}
        total = per_category.sum()
        if total["events"] < 2 or total["sxx"] <= 0:
            return cls(0.0, {}, {str(c): int(n) for c, n in per_category["events"].items()}, seen, beyond_deepest)
        overall = -total["sxy"] / total["sxx"]
        slope, noise = _slopes(per_category["events"], per_category["sxx"], per_category["sxy"], per_category["syy"])
        spread = _spread(slope, noise)
        weight = (spread / (spread + noise)).fillna(0.0)
        shrunk = weight * slope.fillna(overall) + (1 - weight) * overall
        bounded = shrunk.clip(lower=0.0, upper=max_elasticity)
        shared = cls(
            float(np.clip(overall, 0.0, max_elasticity)),
            {str(c): float(v) for c, v in bounded.items()},
            {str(c): int(n) for c, n in per_category["events"].items()},
            seen,
            beyond_deepest,
        )
        return replace(shared, country_spread=shared._country_spread(statistics))

    def _country_spread(self, statistics: pd.DataFrame) -> float:
        """How much the countries' offsets on these elasticities truly differ, beyond the noise of each country's
        own events: the variance their shrinkage leans on (0 when they agree)."""
        elasticity = self.elasticity(statistics["category"])
        sxr, srr = _residual_sums(statistics, elasticity)
        per_country = statistics.assign(sxy=sxr, syy=srr).groupby("country")[list(STATISTICS)].sum()
        return _spread(*_slopes(per_country["events"], per_country["sxx"], per_country["sxy"], per_country["syy"]))

    def elasticity(self, categories: pd.Series) -> np.ndarray:
        shared = categories.astype(str).map(dict(self.by_category)).fillna(self.overall).to_numpy(dtype="float64")
        bound = np.inf if self.max_elasticity is None else self.max_elasticity
        elasticity: np.ndarray = np.clip(shared + self.country_offset, 0.0, bound)
        return elasticity

    def with_country_offset(self, events: pd.DataFrame) -> PriceResponse:
        """The shared response with the offset these events (one country's) give every category's elasticity,
        shrunk towards none by `country_spread` against the noise of the events' own estimate."""
        shared = replace(self, country_offset=0.0)
        x = self.regressor(events)
        residual = events["y"].to_numpy("float64") + shared.elasticity(events["category"]) * x
        sums = (pd.Series([len(x)]), pd.Series([x @ x]), pd.Series([x @ residual]), pd.Series([residual @ residual]))
        slope, noise = (float(value.iloc[0]) for value in _slopes(*sums))
        if np.isnan(noise) or self.country_spread <= 0:
            return shared
        return replace(shared, country_offset=self.country_spread / (self.country_spread + noise) * slope)

    def chosen_for(self, events: pd.DataFrame) -> tuple[PriceResponse, dict[str, Any]]:
        """The markdown-event backtest choosing between the shared response and the country's own offset on it
        (these are one country's events): the offset fitted on the earlier half of the events, by week, must
        predict the later half's lifts better (lower mean absolute log lift error) than the shared response; then
        the offset of all events is used. The record says what was compared and what was chosen."""
        shared = replace(self, country_offset=0.0)
        record: dict[str, Any] = {"checked_events": 0, "shared_error": None, "own_offset_error": None}
        if events.empty:
            return shared, record | {"response": "shared"}
        # The split falls between weeks: a week's events are all earlier or all later.
        middle = events["week_start"].sort_values(kind="stable").iloc[len(events) // 2]
        earlier, later = events[events["week_start"] < middle], events[events["week_start"] >= middle]
        if min(len(earlier), len(later)) < MIN_CHECKED_EVENTS or self.country_spread <= 0:
            return shared, record | {"response": "shared"}
        record["checked_events"] = len(later)
        record["shared_error"] = shared.checked_against(later)["log_lift_error"]
        record["own_offset_error"] = shared.with_country_offset(earlier).checked_against(later)["log_lift_error"]
        if record["own_offset_error"] >= record["shared_error"]:
            return shared, record | {"response": "shared"}
        return shared.with_country_offset(events), record | {"response": "own offset"}

    def lift(self, rows: pd.DataFrame) -> np.ndarray:
        """Units at each row's `discount` over units at its `current_discount`, the discount counted at most
        `beyond_deepest` past the deepest its category was seen at (never below the current one)."""
        current = rows["current_discount"].to_numpy("float64")
        # A category never seen sold takes the deepest discount any category sold at; a card without them, none.
        unseen = max(self.deepest.values(), default=np.inf)
        deepest = rows["category"].astype(str).map(dict(self.deepest)).fillna(unseen)
        bound = deepest.to_numpy("float64") + self.beyond_deepest
        discount = np.fmin(rows["discount"].to_numpy(dtype="float64"), np.fmax(bound, current))
        elasticity = self.elasticity(rows["category"])
        if self.curve == "exponential":
            exponential: np.ndarray = np.exp(elasticity * (discount - current))
            return exponential
        lift: np.ndarray = ((1 - discount) / (1 - current)) ** -elasticity
        return lift

    def regressor(self, events: pd.DataFrame) -> np.ndarray:
        """The events' price change as this response's curve reads it (markdown_events' x or z)."""
        regressor: np.ndarray = events[CURVES[self.curve][0]].to_numpy("float64")
        return regressor

    def applied_to(self, level: Callable[[pd.DataFrame], np.ndarray]) -> Callable[[pd.DataFrame], np.ndarray]:
        """A forecast at any candidate discount from one of units at today's (`level`)."""

        def predict(rows: pd.DataFrame) -> np.ndarray:
            units: np.ndarray = np.asarray(level(rows.assign(discount=rows["current_discount"])), dtype="float64")
            predicted: np.ndarray = units * self.lift(rows) * self.season_shift(rows)
            return predicted

        return predict

    def season_amplitude(self) -> float:
        """How far log demand swings either way over the year (0: no cycle)."""
        return float(np.hypot(self.season_cos, self.season_sin))

    def season_peak_day(self) -> float:
        """The day of the year (0 to 365) demand peaks on."""
        angle = np.arctan2(self.season_sin, self.season_cos) % (2 * np.pi)
        return float(angle * YEAR_DAYS / (2 * np.pi))

    def season_shift(self, rows: pd.DataFrame) -> np.ndarray:
        """Demand in each row's week over demand in the week its forecast was made at (`weeks_ahead` earlier), by
        the yearly cycle: 1 without one."""
        if not (self.season_cos or self.season_sin):
            return np.ones(len(rows))
        origin = rows["week_start"] - pd.to_timedelta(rows["weeks_ahead"].to_numpy() * 7, unit="D")
        now, then = _phase(rows["week_start"]), _phase(origin)
        shift: np.ndarray = np.exp(
            self.season_cos * (np.cos(now) - np.cos(then)) + self.season_sin * (np.sin(now) - np.sin(then))
        )
        return shift

    def checked_against(self, events: pd.DataFrame) -> dict[str, Any]:
        """The markdown-event backtest: how far the lift this response predicts for each past event (log of
        predicted over actual, net of the season) lies from the one seen; mean absolute and mean (bias)."""
        if events.empty:
            return {"events": 0, "log_lift_error": None, "log_lift_bias": None}
        miss = -self.elasticity(events["category"]) * self.regressor(events) - events["y"].to_numpy("float64")
        return {
            "events": len(events),
            "log_lift_error": float(np.abs(miss).mean()),
            "log_lift_bias": float(miss.mean()),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall,
            "by_category": dict(self.by_category),
            "events": dict(self.events),
            "deepest": dict(self.deepest),
            "beyond_deepest": self.beyond_deepest,
            "country_spread": self.country_spread,
            "country_offset": self.country_offset,
            "max_elasticity": self.max_elasticity,
            "season_cos": self.season_cos,
            "season_sin": self.season_sin,
            "curve": self.curve,
            "curve_misfits": dict(self.curve_misfits),
        }

    @classmethod
    def of(cls, card: Mapping[str, Any]) -> PriceResponse:
        """The response a card records; a card from before the deepest discounts were recorded bounds none, and
        one from before country offsets or the yearly cycle has none."""
        return cls(
            float(card["overall"]),
            dict(card["by_category"]),
            dict(card["events"]),
            dict(card.get("deepest", {})),
            float(card.get("beyond_deepest", 0.0)),
            float(card.get("country_spread", 0.0)),
            float(card.get("country_offset", 0.0)),
            card.get("max_elasticity"),
            float(card.get("season_cos", 0.0)),
            float(card.get("season_sin", 0.0)),
            str(card.get("curve", "power")),
            dict(card.get("curve_misfits", {})),
        )


def _slopes(events: pd.Series, sxx: pd.Series, sxy: pd.Series, syy: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Per group, the slope through the origin -sxy / sxx (an elasticity) and its variance from the fit's
    residuals (NaN below two events)."""
    sxx = sxx.where(sxx > 0)
    slope = -sxy / sxx
    residual = syy + 2 * slope * sxy + slope**2 * sxx
    noise = (residual / (events - 1).clip(lower=1) / sxx).where(events >= 2)
    return slope, noise.where(slope.notna())


def _residual_sums(statistics: pd.DataFrame, elasticity: np.ndarray) -> tuple[pd.Series, pd.Series]:
    """Per row of event statistics, the sums x r and r r of its events' residuals r = y + elasticity x."""
    sxy, sxx = statistics["sxy"], statistics["sxx"]
    return sxy + elasticity * sxx, statistics["syy"] + 2 * elasticity * sxy + elasticity**2 * sxx


def _spread(slope: pd.Series, noise: pd.Series) -> float:
    """How much the groups' slopes truly differ: their variance beyond their own noise (0 below two groups)."""
    known = slope.notna() & noise.notna()
    slopes, noises = slope[known].to_numpy(dtype="float64"), noise[known].to_numpy(dtype="float64")
    return max(float(np.var(slopes, ddof=1) - np.mean(noises)), 0.0) if len(slopes) >= 2 else 0.0


def learned_from(
    history: pd.DataFrame, settings: PriceResponseSettings, sampled_from: pd.DataFrame | None = None
) -> PriceResponse:
    """The price response of these rows' markdown events alone (the stage learns one from every country's); with
    `sampled_from`, the history these rows' articles were sampled from, as deep as its articles sold (deepest_sold)."""
    statistics = pd.concat(
        [country_statistics(rows, settings.event_window_weeks) for _, rows in history.groupby("country", observed=True)]
        + ([] if sampled_from is None else [deepest_sold(sampled_from)])
        or [pd.DataFrame(columns=COUNTRY_STATISTIC_COLUMNS)]
    )
    return PriceResponse.estimate(statistics, settings.max_elasticity, settings.beyond_deepest)


def markdown_margin(settings: PriceResponseSettings, level_wape: float | None) -> float:
    """The share of holding revenue a deeper markdown must gain: more the less the level forecaster is trusted."""
    return settings.margin_per_wape * (1.0 if level_wape is None else level_wape)
