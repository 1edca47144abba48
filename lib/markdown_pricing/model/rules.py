"""The rules a recommendation respects: the buyers' (markdown.article_rules) and the run's (conf [run]).

Which candidate discounts each article may take, the recommendation among them and the rule that bound it. Plain
pandas: the buyer rules frame comes from the ERP (erp.rules), the season per candidate from model.pricing.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from markdown_pricing.core.config import RunRules
from markdown_pricing.core.contract import CANDIDATE_COLUMNS, EXCLUDED, LADDER_SNAP, PREDICTION_COLUMNS

RULE_KINDS = ("exclude", "hold", "max_discount", "min_price")
# The deepest discount a buyer's max_discount may name, as the ladder's deepest step.
MAX_DISCOUNT = 0.7
# Each article's buyer constraints, one row per active article (index: article_id).
CONSTRAINT_COLUMNS = ("excluded", "hold", "max_discount", "max_discount_label", "min_price", "min_price_label")
# Where a rule names an article: its own rules are named before its category's.
_ARTICLE, _CATEGORY = 0, 1


@dataclass(frozen=True)
class Policy:
    """The run-level rules for one country: 0 means no limit, a price ending of None none."""

    max_markdown_steps: int = 0
    min_weeks_between_markdowns: int = 0
    price_ending: float | None = None

    def __post_init__(self) -> None:
        if self.max_markdown_steps < 0 or self.min_weeks_between_markdowns < 0:
            raise ValueError(f"run rules cannot be negative: {self}")
        if self.price_ending is not None and not 0.0 <= self.price_ending < 1.0:
            raise ValueError(f"a price ending is a share of a euro in [0, 1), not {self.price_ending}")

    @classmethod
    def of(cls, rules: RunRules, country: str) -> Policy:
        """The country's run-level rules from the config's [run] section."""
        ending = rules.price_endings.get(country)
        return cls(
            rules.max_markdown_steps, rules.min_weeks_between_markdowns, None if ending is None else float(ending)
        )


NEUTRAL = Policy()


@dataclass(frozen=True)
class Constraints:
    """The buyer rules of one country resolved per active article (CONSTRAINT_COLUMNS, index article_id), and what
    was wrong with them."""

    by_article: pd.DataFrame
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    """Per article the recommendation (PREDICTION_COLUMNS; excluded articles have none) and per (article,
    candidate discount) the curve it was chosen from (CANDIDATE_COLUMNS)."""

    predictions: pd.DataFrame
    candidates: pd.DataFrame


# --- labels ----------------------------------------------------------------------------------------------------------


def number(value: float) -> str:
    """A rule's value as a buyer writes it: 0.3, 39.99, 40."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def ending_label(ending: float) -> str:
    return f"price_ending {ending:.2f}"


def steps_label(steps: int) -> str:
    return f"max_markdown_steps {steps}"


def weeks_label(weeks: int) -> str:
    return f"min_weeks_between_markdowns {weeks}"


def _scope(category: str | None) -> str:
    return "[article]" if category is None else f"[category {category}]"


def _label(kind: str, value: float | None, category: str | None, scoped: bool = True) -> str:
    """A buyer rule as rule_applied and ruled_out_by name it: `max_discount 0.3 [category jeans]`."""
    shown = "" if value is None else f" {number(value)}"
    return f"{kind}{shown} {_scope(category)}" if scoped else f"{kind}{shown}"


def _together(labels: list[str]) -> str:
    if len(labels) == 2:
        return f"{labels[0]} and {labels[1]} both apply"
    return f"{', '.join(labels[:-1])} and {labels[-1]} all apply"


# --- buyer rules -----------------------------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    return text or None


def _value(value: object) -> float | None:
    if value is None or value is pd.NA:
        return None
    number_ = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number_) else number_


@dataclass(frozen=True)
class _Resolved:
    """One article's constraints (CONSTRAINT_COLUMNS) and the problems met resolving them."""

    excluded: bool = False
    hold: str | None = None
    max_discount: float = math.nan
    max_discount_label: str | None = None
    min_price: float = math.nan
    min_price_label: str | None = None
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Entry:
    kind: str
    value: float | None
    rank: int  # _ARTICLE or _CATEGORY: an article's own rule names it first
    label: str


