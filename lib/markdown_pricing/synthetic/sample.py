"""Deterministic synthetic raw data in the shape of CONTRACTS.md section 1, with a known true demand model.

The world: European countries of very different size, fashion articles launched per season, shelf prices that
are only ever marked down (on Mondays, at random times per country so the discount varies independently of the
lifecycle), stock that sells out, a few returns, and, on request, the bad and duplicate rows the pipeline must
quarantine or drop. The true-demand functions are public so an oracle can rebuild the same world with
`build_world(np.random.default_rng(seed), ...)` and score recommendations against it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from math import log
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from markdown_pricing.model.pricing import candidate_discounts, recommend, simulate_season

COUNTRY_CODES = (
    "DEU",
    "FRA",
    "GBR",
    "ITA",
    "ESP",
    "NLD",
    "POL",
    "SWE",
    "BEL",
    "AUT",
    "CHE",
    "DNK",
    "NOR",
    "PRT",
    "CZE",
    "FIN",
    "IRL",
    "HUN",
    "ROU",
    "GRC",
    "SVK",
    "BGR",
    "HRV",
    "SVN",
    "LTU",
    "LVA",
    "EST",
    "LUX",
    "ISL",
    "MLT",
    "CYP",
    "SRB",
    "USA",
    "CAN",
    "MEX",
    "BRA",
    "JPN",
    "KOR",
    "AUS",
    "NZL",
    "TUR",
    "UKR",
    "ISR",
    "ARE",
    "SAU",
    "ZAF",
    "SGP",
)
# category: (lowest base price, highest base price, base daily demand in the largest country, price elasticity)
CATEGORIES: dict[str, tuple[float, float, float, float]] = {
    "tops": (9.0, 34.0, 30.0, 2.5),
    "jeans": (39.0, 99.0, 18.0, 1.8),
    "dresses": (29.0, 89.0, 16.0, 2.2),
    "knitwear": (29.0, 79.0, 14.0, 2.0),
    "outerwear": (69.0, 229.0, 9.0, 1.4),
    "shoes": (39.0, 139.0, 11.0, 1.6),
    "accessories": (7.0, 29.0, 24.0, 2.8),
}
LADDER = np.round(np.arange(8) * 0.1, 1)
WEEKDAY_FACTOR = np.array([0.85, 0.85, 0.9, 0.95, 1.05, 1.3, 1.1])  # Monday first
MARKDOWN_CHANCE = 0.12
RETURN_CHANCE = 0.02
EPOCH = date(1970, 1, 1)
# The tiny country: its shop opened this many weeks before the run date (fewer than a four-origin backtest needs),
# it carries this share of the articles (at least TINY_MIN_ARTICLES, if that many are eligible: launched since it
# opened, or also older ones still on sale with WorldShape.tiny_carries_older), and its demand is this share of the
# smallest regular country's.
TINY_COUNTRY_WEEKS = 6
TINY_ARTICLE_SHARE = 0.05
TINY_MIN_ARTICLES = 3
TINY_SCALE = 0.5
# Articles' price elasticities stay within these bounds; WorldShape moves and stretches them around the center.
ELASTICITY_BOUNDS = (1.2, 3.0)
ELASTICITY_CENTER = 2.0
# No elasticity goes below this, however a world shifts it: demand always responds to the price a little.
ELASTICITY_FLOOR = 0.2


def country_scales(n: int) -> np.ndarray:
    """Demand multiplier per country rank (largest first): a power law with largest/smallest ratio 8."""
    return (np.arange(n) + 1.0) ** -(log(8) / log(n) if n > 1 else 1.0)


def assortment_shares(n: int, largest_to_median: float | None = None) -> np.ndarray:
    """The share of the articles each country carries, by rank (largest first)."""
    if largest_to_median is None:
        return 0.95 - 0.45 * np.arange(n) / max(1, n - 1)
    median_rank = (n + 1) / 2
    return 0.95 * (np.arange(n) + 1.0) ** -(log(largest_to_median) / log(median_rank) if n > 1 else 1.0)


def lifecycle(weeks_since_launch: np.ndarray) -> np.ndarray:
    """Lifecycle curve: zero before launch, ramps up over two weeks, then decays slowly."""
    w = np.asarray(weeks_since_launch, dtype=float)
    curve = np.minimum(1.0, (w + 1 / 7) / 2) * np.exp(-0.03 * np.maximum(0.0, w - 2))
    return np.where(w < 0, 0.0, curve)


# South of the equator the yearly cycle runs this many days behind.
HALF_YEAR_DAYS = 365.25 / 2


def seasonal_factor(day_of_year: np.ndarray) -> np.ndarray:
    """Yearly demand cycle peaking in December."""
    return 1 + 0.15 * np.cos(2 * np.pi * (np.asarray(day_of_year, dtype=float) - 345) / 365.25)


# The demand curves a world's price response may follow. All agree at PRICE_RESPONSE_ANCHOR off; they part beyond it.
RESPONSES = ("power", "exponential", "linear")
PRICE_RESPONSE_ANCHOR = 0.3


def price_response(discount: np.ndarray, elasticity: np.ndarray, shape: str = "power") -> np.ndarray:
    """Demand multiplier of a discount: under constant price elasticity ("power"), or a curve with the same lift at
    PRICE_RESPONSE_ANCHOR off that grows exponentially ("exponential", log-linear in the discount) or linearly
    ("linear") with the discount, so that deep discounts lift demand less than the power law says."""
    d, e = np.asarray(discount, dtype=float), np.asarray(elasticity, dtype=float)
    if shape == "power":
        return (1 - d) ** -e
    anchor = (1 - PRICE_RESPONSE_ANCHOR) ** -e
    if shape == "exponential":
        return anchor ** (d / PRICE_RESPONSE_ANCHOR)
    if shape == "linear":
        return 1 + (anchor - 1) * d / PRICE_RESPONSE_ANCHOR
    raise ValueError(f"price response {shape!r} is none of {', '.join(RESPONSES)}")


def true_daily_demand(
    base: np.ndarray,
    days_since_launch: np.ndarray,
    days_to_season_end: np.ndarray,
    weekday: np.ndarray,
    day_of_year: np.ndarray,
    discount: np.ndarray,
    elasticity: np.ndarray,
    response: str = "power",
) -> np.ndarray:
    """Mean of units sold on a day; base is the article's base demand times the country scale and the pair's
    affinity."""
    in_season = (np.asarray(days_since_launch) >= 0) & (np.asarray(days_to_season_end) >= 0)
    mean = (
        base
        * lifecycle(np.asarray(days_since_launch) / 7)
        * WEEKDAY_FACTOR[weekday]
        * seasonal_factor(day_of_year)
        * price_response(discount, elasticity, response)
    )
    return np.where(in_season, mean, 0.0)


@dataclass(frozen=True)
class WorldShape:
    """What sets one world's structure apart from another's beyond its size and seed; the defaults are the demo's.

    response: the demand curve of the discount (RESPONSES); elasticity_shift and elasticity_spread move the
    categories' price elasticities and scale their spread around ELASTICITY_CENTER; noise: the variance of a
    gamma-distributed day-to-day demand shock (0: Poisson alone); affinity: the standard deviation of a lognormal
    demand multiplier per (country, article), how differently countries take to one article; country_elasticity:
    the standard deviation of a shift per country of every article's elasticity, how differently countries respond
    to the same discount (bounded below like the elasticities); volume: multiplies
    every country's demand; markdown_chance: the weekly chance of a markdown in the history, never deeper than
    deepest_markdown; stock_cover: the range of an article's stock as a share of its expected season demand;
    tiny_carries_older: the tiny country carries articles launched before its shop opened too, not only newer ones;
    southern: how many of the regular countries, the smallest, sell south of the equator, where the yearly cycle
    peaks half a year later (the seasons' calendar stays the retailer's).
    """

    response: str = "power"
    elasticity_shift: float = 0.0
    elasticity_spread: float = 1.0
    noise: float = 0.0
    affinity: float = 0.0
    country_elasticity: float = 0.0
    volume: float = 1.0
    markdown_chance: float = MARKDOWN_CHANCE
    deepest_markdown: float = float(LADDER[-1])
    stock_cover: tuple[float, float] = (0.6, 1.4)
    tiny_carries_older: bool = False
    southern: int = 0

    def __post_init__(self) -> None:
        checks = (
            (self.response in RESPONSES, f"response {self.response!r} is none of {', '.join(RESPONSES)}"),
            (self.elasticity_spread > 0, "elasticity_spread must be positive"),
            (
                min(self.noise, self.affinity, self.country_elasticity) >= 0,
                "noise, affinity and country_elasticity must not be negative",
            ),
            (self.volume > 0, "volume must be positive"),
            (0 <= self.markdown_chance <= 1, "markdown_chance must be between 0 and 1"),
            (self.deepest_step() is not None, f"deepest_markdown must be a step of {LADDER.tolist()}"),
            (0 < self.stock_cover[0] <= self.stock_cover[1], "stock_cover must be 0 < low <= high"),
            (self.southern >= 0, "southern must not be negative"),
        )
        if problems := [message for holds, message in checks if not holds]:
            raise ValueError("; ".join(problems))

    def check_countries(self, countries: int) -> None:
        """Raises ValueError where the shape asks for more of the world's regular countries than it has."""
        if self.southern > countries:
            raise ValueError(f"southern = {self.southern} is more than the {countries} regular countries")

    def deepest_step(self) -> int | None:
        """The index into LADDER of deepest_markdown; None when it is not a step of the ladder."""
        steps = np.flatnonzero(np.isclose(LADDER, self.deepest_markdown))
        return int(steps[0]) if len(steps) else None

    def elasticities(self, drawn: np.ndarray) -> np.ndarray:
        """The world's elasticities from the default ones drawn per article, within bounds that move with them."""
        if (self.elasticity_shift, self.elasticity_spread) == (0.0, 1.0):
            # The demo's arithmetic exactly: stretching by 1 around the center could move the last bit of a float.
            return np.clip(drawn, *ELASTICITY_BOUNDS)
        low, high = (ELASTICITY_CENTER + self.elasticity_spread * (b - ELASTICITY_CENTER) for b in ELASTICITY_BOUNDS)
        moved = ELASTICITY_CENTER + self.elasticity_spread * (drawn - ELASTICITY_CENTER)
        shift = self.elasticity_shift
        return np.clip(moved + shift, max(ELASTICITY_FLOOR, low + shift), high + shift)


