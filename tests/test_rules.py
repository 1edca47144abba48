"""Buyer rules and run-level rules in the price choice, with pandas only (no Spark, no database)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from markdown_pricing.core.config import load_config
from markdown_pricing.core.contract import CANDIDATE_COLUMNS, EXCLUDED, PREDICTION_COLUMNS
from markdown_pricing.model import pricing, rules
from markdown_pricing.model.forecast import prepare
from markdown_pricing.synthetic.rules import sample_rules
from markdown_pricing.synthetic.sample import generate_sample

LADDER = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
RUN_DATE = dt.date(2026, 11, 23)
RUN = dataclasses.replace(
    load_config("local").run,
    ladder=LADDER,
    salvage_value_share=0.0,
    max_markdown_steps=0,
    min_weeks_between_markdowns=0,
    price_endings={},
)
RULE_COLUMNS = ("country", "article_id", "category", "rule", "value", "valid_from", "valid_to", "note")


def article(
    article_id: str,
    category: str = "tops",
    *,
    original: float = 100.0,
    history: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0),
    current: float | None = None,
    price: float | None = None,
    stock: int = 100,
    weeks: int = 4,
) -> list[dict[str, Any]]:
    """One article's weekly rows: its history at the given discounts, then `weeks` future weeks at today's."""
    today = history[-1] if current is None else current
    rows = []
    for i, discount in enumerate([*history, *[today] * weeks]):
        future = i >= len(history)
        rows.append(
            {
                "country": "DEU",
                "article_id": article_id,
                "category": category,
                "week_start": RUN_DATE + dt.timedelta(weeks=i - len(history)),
                "is_future": future,
                "discount": discount,
                "price": price if future and price is not None else round(original * (1 - discount), 2),
                "original_price": original,
                "stock_on_hand": stock,
            }
        )
    return rows


def weekly(*articles: list[dict[str, Any]]) -> pd.DataFrame:
    return prepare(pd.DataFrame([row for rows in articles for row in rows]))


def elastic(weeks: pd.DataFrame) -> np.ndarray:
    """1 + 20 x discount units a week: over 4 weeks at 100 EUR, 50 % off earns most (44 units, 2200 EUR)."""
    return (1 + 20 * weeks["discount"]).to_numpy(dtype="float64")


def buyer(*rows: tuple[Any, ...], country: str = "DEU") -> pd.DataFrame:
    """A buyer rules frame from (article_id, category, rule, value) tuples."""
    return pd.DataFrame(
        [(country, a, c, r, v, None, None, None) for a, c, r, v in rows], columns=list(RULE_COLUMNS)
    ).astype({"value": "float64"})


def score(frame: pd.DataFrame, *rows: tuple[Any, ...], **run: Any) -> pricing.Scored:
    return pricing.score(frame, elastic, dataclasses.replace(RUN, **run), buyer_rules=buyer(*rows) if rows else None)


def one(scored: pricing.Scored, article_id: str = "A") -> dict[str, Any]:
    [row] = scored.predictions[scored.predictions["article_id"] == article_id].to_dict(orient="records")
    return row


def curve(scored: pricing.Scored, article_id: str = "A") -> dict[float, Any]:
    """candidate discount -> ruled_out_by (None when allowed)."""
    rows = scored.candidates[scored.candidates["article_id"] == article_id]
    return dict(zip(rows["candidate_discount"], rows["ruled_out_by"], strict=True))


# The outputs


def test_score_without_rules_recommends_the_best_candidate_and_says_what_holding_would_bring() -> None:
    scored = score(weekly(article("A")))
    row = one(scored)
    assert (row["recommended_discount"], row["recommended_price"], row["rule_applied"]) == (0.5, 50.0, None)
    assert row["expected_revenue"] == pytest.approx(44 * 50)
    assert row["hold_expected_revenue"] == pytest.approx(4 * 100)
    assert row["gain_over_hold"] == pytest.approx(44 * 50 - 4 * 100)
    assert row["hold_sell_through"] == pytest.approx(0.04)
    assert row["weeks_to_season_end"] == 4
    assert scored.problems == []
    assert list(scored.candidates["candidate_discount"]) == list(LADDER)
    assert list(scored.candidates["candidate_price"]) == [100.0, 90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0]
    assert list(scored.candidates["chosen"]) == [step == 0.5 for step in LADDER]
    assert scored.candidates["ruled_out_by"].isna().all()
    assert list(scored.candidates["predicted_units_season"]) == pytest.approx([4 + 80 * step for step in LADDER])


def test_score_outputs_the_contract_columns_and_types() -> None:
    scored = score(weekly(article("A"), article("B", history=(0.15,))), ("B", None, "exclude", None))
    assert tuple(scored.predictions.columns) == PREDICTION_COLUMNS
    assert tuple(scored.candidates.columns) == CANDIDATE_COLUMNS
    strings = {"country", "article_id", "rule_applied", "ruled_out_by"}
    expected = {"stock_on_hand": "int64", "weeks_to_season_end": "int64", "chosen": "bool"}
    for frame in (scored.predictions, scored.candidates):
        for column, dtype in frame.dtypes.items():
            assert str(dtype) == ("object" if column in strings else expected.get(str(column), "float64")), column
    # Nulls are None, as Arrow and the ERP writer want them.
    assert scored.predictions["rule_applied"].tolist() == [None]
    assert scored.candidates.loc[scored.candidates["article_id"] == "A", "ruled_out_by"].tolist() == [None] * 8


def test_decide_on_no_articles_gives_empty_frames_with_the_contract_columns() -> None:
    empty = pd.DataFrame(columns=["article_id", "candidate", "expected_revenue"])
    decision = rules.decide(empty, country="DEU", ladder=LADDER, salvage_value_share=0.0, weeks_left=pd.Series())
    assert tuple(decision.predictions.columns) == PREDICTION_COLUMNS and decision.predictions.empty
    assert tuple(decision.candidates.columns) == CANDIDATE_COLUMNS and decision.candidates.empty


def regression_world() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    articles = []
    for a in range(40):
        original = float(rng.choice([19.99, 33.33, 50.0, 79.9]))
        history = tuple(float(d) for d in np.sort(rng.choice([0.0, 0.1, 0.15, 0.2031, 0.3, 0.7], size=3)))
        articles.append(
            article(f"A{a:02d}", "tops" if a % 2 else "jeans", original=original, history=history, stock=a * 3)
        )
    return weekly(*articles)


def noisy(weeks: pd.DataFrame) -> np.ndarray:
    """Demand from each row's own content: some articles sell nothing (all candidates tie)."""
    article_number = weeks["article_id"].str[1:].astype(int)
    base = (article_number * 7 + weeks["week_start"].dt.day) % 5
    return (base * (1 + 3 * weeks["discount"]) ** 1.5).to_numpy(dtype="float64")


