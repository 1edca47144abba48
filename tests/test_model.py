"""The per-country model and season simulation, with pandas only (no Spark)."""
from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from markdown_pricing import model
from markdown_pricing.config import load_config

LADDER = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
RULES = dataclasses.replace(load_config("local").run, ladder=LADDER, salvage_value_share=0.0)
PARAMS = dataclasses.replace(
    load_config("local").model, holdout_weeks=4, num_boost_round=150, num_leaves=15, min_data_in_leaf=10, seed=3
)
RUN_DATE = dt.date(2026, 11, 23)


def elastic_world(seed: int = 0, articles: int = 40, weeks: int = 30) -> pd.DataFrame:
    """A country whose weekly demand rises with discount and decays with age: history and future rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(articles):
        base, price = rng.uniform(3, 12), float(rng.choice([30.0, 50.0, 80.0]))
        discount, stock = 0.0, 10_000
        for w in range(-weeks, 8):
            week = RUN_DATE + dt.timedelta(weeks=w)
            future = w >= 0
            if not future and rng.random() < 0.15 and discount < 0.5:
                discount = round(discount + 0.1, 1)
            demand = base * (1 - discount) ** -2.0 * np.exp(-(w + weeks) / 40)
            rows.append({
                "country": "DEU", "article_id": f"A{a:03d}", "week_start": week, "is_future": future,
                "units": None if future else int(rng.poisson(demand)), "stock_on_hand": stock if future else 500,
                "price": round(price * (1 - discount), 2), "original_price": price,
                "season_end": RUN_DATE + dt.timedelta(weeks=8), "category": "tops" if a % 2 else "jeans",
                "discount": discount, "weeks_since_launch": w + weeks, "week_of_year": week.isocalendar()[1],
                "weeks_to_season_end": 8 - w, "article_popularity": base,
            })  # fmt: skip
    world = pd.DataFrame(rows)
    world.loc[world["is_future"], "stock_on_hand"] = 60
    return world


def test_candidate_discounts_start_at_current_and_never_go_back() -> None:
    assert model.candidate_discounts(0.2, LADDER) == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert model.candidate_discounts(0.2031, LADDER) == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert model.candidate_discounts(0.15, LADDER) == [0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert model.candidate_discounts(0.7, LADDER) == [0.7]


def test_simulate_season_caps_sales_at_stock_and_values_leftover_at_salvage() -> None:
    weeks = pd.DataFrame({
        "article_id": ["A"] * 4, "candidate": [0.0, 0.0, 0.5, 0.5],
        "week_start": [RUN_DATE, RUN_DATE + dt.timedelta(weeks=1)] * 2,
        "predicted_units": [3.0, 2.0, 8.0, 7.0], "stock_on_hand": [10] * 4, "original_price": [100.0] * 4,
        "price": [100.0] * 4, "current_discount": [0.0] * 4,
    })  # fmt: skip
    season = model.simulate_season(weeks, salvage_value_share=0.1).set_index("candidate")
    # Full price sells 5 of 10 (500) and salvages 5 at 10 each; half price sells all 10 at 50.
    assert season.loc[0.0, "expected_revenue"] == pytest.approx(5 * 100 + 5 * 10)
    assert season.loc[0.5, "expected_revenue"] == pytest.approx(10 * 50)
    assert season.loc[0.0, "expected_sell_through"] == pytest.approx(0.5)
    assert season.loc[0.5, "expected_sell_through"] == pytest.approx(1.0)
    assert season.loc[0.5, "predicted_units_next_week"] == pytest.approx(8.0)


def test_recommend_takes_highest_revenue_and_breaks_ties_towards_higher_price() -> None:
    season = pd.DataFrame({
        "article_id": ["A", "A", "A", "B", "B"], "candidate": [0.0, 0.1, 0.2, 0.3, 0.4],
        "expected_revenue": [100.0, 120.0, 110.0, 90.0, 90.0], "original_price": [50.0] * 5,
    })  # fmt: skip
    best = model.recommend(season).set_index("article_id")
    assert best.loc["A", "recommended_discount"] == 0.1
    assert best.loc["A", "recommended_price"] == 45.0
    assert best.loc["B", "recommended_discount"] == 0.3


def test_holdout_split_keeps_future_weeks_out_of_training_and_freezes_popularity() -> None:
    history = model.training_rows(elastic_world())
    history = history.assign(article_popularity=history.groupby("article_id").cumcount().astype(float))
    train, holdout = model.holdout_split(history, 4)
    assert train["week_start"].max() < holdout["week_start"].min()
    assert holdout["week_start"].nunique() == 4
    assert (holdout.groupby("article_id")["article_popularity"].nunique() == 1).all()
    assert holdout["article_popularity"].iloc[0] == 26.0


def test_holdout_split_refuses_too_short_history() -> None:
    history = model.training_rows(elastic_world(weeks=4))
    with pytest.raises(ValueError, match="only 4 weeks of history"):
        model.holdout_split(history, 4)


def test_naive_forecast_carries_last_week_forward() -> None:
    train = pd.DataFrame({"article_id": ["A", "A", "B"], "week_start": [1, 2, 1], "units": [5, 7, 3]})
    holdout = pd.DataFrame({"article_id": ["A", "B", "C"]})
    assert model.naive_forecast(train, holdout).tolist() == [7.0, 3.0, 0.0]


def test_wape_and_bias() -> None:
    actual, forecast = pd.Series([10.0, 0.0, 10.0]), pd.Series([12.0, 1.0, 5.0])
    assert model.wape(actual, forecast) == pytest.approx(8 / 20)
    assert model.bias(actual, forecast) == pytest.approx(-2 / 20)


def test_train_and_recommend_beats_naive_and_recommends_from_ladder() -> None:
    world = elastic_world()
    result = model.train_and_recommend(world, PARAMS, RULES, num_threads=1)
    predictions = result.predictions
    assert result.metrics["model_wape"] < result.metrics["baseline_wape"]
    assert sorted(predictions["article_id"]) == sorted(world.loc[world["is_future"], "article_id"].unique())
    assert set(predictions["recommended_discount"]) <= set(LADDER)
    assert (predictions["recommended_discount"] >= predictions["current_discount"] - 1e-9).all()
    assert (predictions["expected_sell_through"].between(0, 1)).all()
    # Stock of 60 over 8 weeks is more than full price sells: some articles should be marked down.
    assert (predictions["recommended_discount"] > predictions["current_discount"]).any()


def test_trained_model_never_predicts_fewer_units_for_more_discount() -> None:
    world = elastic_world(seed=1)
    categories = sorted(world["category"].unique())
    booster = model.fit(model.training_rows(world), categories, PARAMS, num_threads=1)
    future = world[world["is_future"]]
    by_step = [booster.predict(model.feature_frame(future.assign(discount=step), categories)) for step in LADDER]
    assert (np.diff(np.vstack(by_step), axis=0) >= -1e-12).all()


def test_train_and_recommend_is_reproducible() -> None:
    world = elastic_world(seed=2)
    first = model.train_and_recommend(world, PARAMS, RULES, num_threads=2)
    second = model.train_and_recommend(world, PARAMS, RULES, num_threads=2)
    pd.testing.assert_frame_equal(first.predictions, second.predictions)
    assert first.model_text == second.model_text