def today(weekly: pd.DataFrame) -> pd.DataFrame:
    """Each active article's row of the run week: category, price and discount (index article_id)."""
    future = weekly[weekly["is_future"]].sort_values(["article_id", "week_start"], kind="stable")
    first = future.drop_duplicates("article_id").set_index("article_id")
    return first.loc[:, ["category", "price", "discount"]].sort_index()


def _empty_constraints(articles: pd.Index) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "excluded": pd.Series(False, index=articles, dtype="bool"),
            "hold": pd.Series(None, index=articles, dtype="object"),
            "max_discount": pd.Series(np.nan, index=articles, dtype="float64"),
            "max_discount_label": pd.Series(None, index=articles, dtype="object"),
            "min_price": pd.Series(np.nan, index=articles, dtype="float64"),
            "min_price_label": pd.Series(None, index=articles, dtype="object"),
        },
        index=articles,
    )


def buyer_constraints(country: str, weekly: pd.DataFrame, buyer_rules: pd.DataFrame | None) -> Constraints:
    """Resolves one country's buyer rules (the ERP's rules in force) against its articles (the weekly frame: every
    article it knows, history and future): per active article what it may not do, the strictest rule winning, and
    a line per problem. A problem never drops a rule in silence: the line says what was applied instead."""
    active = today(weekly)
    index = active.index.rename("article_id")
    if buyer_rules is None or buyer_rules.empty:
        return Constraints(_empty_constraints(index))
    known = weekly.drop_duplicates("article_id").set_index("article_id")["category"].astype(str)
    in_category = active.groupby(active["category"].astype(str)).groups
    entries: dict[str, list[_Entry]] = {}
    problems: list[str] = []
    for row in buyer_rules.to_dict(orient="records"):
        rule, said = _parse(country, row, known)
        problems += said
        if rule is None:
            continue
        article, category, entry = rule
        targets = [article] if article is not None else [str(a) for a in in_category.get(str(category), [])]
        for target in targets:
            if target in active.index:
                entries.setdefault(target, []).append(entry)
    prices, discounts = active["price"].astype("float64").to_dict(), active["discount"].astype("float64").to_dict()
    resolved = {
        article: _resolve(country, article, found, prices[article], discounts[article])
        for article, found in sorted(entries.items())
    }
    for outcome in resolved.values():
        problems += outcome.problems
    default = _Resolved()
    frame = pd.DataFrame(
        [[getattr(resolved.get(str(a), default), c) for c in CONSTRAINT_COLUMNS] for a in index],
        index=index,
        columns=list(CONSTRAINT_COLUMNS),
    )
    typed = frame.astype(_empty_constraints(index).dtypes.to_dict())
    for column in ("hold", "max_discount_label", "min_price_label"):
        typed[column] = [None if pd.isna(value) else str(value) for value in typed[column]]
    return Constraints(typed, problems)


def _parse(
    country: str, row: Mapping[Hashable, Any], known: pd.Series
) -> tuple[tuple[str | None, str | None, _Entry] | None, list[str]]:
    """One buyer rule as (article, category, what it says), None when it cannot be applied, and its problems."""
    article, category = _text(row.get("article_id")), _text(row.get("category"))
    written, value = _text(row.get("rule")) or "", _value(row.get("value"))
    kind = written.lower()
    scope = None if article is not None else category
    subject = article if article is not None else (f"category {category}" if category else "")
    where = f"{country} {subject}".rstrip()
    label = _label(kind if kind in RULE_KINDS else written, value, scope, scoped=bool(subject))
    rule_country = _text(row.get("country"))
    if rule_country is not None and rule_country != country:
        return None, [f"{where}: {label} is a rule of {rule_country}, not of {country}; not applied"]
    if kind not in RULE_KINDS:
        return None, [f"{where}: {label} is not a rule kind ({', '.join(RULE_KINDS)}); not applied"]
    if not subject:
        return None, [f"{where}: {label} names neither an article nor a category; not applied"]
    problems = []
    if kind in ("max_discount", "min_price") and value is None:
        return None, [f"{where}: {label} has no value; not applied"]
    if kind == "min_price" and value is not None and value <= 0:
        return None, [f"{where}: {label} is not above 0; not applied"]
    if kind == "max_discount" and value is not None and not 0.0 <= value <= MAX_DISCOUNT:
        value = min(max(value, 0.0), MAX_DISCOUNT)
        problems.append(f"{where}: {label} is outside 0..{number(MAX_DISCOUNT)}; max_discount {number(value)} is used")
    if kind in ("exclude", "hold"):
        value = None
    if article is not None and article not in known.index:
        return None, [*problems, f"{where}: {label}: the country has no article {article}; not applied"]
    if article is not None and category is not None and category != known[article]:
        problems.append(
            f"{where}: {label} names category {category} but the article is in category {known[article]}; "
            "applied to the article"
        )
    if article is None and category not in set(known):
        return None, [*problems, f"{where}: {label}: the country has no category {category}; not applied"]
    rank = _ARTICLE if article is not None else _CATEGORY
    return (article, category, _Entry(kind, value, rank, _label(kind, value, scope))), problems