def test_without_rules_and_a_neutral_policy_the_recommendations_are_the_old_ones() -> None:
    world = regression_world()
    weeks = pricing.candidate_weeks(pricing.future_weeks(world), LADDER)
    weeks["predicted_units"] = noisy(weeks)
    old = pricing.recommend(pricing.simulate_season(weeks, 0.1)).set_index("article_id")
    neutral = dataclasses.replace(RUN, salvage_value_share=0.1)
    new = pricing.score(world, noisy, neutral).predictions.set_index("article_id")
    assert list(new.index) == list(old.index)
    for column in (
        "recommended_discount",
        "recommended_price",
        "expected_revenue",
        "predicted_units_next_week",
        "expected_sell_through",
        "current_price",
        "current_discount",
        "stock_on_hand",
    ):
        assert new[column].tolist() == old[column].tolist(), column
    assert new["rule_applied"].isna().all()
    assert (new["recommended_discount"] > new["current_discount"] + 0.01).any()


# Buyer rules


def test_exclude_drops_the_recommendation_and_marks_every_candidate() -> None:
    scored = score(weekly(article("A"), article("B")), ("A", None, "exclude", None))
    assert scored.predictions["article_id"].tolist() == ["B"]
    excluded = scored.candidates[scored.candidates["article_id"] == "A"]
    assert len(excluded) == len(LADDER)
    assert (excluded["ruled_out_by"] == EXCLUDED).all() and not excluded["chosen"].any()
    assert one(scored, "B")["recommended_discount"] == 0.5