DEMO_SHAPE = WorldShape()


@dataclass(frozen=True)
class World:
    """The hidden parameters of a sample: countries, articles and who carries what."""

    countries: tuple[str, ...]
    country_scale: np.ndarray
    article_id: np.ndarray
    category: np.ndarray
    season: np.ndarray
    launch: np.ndarray  # days since 1970-01-01
    season_end: np.ndarray  # days since 1970-01-01
    original_price: np.ndarray
    base_demand: np.ndarray
    elasticity: np.ndarray
    carried: np.ndarray  # bool (country, article)
    first_day: date
    run_date: date
    tiny_country: str | None = None  # the last of `countries`, when the world has one
    opened: int = 0  # days since 1970-01-01 when the tiny country's shop opened
    shape: WorldShape = DEMO_SHAPE
    affinity: np.ndarray | None = None  # float (country, article) demand multiplier; None: 1 everywhere
    country_elasticity: np.ndarray | None = None  # float per country, added to its articles' elasticity; None: 0
    year_shift: np.ndarray | None = None  # days per country its yearly cycle peaks after the north's; None: 0

    def day_of_year(self, country: np.ndarray, days: np.ndarray | int) -> np.ndarray:
        """The day of the year each country's demand cycle is at on these days (seasonal_factor's argument)."""
        day = _day_of_year(days)
        return day if self.year_shift is None else day - self.year_shift[country]

    def pair_base(self, country: np.ndarray, article: np.ndarray) -> np.ndarray:
        """Base daily demand of (country, article) pairs: the article's, the country's scale and their affinity."""
        base = self.base_demand[article] * self.country_scale[country]
        return base if self.affinity is None else base * self.affinity[country, article]

    def pair_elasticity(self, country: np.ndarray, article: np.ndarray) -> np.ndarray:
        """Price elasticity of (country, article) pairs: the article's, shifted by the country's."""
        elasticity = self.elasticity[article]
        if self.country_elasticity is None:
            return elasticity
        return np.maximum(elasticity + self.country_elasticity[country], ELASTICITY_FLOOR)