def _distinct(entries: list[_Entry]) -> list[_Entry]:
    """The entries without repeats, an article's own before its category's."""
    return list({entry.label: entry for entry in sorted(entries, key=lambda e: e.rank)}.values())


def _resolve(country: str, article: str, entries: list[_Entry], price: float, discount: float) -> _Resolved:
    """One article's constraints from the rules naming it, and their contradictions."""
    where, problems = f"{country} {article}", []
    by_kind = {kind: _distinct([e for e in entries if e.kind == kind]) for kind in RULE_KINDS}
    if by_kind["exclude"]:
        others = [e.label for e in _distinct([e for e in entries if e.kind != "exclude"])]
        if others:
            problems.append(f"{where}: {_together([by_kind['exclude'][0].label, *others])}; the article is excluded")
        return _Resolved(excluded=True, problems=problems)
    bounds: dict[str, tuple[float, str | None]] = {}
    for kind, strictest in (("max_discount", min), ("min_price", max)):
        found = by_kind[kind]
        values = [e.value for e in found if e.value is not None]
        if not values:
            continue
        chosen = strictest(values)
        bounds[kind] = (chosen, next(e.label for e in found if e.value == chosen))
        if len(set(values)) > 1:
            problems.append(f"{where}: {_together([e.label for e in found])}; the stricter {number(chosen)} is used")
    hold = by_kind["hold"][0].label if by_kind["hold"] else None
    if hold is None and "min_price" in bounds and bounds["min_price"][0] > price + 1e-9:
        problems.append(
            f"{where}: {bounds['min_price'][1]} is above today's price {number(price)}; today's price is held"
        )
    if hold is None and "max_discount" in bounds and bounds["max_discount"][0] < discount - LADDER_SNAP:
        problems.append(
            f"{where}: {bounds['max_discount'][1]} is below today's discount {number(discount)}; today's discount "
            "is held (a markdown is never reversed)"
        )
    cap, cap_label = bounds.get("max_discount", (math.nan, None))
    floor, floor_label = bounds.get("min_price", (math.nan, None))
    return _Resolved(False, hold, cap, cap_label, floor, floor_label, problems)


# --- run-level rules -------------------------------------------------------------------------------------------------


def weeks_since_markdown(weekly: pd.DataFrame) -> pd.Series:
    """Per article marked down before the run date (its discount rose against the week before, in the history rows),
    how many weeks ago the latest markdown was: 1 for the week before the run week. Articles never marked down are
    missing."""
    history = weekly[~weekly["is_future"]].sort_values(["article_id", "week_start"], kind="stable")
    weeks = pd.to_datetime(history["week_start"])
    future = pd.to_datetime(weekly.loc[weekly["is_future"], "week_start"])
    run_week = future.min() if len(future) else weeks.max() + pd.Timedelta(weeks=1)
    rose = history["discount"].round(3).groupby(history["article_id"]).diff() > 0
    latest = weeks[rose].groupby(history.loc[rose, "article_id"]).max()
    since: pd.Series = ((run_week - latest).dt.days / 7).astype("float64").rename("weeks_since_markdown")
    return since


# --- price endings ---------------------------------------------------------------------------------------------------


def end_price(
    price: float,
    ending: float,
    *,
    original_price: float,
    current_price: float,
    max_discount: float | None = None,
    min_price: float | None = None,
) -> float:
    """A new markdown's price with the country's ending: the largest price at or below the ladder's `price` that ends
    so, unless it breaks the buyer's min_price or max_discount (or is not above 0); then the smallest at or above it,
    if still below today's price and within the rules; else the ladder's price, unchanged."""
    cents, end = round(price * 100), round(ending * 100)
    lowest = 1
    if min_price is not None and not math.isnan(min_price):
        lowest = max(lowest, round(min_price * 100))
    if max_discount is not None and not math.isnan(max_discount):
        lowest = max(lowest, round(original_price * (1 - max_discount) * 100))
    down = (cents - end) // 100 * 100 + end
    if down >= lowest:
        return down / 100
    up = down if down >= cents else down + 100
    if lowest <= up < round(current_price * 100):
        return up / 100
    return price