def test_hold_keeps_todays_discount() -> None:
    scored = score(weekly(article("A", history=(0.0, 0.2))), ("A", None, "hold", None))
    row = one(scored)
    assert (row["recommended_discount"], row["recommended_price"], row["rule_applied"]) == (0.2, 80.0, "hold [article]")
    assert row["gain_over_hold"] == 0.0 and row["expected_revenue"] == row["hold_expected_revenue"]
    assert curve(scored) == {0.2: None, **{step: "hold [article]" for step in LADDER[3:]}}


@pytest.mark.parametrize(
    ("rule", "value", "discount", "price"),
    [("max_discount", 0.3, 0.3, 70.0), ("min_price", 65.0, 0.3, 70.0), ("min_price", 60.0, 0.4, 60.0)],
)
def test_max_discount_and_min_price_are_respected(rule: str, value: float, discount: float, price: float) -> None:
    scored = score(weekly(article("A")), ("A", None, rule, value))
    row = one(scored)
    label = f"{rule} {rules.number(value)} [article]"
    assert (row["recommended_discount"], row["recommended_price"], row["rule_applied"]) == (discount, price, label)
    assert curve(scored) == {step: label if step > discount else None for step in LADDER}
    assert scored.problems == []


def test_a_category_rule_reaches_every_article_of_the_category_and_no_other() -> None:
    frame = weekly(article("A", "jeans"), article("B", "jeans", history=(0.1,)), article("C", "tops"))
    scored = score(frame, (None, "jeans", "max_discount", 0.2))
    got = scored.predictions.set_index("article_id")[["recommended_discount", "rule_applied"]]
    assert got.to_dict(orient="index") == {
        "A": {"recommended_discount": 0.2, "rule_applied": "max_discount 0.2 [category jeans]"},
        "B": {"recommended_discount": 0.2, "rule_applied": "max_discount 0.2 [category jeans]"},
        "C": {"recommended_discount": 0.5, "rule_applied": None},
    }


def test_the_strictest_rule_wins_and_the_contradiction_is_reported() -> None:
    frame = weekly(article("A", "jeans"), article("B", "jeans"))
    scored = score(
        frame,
        ("A", None, "max_discount", 0.3),
        (None, "jeans", "max_discount", 0.2),
        ("B", None, "min_price", 75.0),
        (None, "jeans", "min_price", 65.0),
    )
    assert one(scored, "A")["recommended_discount"] == 0.2
    assert one(scored, "A")["rule_applied"] == "max_discount 0.2 [category jeans]"
    # B: min_price 75 allows 0.2 (80 EUR), the category's max_discount 0.2 too: the tie names the first checked.
    assert one(scored, "B")["recommended_discount"] == 0.2
    assert one(scored, "B")["rule_applied"] == "max_discount 0.2 [category jeans]"
    assert curve(scored, "B")[0.3] == "max_discount 0.2 [category jeans]"
    assert scored.problems == [
        "DEU A: max_discount 0.3 [article] and max_discount 0.2 [category jeans] both apply; the stricter 0.2 is used",
        "DEU B: min_price 75 [article] and min_price 65 [category jeans] both apply; the stricter 75 is used",
    ]


def test_hold_with_a_maximum_discount_is_no_contradiction_and_hold_names_the_candidates() -> None:
    scored = score(weekly(article("A")), ("A", None, "hold", None), ("A", None, "max_discount", 0.3))
    assert scored.problems == []
    assert one(scored)["recommended_discount"] == 0.0 and one(scored)["rule_applied"] == "hold [article]"
    assert set(curve(scored).values()) == {None, "hold [article]"}


def test_a_minimum_price_above_todays_price_holds_and_is_reported() -> None:
    scored = score(weekly(article("A")), ("A", None, "min_price", 120.0))
    row = one(scored)
    assert (row["recommended_discount"], row["rule_applied"]) == (0.0, "min_price 120 [article]")
    assert scored.problems == ["DEU A: min_price 120 [article] is above today's price 100; today's price is held"]