@dataclass(frozen=True)
class RunState:
    """Each simulated (country, article) pair as the run date finds it: the ground truth the raw data hides."""

    country: np.ndarray  # index into World.countries
    article: np.ndarray  # index into the World's articles
    stock: np.ndarray  # units on hand at the start of the run date
    last_snapshot: np.ndarray  # units_on_hand of the latest stock snapshot before the run date, -1 if none
    step: np.ndarray  # index into LADDER of the discount on the shelf at the run date


@dataclass(frozen=True)
class SampleSummary:
    """What generate_sample wrote; injected counts the bad and duplicate rows by kind (empty when none)."""

    countries: tuple[str, ...]
    articles: int
    sales_rows: int
    first_day: date
    run_date: date
    injected: dict[str, int] = field(default_factory=dict)
    tiny_country: str | None = None
    truth_rows: int = 0


def _season(day: date) -> tuple[str, date, date, date]:
    """(label, first day, last launch day, season_end) of the season whose selling period contains day."""
    if 2 <= day.month <= 7:
        return f"{day.year}-SS", date(day.year, 2, 1), date(day.year, 4, 30), date(day.year, 7, 31)
    year = day.year if day.month >= 8 else day.year - 1
    return f"{year}-AW", date(year, 8, 1), date(year, 10, 31), date(year + 1, 1, 31)