# --- the decision ----------------------------------------------------------------------------------------------------


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=_DTYPES.get(column, "float64")) for column in columns})


_DTYPES = {
    "country": "object",
    "article_id": "object",
    "stock_on_hand": "int64",
    "weeks_to_season_end": "int64",
    "rule_applied": "object",
    "ruled_out_by": "object",
    "chosen": "bool",
}


def decide(
    season: pd.DataFrame,
    *,
    country: str,
    ladder: tuple[float, ...],
    salvage_value_share: float,
    weeks_left: pd.Series,
    constraints: pd.DataFrame | None = None,
    policy: Policy = NEUTRAL,
    weeks_since: pd.Series | None = None,
    markdown_margin: float = 0.0,
) -> Decision:
    """Rules out the candidates a rule forbids and recommends per article the allowed one with the highest expected
    revenue (ties to the smaller discount), priced with the country's ending when it is a new markdown. A deeper
    markdown must beat holding by `markdown_margin` x the holding revenue: forecasts err, and an uncertain gain
    is no reason to give away price.

    `season` is model.pricing.simulate_season's (article, candidate) frame, each article's first candidate today's
    discount: never ruled out, as a markdown is never reversed. `constraints` is Constraints.by_article,
    `weeks_left` the future weeks per article, `weeks_since` weeks_since_markdown's series.
    """
    if season.empty:
        return Decision(_empty(PREDICTION_COLUMNS), _empty(CANDIDATE_COLUMNS))
    rows = season.sort_values(["article_id", "candidate"], kind="stable").reset_index(drop=True)
    rows["position"] = rows.groupby("article_id").cumcount()
    rows["candidate_discount"] = rows["candidate"].round(3)
    rows["candidate_price"] = (rows["original_price"] * (1 - rows["candidate"])).round(2)
    given = constraints if constraints is not None else _empty_constraints(pd.Index([], name="article_id"))
    bounds = given.reindex(rows["article_id"].to_numpy()).reset_index(drop=True)
    rows["ruled_out_by"] = _ruled_out_by(rows, bounds, policy, ladder, weeks_since)

    hold_revenue = rows.groupby("article_id")["expected_revenue"].transform("first")
    rows["_score"] = rows["expected_revenue"] - markdown_margin * hold_revenue * (rows["position"] > 0)
    ranked = rows.sort_values(["article_id", "_score", "candidate"], ascending=[True, False, True])
    best = ranked.drop_duplicates("article_id").set_index("article_id")
    chosen = ranked[ranked["ruled_out_by"].isna()].drop_duplicates("article_id").sort_values("article_id").index
    rows["chosen"] = rows.index.isin(chosen)
    hold = rows[rows["position"] == 0].set_index("article_id")

    picked = rows.loc[chosen]
    price = _ended(picked, bounds.loc[chosen], policy.price_ending)
    ended = (price - picked["candidate_price"]).abs() > 1e-9
    stock = picked["stock_on_hand"].astype("float64")
    sold = picked["expected_sell_through"] * stock
    revenue = picked["expected_revenue"].where(
        ~ended, sold * price + (stock - sold) * picked["original_price"] * salvage_value_share
    )
    rows.loc[chosen, "candidate_price"] = price
    rows.loc[chosen, "expected_revenue"] = revenue

    articles = picked["article_id"]
    moved = picked["candidate"].to_numpy() != best.loc[articles, "candidate"].to_numpy()
    reasons = [
        [*([str(reason)] if move else []), *([ending_label(policy.price_ending or 0.0)] if end else [])]
        for move, reason, end in zip(moved, best.loc[articles, "ruled_out_by"], ended, strict=True)
    ]
    at_hold = hold.loc[articles]
    predictions = pd.DataFrame(
        {
            "country": country,
            "article_id": articles.to_numpy(),
            "current_price": picked["current_price"].to_numpy(),
            "current_discount": picked["current_discount"].to_numpy(),
            "recommended_discount": picked["candidate_discount"].to_numpy(),
            "recommended_price": price.to_numpy(),
            "predicted_units_next_week": picked["predicted_units_next_week"].to_numpy(),
            "expected_revenue": revenue.to_numpy(),
            "expected_sell_through": picked["expected_sell_through"].to_numpy(),
            "stock_on_hand": picked["stock_on_hand"].to_numpy(),
            "hold_expected_revenue": at_hold["expected_revenue"].to_numpy(),
            "gain_over_hold": revenue.to_numpy() - at_hold["expected_revenue"].to_numpy(),
            "hold_sell_through": at_hold["expected_sell_through"].to_numpy(),
            "weeks_to_season_end": articles.map(weeks_left).fillna(0).to_numpy(),
            "rule_applied": ["; ".join(reason) or None for reason in reasons],
        }
    )
    candidates = rows.assign(country=country, predicted_units_season=rows["predicted_season_units"])
    return Decision(
        _typed(predictions, PREDICTION_COLUMNS),
        _typed(candidates.loc[:, list(CANDIDATE_COLUMNS)].reset_index(drop=True), CANDIDATE_COLUMNS),
    )


