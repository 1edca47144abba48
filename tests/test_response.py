"""The shared price response: markdown events, the elasticities they give, and how the models use them."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from markdown_pricing.core.config import load_config
from markdown_pricing.model import pricing, rules
from markdown_pricing.model.country import rescore, train_country
from markdown_pricing.model.fallback import train_pooled
from markdown_pricing.model.forecast import prepare
from markdown_pricing.model.response import (
    MIN_CHECKED_EVENTS,
    STATISTIC_COLUMNS,
    STATISTICS,
    PriceResponse,
    country_statistics,
    event_statistics,
    learned_from,
    markdown_events,
    markdown_margin,
    steady_pairs,
)
from markdown_pricing.stages.per_country import response_statistics, sampled_history
from test_model import PARAMS, RULES, elastic_world

MONDAY = dt.date(2026, 6, 1)
SETTINGS = load_config("local").model.price_response


def article(country: str, article_id: str, category: str, prices: list[float], units: list[float], stock: float = 1000):
    """An article's weeks; its original price is its first week's."""
    return pd.DataFrame(
        {
            "country": country,
            "article_id": article_id,
            "category": category,
            "week_start": [pd.Timestamp(MONDAY + dt.timedelta(weeks=w)) for w in range(len(prices))],
            "price": prices,
            "discount": [1 - price / prices[0] for price in prices],
            "units": units,
            "stock_on_hand": stock,
        }
    )


def test_an_event_is_a_steady_price_change_its_lift_net_of_the_categorys_steady_articles() -> None:
    # The marked-down article sells 20 a week at 100, then 20 x 0.8^-2 at 80; the category's steady article falls
    # by a quarter over the same weeks, so the season alone would have cost the marked-down one a quarter too.
    marked = article("DEU", "A", "tops", [100.0] * 3 + [80.0] * 3, [20.0] * 3 + [20 * 0.8**-2 * 0.75] * 3)
    steady = article("DEU", "B", "tops", [50.0] * 6, [40.0] * 3 + [30.0] * 3)
    # Another category moves in the other direction and stays out of the correction.
    other = article("DEU", "C", "jeans", [60.0] * 6, [10.0] * 3 + [30.0] * 3)
    [event] = markdown_events(pd.concat([marked, steady, other]), window_weeks=3).itertuples()
    assert (event.article_id, event.category, event.week_start) == (
        "A",
        "tops",
        pd.Timestamp(MONDAY + dt.timedelta(3 * 7)),
    )
    assert event.x == pytest.approx(np.log(0.8))
    assert event.z == pytest.approx(-0.2)  # the price change over the original price (100)
    assert event.y == pytest.approx(-2 * np.log(0.8))


@pytest.mark.parametrize(
    ("prices", "units", "stock"),
    [
        ([100.0, 100.0, 90.0, 80.0, 80.0, 80.0], [10.0] * 6, 1000),  # not steady after the change
        ([100.0] * 3 + [80.0] * 3, [10.0] * 3 + [20.0] * 3, 20),  # sold out after it: demand not seen whole
        ([100.0] * 2 + [80.0] * 3, [10.0] * 5, 1000),  # too few weeks before it
    ],
)
def test_no_event_where_the_price_wavers_the_article_sells_out_or_the_weeks_are_too_few(
    prices: list[float], units: list[float], stock: float
) -> None:
    assert markdown_events(article("DEU", "A", "tops", prices, units, stock), window_weeks=3).empty


def synthetic_statistics(elasticities: dict[str, float], events: int, noise: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for category, elasticity in elasticities.items():
        z = -rng.choice([0.1, 0.2, 0.3], events)
        x = np.log(1 + z)
        y = -elasticity * x + rng.normal(0, noise, events)
        frames.append(
            pd.DataFrame(
                {
                    "country": "DEU",
                    "category": category,
                    "events": [events],
                    "sxx": [(x * x).sum()],
                    "sxy": [(x * y).sum()],
                    "syy": [(y * y).sum()],
                    "szz": [(z * z).sum()],
                    "szy": [(z * y).sum()],
                    "deepest": [0.3],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_categories_that_differ_keep_their_own_elasticity() -> None:
    truth = {"tops": 2.5, "outerwear": 1.4, "accessories": 2.8}
    response = PriceResponse.estimate(synthetic_statistics(truth, events=300, noise=0.05), max_elasticity=6.0)
    assert response.by_category == pytest.approx(truth, abs=0.1)
    assert response.events == {"accessories": 300, "outerwear": 300, "tops": 300}


def test_a_category_with_few_noisy_events_leans_on_the_others() -> None:
    alike = {"tops": 2.0, "jeans": 2.1, "dresses": 1.9, "knitwear": 2.0, "outerwear": 2.05}
    many = synthetic_statistics(alike, events=400, noise=0.05)
    few = synthetic_statistics({"shoes": 5.0}, events=3, noise=1.5, seed=1)
    response = PriceResponse.estimate(pd.concat([many, few]), max_elasticity=6.0)
    own = -few["sxy"].sum() / few["sxx"].sum()
    assert abs(response.by_category["shoes"] - response.overall) < abs(own - response.overall) / 2
    assert response.by_category["tops"] == pytest.approx(2.0, abs=0.1)


def test_no_events_give_no_price_response_and_estimates_stay_within_bounds() -> None:
    assert PriceResponse.estimate(pd.DataFrame(columns=STATISTIC_COLUMNS), 6.0) == PriceResponse(
        0.0, {}, {}, max_elasticity=6.0, curve_misfits={"power": 0.0, "exponential": 0.0}
    )
    wild = PriceResponse.estimate(synthetic_statistics({"tops": 9.0, "jeans": -1.0}, events=300, noise=0.01), 6.0)
    assert wild.by_category == pytest.approx({"tops": 6.0, "jeans": 0.0})


def test_the_response_lifts_todays_level_monotonically_beyond_any_discount_seen() -> None:
    response = PriceResponse(overall=2.0, by_category={"tops": 2.5}, events={"tops": 10})
    rows = pd.DataFrame(
        {
            "category": ["tops"] * 8 + ["jeans"],
            "current_discount": [0.1] * 9,
            "discount": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.3],
        }
    )
    level_seen = []
    predicted = response.applied_to(
        lambda frame: level_seen.append(frame["discount"].tolist()) or np.full(len(frame), 4.0)
    )(rows)
    assert level_seen == [[0.1] * 9]  # the level is always asked at today's discount
    assert predicted[0] == pytest.approx(4.0)
    assert (np.diff(predicted[:8]) > 0).all()
    assert predicted[7] == pytest.approx(4.0 * (0.2 / 0.9) ** -2.5)
    assert predicted[8] == pytest.approx(4.0 * (0.7 / 0.9) ** -2.0)  # a category without events: the overall


def test_the_lift_stops_growing_one_step_past_the_deepest_discount_its_category_was_seen_at() -> None:
    response = PriceResponse(2.0, {}, {}, deepest={"tops": 0.3}, beyond_deepest=0.1)
    rows = pd.DataFrame(
        {
            "category": ["tops"] * 4 + ["jeans", "tops"],
            "current_discount": [0.1] * 5 + [0.6],
            "discount": [0.3, 0.4, 0.5, 0.7, 0.7, 0.7],
        }
    )
    lift = response.lift(rows)
    assert lift[:2] == pytest.approx([(0.7 / 0.9) ** -2, (0.6 / 0.9) ** -2])
    assert lift[2] == lift[3] == lift[1]  # deeper candidates sell no more than one step past the deepest seen
    assert lift[4] == lift[1]  # a category never seen sold: the deepest any category sold at bounds it
    assert lift[5] == 1.0  # already past the bound: no deeper candidate sells more than today's price
    assert PriceResponse.of(response.as_dict()) == response
    assert PriceResponse.of({"overall": 2.0, "by_category": {}, "events": {}}).lift(rows)[3] == pytest.approx(
        (0.3 / 0.9) ** -2
    )  # a card from before the bound: none


def curve_statistics(lift: Callable[[np.ndarray], np.ndarray], events: int, seed: int = 0) -> pd.DataFrame:
    """One category's event statistics where demand follows `lift` (of the discount) from markdowns of one to three
    steps, starting at any depth from none to 40 %, with a little noise."""
    rng = np.random.default_rng(seed)
    before = rng.choice([0.0, 0.1, 0.2, 0.3, 0.4], events)
    after = before + rng.choice([0.1, 0.2, 0.3], events)
    x, z = np.log((1 - after) / (1 - before)), before - after
    y = np.log(lift(after) / lift(before)) + rng.normal(0, 0.05, events)
    sums = {"sxx": x @ x, "sxy": x @ y, "syy": y @ y, "szz": z @ z, "szy": z @ y}
    return pd.DataFrame([{"country": "DEU", "category": "tops", "events": events, **sums, "deepest": 0.7}])


def test_the_demand_curve_is_the_one_whose_fit_misses_the_events_less() -> None:
    power = PriceResponse.estimate(curve_statistics(lambda d: (1 - d) ** -2.0, 300), max_elasticity=6.0)
    assert power.curve == "power" and power.by_category["tops"] == pytest.approx(2.0, abs=0.05)
    assert power.curve_misfits["power"] < power.curve_misfits["exponential"]
    # Each step of discount lifts by the same factor: deep discounts lift less than a constant elasticity says.
    exponential = PriceResponse.estimate(curve_statistics(lambda d: np.exp(2.5 * d), 300), max_elasticity=6.0)
    assert exponential.curve == "exponential" and exponential.by_category["tops"] == pytest.approx(2.5, abs=0.05)
    rows = pd.DataFrame({"category": ["tops"] * 2, "current_discount": [0.0, 0.4], "discount": [0.3, 0.7]})
    fitted = exponential.by_category["tops"]
    assert exponential.lift(rows) == pytest.approx([np.exp(fitted * 0.3)] * 2)  # the same from any depth
    assert PriceResponse.of(exponential.as_dict()) == exponential  # a rescore recommends on its card's curve
    assert PriceResponse.of({"overall": 2.0, "by_category": {}, "events": {}}).curve == "power"  # an older card
    # Its markdown-event backtest reads the events' price changes on its own curve.
    events = pd.DataFrame({"category": ["tops"], "x": [np.log(0.3 / 0.6)], "z": [-0.3], "y": [fitted * 0.3]})
    assert exponential.checked_against(events)["log_lift_error"] == pytest.approx(0.0, abs=1e-9)
    assert power.checked_against(events)["log_lift_error"] > 0.1


def test_the_deepest_discount_seen_is_each_categorys_deepest_in_any_country() -> None:
    world = elastic_world(seed=1, weeks=20)
    history = prepare(world[~world["is_future"]])
    statistics = event_statistics(history, 3)
    sold = history[history["units"] > 0]
    assert statistics.set_index("category")["deepest"].to_dict() == sold.groupby("category")["discount"].max().to_dict()
    shallow = statistics.assign(country="AUT", deepest=0.0)
    estimated = PriceResponse.estimate(pd.concat([statistics, shallow]), 6.0, beyond_deepest=0.1)
    assert estimated.deepest == statistics.set_index("category")["deepest"].to_dict()
    assert estimated.beyond_deepest == 0.1


def test_a_country_learns_the_elasticity_its_markdowns_show() -> None:
    # elastic_world's demand goes with (1 - discount) ^ -2 and decays with age.
    response = learned_from(elastic_world(weeks=40), SETTINGS)
    assert response.overall == pytest.approx(2.0, abs=0.35)


def test_a_tiny_country_on_the_baseline_gets_markdowns_from_the_shared_response() -> None:
    # Overstocked articles of a shop too new for any model: the shared response says a markdown sells them.
    tiny = elastic_world(seed=5, articles=10, weeks=2).assign(country="LUX")
    tiny.loc[tiny["is_future"], "stock_on_hand"] = 5_000
    both = pd.concat([elastic_world(seed=1), tiny], ignore_index=True)
    shared = PriceResponse(overall=2.5, by_category={}, events={})
    steady = dataclasses.replace(PARAMS, num_boost_round=5)
    [fallback] = train_pooled(both, {"LUX": "too little history"}, steady, RULES, num_threads=1, response=shared)
    assert fallback.card["price_response"] == shared.as_dict()
    assert (fallback.predictions["recommended_discount"] > fallback.predictions["current_discount"]).any()


def test_a_rescore_uses_the_response_its_model_recommended_with() -> None:
    world = elastic_world(seed=2)
    trained = train_country(world, PARAMS, RULES, num_threads=1, response=PriceResponse(2.0, {}, {}))
    other = PriceResponse(0.0, {}, {})
    rescored = rescore(world, trained.model_text, trained.card, PARAMS, RULES, response=other)
    pd.testing.assert_frame_equal(rescored.predictions, trained.predictions)
    older_card = {key: value for key, value in trained.card.items() if key != "price_response"}
    flat = rescore(world, trained.model_text, older_card, PARAMS, RULES, response=other)
    assert (flat.predictions["recommended_discount"] == flat.predictions["current_discount"]).all()


def test_spark_sums_each_countrys_events_and_steady_pairs_as_pandas_does(spark: SparkSession) -> None:
    # A new shop of two weeks has neither events nor steady pairs.
    new_shop = elastic_world(seed=3, weeks=2).assign(country="LUX")
    history = pd.concat(
        [elastic_world(seed=1, weeks=20), elastic_world(seed=2, weeks=20).assign(country="AUT"), new_shop],
        ignore_index=True,
    )
    weekly = spark.createDataFrame(history.assign(week_start=pd.to_datetime(history["week_start"])))
    expected = pd.concat(
        [country_statistics(prepare(rows[~rows["is_future"]]), 3) for _, rows in history.groupby("country")]
    )
    assert expected["category"].notna().any() and expected["week_start"].notna().any()
    expected["week_start"] = expected["week_start"].dt.date.astype(object).where(expected["week_start"].notna(), None)
    # The driver's estimate from Spark's rows (dates as objects, counts as floats) is the pandas one.
    from_spark = PriceResponse.estimate(response_statistics(weekly, 3).toPandas(), 6.0)
    from_pandas = PriceResponse.estimate(expected, 6.0)
    assert from_spark.by_category == pytest.approx(from_pandas.by_category)
    assert (from_spark.season_cos, from_spark.season_sin) == pytest.approx(
        (from_pandas.season_cos, from_pandas.season_sin)
    )
    assert_df_equality(
        response_statistics(weekly, 3),
        spark.createDataFrame(expected, schema=response_statistics(weekly, 3).schema),
        ignore_row_order=True,
        allow_nan_equality=True,
    )


def test_a_sampled_response_counts_the_sampled_articles_events_and_every_articles_deepest_discount(
    spark: SparkSession,
) -> None:
    history = pd.concat(
        [elastic_world(seed=1, articles=80, weeks=20), elastic_world(seed=2, weeks=20).assign(country="AUT")],
        ignore_index=True,
    )
    history["week_start"] = pd.to_datetime(history["week_start"])
    shares = {"DEU": 0.5, "AUT": 1.0}
    sampled_ids = {
        row["article_id"]
        for row in spark.createDataFrame(history)
        .where(sampled_history(shares) & (F.col("country") == "DEU"))
        .select("article_id")
        .distinct()
        .collect()
    }
    assert 0 < len(sampled_ids) < 80
    # An article the sample leaves out sold at the deepest discount of its category.
    left_out = sorted(set(history.loc[history["country"] == "DEU", "article_id"]) - sampled_ids)[0]
    deep = (history["country"] == "DEU") & (history["article_id"] == left_out) & ~history["is_future"]
    history.loc[deep, "discount"] = 0.85
    category = history.loc[deep, "category"].iloc[0]
    weekly = spark.createDataFrame(history)

    statistics = response_statistics(weekly, 3, shares).toPandas()
    sample = history[~history["is_future"] & ((history["country"] == "AUT") | history["article_id"].isin(sampled_ids))]
    expected = learned_from(prepare(sample), SETTINGS, history[~history["is_future"]])
    from_spark = PriceResponse.estimate(statistics, SETTINGS.max_elasticity, SETTINGS.beyond_deepest)
    assert from_spark.by_category == pytest.approx(expected.by_category)
    assert from_spark.events == expected.events
    assert from_spark.deepest == pytest.approx(expected.deepest)
    assert from_spark.deepest[category] == pytest.approx(0.85)
    # Fewer events than every article gives, but no deepest discount lost.
    every = PriceResponse.estimate(response_statistics(weekly, 3).toPandas(), SETTINGS.max_elasticity)
    assert sum(from_spark.events.values()) < sum(every.events.values())
    assert from_spark.deepest == pytest.approx(every.deepest)
    # Shares of 1 sample nothing: the same rows as no shares.
    assert_df_equality(
        response_statistics(weekly, 3, {"DEU": 1.0, "AUT": 1.0}),
        response_statistics(weekly, 3),
        ignore_row_order=True,
        allow_nan_equality=True,
    )


def country_events(country: str, elasticity: float, count: int, noise: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """`count` markdown events of one category in one country, a week apart, whose lifts follow `elasticity`."""
    rng = np.random.default_rng(seed)
    z = -rng.choice([0.1, 0.2, 0.3], count)
    x = np.log(1 + z)
    return pd.DataFrame(
        {
            "country": country,
            "category": "tops",
            "article_id": [f"A{i:03d}" for i in range(count)],
            "week_start": [pd.Timestamp(MONDAY + dt.timedelta(weeks=i)) for i in range(count)],
            "x": x,
            "z": z,
            "y": -elasticity * x + rng.normal(0, noise, count),
        }
    )


def summed(events: pd.DataFrame) -> pd.DataFrame:
    """The statistics event_statistics gives for these events."""
    sums = events.assign(
        events=1,
        sxx=events["x"] ** 2,
        sxy=events["x"] * events["y"],
        syy=events["y"] ** 2,
        szz=events["z"] ** 2,
        szy=events["z"] * events["y"],
    )
    grouped = sums.groupby(["country", "category"])[list(STATISTICS)].sum().reset_index()
    return grouped.assign(deepest=0.3)[list(STATISTIC_COLUMNS)]


ELASTICITIES = {"AUT": 1.2, "BEL": 2.0, "DEU": 2.8, "ESP": 1.6, "FRA": 2.4}


def test_countries_that_respond_differently_get_their_own_offset_where_their_events_show_it() -> None:
    events = {country: country_events(country, e, 200, seed=i) for i, (country, e) in enumerate(ELASTICITIES.items())}
    response = PriceResponse.estimate(pd.concat([summed(rows) for rows in events.values()]), max_elasticity=6.0)
    assert response.country_spread == pytest.approx(np.var(list(ELASTICITIES.values()), ddof=1), rel=0.1)
    for country, elasticity in ELASTICITIES.items():
        own = response.with_country_offset(events[country])
        assert own.elasticity(pd.Series(["tops"]))[0] == pytest.approx(elasticity, abs=0.1)
    # Two events of a new country say little: its offset stays near none.
    thin = country_events("LUX", 0.5, 2, noise=0.5, seed=9)
    assert abs(response.with_country_offset(thin).country_offset) < 0.5 * abs(0.5 - response.overall)
    # However far a country's events go, its elasticities stay within [0, max_elasticity].
    wild = PriceResponse.estimate(pd.concat([summed(rows) for rows in events.values()]), max_elasticity=2.5)
    assert wild.with_country_offset(events["DEU"]).elasticity(pd.Series(["tops"]))[0] == 2.5
    assert wild.with_country_offset(country_events("LUX", -3.0, 200)).elasticity(pd.Series(["tops"]))[0] == 0.0
    # Countries that respond alike: what spread their noise leaves gives each an offset of almost nothing.
    alike = {country: country_events(country, 2.0, 200, seed=i) for i, country in enumerate(ELASTICITIES)}
    same = PriceResponse.estimate(pd.concat([summed(rows) for rows in alike.values()]), max_elasticity=6.0)
    assert same.country_spread < 0.01
    assert all(abs(same.with_country_offset(rows).country_offset) < 0.1 for rows in alike.values())


def test_the_event_backtest_chooses_a_countrys_offset_only_where_it_predicts_its_later_markdowns_better() -> None:
    events = {country: country_events(country, e, 200, seed=i) for i, (country, e) in enumerate(ELASTICITIES.items())}
    response = PriceResponse.estimate(pd.concat([summed(rows) for rows in events.values()]), max_elasticity=6.0)
    chosen, record = response.chosen_for(events["AUT"])
    assert record["response"] == "own offset" and record["checked_events"] == 100
    assert record["own_offset_error"] < record["shared_error"]
    assert chosen == response.with_country_offset(events["AUT"])
    assert PriceResponse.of(chosen.as_dict()) == chosen  # a rescore recommends with the offset its card records
    # A country whose later markdowns respond as the shared response says: the offset of its earlier ones is noise.
    shared = response.elasticity(pd.Series(["tops"]))[0]
    drifting = pd.concat([country_events("BEL", 0.5, 100, seed=11), country_events("BEL", shared, 100)])
    drifting = drifting.assign(week_start=sorted(events["BEL"]["week_start"]))
    chosen, record = response.chosen_for(drifting)
    assert record["response"] == "shared" and record["own_offset_error"] >= record["shared_error"]
    assert chosen.country_offset == 0.0
    # Too few events to split: the shared response, nothing compared.
    chosen, record = response.chosen_for(events["AUT"].head(2 * MIN_CHECKED_EVENTS - 1))
    assert (chosen.country_offset, record["response"], record["checked_events"]) == (0.0, "shared", 0)
    assert record["shared_error"] is None
    # The halves split between weeks: a week's events are all earlier or all later.
    weekly = events["AUT"].assign(week_start=events["AUT"]["week_start"].iloc[::2].repeat(2).to_numpy())
    _, record = response.chosen_for(weekly)
    assert record["checked_events"] == 100


def test_a_country_whose_markdowns_sell_more_than_the_shared_response_says_recommends_with_its_offset() -> None:
    # elastic_world's demand goes with (1 - discount) ^ -2; the shared response says 1, and countries differ.
    world = elastic_world(seed=2)
    shared = PriceResponse(1.0, {}, {})
    own = train_country(world, PARAMS, RULES, num_threads=1, response=dataclasses.replace(shared, country_spread=1.0))
    choice = own.card["markdown_event_backtest"]["choice"]
    assert choice["response"] == "own offset" and choice["own_offset_error"] < choice["shared_error"]
    assert 0.5 < own.card["price_response"]["country_offset"] < 1.5
    alike = train_country(world, PARAMS, RULES, num_threads=1, response=shared)
    assert alike.card["markdown_event_backtest"]["choice"]["response"] == "shared"
    assert alike.card["price_response"]["country_offset"] == 0.0
    deeper = own.predictions["recommended_discount"] - alike.predictions["recommended_discount"]
    assert (deeper >= 0).all() and (deeper > 0).any()
    assert own.metrics["markdown_lift_error"] < alike.metrics["markdown_lift_error"]


def weekly_pairs(amplitude: float, peak_day: float, weeks: int, noise: float, seed: int = 0) -> pd.DataFrame:
    """Steady pairs' sums of a world whose log demand ages 3 % a week and swings `amplitude` over the year, with
    `noise` on each week's log level (neighbouring weeks' ratios share it, as they share their articles)."""
    rng = np.random.default_rng(seed)
    week = pd.date_range("2025-01-06", periods=weeks + 1, freq="7D")
    angle = 2 * np.pi * (week.dayofyear.to_numpy() + 3 - peak_day) / 365.25
    level = -0.03 * np.arange(weeks + 1) + amplitude * np.cos(angle) + rng.normal(0, noise, weeks + 1)
    return pd.DataFrame(
        {"country": "DEU", "week_start": week[1:], "now": 1000 * np.exp(np.diff(level)), "before": 1000.0}
    )


def test_the_yearly_cycle_of_steady_pairs_is_found_where_it_is_and_not_in_noise() -> None:
    found = PriceResponse.estimate(summed_with(weekly_pairs(0.15, 345, weeks=60, noise=0.02)), 6.0)
    assert found.season_amplitude() == pytest.approx(0.15, abs=0.02)
    assert min(abs(found.season_peak_day() - 345), 365.25 - abs(found.season_peak_day() - 345)) < 7
    for seed in range(5):
        noise = PriceResponse.estimate(summed_with(weekly_pairs(0.0, 0, weeks=60, noise=0.05, seed=seed)), 6.0)
        assert noise.season_amplitude() == 0.0
    assert (
        PriceResponse.estimate(summed_with(weekly_pairs(0.15, 345, weeks=20, noise=0.0)), 6.0).season_amplitude() == 0
    )
    # The events' part is what it was without the pairs.
    assert dataclasses.replace(found, season_cos=0.0, season_sin=0.0) == PriceResponse.estimate(
        synthetic_statistics({"tops": 2.0}, events=50, noise=0.1), 6.0
    )


def summed_with(pairs: pd.DataFrame) -> pd.DataFrame:
    """The event statistics of one category beside these steady pairs, as country_statistics gives them."""
    return pd.concat([synthetic_statistics({"tops": 2.0}, events=50, noise=0.1), pairs], ignore_index=True)


def test_the_yearly_cycle_carries_a_forecast_from_its_origin_week_to_later_weeks() -> None:
    # Demand peaks on day 345: from early October towards December it rises, from March towards June it falls.
    angle = 2 * np.pi * 345 / 365.25
    response = PriceResponse(2.0, {}, {}, season_cos=0.15 * np.cos(angle), season_sin=0.15 * np.sin(angle))
    assert (response.season_amplitude(), response.season_peak_day()) == pytest.approx((0.15, 345))
    rows = pd.DataFrame(
        {
            "week_start": pd.to_datetime(["2026-10-05", "2026-11-30", "2026-03-02", "2026-05-25"]),
            "weeks_ahead": [0, 8, 0, 12],
            "category": "tops",
            "current_discount": 0.0,
            "discount": 0.0,
        }
    )
    shift = response.season_shift(rows)

    def level(day: str) -> float:
        # A week's row stands for its middle day, three days after its Monday.
        return float(0.15 * np.cos(2 * np.pi * (pd.Timestamp(day).dayofyear + 3 - 345) / 365.25))

    assert shift[0] == shift[2] == 1.0  # the origin's own week
    assert shift[1] == pytest.approx(np.exp(level("2026-11-30") - level("2026-10-05")))  # about 8 % more
    assert shift[3] == pytest.approx(np.exp(level("2026-05-25") - level("2026-03-02")))  # about 10 % less
    assert shift[1] > 1.05 and shift[3] < 0.95
    assert response.applied_to(lambda frame: np.full(len(frame), 10.0))(rows) == pytest.approx(10 * shift)
    assert PriceResponse.of(response.as_dict()) == response
    assert PriceResponse(2.0, {}, {}).season_shift(rows.drop(columns="weeks_ahead")) == pytest.approx([1.0] * 4)


def test_steady_pairs_are_the_same_articles_week_over_week_at_one_price_in_stock_and_in_season() -> None:
    def weeks(units: list[float], prices: list[float], stock: float = 1000, launch_weeks: int = 5, to_end: int = 9):
        rows = article("DEU", "A", "tops", prices, units, stock)
        return rows.assign(
            weeks_since_launch=launch_weeks + np.arange(len(rows)), weeks_to_season_end=to_end - np.arange(len(rows))
        )

    steady = weeks([10.0, 12.0, 9.0], [50.0] * 3)
    pairs = steady_pairs(steady)
    assert pairs[["now", "before"]].to_numpy().tolist() == [[12.0, 10.0], [9.0, 12.0]]
    assert steady_pairs(weeks([10.0, 12.0, 9.0], [50.0, 40.0, 40.0]))["now"].tolist() == [9.0]  # a markdown
    assert steady_pairs(weeks([10.0, 12.0, 9.0], [50.0] * 3, stock=12))["now"].tolist() == []  # sold out
    assert steady_pairs(weeks([10.0, 12.0, 9.0], [50.0] * 3, launch_weeks=1))["now"].tolist() == [9.0]  # ramp
    assert steady_pairs(weeks([10.0, 12.0, 9.0], [50.0] * 3, to_end=2))["now"].tolist() == [12.0]  # season over


def test_the_markdown_event_backtest_measures_the_predicted_lift_against_the_seen_one() -> None:
    marked = article("DEU", "A", "tops", [100.0] * 3 + [80.0] * 3, [20.0] * 3 + [20 * 0.8**-2] * 3)
    events = markdown_events(marked, window_weeks=3)
    assert PriceResponse(2.0, {}, {}).checked_against(events) == pytest.approx(
        {"events": 1, "log_lift_error": 0.0, "log_lift_bias": 0.0}
    )
    # Elasticity 1 predicts a lift of 0.8^-1 where 0.8^-2 was seen: short by log 1.25 on the log scale.
    assert PriceResponse(1.0, {}, {}).checked_against(events) == pytest.approx(
        {"events": 1, "log_lift_error": np.log(1.25), "log_lift_bias": -np.log(1.25)}
    )
    assert PriceResponse(1.0, {}, {}).checked_against(events.iloc[:0])["events"] == 0
    card = train_country(elastic_world(seed=2), PARAMS, RULES, num_threads=1).card
    assert card["markdown_event_backtest"]["events"] > 10
    assert abs(card["markdown_event_backtest"]["log_lift_bias"]) < 0.1


def test_a_markdown_must_beat_holding_by_the_margin_and_the_margin_grows_with_the_level_error() -> None:
    # Full price sells 10 of 20 (1000); 10 % off sells 12 (1080): 8 % more than holding.
    weeks = pd.DataFrame(
        {
            "article_id": ["A", "A"],
            "candidate": [0.0, 0.1],
            "week_start": [pd.Timestamp(MONDAY)] * 2,
            "predicted_units": [10.0, 12.0],
            "stock_on_hand": [20, 20],
            "original_price": [100.0, 100.0],
            "price": [100.0, 100.0],
            "current_discount": [0.0, 0.0],
        }
    )
    season = pricing.simulate_season(weeks, salvage_value_share=0.0)
    decided = {
        margin: rules.decide(
            season,
            country="DEU",
            ladder=(0.0, 0.1),
            salvage_value_share=0.0,
            weeks_left=pd.Series({"A": 1}),
            markdown_margin=margin,
        ).predictions.iloc[0]
        for margin in (0.0, 0.05, 0.1)
    }
    assert [decided[m]["recommended_discount"] for m in (0.0, 0.05, 0.1)] == [0.1, 0.1, 0.0]
    assert decided[0.1]["hold_expected_revenue"] == decided[0.1]["expected_revenue"] == 1000.0
    assert decided[0.0]["gain_over_hold"] == pytest.approx(80.0)
    assert decided[0.1]["rule_applied"] is None  # not a buyer's or run's rule: the model's own doubt
    assert markdown_margin(SETTINGS, 0.3) == pytest.approx(SETTINGS.margin_per_wape * 0.3)
    assert markdown_margin(SETTINGS, None) == SETTINGS.margin_per_wape