def _days(d: date) -> int:
    return (d - EPOCH).days


def _weekday(days: np.ndarray | int) -> np.ndarray:
    """Monday = 0, for days since 1970-01-01 (a Thursday)."""
    return (np.asarray(days) + 3) % 7


def _day_of_year(days: np.ndarray | int) -> np.ndarray:
    day = np.asarray(days).astype("datetime64[D]")
    return (day - day.astype("datetime64[Y]")).astype(np.int64) + 1


def build_world(
    rng: np.random.Generator,
    *,
    countries: int,
    articles: int,
    weeks: int,
    run_date: date,
    tiny_country_weeks: int = TINY_COUNTRY_WEEKS,
    largest_to_median: float | None = None,
    shape: WorldShape = DEMO_SHAPE,
) -> World:
    """Draws the world's parameters; the first thing generate_sample does with default_rng(seed).

    `countries` regular countries, then, unless tiny_country_weeks is 0 (or no article launched in those weeks),
    the next code of COUNTRY_CODES as the tiny country whose shop opened tiny_country_weeks before the run date.
    Each country carries a share of the articles falling with its rank: from 95 % to 50 % by default, or as a
    power law with the largest country carrying `largest_to_median` times the median country's assortment.
    `shape` sets the world's structure; its defaults draw exactly the demo's world.
    """
    if run_date.weekday() != 0:
        raise ValueError(f"run_date {run_date} is not a Monday")
    room = len(COUNTRY_CODES) - (1 if tiny_country_weeks else 0)
    if not 1 <= countries <= room:
        raise ValueError(f"countries must be between 1 and {room}")
    first_day = run_date - timedelta(weeks=weeks)
    # Seasons overlapping the history, up to the one on sale a week after the run date (the "run season").
    seasons = [_season(first_day)]
    while seasons[-1][3] < run_date + timedelta(days=7):
        seasons.append(_season(seasons[-1][3] + timedelta(days=1)))
    # 40% of the articles belong to the run season and launched at least three weeks before the run date, so
    # every run has plenty of articles to price, even right at a season's start. The rest spread over the earlier
    # seasons in proportion to how much of each the history covers.
    n_run = round(0.4 * articles) if len(seasons) > 1 else articles
    overlap = np.array([(min(end, run_date) - max(start, first_day)).days for _, start, _, end in seasons[:-1]])
    quantiles = (np.arange(articles - n_run) + 0.5) / max(1, articles - n_run)
    earlier = np.searchsorted(np.cumsum(overlap) / max(1, overlap.sum()), quantiles)
    season_idx = rng.permutation(np.concatenate([earlier, np.full(n_run, len(seasons) - 1)]))
    windows = [(_days(start), _days(last_launch)) for _, start, last_launch, _ in seasons]
    hi = min(windows[-1][1], _days(run_date) - 21)
    windows[-1] = (min(windows[-1][0], hi - 28), hi)
    lo_hi = np.array(windows)[season_idx]
    launch = lo_hi[:, 0] + np.floor(rng.random(articles) * (lo_hi[:, 1] - lo_hi[:, 0] + 1)).astype(np.int64)

    names = np.array(list(CATEGORIES))
    params = np.array(list(CATEGORIES.values()))
    cat_idx = rng.integers(0, len(names), articles)
    low, high, base, elasticity = params[cat_idx].T
    price = np.floor(low + rng.random(articles) * (high - low)) + rng.choice([0.95, 0.99], articles)
    carried = rng.random((countries, articles)) < assortment_shares(countries, largest_to_median)[:, None]
    scale = country_scales(countries) * shape.volume
    tiny_row = np.zeros(articles, dtype=bool)
    season_end = np.array([_days(seasons[i][3]) for i in season_idx], dtype=np.int64)
    opened = _days(run_date - timedelta(weeks=tiny_country_weeks))
    if tiny_country_weeks:
        # A child generator: the regular countries' draws stay what they were without a tiny country.
        on_sale = season_end > opened + 28 if shape.tiny_carries_older else launch >= opened
        tiny_row = _tiny_assortment(rng.spawn(1)[0], on_sale)
    tiny = int(tiny_row.any())
    if tiny:
        carried = np.vstack([carried, tiny_row])
        scale = np.append(scale, TINY_SCALE * scale[-1])
    affinity = None
    if shape.affinity:
        affinity = rng.spawn(1)[0].lognormal(-(shape.affinity**2) / 2, shape.affinity, carried.shape)
    country_elasticity = None
    if shape.country_elasticity:
        country_elasticity = rng.spawn(1)[0].normal(0.0, shape.country_elasticity, len(carried))
    shape.check_countries(countries)
    year_shift = None
    if shape.southern:
        # The smallest regular countries, just before the tiny one (which stays north).
        year_shift = np.zeros(len(carried))
        year_shift[countries - shape.southern : countries] = HALF_YEAR_DAYS
    return World(
        countries=COUNTRY_CODES[: countries + tiny],
        country_scale=scale,
        article_id=np.array([f"A{i:05d}" for i in range(1, articles + 1)]),
        category=names[cat_idx],
        season=np.array([seasons[i][0] for i in season_idx]),
        launch=launch,
        season_end=season_end,
        original_price=np.round(price, 2),
        base_demand=base * rng.lognormal(0.0, 0.6, articles),
        elasticity=shape.elasticities(elasticity + rng.normal(0.0, 0.15, articles)),
        carried=carried,
        first_day=first_day,
        run_date=run_date,
        tiny_country=COUNTRY_CODES[countries] if tiny else None,
        opened=opened if tiny else 0,
        shape=shape,
        affinity=affinity,
        country_elasticity=country_elasticity,
        year_shift=year_shift,
    )