def _ruled_out_by(
    rows: pd.DataFrame,
    bounds: pd.DataFrame,
    policy: Policy,
    ladder: tuple[float, ...],
    weeks_since: pd.Series | None,
) -> pd.Series:
    """Per candidate row, the rule that forbids it: each rule forbids a run of an article's deepest candidates (never
    its first, today's discount), and the one forbidding the most names them all; on a tie the first in this order,
    the buyer's before the run's. Every candidate of an excluded article is EXCLUDED."""
    article, position = rows["article_id"], rows["position"]
    later = position > 0
    checks: list[tuple[pd.Series, pd.Series | str]] = [(later & bounds["hold"].notna(), bounds["hold"])]
    if policy.min_weeks_between_markdowns and weeks_since is not None:
        recent = article.map(weeks_since).astype("float64") < policy.min_weeks_between_markdowns
        checks.append((later & recent, weeks_label(policy.min_weeks_between_markdowns)))
    checks.append((later & (rows["candidate"] > bounds["max_discount"] + 1e-9), bounds["max_discount_label"]))
    checks.append((later & (rows["candidate_price"] < bounds["min_price"] - 1e-9), bounds["min_price_label"]))
    if policy.max_markdown_steps:
        # Ladder steps above today's discount (snapped like the first candidate), so an off-ladder one is no step.
        steps = np.sort(np.asarray(ladder, dtype="float64"))
        today_ = rows.groupby("article_id")["candidate"].transform("first")
        taken = np.searchsorted(steps, rows["candidate"] + LADDER_SNAP, side="right") - np.searchsorted(
            steps, today_ + LADDER_SNAP, side="right"
        )
        checks.append((later & (taken > policy.max_markdown_steps), steps_label(policy.max_markdown_steps)))
    tightest = pd.Series(np.inf, index=rows.index)
    label = pd.Series(None, index=rows.index, dtype="object")
    for forbids, name in checks:
        first_forbidden = position.where(forbids).groupby(article).transform("min")
        tighter = first_forbidden < tightest
        tightest = tightest.where(~tighter, first_forbidden)
        label = label.where(~tighter, name)
    ruled: pd.Series = label.where(position >= tightest).where(~bounds["excluded"].eq(True), EXCLUDED)
    return ruled


def _ended(picked: pd.DataFrame, bounds: pd.DataFrame, ending: float | None) -> pd.Series:
    """The recommended prices: the ladder's, or with the country's `ending` where the candidate is a new markdown."""
    ladder_price: pd.Series = picked["candidate_price"].astype("float64")
    if ending is None:
        return ladder_price
    columns = zip(
        ladder_price.tolist(),
        picked["original_price"].astype("float64").tolist(),
        picked["current_price"].astype("float64").tolist(),
        bounds["max_discount"].astype("float64").tolist(),
        bounds["min_price"].astype("float64").tolist(),
        (picked["position"] > 0).tolist(),
        strict=True,
    )
    prices = [
        end_price(price, ending, original_price=original, current_price=now, max_discount=cap, min_price=floor)
        if markdown
        else price
        for price, original, now, cap, floor, markdown in columns
    ]
    return pd.Series(prices, index=picked.index, dtype="float64")


def _typed(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    typed = frame.loc[:, list(columns)].astype({c: _DTYPES.get(c, "float64") for c in columns})
    for column in ("rule_applied", "ruled_out_by"):
        if column in typed:
            typed[column] = [None if pd.isna(value) else str(value) for value in typed[column]]
    return typed