def test_a_maximum_discount_below_todays_never_reverses_the_markdown_and_is_reported() -> None:
    scored = score(weekly(article("A", history=(0.3,))), ("A", None, "max_discount", 0.2))
    row = one(scored)
    assert (row["recommended_discount"], row["rule_applied"]) == (0.3, "max_discount 0.2 [article]")
    assert curve(scored)[0.3] is None
    assert scored.problems == [
        "DEU A: max_discount 0.2 [article] is below today's discount 0.3; today's discount is held "
        "(a markdown is never reversed)"
    ]


def test_every_problem_with_the_buyer_rules_is_reported_and_what_can_be_applied_is() -> None:
    frame = weekly(
        article("A", "jeans"),
        article("B", "jeans", history=(0.3,)),
        article("C", "tops"),
        article("E", "coats"),
        article("F", "coats"),
        article("G", "coats"),
        # D is known from its history but no longer on sale.
        article("D", "shoes", weeks=0),
    )
    rules_frame = pd.concat(
        [
            buyer(
                ("A", None, "discount_cap", 0.3),
                ("A", None, "max_discount", 0.9),
                ("C", None, "max_discount", None),
                ("C", None, "min_price", None),
                ("C", None, "min_price", 0.0),
                ("Z9", None, "hold", None),
                (None, "socks", "exclude", None),
                (None, None, "hold", None),
                ("C", None, "exclude", None),
                (None, "tops", "hold", None),
                (None, "jeans", "max_discount", 0.2),
                ("A", None, "min_price", 60.0),
                (None, "jeans", "min_price", 70.0),
                ("E", None, "min_price", 120.0),
                ("F", "jeans", "max_discount", 0.4),
                ("G", None, "hold", None),
                ("G", None, "max_discount", 0.3),
                (None, "shoes", "max_discount", 0.2),
                ("D", None, "hold", None),
                ("A", None, "max_discount", -0.1),
            ),
            buyer(("A", None, "hold", None), country="FRA"),
        ],
        ignore_index=True,
    )
    constraints = rules.buyer_constraints("DEU", frame, rules_frame)
    assert constraints.problems == [
        "DEU A: discount_cap 0.3 [article] is not a rule kind (exclude, hold, max_discount, min_price); not applied",
        "DEU A: max_discount 0.9 [article] is outside 0..0.7; max_discount 0.7 is used",
        "DEU C: max_discount [article] has no value; not applied",
        "DEU C: min_price [article] has no value; not applied",
        "DEU C: min_price 0 [article] is not above 0; not applied",
        "DEU Z9: hold [article]: the country has no article Z9; not applied",
        "DEU category socks: exclude [category socks]: the country has no category socks; not applied",
        "DEU: hold names neither an article nor a category; not applied",
        "DEU F: max_discount 0.4 [article] names category jeans but the article is in category coats; "
        "applied to the article",
        "DEU A: max_discount -0.1 [article] is outside 0..0.7; max_discount 0 is used",
        "DEU A: hold [article] is a rule of FRA, not of DEU; not applied",
        "DEU A: max_discount 0.7 [article], max_discount 0 [article] and max_discount 0.2 [category jeans] all apply; "
        "the stricter 0 is used",
        "DEU A: min_price 60 [article] and min_price 70 [category jeans] both apply; the stricter 70 is used",
        "DEU B: max_discount 0.2 [category jeans] is below today's discount 0.3; today's discount is held "
        "(a markdown is never reversed)",
        "DEU C: exclude [article] and hold [category tops] both apply; the article is excluded",
        "DEU E: min_price 120 [article] is above today's price 100; today's price is held",
    ]
    got = constraints.by_article
    assert list(got.index) == ["A", "B", "C", "E", "F", "G"]
    assert list(got.columns) == list(rules.CONSTRAINT_COLUMNS)
    assert got["excluded"].tolist() == [False, False, True, False, False, False]
    assert got["hold"].tolist() == [None, None, None, None, None, "hold [article]"]
    assert got["max_discount"].tolist()[:2] == [0.0, 0.2] and got.at["F", "max_discount"] == 0.4
    assert got.at["A", "max_discount_label"] == "max_discount 0 [article]"
    assert got.at["A", "min_price_label"] == "min_price 70 [category jeans]"
    assert math.isnan(got.at["C", "max_discount"])

    scored = pricing.score(frame, elastic, RUN, buyer_rules=rules_frame)
    assert scored.problems == constraints.problems
    assert sorted(scored.predictions["article_id"]) == ["A", "B", "E", "F", "G"]
    recommended = scored.predictions.set_index("article_id")["recommended_discount"].to_dict()
    assert recommended == {"A": 0.0, "B": 0.3, "E": 0.0, "F": 0.4, "G": 0.0}