def _tiny_assortment(rng: np.random.Generator, eligible: np.ndarray) -> np.ndarray:
    """Which articles the tiny country carries: a few of the eligible ones."""
    candidates = np.nonzero(eligible)[0]
    wanted = max(TINY_MIN_ARTICLES, round(TINY_ARTICLE_SHARE * len(eligible)))
    carried = np.zeros(len(eligible), dtype=bool)
    carried[rng.choice(candidates, min(wanted, len(candidates)), replace=False)] = True
    return carried


def _season_shape(world: World, opened: int = 0) -> np.ndarray:
    """Per article, the sum of its daily demand curve over the season (from the day a shop `opened`, when later
    than its launch) at full price and base demand 1."""
    offset = np.arange(int((world.season_end - world.launch).max()) + 1)
    day = world.launch[:, None] + offset[None, :]
    curve = true_daily_demand(
        1.0, offset[None, :], world.season_end[:, None] - day, _weekday(day), _day_of_year(day), 0.0, 1.0
    )
    return (curve * (day >= opened)).sum(axis=1)


def _simulate(
    rng: np.random.Generator, world: World, carried: np.ndarray, opened: int = 0
) -> tuple[dict[str, dict[str, np.ndarray]], RunState]:
    """Runs the carried (country, article) pairs from their earliest launch (or the day their shop `opened`, when
    later) to the day before the run date; returns the clean rows by dataset and the pairs' state at the run date.

    The rows' country and article_id are codes into _names(world), and their numbers as narrow as they go: a world
    of a hundred million sales rows is held in memory (about 26 bytes a row) and written one country at a time."""
    ctry, art = np.nonzero(carried)
    n = len(ctry)
    shape = world.shape
    launch, end, orig = world.launch[art], world.season_end[art], world.original_price[art]
    base, elasticity = world.pair_base(ctry, art), world.pair_elasticity(ctry, art)
    stock = np.round(base * _season_shape(world, opened)[art] * rng.uniform(*shape.stock_cover, n)).astype(np.int64)
    step = np.zeros(n, dtype=np.int64)
    sold_total = np.zeros(n, dtype=np.int64)
    last_snapshot = np.full(n, -1, dtype=np.int64)
    first, stop = _days(world.first_day), _days(world.run_date)
    deepest = shape.deepest_step()
    sales, snaps, prices = [], [], [(np.arange(n), launch, orig)]
    for day in range(max(int(launch.min()), opened), stop):
        since, to_end = day - launch, end - day
        in_season = (since >= 0) & (to_end >= 0)
        if _weekday(day) == 0:  # Monday: stock snapshot at the start of the day, then any markdown
            if day >= first:
                snap = np.nonzero((since >= 0) & (to_end > -7))[0]
                snaps.append((snap, np.full(len(snap), day, dtype=np.int32), stock[snap].astype(np.int32)))
                last_snapshot[snap] = stock[snap]
            jump = 1 + (rng.random(n) < 0.3)
            moves = in_season & (since >= 21) & (step < deepest) & (rng.random(n) < shape.markdown_chance)
            step = np.where(moves, np.minimum(step + jump, deepest), step)
            moved = np.nonzero(moves)[0]
            prices.append((moved, np.full(len(moved), day), np.round(orig[moved] * (1 - LADDER[step[moved]]), 2)))
        mean = true_daily_demand(
            base, since, to_end, _weekday(day), world.day_of_year(ctry, day), LADDER[step], elasticity, shape.response
        )
        if shape.noise:
            mean = mean * rng.gamma(1 / shape.noise, shape.noise, n)
        sold = np.minimum(rng.poisson(mean), stock)
        # Returns arrive on any in-season day after a first sale, so a day can net out negative.
        returned = (in_season & (sold_total > 0) & (rng.random(n) < RETURN_CHANCE)).astype(np.int64)
        stock -= sold
        sold_total += sold
        units = sold - returned
        if day >= first:
            rows = np.nonzero(units)[0].astype(np.int32)
            shelf = np.round(orig[rows] * (1 - LADDER[step[rows]]), 2)
            day_rows = np.full(len(rows), day, dtype=np.int32)
            sales.append((rows, day_rows, units[rows].astype(np.int32), np.round(units[rows] * shelf, 2)))

    def columns(chunks: list[tuple[np.ndarray, ...]], names: tuple[str, ...]) -> dict[str, np.ndarray]:
        pair, *values = (np.concatenate(parts) for parts in zip(*chunks, strict=True))
        keys = {"country": ctry[pair].astype(np.int16), "article_id": art[pair].astype(np.int32)}
        return keys | dict(zip(names, values, strict=True))

    data = {
        "sales": columns(sales, ("sale_date", "units", "revenue")),
        "prices": columns(prices, ("valid_from", "price")),
        "stock": columns(snaps, ("snapshot_date", "units_on_hand")),
    }
    return data, RunState(country=ctry, article=art, stock=stock, last_snapshot=last_snapshot, step=step)


