"""The publish quality gate: why one country's recommendations must not replace its ERP rows.

Plain pandas, no Spark and no database, so every rule is unit-tested on small frames. Two kinds of answer:
`not_publishable_because` means there is nothing to publish (no operator can change that);
`gate_reasons` lists doubts about a result that exists, which an operator may override for one country.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from markdown_pricing.core.contract import LADDER_SNAP
from markdown_pricing.core.drift import BLOCK, Finding, describe
from markdown_pricing.core.results import metric

# A NaN or an infinity in any of these makes the row out of range: the ERP would store it as a recommendation.
FINITE_COLUMNS = (
    "current_price",
    "current_discount",
    "recommended_discount",
    "recommended_price",
    "predicted_units_next_week",
    "expected_revenue",
    "expected_sell_through",
)
NON_NEGATIVE_COLUMNS = ("predicted_units_next_week", "expected_revenue")
POSITIVE_COLUMNS = ("current_price", "recommended_price")
LADDER_TOLERANCE = 1e-6
EXAMPLES = 3
LOST_SHOWN = 10


def not_publishable_because(result: Mapping[str, Any], rows: pd.DataFrame) -> str | None:
    """Why a country has nothing to publish (not overridable), or None when it has."""
    if result["status"] != "trained":
        return f"training failed: {result.get('error')}"
    if rows.empty:
        return "no active articles to recommend for: previous recommendations kept"
    return None


def gate_reasons(
    result: Mapping[str, Any],
    rows: pd.DataFrame,
    *,
    previous_articles: Collection[str],
    ended_articles: Collection[str],
    ladder: tuple[float, ...],
    max_drop_share: float,
    min_lost_articles: int,
    drift: Sequence[Finding] = (),
    max_lift_error: float = 0.0,
) -> list[str]:
    """Why a trained country's recommendations should not be published; empty when the gate passes.

    `previous_articles` are those the ERP holds for the country now (none before its first publish);
    `ended_articles` those known to have sold out or reached their season end by the run date; `drift` the country's
    input drift findings, of which those beyond a block limit block it; `max_lift_error` the limit on its
    markdown-event backtest (0: none).
    """
    return [
        *_lost_article_reasons(rows, previous_articles, ended_articles, max_drop_share, min_lost_articles),
        *_baseline_reasons(result),
        *_lift_reasons(result, max_lift_error),
        *_range_reasons(rows, ladder),
        *(f"input drift: {describe(finding)}" for finding in drift if finding.level == BLOCK),
    ]


def _lost_article_reasons(
    rows: pd.DataFrame,
    previous: Collection[str],
    ended: Collection[str],
    max_drop_share: float,
    min_lost_articles: int,
) -> list[str]:
    """An article recommended last time, missing now, that neither sold out nor reached its season end is lost:
    too many of them, by share and by number, block the country. Sell-outs and season ends are normal."""
    if not previous:
        return []
    lost = sorted(set(previous) - set(rows["article_id"]) - set(ended))
    share = len(lost) / len(previous)
    if share <= max_drop_share or len(lost) < min_lost_articles:
        return []
    shown = ", ".join(lost[:LOST_SHOWN]) + (f" and {len(lost) - LOST_SHOWN} more" if len(lost) > LOST_SHOWN else "")
    return [
        f"{len(lost)} of {len(previous)} articles recommended last time are missing now although they neither sold "
        f"out nor reached their season end ({share:.1%}, more than the allowed {max_drop_share:.1%} and at least "
        f"{min_lost_articles} articles): {shown}"
    ]


def _baseline_reasons(result: Mapping[str, Any]) -> list[str]:
    model, baseline = metric(result, "model_wape"), metric(result, "baseline_wape")
    kind = result.get("model_kind")
    # A baseline fallback's level is the baseline: there is no model to compare. A pooled fallback for a country
    # too new to backtest cannot be measured there; its fallback_reason, in the ledger, says so.
    if kind == "baseline" or (kind == "pooled" and model is None):
        return []
    if model is None or baseline is None:
        # Without both measurements nothing shows the model is better than carrying last week forward.
        return [f"model not measured against its baseline (model WAPE {model}, baseline WAPE {baseline})"]
    if model >= baseline:
        return [f"model loses to its baseline: model WAPE {model:.3f} >= baseline WAPE {baseline:.3f}"]
    return []


def _lift_reasons(result: Mapping[str, Any], limit: float) -> list[str]:
    """The price response missed the lift of the country's own past markdowns by more than the limit."""
    error = metric(result, "markdown_lift_error")
    if not limit or error is None or error <= limit:
        return []
    return [
        f"the price response predicted the lift of its {result.get('markdown_events')} past markdowns badly: "
        f"mean absolute log lift error {error:.3f} > {limit:.3f}"
    ]


def _rows_reason(rows: pd.DataFrame, bad: pd.Series, what: str, *shown: str) -> list[str]:
    """One reason naming how many rows break a rule, with a few article_ids and their values as examples."""
    if not bad.any():
        return []
    examples = "; ".join(
        f"{row['article_id']}: " + ", ".join(f"{column} {row[column]:.6g}" for column in shown)
        for _, row in rows.loc[bad].head(EXAMPLES).iterrows()
    )
    return [f"{int(bad.sum())} of {len(rows)} rows {what} (e.g. {examples})"]


def _range_reasons(rows: pd.DataFrame, ladder: tuple[float, ...]) -> list[str]:
    reasons: list[str] = []
    for column in FINITE_COLUMNS:
        finite = pd.Series(np.isfinite(rows[column].astype("float64")), index=rows.index)
        reasons += _rows_reason(rows, ~finite, f"have a non-finite {column}", column)
    # NaN compares false below, so a NaN row is reported once, by the check above.
    for column in NON_NEGATIVE_COLUMNS:
        reasons += _rows_reason(rows, rows[column] < 0, f"have a negative {column}", column)
    for column in POSITIVE_COLUMNS:
        reasons += _rows_reason(rows, rows[column] <= 0, f"have a non-positive {column}", column)
    sell_through = rows["expected_sell_through"]
    outside = (sell_through < 0) | (sell_through > 1)
    reasons += _rows_reason(rows, outside, "have expected_sell_through outside [0, 1]", "expected_sell_through")
    discount, current = rows["recommended_discount"], rows["current_discount"]
    on_ladder = pd.Series(False, index=rows.index)
    for step in ladder:
        on_ladder |= (discount - step).abs() <= LADDER_TOLERANCE
    # Holding an off-ladder current discount is allowed: the model offers it (rounded) as the no-change candidate.
    holds_current = (discount - current.round(3)).abs() <= LADDER_TOLERANCE
    off_ladder = discount.notna() & ~on_ladder & ~holds_current
    reasons += _rows_reason(rows, off_ladder, "recommend a discount off the ladder", "recommended_discount")
    reasons += _rows_reason(
        rows,
        discount < current - LADDER_SNAP,
        "recommend less discount than today's",
        "recommended_discount",
        "current_discount",
    )
    return reasons