def test_no_buyer_rules_means_no_constraints_and_no_problems() -> None:
    frame = weekly(article("A"))
    for nothing in (None, buyer()):
        constraints = rules.buyer_constraints("DEU", frame, nothing)
        assert constraints.problems == [] and not constraints.by_article["excluded"].any()
        assert constraints.by_article["hold"].isna().all()


# Run-level rules


def test_a_markdown_goes_at_most_max_markdown_steps_ladder_steps() -> None:
    frame = weekly(article("A", history=(0.1,)), article("B", history=(0.15,)), article("C", history=(0.6,)))
    scored = score(frame, max_markdown_steps=2)
    got = scored.predictions.set_index("article_id")[["recommended_discount", "rule_applied"]]
    assert got.to_dict(orient="index") == {
        "A": {"recommended_discount": 0.3, "rule_applied": "max_markdown_steps 2"},
        # Off the ladder, the first step is the next one up.
        "B": {"recommended_discount": 0.3, "rule_applied": "max_markdown_steps 2"},
        "C": {"recommended_discount": 0.6, "rule_applied": None},
    }
    assert curve(scored, "B") == {0.15: None, 0.2: None, 0.3: None, **{s: "max_markdown_steps 2" for s in LADDER[4:]}}


def test_the_rule_forbidding_the_most_names_the_candidates() -> None:
    frame = weekly(article("A"))
    tighter = score(frame, ("A", None, "max_discount", 0.4), max_markdown_steps=2)
    assert one(tighter)["rule_applied"] == "max_markdown_steps 2"
    assert curve(tighter)[0.5] == "max_markdown_steps 2"
    # On a tie the buyer's rule is named.
    tie = score(frame, ("A", None, "max_discount", 0.2), max_markdown_steps=2)
    assert one(tie)["rule_applied"] == "max_discount 0.2 [article]"


def test_weeks_since_markdown_counts_back_from_the_run_week() -> None:
    frame = weekly(
        article("A", history=(0.0, 0.0, 0.2, 0.2)),
        article("B", history=(0.1, 0.3, 0.3, 0.4)),
        article("C", history=(0.3, 0.3, 0.3, 0.3)),
        article("D", history=(0.3, 0.3, 0.2, 0.2)),
    )
    assert rules.weeks_since_markdown(frame).to_dict() == {"A": 2.0, "B": 1.0}


@pytest.mark.parametrize(("weeks", "held"), [(3, True), (2, False), (0, False)])
def test_an_article_marked_down_recently_holds_for_min_weeks_between_markdowns(weeks: int, held: bool) -> None:
    frame = weekly(article("A", history=(0.0, 0.0, 0.2, 0.2)), article("B"))
    scored = score(frame, min_weeks_between_markdowns=weeks)
    row = one(scored)
    if held:
        assert (row["recommended_discount"], row["rule_applied"]) == (0.2, f"min_weeks_between_markdowns {weeks}")
        assert curve(scored)[0.3] == f"min_weeks_between_markdowns {weeks}"
    else:
        assert (row["recommended_discount"], row["rule_applied"]) == (0.5, None)
    # Never marked down: never held.
    assert one(scored, "B")["recommended_discount"] == 0.5


# Price endings