def _names(world: World) -> dict[str, pa.Array]:
    """The text behind the rows' codes: each country, then a malformed one; each article id, then an unknown one and
    none (_bad_codes)."""
    return {
        "country": pa.array([*world.countries, world.countries[0][:2].lower()], pa.string()),
        "article_id": pa.concat_arrays([pa.array(world.article_id, pa.string()), pa.array(["ZZ-UNKNOWN", None])]),
    }


def _bad_codes(world: World) -> tuple[int, int, int]:
    """The codes of the malformed country, the unknown article and the missing article id in _names(world)."""
    countries, articles = len(world.countries), len(world.article_id)
    return countries, articles, articles + 1


def _inject(
    rng: np.random.Generator, data: dict[str, dict[str, np.ndarray]], world: World
) -> tuple[dict[str, int], np.ndarray]:
    """Appends bad rows of each contract quarantine reason; returns their counts and the sales rows to re-deliver."""
    sales, prices = data["sales"], data["prices"]
    n_sales, n_prices = len(sales["units"]), len(prices["price"])
    each = int(np.clip(n_sales // 5000, 2, 5))
    counts = {}
    malformed_country, unknown_article, null_article = _bad_codes(world)
    for kind in ("null_article_id", "unknown_article", "after_run_date", "malformed_country"):
        pick = {k: v[rng.choice(n_sales, each, replace=False)] for k, v in sales.items()}
        if kind == "null_article_id":
            pick["article_id"] = np.full(each, null_article)
        elif kind == "unknown_article":
            pick["article_id"] = np.full(each, unknown_article)
        elif kind == "after_run_date":
            pick["sale_date"] = _days(world.run_date) + rng.integers(0, 7, each)
        else:
            pick["country"] = np.full(each, malformed_country)
        counts[f"sales_{kind}"] = each
        for k in sales:
            sales[k] = np.concatenate([sales[k], pick[k].astype(sales[k].dtype)])
    n_bad = 1 if n_prices < 1000 else 2
    # Same key as a real row, so quarantining the bad row leaves the real price history intact.
    pick = {k: v[rng.choice(n_prices, n_bad, replace=False)] for k, v in prices.items()}
    pick["price"] = np.where(np.arange(n_bad) % 2 == 0, 0.0, -pick["price"])
    for k in prices:
        prices[k] = np.concatenate([prices[k], pick[k]])
    counts["prices_non_positive"] = n_bad
    counts["sales_duplicates"] = max(1, round(0.003 * n_sales))
    return counts, rng.choice(n_sales, counts["sales_duplicates"], replace=False)


def true_outcomes(world: World, state: RunState, ladder: tuple[float, ...], salvage_value_share: float) -> pd.DataFrame:
    """The true expected season of every article a run on world.run_date prices, at each candidate discount.

    Priced means active as etl.active_articles has it: latest stock snapshot before the run date above zero and
    season_end after it. Expected units are the true daily means summed over the weeks etl.future_grid gives the
    article (the run date's week to the one holding season_end) and go through model.simulate_season with the true
    stock at the run date, so a candidate earns exactly what the pipeline would expect if its model were perfect.
    `oracle` marks the candidate model.recommend picks from these: the true best discount.
    """
    run = _days(world.run_date)
    active = np.nonzero((state.last_snapshot > 0) & (world.season_end[state.article] > run))[0]
    options = [(i, c) for i in active for c in candidate_discounts(float(LADDER[state.step[i]]), ladder)]
    pair = np.array([i for i, _ in options], dtype=np.int64)
    candidate = np.array([c for _, c in options], dtype=float)
    art, ctry = state.article[pair], state.country[pair]
    weeks = (world.season_end[art] - run) // 7 + 1
    row = np.repeat(np.arange(len(pair)), weeks)
    week_start = run + 7 * (np.arange(len(row)) - np.repeat(np.cumsum(weeks) - weeks, weeks))
    day = week_start[:, None] + np.arange(7)[None, :]
    a = art[row][:, None]
    units = true_daily_demand(
        world.pair_base(ctry[row], art[row])[:, None],
        day - world.launch[a],
        world.season_end[a] - day,
        _weekday(day),
        world.day_of_year(ctry[row][:, None], day),
        candidate[row][:, None],
        world.pair_elasticity(ctry[row], art[row])[:, None],
        world.shape.response,
    ).sum(axis=1)
    current = LADDER[state.step[pair]]
    weekly = pd.DataFrame(
        {
            "country": np.array(world.countries)[ctry][row],
            "article_id": world.article_id[art][row],
            "candidate": candidate[row],
            "week_start": week_start,
            "predicted_units": units,
            "stock_on_hand": state.stock[pair][row],
            "original_price": world.original_price[art][row],
            "price": np.round(world.original_price[art] * (1 - current), 2)[row],
            "current_discount": current[row],
        }
    )
    seasons = []
    for country, weeks_of_country in weekly.groupby("country", sort=True):
        season = simulate_season(weeks_of_country, salvage_value_share)
        best = recommend(season).set_index("article_id")["candidate"]
        seasons.append(season.assign(country=country, oracle=season["candidate"] == season["article_id"].map(best)))
    columns = [
        "country",
        "article_id",
        "candidate",
        "current_discount",
        "current_price",
        "original_price",
        "stock_on_hand",
        "expected_units",
        "expected_units_next_week",
        "expected_revenue",
        "expected_sell_through",
        "oracle",
    ]
    if not seasons:
        return pd.DataFrame(columns=columns)
    return (
        pd.concat(seasons, ignore_index=True)
        .rename(
            columns={
                "predicted_season_units": "expected_units",
                "predicted_units_next_week": "expected_units_next_week",
            }
        )
        .loc[:, columns]
    )


SALES_FILE_TYPES = {"article_id": pa.string(), "sale_date": pa.date32(), "units": pa.int32(), "revenue": pa.float64()}
FLAT_TYPES = {
    "articles": {
        "article_id": pa.string(),
        "category": pa.string(),
        "season": pa.string(),
        "launch_date": pa.date32(),
        "season_end": pa.date32(),
        "original_price": pa.float64(),
    },
    "prices": {"country": pa.string(), "article_id": pa.string(), "valid_from": pa.date32(), "price": pa.float64()},
    "stock": {
        "country": pa.string(),
        "article_id": pa.string(),
        "snapshot_date": pa.date32(),
        "units_on_hand": pa.int64(),
    },
}


def _table(cols: dict[str, np.ndarray], types: dict[str, pa.DataType], names: dict[str, pa.Array]) -> pa.Table:
    """Arrow table of the given columns and types; dates are days since 1970-01-01, and a column `names` holds is
    codes into its text."""

    def column(name: str, kind: pa.DataType) -> pa.Array:
        if name in names:
            return names[name].take(pa.array(cols[name]))
        return pa.array(np.asarray(cols[name], dtype=np.int32) if kind == pa.date32() else cols[name], type=kind)

    return pa.table({name: column(name, kind) for name, kind in types.items()})


def _sorted_by_name(cols: dict[str, np.ndarray], names: dict[str, pa.Array], date_column: str) -> dict[str, np.ndarray]:
    """The rows in order of country, article id (their text, not their codes) and date."""
    rank = {name: np.argsort(pc.sort_indices(text).to_numpy()) for name, text in names.items()}
    order = np.lexsort((cols[date_column], rank["article_id"][cols["article_id"]], rank["country"][cols["country"]]))
    return {name: values[order] for name, values in cols.items()}


def _write_parts(table: pa.Table, folder: Path, parts: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, parts + 1).astype(int)
    for i in range(parts):
        pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]), folder / f"part-{i:05d}.parquet")


