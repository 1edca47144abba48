"""The publish quality gate on small pandas frames: every rule blocks on its own, and a sound result passes."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import pandas as pd
import pytest

from markdown_pricing.core.drift import BLOCK, WARNING, Finding
from markdown_pricing.erp.gate import FINITE_COLUMNS, gate_reasons, not_publishable_because

LADDER = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
TRAINED = {"status": "trained", "model_wape": 0.30, "baseline_wape": 0.40, "model_bias": 0.01}


def recommendations(count: int = 4, **columns: list[Any]) -> pd.DataFrame:
    """`count` sound recommendations; keyword lists replace the first values of a column."""
    frame = pd.DataFrame(
        {
            "country": ["DEU"] * count,
            "article_id": [f"A{i}" for i in range(count)],
            "current_price": [50.0] * count,
            "current_discount": [0.0] * count,
            "recommended_discount": [0.2] * count,
            "recommended_price": [40.0] * count,
            "predicted_units_next_week": [3.0] * count,
            "expected_revenue": [120.0] * count,
            "expected_sell_through": [0.8] * count,
            "stock_on_hand": [10] * count,
        }
    )
    for column, values in columns.items():
        frame.loc[: len(values) - 1, column] = values
    return frame


def reasons(
    rows: pd.DataFrame,
    result: dict[str, Any] = TRAINED,
    previous: Collection[str] = (),
    ended: Collection[str] = (),
    drift: Sequence[Finding] = (),
) -> list[str]:
    return gate_reasons(
        result,
        rows,
        previous_articles=previous,
        ended_articles=ended,
        ladder=LADDER,
        max_drop_share=0.10,
        min_lost_articles=3,
        drift=drift,
    )


def articles(count: int) -> list[str]:
    return [f"A{i}" for i in range(count)]


def test_gate_reasons_pass_a_sound_result() -> None:
    assert reasons(recommendations(), previous=articles(4)) == []


def test_gate_blocks_a_price_response_that_missed_the_countrys_own_markdowns_only_past_its_limit() -> None:
    missed = {**TRAINED, "markdown_events": 14, "markdown_lift_error": 0.6}

    def gate(result: dict[str, Any], limit: float) -> list[str]:
        return gate_reasons(
            result,
            recommendations(),
            previous_articles=(),
            ended_articles=(),
            ladder=LADDER,
            max_drop_share=0.10,
            min_lost_articles=3,
            max_lift_error=limit,
        )

    assert gate(missed, 0.5) == [
        "the price response predicted the lift of its 14 past markdowns badly: mean absolute log lift error "
        "0.600 > 0.500"
    ]
    assert gate(missed, 0.0) == [] and gate(missed, 0.7) == []
    # No past markdown to check against: nothing to judge.
    assert gate({**TRAINED, "markdown_events": 0, "markdown_lift_error": None}, 0.5) == []


def test_gate_reasons_pass_any_count_without_a_previous_publish() -> None:
    assert reasons(recommendations(1)) == []


@pytest.mark.parametrize(("previous", "now"), [(100, 90), (100, 100), (100, 130)])
def test_gate_reasons_allow_losing_articles_up_to_the_share(previous: int, now: int) -> None:
    assert reasons(recommendations(now), previous=articles(previous)) == []


def test_gate_reasons_block_lost_articles_beyond_the_share_and_the_minimum_naming_them() -> None:
    assert reasons(recommendations(16), previous=articles(20)) == [
        "4 of 20 articles recommended last time are missing now although they neither sold out nor reached their "
        "season end (20.0%, more than the allowed 10.0% and at least 3 articles): A16, A17, A18, A19"
    ]


def test_gate_reasons_shorten_a_long_list_of_lost_articles() -> None:
    (reason,) = reasons(recommendations(10), previous=articles(30))
    assert reason.endswith(": A10, A11, A12, A13, A14, A15, A16, A17, A18, A19 and 10 more")


def test_gate_reasons_explain_sell_outs_and_season_ends() -> None:
    assert reasons(recommendations(10), previous=articles(20), ended=articles(20)[10:]) == []
    assert len(reasons(recommendations(10), previous=articles(20), ended=articles(20)[13:])) == 1


def test_gate_reasons_let_a_small_country_lose_fewer_than_the_minimum() -> None:
    # One lost article of nine is 11 %, above the share, but one article is not a pattern.
    assert reasons(recommendations(8), previous=articles(9)) == []
    assert reasons(recommendations(7), previous=articles(9)) == []
    assert len(reasons(recommendations(6), previous=articles(9))) == 1


@pytest.mark.parametrize(
    ("model", "baseline", "expected"),
    [
        (0.41, 0.40, "model loses to its baseline: model WAPE 0.410 >= baseline WAPE 0.400"),
        (0.40, 0.40, "model loses to its baseline: model WAPE 0.400 >= baseline WAPE 0.400"),
        (math.nan, 0.40, "model not measured against its baseline (model WAPE None, baseline WAPE 0.4)"),
        (0.30, None, "model not measured against its baseline (model WAPE 0.3, baseline WAPE None)"),
    ],
)
def test_gate_reasons_block_a_model_that_does_not_beat_its_baseline(
    model: float, baseline: float | None, expected: str
) -> None:
    result = {**TRAINED, "model_wape": model, "baseline_wape": baseline}
    assert reasons(recommendations(), result) == [expected]


@pytest.mark.parametrize(
    ("kind", "model", "expected"),
    [
        # Holding today's prices: there is no model to compare with the baseline.
        ("baseline", 0.50, []),
        # Too new to backtest: nothing to compare, and the ledger's fallback_reason says so.
        ("pooled", None, []),
        # A pooled model that was measured is held to the same rule as a country's own.
        ("pooled", 0.45, ["model loses to its baseline: model WAPE 0.450 >= baseline WAPE 0.400"]),
        ("country", None, ["model not measured against its baseline (model WAPE None, baseline WAPE 0.4)"]),
    ],
)
def test_gate_reasons_for_fallbacks(kind: str, model: float | None, expected: list[str]) -> None:
    result = {**TRAINED, "model_kind": kind, "model_wape": model, "baseline_wape": 0.40}
    assert reasons(recommendations(), result) == expected


NUMERIC_PREDICTIONS = list(FINITE_COLUMNS)


@pytest.mark.parametrize("column", NUMERIC_PREDICTIONS)
def test_gate_reasons_block_a_missing_prediction(column: str) -> None:
    assert reasons(recommendations(**{column: [math.nan]})) == [
        f"1 of 4 rows have a non-finite {column} (e.g. A0: {column} nan)"
    ]


def test_gate_reasons_block_an_infinite_prediction() -> None:
    assert reasons(recommendations(expected_revenue=[math.inf])) == [
        "1 of 4 rows have a non-finite expected_revenue (e.g. A0: expected_revenue inf)"
    ]


@pytest.mark.parametrize("column", ["predicted_units_next_week", "expected_revenue"])
def test_gate_reasons_block_negative_units_and_revenue(column: str) -> None:
    assert reasons(recommendations(**{column: [-1.0, -2.5]})) == [
        f"2 of 4 rows have a negative {column} (e.g. A0: {column} -1; A1: {column} -2.5)"
    ]


@pytest.mark.parametrize("column", ["current_price", "recommended_price"])
def test_gate_reasons_block_non_positive_prices(column: str) -> None:
    assert reasons(recommendations(**{column: [0.0, -5.0]})) == [
        f"2 of 4 rows have a non-positive {column} (e.g. A0: {column} 0; A1: {column} -5)"
    ]


@pytest.mark.parametrize("share", [-0.1, 1.2])
def test_gate_reasons_block_sell_through_outside_the_unit_interval(share: float) -> None:
    assert reasons(recommendations(expected_sell_through=[share])) == [
        f"1 of 4 rows have expected_sell_through outside [0, 1] (e.g. A0: expected_sell_through {share:g})"
    ]


def test_gate_reasons_pass_sell_through_at_its_bounds() -> None:
    assert reasons(recommendations(expected_sell_through=[0.0, 1.0])) == []


def test_gate_reasons_block_a_discount_off_the_ladder() -> None:
    assert reasons(recommendations(recommended_discount=[0.15, 0.2000001, 0.25])) == [
        "2 of 4 rows recommend a discount off the ladder "
        "(e.g. A0: recommended_discount 0.15; A2: recommended_discount 0.25)"
    ]


def test_gate_reasons_pass_holding_an_off_ladder_current_discount() -> None:
    # The contract's candidates are the current discount and the ladder steps above it.
    assert reasons(recommendations(current_discount=[0.1504], recommended_discount=[0.15])) == []


def test_gate_reasons_block_a_reversed_markdown() -> None:
    assert reasons(recommendations(current_discount=[0.3], recommended_discount=[0.1])) == [
        "1 of 4 rows recommend less discount than today's (e.g. A0: recommended_discount 0.1, current_discount 0.3)"
    ]


def test_gate_reasons_pass_a_current_discount_snapped_down_to_its_step() -> None:
    # A current discount of 10.4 % (a price rounded to cents) counts as the 10 % step.
    assert reasons(recommendations(current_discount=[0.104], recommended_discount=[0.1])) == []


def test_gate_reasons_list_every_broken_rule() -> None:
    result = {**TRAINED, "model_wape": 0.5}
    rows = recommendations(2, predicted_units_next_week=[-1.0], recommended_discount=[0.2, 0.33])
    assert reasons(rows, result, previous=articles(10)) == [
        "8 of 10 articles recommended last time are missing now although they neither sold out nor reached their "
        "season end (80.0%, more than the allowed 10.0% and at least 3 articles): A2, A3, A4, A5, A6, A7, A8, A9",
        "model loses to its baseline: model WAPE 0.500 >= baseline WAPE 0.400",
        "1 of 2 rows have a negative predicted_units_next_week (e.g. A0: predicted_units_next_week -1)",
        "1 of 2 rows recommend a discount off the ladder (e.g. A1: recommended_discount 0.33)",
    ]


def test_gate_reasons_block_input_drift_beyond_a_block_limit_with_its_figures() -> None:
    warned = Finding("DEU", "price_level", 40.0, 30.0, 0.25, 0.2, WARNING, "2026-11-16")
    blocking = Finding("DEU", "weekly_units", 12_345, 1_000, 1 - 1_000 / 12_345, 0.8, BLOCK, "2026-11-16")

    assert reasons(recommendations(), drift=[warned]) == []
    assert reasons(recommendations(), drift=[warned, blocking]) == [
        "input drift: weekly units fell 91.9% against run 2026-11-16 (12,345 -> 1,000), beyond the block limit of 80%"
    ]


def test_not_publishable_because_names_a_training_failure() -> None:
    failed = {"status": "failed", "error": "ValueError: only 3 weeks of history"}
    assert not_publishable_because(failed, recommendations()) == "training failed: ValueError: only 3 weeks of history"


def test_not_publishable_because_names_a_country_without_recommendations() -> None:
    assert not_publishable_because(TRAINED, recommendations(0)) == (
        "no active articles to recommend for: previous recommendations kept"
    )


def test_not_publishable_because_passes_a_trained_country_with_recommendations() -> None:
    assert not_publishable_because(TRAINED, recommendations()) is None