@pytest.mark.parametrize(
    ("ending", "price", "label"),
    [(0.99, 48.99, "price_ending 0.99"), (0.95, 49.95, None), (0.0, 49.0, "price_ending 0.00")],
)
def test_a_new_markdown_takes_the_countrys_price_ending(ending: float, price: float, label: str | None) -> None:
    scored = score(weekly(article("A", original=99.9)), price_endings={"DEU": ending, "FRA": 0.5})
    row = one(scored)
    assert (row["recommended_discount"], row["recommended_price"], row["rule_applied"]) == (0.5, price, label)
    # The 44 units it sells earn the ended price; holding is unchanged.
    assert row["expected_revenue"] == pytest.approx(44 * price)
    assert row["hold_expected_revenue"] == pytest.approx(4 * 99.9)
    assert row["gain_over_hold"] == pytest.approx(44 * price - 4 * 99.9)
    chosen = scored.candidates[scored.candidates["chosen"]].iloc[0]
    assert (chosen["candidate_price"], chosen["expected_revenue"]) == (price, row["expected_revenue"])
    other = scored.candidates[scored.candidates["candidate_discount"] == 0.4].iloc[0]
    assert other["candidate_price"] == 59.94 and other["expected_revenue"] == pytest.approx(36 * 59.94)


def test_the_price_ending_counts_the_unsold_stock_at_its_salvage_value() -> None:
    run = dataclasses.replace(RUN, salvage_value_share=0.1, price_endings={"DEU": 0.99})
    row = one(pricing.score(weekly(article("A", original=99.9)), elastic, run))
    # Salvage makes 40 % off the best: 36 units sold at 58.99, 64 left at 9.99.
    assert (row["recommended_discount"], row["recommended_price"]) == (0.4, 58.99)
    assert row["expected_revenue"] == pytest.approx(36 * 58.99 + 64 * 9.99)


def test_a_price_ending_that_would_break_min_price_rounds_up() -> None:
    scored = score(weekly(article("A", original=99.9)), ("A", None, "min_price", 49.5), price_endings={"DEU": 0.99})
    row = one(scored)
    assert (row["recommended_discount"], row["recommended_price"]) == (0.5, 49.99)
    assert row["rule_applied"] == "price_ending 0.99"


@pytest.mark.parametrize(("ending", "price", "label"), [(0.99, 50.99, "price_ending 0.99"), (0.0, 50.0, None)])
def test_a_price_ending_that_would_break_max_discount_rounds_up(ending: float, price: float, label: str | None) -> None:
    scored = score(weekly(article("A")), ("A", None, "max_discount", 0.5), price_endings={"DEU": ending})
    row = one(scored)
    assert (row["recommended_discount"], row["recommended_price"], row["rule_applied"]) == (0.5, price, label)


def test_a_price_ending_that_fits_neither_way_keeps_the_ladder_price() -> None:
    # Today 9.50 EUR (5 % off 10): 8.99 is below the minimum price, 9.99 is no markdown.
    frame = weekly(article("A", original=10.0, history=(0.05,), price=9.5))
    scored = score(frame, ("A", None, "min_price", 9.0), price_endings={"DEU": 0.99})
    row = one(scored)
    assert (row["recommended_discount"], row["recommended_price"]) == (0.1, 9.0)
    assert row["rule_applied"] == "min_price 9 [article]"


def test_holding_todays_price_takes_no_price_ending() -> None:
    frame = weekly(article("A", original=99.9, history=(0.2,)))
    scored = score(frame, ("A", None, "hold", None), price_endings={"DEU": 0.99})
    row = one(scored)
    assert (row["recommended_price"], row["rule_applied"]) == (79.92, "hold [article]")


def test_end_price_rounds_down_then_up_and_never_to_zero() -> None:
    assert rules.end_price(35.0, 0.99, original_price=50.0, current_price=50.0) == 34.99
    assert rules.end_price(35.0, 0.99, original_price=50.0, current_price=50.0, max_discount=0.3) == 35.99
    assert rules.end_price(35.0, 0.95, original_price=50.0, current_price=50.0, min_price=34.96) == 35.95
    assert rules.end_price(35.5, 0.0, original_price=50.0, current_price=50.0) == 35.0
    assert rules.end_price(0.5, 0.99, original_price=1.0, current_price=1.0) == 0.99
    assert rules.end_price(0.5, 0.99, original_price=1.0, current_price=0.9) == 0.5
    assert rules.end_price(35.0, 0.99, original_price=50.0, current_price=35.5, max_discount=0.3) == 35.0