def generate_sample(
    out_dir: Path,
    *,
    countries: int = 10,
    articles: int = 300,
    weeks: int = 60,
    seed: int = 7,
    run_date: date,
    inject_bad_rows: bool = True,
    tiny_country_weeks: int = TINY_COUNTRY_WEEKS,
    truth_dir: Path | None = None,
    salvage_value_share: float = 0.0,
    largest_to_median: float | None = None,
    shape: WorldShape = DEMO_SHAPE,
) -> SampleSummary:
    """Writes articles/, sales/, prices/ and stock/ raw datasets (each with a _SUCCESS marker) under out_dir.

    With truth_dir, also writes true_outcomes there (Parquet and a _SUCCESS marker): the answers, kept out of the
    raw landing zone the pipeline reads.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    world = build_world(
        rng,
        countries=countries,
        articles=articles,
        weeks=weeks,
        run_date=run_date,
        tiny_country_weeks=tiny_country_weeks,
        largest_to_median=largest_to_median,
        shape=shape,
    )
    tiny = np.zeros_like(world.carried)
    if world.tiny_country:
        tiny[-1] = world.carried[-1]
    data, state = _simulate(rng, world, world.carried & ~tiny)
    injected, redelivered = _inject(rng, data, world) if inject_bad_rows else ({}, np.array([], dtype=np.int64))
    if world.tiny_country:
        # Simulated apart, from a child generator and after the bad rows were picked: the regular countries' rows
        # stay what they were without a tiny country. Appended, so the re-delivered row numbers still hold.
        tiny_data, tiny_state = _simulate(rng.spawn(1)[0], world, tiny, world.opened)
        data = {
            name: {k: np.concatenate([v, tiny_data[name][k]]) for k, v in cols.items()} for name, cols in data.items()
        }
        state = RunState(
            **{f.name: np.concatenate([getattr(state, f.name), getattr(tiny_state, f.name)]) for f in fields(RunState)}
        )
    truth_rows = 0
    if truth_dir is not None:
        truth = true_outcomes(world, state, tuple(float(step) for step in LADDER), salvage_value_share)
        _write_truth(truth, Path(truth_dir))
        truth_rows = len(truth)
    for name in ("articles", "sales", "prices", "stock"):
        if (out_dir / name).exists():
            shutil.rmtree(out_dir / name)

    data["articles"] = {
        "article_id": np.arange(articles),
        "category": world.category,
        "season": world.season,
        "launch_date": world.launch,
        "season_end": world.season_end,
        "original_price": world.original_price,
    }
    names = _names(world)
    for name, date_column in (("articles", None), ("prices", "valid_from"), ("stock", "snapshot_date")):
        rows = data.pop(name)
        if date_column:
            rows = _sorted_by_name(rows, names, date_column)
        _write_parts(_table(rows, FLAT_TYPES[name], names), out_dir / name, int(rng.integers(1, 4)))
        (out_dir / name / "_SUCCESS").touch()

    sales = data["sales"]
    again = np.zeros(len(sales["units"]), dtype=bool)
    again[redelivered] = True
    # One country's rows at a time: the only copy of the sales rows is their codes.
    for code in pd.unique(sales["country"]):
        of_country = sales["country"] == code
        folder = out_dir / "sales" / f"country={names['country'][int(code)].as_py()}"
        folder.mkdir(parents=True)
        for part, rows in enumerate((of_country, of_country & again)):
            if rows.any():
                table = _table({k: v[rows] for k, v in sales.items()}, SALES_FILE_TYPES, names)
                pq.write_table(table, folder / f"part-{part:05d}.parquet")
    (out_dir / "sales" / "_SUCCESS").touch()
    return SampleSummary(
        countries=world.countries,
        articles=articles,
        sales_rows=len(sales["units"]) + int(again.sum()),
        first_day=world.first_day,
        run_date=run_date,
        injected=injected,
        tiny_country=world.tiny_country,
        truth_rows=truth_rows,
    )


def _write_truth(truth: pd.DataFrame, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(truth, preserve_index=False), folder / "part-00000.parquet")
    (folder / "_SUCCESS").touch()
