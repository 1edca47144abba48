"""The per-country model and season simulation, with pandas only (no Spark)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from markdown_pricing.core.config import load_config
from markdown_pricing.model import backtest, forecast, pricing
from markdown_pricing.model.country import data_card, fingerprint, rescore, train_country
from markdown_pricing.model.fallback import train_pooled

LADDER = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
RULES = dataclasses.replace(load_config("local").run, ladder=LADDER, salvage_value_share=0.0)
BASE_PARAMS = load_config("local").model
# Untuned, so a test knows the settings a model was trained with; the tuning test turns it on.
PARAMS = dataclasses.replace(
    BASE_PARAMS,
    num_boost_round=150,
    num_leaves=15,
    min_data_in_leaf=10,
    seed=3,
    min_history_weeks=16,
    tuning=dataclasses.replace(BASE_PARAMS.tuning, enabled=False),
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
            rows.append(
                {
                    "country": "DEU",
                    "article_id": f"A{a:03d}",
                    "week_start": week,
                    "is_future": future,
                    "units": None if future else int(rng.poisson(demand)),
                    "stock_on_hand": stock if future else 500,
                    "price": round(price * (1 - discount), 2),
                    "original_price": price,
                    "season_end": RUN_DATE + dt.timedelta(weeks=8),
                    "category": "tops" if a % 2 else "jeans",
                    "discount": discount,
                    "weeks_since_launch": w + weeks,
                    "weeks_to_season_end": 8 - w,
                    "article_popularity": base,
                    "article_popularity_everywhere": 2 * base,
                }
            )
    world = pd.DataFrame(rows)
    world.loc[world["is_future"], "stock_on_hand"] = 60
    return world


def test_candidate_discounts_start_at_current_and_never_go_back() -> None:
    assert pricing.candidate_discounts(0.2, LADDER) == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert pricing.candidate_discounts(0.2031, LADDER) == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert pricing.candidate_discounts(0.15, LADDER) == [0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert pricing.candidate_discounts(0.7, LADDER) == [0.7]


def test_candidate_weeks_offer_each_article_its_candidates_the_first_snapped_to_the_ladder() -> None:
    future = pd.DataFrame({"article_id": ["A", "B"], "week_start": [RUN_DATE] * 2, "discount": [0.099, 0.15]})
    weeks = pricing.candidate_weeks(future, LADDER)
    assert weeks.groupby("article_id")["candidate"].min().to_dict() == {"A": 0.1, "B": 0.15}
    assert len(weeks) == len(pricing.candidate_discounts(0.099, LADDER)) + len(
        pricing.candidate_discounts(0.15, LADDER)
    )
    assert (weeks["current_discount"] == weeks["article_id"].map({"A": 0.099, "B": 0.15})).all()


def test_simulate_season_caps_sales_at_stock_and_values_leftover_at_salvage() -> None:
    weeks = pd.DataFrame(
        {
            "article_id": ["A"] * 4,
            "candidate": [0.0, 0.0, 0.5, 0.5],
            "week_start": [RUN_DATE, RUN_DATE + dt.timedelta(weeks=1)] * 2,
            "predicted_units": [3.0, 2.0, 8.0, 7.0],
            "stock_on_hand": [10] * 4,
            "original_price": [100.0] * 4,
            "price": [100.0] * 4,
            "current_discount": [0.0] * 4,
        }
    )
    season = pricing.simulate_season(weeks, salvage_value_share=0.1).set_index("candidate")
    # Full price sells 5 of 10 (500) and salvages 5 at 10 each; half price sells all 10 at 50.
    assert season.loc[0.0, "expected_revenue"] == pytest.approx(5 * 100 + 5 * 10)
    assert season.loc[0.5, "expected_revenue"] == pytest.approx(10 * 50)
    assert season.loc[0.0, "expected_sell_through"] == pytest.approx(0.5)
    assert season.loc[0.5, "expected_sell_through"] == pytest.approx(1.0)
    assert season.loc[0.5, "predicted_units_next_week"] == pytest.approx(8.0)


def test_recommend_takes_highest_revenue_and_breaks_ties_towards_higher_price() -> None:
    season = pd.DataFrame(
        {
            "article_id": ["A", "A", "A", "B", "B"],
            "candidate": [0.0, 0.1, 0.2, 0.3, 0.4],
            "expected_revenue": [100.0, 120.0, 110.0, 90.0, 90.0],
            "original_price": [50.0] * 5,
        }
    )
    best = pricing.recommend(season).set_index("article_id")
    assert best.loc["A", "recommended_discount"] == 0.1
    assert best.loc["A", "recommended_price"] == 45.0
    assert best.loc["B", "recommended_discount"] == 0.3


def history_of(world: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    weekly = forecast.prepare(world)
    history = weekly[~weekly["is_future"]]
    return history, backtest.in_stock(history)


def test_backtest_origins_tile_the_last_weeks_and_refuse_too_short_history() -> None:
    _, usable = history_of(elastic_world(weeks=30))
    weeks = backtest.history_weeks(usable)
    assert backtest.origins(usable, 3, 4) == [weeks[-12], weeks[-8], weeks[-4]]
    assert backtest.origins(usable, 2, 4, before=weeks[-12]) == [weeks[-20], weeks[-16]]
    _, short = history_of(elastic_world(weeks=8))
    with pytest.raises(ValueError, match="only 8 weeks of history, need more than 12"):
        backtest.origins(short, 3, 4)


def with_etl_popularity(world: pd.DataFrame) -> pd.DataFrame:
    """Popularity as the ETL computes it: each article's mean units over the weeks before the row's (in a world of
    one country, the same everywhere)."""
    ordered = world.sort_values(["article_id", "week_start"], ignore_index=True)
    mean_before = ordered.groupby("article_id")["units"].transform(lambda u: u.astype(float).expanding().mean().shift())
    return ordered.assign(article_popularity=mean_before, article_popularity_everywhere=mean_before)


def test_backtest_split_never_lets_weeks_from_the_origin_on_into_training_or_features() -> None:
    world = with_etl_popularity(elastic_world())
    history, _ = history_of(world)
    usable = forecast.training_rows(history, PARAMS)
    origin = backtest.history_weeks(usable)[-8]
    train, test = backtest.split(history, usable, origin, 4)
    assert train["week_start"].max() < origin <= test["week_start"].min()
    assert test.groupby("week_start")["weeks_ahead"].unique().map(list).tolist() == [[0], [1], [2], [3]]
    # Popularity is frozen at the origin: the value the origin's own row carries (mean of the weeks before it).
    for popularity in backtest.POPULARITY:
        at_origin = history[history["week_start"] == origin].set_index("article_id")[popularity]
        assert (test[popularity].to_numpy() == test["article_id"].map(at_origin).to_numpy()).all()
    # Changing every week from the origin on changes neither the training rows nor the test features.
    changed = world.assign(units=np.where(pd.to_datetime(world["week_start"]) >= origin, 999, world["units"]))
    changed_history, _ = history_of(with_etl_popularity(changed))
    train_again, test_again = backtest.split(
        changed_history, forecast.training_rows(changed_history, PARAMS), origin, 4
    )
    assert not changed_history["article_popularity"].equals(history["article_popularity"])
    pd.testing.assert_frame_equal(train, train_again)
    features = list(forecast.FEATURES)
    pd.testing.assert_frame_equal(test[features], test_again[features])


def test_training_rows_read_popularity_as_a_forecast_made_weeks_ahead_earlier_would() -> None:
    history, usable = history_of(elastic_world(articles=10, weeks=12))
    weeks_from_run = (history["week_start"] - pd.Timestamp(RUN_DATE)).dt.days / 7.0
    history = history.assign(article_popularity=weeks_from_run, article_popularity_everywhere=2 * weeks_from_run)
    seen = backtest.as_forecasts(history, usable, 4)
    assert set(seen["weeks_ahead"]) == {0, 1, 2, 3}
    # The popularity the history holds weeks_ahead weeks before the row's week; none before the first week.
    weeks_before_run = (seen["week_start"] - pd.Timestamp(RUN_DATE)).dt.days / 7
    known_at = weeks_before_run - seen["weeks_ahead"]
    expected = known_at.where(known_at >= -12)
    pd.testing.assert_series_equal(seen["article_popularity"], expected, check_names=False)
    pd.testing.assert_series_equal(seen["article_popularity_everywhere"], 2 * expected, check_names=False)
    assert seen["article_popularity"].isna().any()
    # The same rows in another order are seen the same way.
    shuffled = backtest.as_forecasts(history, usable.sample(frac=1.0, random_state=1), 4)
    pd.testing.assert_frame_equal(shuffled.loc[seen.index], seen)


def test_recent_average_and_same_price_baselines() -> None:
    train = pd.DataFrame(
        {
            "country": "DEU",
            "article_id": ["A"] * 5 + ["B"] * 2,
            "category": ["tops"] * 5 + ["jeans"] * 2,
            "discount": [0.0, 0.0, 0.0, 0.2, 0.2, 0.0, 0.0],
            "units": [10, 20, 30, 40, 60, 4, 6],
        }
    )
    test = pd.DataFrame({"country": "DEU", "article_id": ["A", "B", "C"], "category": ["tops", "jeans", "tops"]})
    recent = backtest.recent_average(train, test, weeks=2)
    # A: mean of its last two weeks; B: of its two; C is new: the mean of its category's articles (A).
    assert recent.tolist() == [50.0, 5.0, 50.0]
    same = backtest.same_price(train, test, recent_weeks=2)
    # A sells 40 and 60 at today's 20 % off; B has only ever had one price; C falls back to the recent average.
    assert same.tolist() == [50.0, 5.0, 50.0]
    assert backtest.same_price(train.assign(discount=[0.0, 0.0, 0.1, 0.1, 0.1, 0.0, 0.0]), test, 2).iloc[0] == 130 / 3


def test_wape_bias_and_revenue_weighted_wape() -> None:
    actual, forecast = pd.Series([10.0, 0.0, 10.0]), pd.Series([12.0, 1.0, 5.0])
    assert backtest.wape(actual, forecast) == pytest.approx(8 / 20)
    assert backtest.bias(actual, forecast) == pytest.approx(-2 / 20)
    # The cheap article's big miss weighs little once errors are valued at their prices.
    price = pd.Series([100.0, 100.0, 1.0])
    assert backtest.wape(actual, forecast, price) == pytest.approx((200 + 100 + 5) / (1000 + 10))


def test_train_country_beats_both_baselines_and_recommends_from_ladder() -> None:
    world = elastic_world()
    result = train_country(world, PARAMS, RULES, num_threads=1)
    metrics, predictions = result.metrics, result.predictions
    assert (metrics["status"], metrics["model_kind"], metrics["fallback_reason"]) == ("trained", "country", None)
    assert metrics["backtest_origins"] == PARAMS.backtest_origins
    assert metrics["model_wape"] < min(metrics["recent_average_wape"], metrics["same_price_wape"])
    assert metrics["baseline_wape"] == min(metrics["recent_average_wape"], metrics["same_price_wape"])
    assert sorted(predictions["article_id"]) == sorted(world.loc[world["is_future"], "article_id"].unique())
    assert set(predictions["recommended_discount"]) <= set(LADDER)
    assert (predictions["recommended_discount"] >= predictions["current_discount"] - 1e-9).all()
    assert (predictions["expected_sell_through"].between(0, 1)).all()
    # Stock of 60 over 8 weeks is more than full price sells: some articles should be marked down.
    assert (predictions["recommended_discount"] > predictions["current_discount"]).any()


def test_model_card_says_what_was_trained_on_what() -> None:
    world = elastic_world()
    card = train_country(world, PARAMS, RULES, num_threads=1).card
    assert card["country"] == "DEU" and card["model_kind"] == "country"
    assert card["model"]["features"] == list(forecast.FEATURES)
    assert card["model"]["categories"] == {"category": ["jeans", "tops"]}
    assert card["model"]["lightgbm_params"]["monotone_constraints"][0] == 1
    assert card["model"]["num_boost_round"] == PARAMS.num_boost_round
    assert card["model"]["forecast_horizon_weeks"] == PARAMS.backtest_horizon_weeks
    assert card["training_window"] == {"first_week": "2026-04-27", "last_week": "2026-11-16", "weeks": 30}
    assert card["rows"] == {"input": len(world), "train": 40 * 30, "articles": 40, "scored_articles": 40}
    assert len(card["data_fingerprint"]) == 64
    assert [entry["origin"] for entry in card["backtest"]["by_origin"]] == ["2026-08-31", "2026-09-28", "2026-10-26"]
    # One changed unit is another fingerprint.
    changed = world.assign(units=world["units"].where(world.index != 0, world["units"].iloc[0] + 1))
    assert (
        data_card(changed, backtest.in_stock(changed[~changed["is_future"]]))["data_fingerprint"]
        != (card["data_fingerprint"])
    )
    # The same rows with an integer column as floats (Arrow's, where the task's group has a null) hash alike.
    floats = world.astype({"stock_on_hand": "float64"})
    assert world["stock_on_hand"].dtype == "int64"
    assert fingerprint(floats) == fingerprint(world) != fingerprint(changed)


def test_tuning_picks_a_candidate_by_time_series_cv_with_early_stopping() -> None:
    tuned = dataclasses.replace(PARAMS, tuning=dataclasses.replace(PARAMS.tuning, enabled=True))
    world = elastic_world(weeks=40)
    card = train_country(world, tuned, RULES, num_threads=1).card
    tuning = card["model"]["tuning"]
    # Two 4-week folds just before the first of the three 4-week backtest windows: the backtest stays unseen.
    weeks = backtest.history_weeks(history_of(world)[1])
    assert tuning["folds"] == [str(pd.Timestamp(weeks[-20]).date()), str(pd.Timestamp(weeks[-16]).date())]
    assert len(tuning["candidates"]) == len(PARAMS.tuning.candidates)
    assert tuning["best"]["wape"] == min(entry["wape"] for entry in tuning["candidates"])
    assert card["model"]["num_boost_round"] == tuning["best"]["rounds"] <= PARAMS.num_boost_round
    for key, value in tuning["best"]["params"].items():
        assert card["model"]["lightgbm_params"][key] == value


def test_a_country_with_too_little_history_needs_a_fallback() -> None:
    result = train_country(elastic_world(weeks=10), PARAMS, RULES, num_threads=1)
    assert result.metrics["status"] == "needs_fallback"
    assert result.metrics["fallback_reason"] == "10 weeks of in-stock history, fewer than min_history_weeks = 16"
    assert result.predictions.empty and result.model_text is None
    assert result.candidates.empty and result.rule_problems == []


def steady_world(country: str) -> pd.DataFrame:
    """Every article sells exactly 5 a week whatever its price: the recent average is perfect."""
    world = elastic_world(seed=4).assign(country=country)
    return world.assign(units=world["units"].where(world["is_future"], 5))


def test_a_country_whose_model_loses_falls_back_to_the_baseline_with_the_price_response_its_markdowns_show() -> None:
    result = train_country(steady_world("DEU"), PARAMS, RULES, num_threads=1)
    assert result.metrics["status"] == "needs_fallback"
    assert result.metrics["fallback_reason"].startswith("the country model loses to its recent_average baseline")
    both = pd.concat([steady_world("DEU"), steady_world("AUT")], ignore_index=True)
    [fallback] = train_pooled(both, {"DEU": "its model loses"}, PARAMS, RULES, num_threads=1)
    assert fallback.metrics["model_kind"] == "baseline" and fallback.model_text is None
    assert fallback.metrics["fallback_reason"].startswith("its model loses; the pooled model loses too")
    assert fallback.metrics["fallback_reason"].endswith("so the baseline's level scores it")
    # Past markdowns sold no more than full price did: no price response, so a markdown only loses money.
    assert fallback.card["price_response"]["overall"] == 0.0
    predictions = fallback.predictions
    assert (predictions["recommended_discount"] == predictions["current_discount"]).all()
    assert np.allclose(predictions["predicted_units_next_week"], 5.0)
    # Every candidate was weighed: the baseline's level at each, the same 5 a week.
    assert len(fallback.candidates) > len(predictions)
    assert np.allclose(fallback.candidates["predicted_units_next_week"], 5.0)


def test_pooled_model_scores_a_small_country_with_the_others_history() -> None:
    # A shop opened two weeks ago: in the backtest its baselines know nothing of it yet.
    small = elastic_world(seed=5, articles=10, weeks=2).assign(country="LUX")
    both = pd.concat([elastic_world(), small], ignore_index=True)
    # The buyers' rules by country: only LUX's apply to LUX.
    buyer_rules = {
        "LUX": buyer_rules_frame("LUX", ("A009", "exclude")),
        "DEU": buyer_rules_frame("DEU", ("A000", "exclude")),
    }
    [fallback] = train_pooled(
        both, {"LUX": "too little history"}, PARAMS, RULES, num_threads=1, buyer_rules=buyer_rules
    )
    assert fallback.country == "LUX"
    assert (fallback.metrics["status"], fallback.metrics["model_kind"]) == ("trained", "pooled")
    assert fallback.card["model"]["features"] == list(forecast.POOLED_FEATURES)
    assert fallback.card["model"]["categories"]["country"] == ["DEU", "LUX"]
    assert sorted(fallback.predictions["article_id"]) == sorted(set(small["article_id"]) - {"A009"})
    assert (fallback.predictions["country"] == "LUX").all()
    assert set(fallback.candidates["article_id"]) == set(small["article_id"])
    assert (fallback.candidates.loc[fallback.candidates["article_id"] == "A009", "ruled_out_by"] == "exclude").all()
    assert fallback.rule_problems == []


def buyer_rules_frame(country: str, *rules: tuple[str, str]) -> pd.DataFrame:
    """Buyer rules as the ERP gives them, from (article_id, rule) pairs without values."""
    return pd.DataFrame(
        [(country, article, None, rule, np.nan, None, None, None) for article, rule in rules],
        columns=["country", "article_id", "category", "rule", "value", "valid_from", "valid_to", "note"],
    )


def test_train_country_honours_buyer_rules_and_a_saved_model_rescores_them_the_same() -> None:
    world = elastic_world()
    rules = buyer_rules_frame("DEU", ("A000", "exclude"), ("A001", "hold"), ("A999", "hold"))
    result = train_country(world, PARAMS, RULES, num_threads=1, buyer_rules=rules)
    predictions, candidates = result.predictions.set_index("article_id"), result.candidates
    assert "A000" not in predictions.index and len(predictions) == 39
    assert (candidates.loc[candidates["article_id"] == "A000", "ruled_out_by"] == "exclude").all()
    assert predictions.loc["A001", "recommended_discount"] == pytest.approx(predictions.loc["A001", "current_discount"])
    assert result.rule_problems == ["DEU A999: hold [article]: the country has no article A999; not applied"]
    # One chosen candidate per recommendation, the one recommended.
    chosen = candidates[candidates["chosen"]].set_index("article_id")
    assert sorted(chosen.index) == sorted(predictions.index)
    assert (chosen["candidate_discount"] == predictions["recommended_discount"].reindex(chosen.index)).all()
    rescored = rescore(world, result.model_text, result.card, PARAMS, RULES, buyer_rules=rules)
    pd.testing.assert_frame_equal(rescored.predictions, result.predictions)
    pd.testing.assert_frame_equal(rescored.candidates, result.candidates)
    assert rescored.rule_problems == result.rule_problems


def test_trained_model_never_predicts_fewer_units_for_more_discount() -> None:
    for result in (
        train_country(elastic_world(seed=1), PARAMS, RULES, num_threads=1),
        *train_pooled(
            pd.concat([elastic_world(seed=1), elastic_world(seed=2).assign(country="AUT")], ignore_index=True),
            {"AUT": "test"},
            PARAMS,
            RULES,
            num_threads=1,
        ),
    ):
        booster = lgb.Booster(model_str=result.model_text)
        encoding = forecast.Encoding(tuple(result.card["model"]["features"]), result.card["model"]["categories"])
        future = pricing.future_weeks(forecast.prepare(elastic_world(seed=1))).assign(country=result.country)
        by_step = [booster.predict(forecast.feature_frame(future.assign(discount=step), encoding)) for step in LADDER]
        assert (np.diff(np.vstack(by_step), axis=0) >= -1e-12).all()


def test_train_country_is_reproducible_and_a_saved_model_rescores_the_same() -> None:
    world = elastic_world(seed=2)
    first = train_country(world, PARAMS, RULES, num_threads=2)
    second = train_country(world, PARAMS, RULES, num_threads=2)
    pd.testing.assert_frame_equal(first.predictions, second.predictions)
    assert first.model_text == second.model_text
    rescored = rescore(world, first.model_text, first.card, PARAMS, RULES)
    pd.testing.assert_frame_equal(rescored.predictions, first.predictions)
    pd.testing.assert_frame_equal(rescored.candidates, first.candidates)
    assert rescored.metrics["model_wape"] == first.metrics["model_wape"]


def test_a_country_that_sold_nothing_for_its_first_weeks_is_backtested_not_failed() -> None:
    # A shop closed (in stock, no sale) for its first 22 weeks: the first tuning fold (origin week 20) has only weeks
    # without a sale to train on, which a Poisson model cannot fit.
    world = elastic_world(seed=3, weeks=40)
    closed = ~world["is_future"] & (world["weeks_since_launch"] < 22)
    tuned = dataclasses.replace(PARAMS, tuning=dataclasses.replace(PARAMS.tuning, enabled=True))
    result = train_country(world.assign(units=world["units"].where(~closed, 0)), tuned, RULES, num_threads=1)
    assert result.metrics["status"] in ("trained", "needs_fallback")
    # The fold that sold nothing was left out; the other was tuned on.
    assert len(result.card["model"]["tuning"]["candidates"]) == len(tuned.tuning.candidates)