def test_the_policy_comes_from_the_run_rules() -> None:
    run = dataclasses.replace(RUN, max_markdown_steps=2, min_weeks_between_markdowns=3, price_endings={"GBR": 0.99})
    assert rules.Policy.of(run, "GBR") == rules.Policy(2, 3, 0.99)
    assert rules.Policy.of(run, "DEU") == rules.Policy(2, 3, None)
    with pytest.raises(ValueError, match="price ending"):
        rules.Policy(price_ending=99.0)


# The synthetic sample with its seeded rules


def test_the_seeded_rules_of_a_synthetic_sample_are_honoured_on_its_true_seasons(tmp_path: Path) -> None:
    generate_sample(
        tmp_path / "raw",
        countries=3,
        articles=150,
        weeks=20,
        seed=5,
        run_date=RUN_DATE,
        truth_dir=tmp_path / "truth",
        inject_bad_rows=False,
    )
    seeded = sample_rules(tmp_path / "raw", RUN_DATE)
    in_force = seeded[seeded["valid_to"].isna() | (seeded["valid_to"] >= RUN_DATE)].astype({"value": "float64"})
    truth = pq.read_table(tmp_path / "truth").to_pandas()
    articles = pq.read_table(tmp_path / "raw" / "articles").to_pandas().drop_duplicates("article_id")
    articles = articles.set_index("article_id")
    policy = {"max_markdown_steps": 3, "price_endings": {"DEU": 0.99}}
    applied: list[str] = []
    for country, own in in_force.groupby("country"):
        season = truth[truth["country"] == country].rename(
            columns={
                "expected_units": "predicted_season_units",
                "expected_units_next_week": "predicted_units_next_week",
            }
        )
        today = season.drop_duplicates("article_id")
        frame = pd.DataFrame(
            {
                "article_id": today["article_id"],
                "category": today["article_id"].map(articles["category"]),
                "week_start": pd.Timestamp(RUN_DATE),
                "is_future": True,
                "price": today["current_price"],
                "discount": today["current_discount"],
            }
        )
        constraints = rules.buyer_constraints(str(country), frame, own)
        run = dataclasses.replace(RUN, **policy)
        decision = rules.decide(
            season,
            country=str(country),
            ladder=LADDER,
            salvage_value_share=0.0,
            weeks_left=pd.Series(5, index=today["article_id"]),
            constraints=constraints.by_article,
            policy=rules.Policy.of(run, str(country)),
        )
        predictions = decision.predictions.set_index("article_id")
        applied += predictions["rule_applied"].dropna().tolist()
        for rule in own.to_dict(orient="records"):
            if rule["article_id"] is not None:
                targets = [rule["article_id"]]
            else:
                targets = [a for a in predictions.index if articles.at[a, "category"] == rule["category"]]
            for target in targets:
                if rule["rule"] == "exclude":
                    assert target not in predictions.index
                    continue
                row = predictions.loc[target]
                if rule["rule"] == "hold":
                    assert row["recommended_discount"] == pytest.approx(row["current_discount"], abs=0.005)
                elif rule["rule"] == "max_discount":
                    assert row["recommended_discount"] <= max(rule["value"], row["current_discount"]) + 1e-9
                elif rule["rule"] == "min_price":
                    assert row["recommended_price"] >= min(rule["value"], row["current_price"])
        # Every row the rules moved names a rule; every markdown in DEU ends in .99.
        unconstrained = season[season["oracle"]].set_index("article_id")["candidate"]
        moved = predictions["recommended_discount"] != unconstrained.reindex(predictions.index).round(3)
        assert predictions.loc[moved, "rule_applied"].notna().all()
        if country == "DEU":
            marked = predictions["recommended_discount"] > predictions["current_discount"] + 0.005
            cents = (predictions.loc[marked, "recommended_price"] * 100).round().astype(int) % 100
            ended = predictions.loc[marked, "rule_applied"].fillna("").str.contains("price_ending 0.99")
            assert ((cents == 99) | ~ended).all()
        else:
            [contradiction] = [p for p in constraints.problems if "both apply" in p]
            assert contradiction.endswith("the stricter 0.1 is used")
    # The sample binds some rows by a buyer's rule and prices some markdowns with the ending.
    assert any(label.startswith("max_discount") for label in applied)
    assert "price_ending 0.99" in applied
