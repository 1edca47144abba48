"""`markdown-pricing explain`: why one article's recommendation is what it is, from the ERP or a run's own outputs.

`find_article` reads at the edge (the ERP read-only, or a run's Parquet in the work folder); `explanation` turns what
it read into one JSON-ready document with the numbers exactly as stored; `format_explanation` prints that document,
rounding only for display.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from markdown_pricing.core.config import ErpSettings
from markdown_pricing.core.contract import CANDIDATE_COLUMNS, EXCLUDED, LADDER_SNAP
from markdown_pricing.core.results import MODEL_VERSION
from markdown_pricing.core.storage import RunLayout, filesystem, join, read_json
from markdown_pricing.erp import tables
from markdown_pricing.erp.connection import ErpUnavailableError
from markdown_pricing.observe.run_report import read_partitions
from markdown_pricing.observe.status import read_only

ERP, RUN = "erp", "run"
# The candidate columns an explanation shows, in the order of its table.
SHOWN_CANDIDATE_COLUMNS = tuple(column for column in CANDIDATE_COLUMNS if column not in ("country", "article_id"))
NO_RULE = "no rule bound it"
_DATED_RUN_ID = re.compile(r"^(\d{4}-\d{2}-\d{2})")


class ExplainError(LookupError):
    """Raised when there is nothing to explain: no such run, or no recommendation for the article."""


@dataclass(frozen=True)
class Found:
    """What was read about one article: its prediction row (None when it has none), its candidates and where from."""

    country: str
    article_id: str
    source: str
    read_from: str
    run_id: str | None
    valid_from: dt.date | None
    prediction: Mapping[str, Any] | None
    candidates: pd.DataFrame
    model_version: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


# --- the explanation (pure) ----------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A stored value as JSON writes it: NaN and NA as None, NumPy and Decimal numbers as Python's, dates in ISO."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _candidate_rows(candidates: pd.DataFrame) -> list[dict[str, Any]]:
    ordered = candidates.sort_values("candidate_discount", kind="stable") if len(candidates) else candidates
    return [
        {column: plain(row.get(column)) for column in SHOWN_CANDIDATE_COLUMNS}
        for row in ordered.to_dict(orient="records")
    ]


def today_candidate(candidates: list[dict[str, Any]], current_discount: float | None) -> dict[str, Any] | None:
    """The candidate at today's discount: the one within a ladder snap of it, else the first (candidates start at
    today's discount: a markdown never reverses)."""
    if not candidates:
        return None
    if current_discount is not None:
        near = [c for c in candidates if abs(c["candidate_discount"] - current_discount) <= LADDER_SNAP]
        if near:
            return min(near, key=lambda c: abs(c["candidate_discount"] - current_discount))
    return candidates[0]


def chosen_candidate(candidates: list[dict[str, Any]], recommended_discount: float | None) -> dict[str, Any] | None:
    """The candidate marked chosen, else the one at the recommended discount."""
    marked = [c for c in candidates if c["chosen"]]
    if marked:
        return marked[0]
    if recommended_discount is None:
        return None
    return next((c for c in candidates if abs(c["candidate_discount"] - recommended_discount) <= 5e-4), None)


def _ratio(numerator: Any, denominator: Any) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator) / float(denominator)


def excluded_by(found: Found) -> str | None:
    """The rule that excluded an article without a prediction row, as its candidates name it; None otherwise."""
    if found.prediction is not None or found.candidates.empty:
        return None
    labels = found.candidates["ruled_out_by"].dropna().astype(str)
    if len(labels) < len(found.candidates) or not labels.str.startswith(EXCLUDED).all():
        return None
    return "; ".join(dict.fromkeys(labels))


def explanation(found: Found) -> dict[str, Any]:
    """One article's explanation as a JSON-ready document: every figure as stored, unrounded."""
    row = {key: plain(value) for key, value in (found.prediction or {}).items()}
    candidates = _candidate_rows(found.candidates)
    stored_discount = row.get("current_discount")
    today = today_candidate(candidates, stored_discount)
    current_discount = stored_discount if stored_discount is not None else (today or {}).get("candidate_discount")
    chosen = chosen_candidate(candidates, row.get("recommended_discount"))
    allowed = [c for c in candidates if c["ruled_out_by"] is None]
    deepest = max(allowed, key=lambda c: c["candidate_discount"], default=None)
    hold, gain = row.get("hold_expected_revenue"), row.get("gain_over_hold")
    if gain is None and hold is not None and row.get("expected_revenue") is not None:
        gain = row["expected_revenue"] - hold
    stock = row.get("stock_on_hand")
    season_units = None if chosen is None else chosen["predicted_units_season"]
    today_units = None if today is None else today["predicted_units_next_week"]
    document: dict[str, Any] = {
        "country": found.country,
        "article_id": found.article_id,
        "run_id": found.run_id,
        "valid_from": plain(found.valid_from),
        "model_version": found.model_version,
        "source": found.source,
        "read_from": found.read_from,
        "notes": list(found.notes),
        "excluded_by": excluded_by(found),
        "today": {
            "price": row.get("current_price"),
            "discount": current_discount,
            "stock_on_hand": stock,
            "weeks_to_season_end": row.get("weeks_to_season_end"),
        },
        "candidates": candidates,
        "recommendation": None,
        "hold": None,
        "drivers": None,
    }
    if found.prediction is None:
        return document
    document["recommendation"] = {
        "discount": row.get("recommended_discount"),
        "price": row.get("recommended_price"),
        "predicted_units_next_week": row.get("predicted_units_next_week"),
        "expected_revenue": row.get("expected_revenue"),
        "expected_sell_through": row.get("expected_sell_through"),
    }
    document["hold"] = {
        "expected_revenue": hold,
        "sell_through": row.get("hold_sell_through"),
        "gain": gain,
        "gain_share": _ratio(gain, hold) if hold is not None and hold > 0 else None,
    }
    document["drivers"] = {
        "level": {"units_next_week": today_units, "price": row.get("current_price")},
        "price_response": {
            "deepest_allowed_discount": None if deepest is None else deepest["candidate_discount"],
            "deepest_allowed_price": None if deepest is None else deepest["candidate_price"],
            "units_next_week": None if deepest is None else deepest["predicted_units_next_week"],
            "lift": None if deepest is None else _ratio(deepest["predicted_units_next_week"], today_units),
        },
        "stock": {
            "stock_on_hand": stock,
            "season_units": season_units,
            "sells_out": None if season_units is None or stock is None else bool(season_units >= stock),
        },
        "weeks_to_season_end": row.get("weeks_to_season_end"),
        "rule_applied": row.get("rule_applied"),
    }
    return document


# --- printing ------------------------------------------------------------------------------------------------------


def _fixed(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _share(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}%}"


def _eur(value: Any, sign: str = "") -> str:
    return "n/a" if value is None else f"{value:{sign},.2f} EUR"


def _weeks(value: Any) -> str:
    return "n/a" if value is None else f"{value} week{'' if value == 1 else 's'} to season end"


def candidate_table(candidates: list[dict[str, Any]]) -> list[str]:
    """The candidate curve as fixed-width lines, the chosen candidate marked with *."""
    header = (
        f"    {'discount':>8}  {'price EUR':>10}  {'units next week':>15}  {'units season':>12}  "
        f"{'expected revenue EUR':>20}  {'sell-through':>12}  ruled out by"
    )
    lines = [header]
    for candidate in candidates:
        lines.append(
            f"  {'*' if candidate['chosen'] else ' '} {_share(candidate['candidate_discount']):>8}  "
            f"{_fixed(candidate['candidate_price'], 2):>10}  {_fixed(candidate['predicted_units_next_week']):>15}  "
            f"{_fixed(candidate['predicted_units_season']):>12}  {_fixed(candidate['expected_revenue'], 2):>20}  "
            f"{_share(candidate['expected_sell_through']):>12}  {candidate['ruled_out_by'] or '-'}".rstrip()
        )
    return lines


def drivers_lines(document: Mapping[str, Any]) -> list[str]:
    """What drove the recommendation, in plain words."""
    drivers = document["drivers"]
    level, response, stock = drivers["level"], drivers["price_response"], drivers["stock"]
    today_discount = document["today"]["discount"]
    if level["units_next_week"] is None:
        level_text = "n/a: no candidates stored for this article"
    else:
        level_text = f"{_fixed(level['units_next_week'])} units next week at today's price ({_eur(level['price'])})"
    if response["deepest_allowed_discount"] is None:
        response_text = "n/a: no candidate is allowed"
    elif today_discount is not None and response["deepest_allowed_discount"] <= today_discount + LADDER_SNAP:
        response_text = "no deeper discount than today's is allowed"
    else:
        lift = "n/a" if response["lift"] is None else f"{response['lift']:.2f}x"
        response_text = (
            f"{_fixed(response['units_next_week'])} units next week at the deepest allowed discount, "
            f"{_share(response['deepest_allowed_discount'])} ({_eur(response['deepest_allowed_price'])}): "
            f"{lift} today's"
        )
    if stock["season_units"] is None or stock["stock_on_hand"] is None:
        stock_text = f"{stock['stock_on_hand'] if stock['stock_on_hand'] is not None else 'n/a'} on hand"
    else:
        outcome = "sells out" if stock["sells_out"] else "does not sell out"
        stock_text = (
            f"{_fixed(stock['season_units'])} units of demand by season end at the recommended price against "
            f"{stock['stock_on_hand']} on hand: {outcome}"
        )
    return [
        "What drove it:",
        f"  level           {level_text}",
        f"  price response  {response_text}",
        f"  stock           {stock_text}",
        f"  weeks left      {_weeks(drivers['weeks_to_season_end'])}",
        f"  rule            {drivers['rule_applied'] or NO_RULE}",
    ]


def format_explanation(document: Mapping[str, Any]) -> str:
    """The explanation as text for a terminal; the figures are the document's, rounded for display only."""
    run = document["run_id"] or "n/a"
    valid_from = document["valid_from"] or "n/a"
    lines = [f"Article {document['article_id']} in {document['country']}, run {run} (valid from {valid_from})"]
    lines.append(
        f"Read from {document['read_from']}"
        + (f", model {document['model_version']}" if document["model_version"] else "")
    )
    lines += [f"Note: {note}" for note in document["notes"]]
    today = document["today"]
    lines += [
        "",
        f"Today: {_eur(today['price'])} at {_share(today['discount'])} off, "
        f"{today['stock_on_hand'] if today['stock_on_hand'] is not None else 'n/a'} units on hand, "
        f"{_weeks(today['weeks_to_season_end'])}",
        "",
    ]
    if document["candidates"]:
        lines += ["Candidate curve (* recommended):", *candidate_table(document["candidates"])]
    else:
        lines.append("Candidate curve: none stored for this article.")
    recommendation, hold = document["recommendation"], document["hold"]
    if recommendation is None:
        return "\n".join(lines)
    gain_share = "n/a" if hold["gain_share"] is None else f"{hold['gain_share']:+.1%}"
    lines += [
        "",
        f"Recommendation: {_share(recommendation['discount'])} off at {_eur(recommendation['price'])}, expected "
        f"season revenue {_eur(recommendation['expected_revenue'])} ({_share(recommendation['expected_sell_through'])} "
        "of the stock sold)",
        f"Holding today's price: expected season revenue {_eur(hold['expected_revenue'])} "
        f"({_share(hold['sell_through'])} of the stock sold)",
        f"Gain over holding: {_eur(hold['gain'], '+')} ({gain_share})",
        "",
        *drivers_lines(document),
    ]
    return "\n".join(lines)


def not_found_message(document: Mapping[str, Any]) -> str:
    """Why an article has no recommendation to explain."""
    where = f"{document['article_id']} in {document['country']}"
    if document["excluded_by"]:
        return (
            f"no recommendation for article {where} in run {document['run_id']}: a buyer rule excluded it "
            f"({document['excluded_by']}); its {len(document['candidates'])} candidates are all ruled out"
        )
    return (
        f"no recommendation for article {where} in run {document['run_id']} ({document['read_from']}): "
        f"its {len(document['candidates'])} candidates have no chosen one"
    )


# --- reading (the edge) --------------------------------------------------------------------------------------------


def _stored(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def _table_exists(conn: Connection, table: sql.Composed) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (table.as_string(conn),))
        found = cur.fetchone()
        return found is not None and found[0] is not None


def _select(conn: Connection, query: sql.Composed, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    """The rows as dictionaries of the values as stored (numeric ones as floats)."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        columns = [column.name for column in cur.description or ()]
        return [{name: _stored(value) for name, value in zip(columns, row, strict=True)} for row in cur.fetchall()]


def erp_article(conn: Connection, settings: ErpSettings, country: str, article: str) -> Found | None:
    """The article's published row and candidates; None when the ERP has no row for it."""
    predictions = tables.predictions(settings)
    if not _table_exists(conn, predictions):
        return None
    where = sql.SQL("WHERE country = %s AND article_id = %s")
    rows = _select(conn, sql.SQL("SELECT * FROM {} ").format(predictions) + where, (country, article))
    if not rows:
        return None
    row, notes = rows[0], []
    candidates_table = tables.candidates(settings)
    if _table_exists(conn, candidates_table):
        query = sql.SQL("SELECT * FROM {} ").format(candidates_table) + where + sql.SQL(" ORDER BY candidate_discount")
        candidates = pd.DataFrame(_select(conn, query, (country, article)), columns=None)
        if candidates.empty:
            candidates = pd.DataFrame(columns=list(SHOWN_CANDIDATE_COLUMNS))
        others = sorted(set(candidates.get("run_id", pd.Series(dtype=object))) - {row["run_id"]})
        if others:
            notes.append(f"the ERP's candidates are of run {', '.join(others)}, not of the row's run {row['run_id']}")
    else:
        candidates = pd.DataFrame(columns=list(SHOWN_CANDIDATE_COLUMNS))
        notes.append(f"the ERP has no {settings.candidates_table} table")
    return Found(
        country=country,
        article_id=article,
        source=ERP,
        read_from=f"the ERP (schema {settings.schema})",
        run_id=row.get("run_id"),
        valid_from=row.get("valid_from"),
        prediction=row,
        candidates=candidates,
        model_version=row.get("model_version"),
        notes=tuple(notes),
    )


def read_erp_article(settings: ErpSettings, work: str, country: str, article: str) -> Found | None:
    """`erp_article` on the configured ERP (the running embedded one under `work` when none is), starting nothing."""
    found: Found | None = read_only(settings, work, lambda conn: erp_article(conn, settings, country, article))
    return found


def run_date(layout: RunLayout) -> dt.date | None:
    """A run's date: from its run record, else the ISO date its id starts with; None when neither says."""
    record = layout.run_record
    if filesystem(record).exists(record):
        recorded = read_json(record).get("run_date")
        if recorded:
            return dt.date.fromisoformat(recorded)
    match = _DATED_RUN_ID.match(layout.run_id)
    try:
        return dt.date.fromisoformat(match.group(1)) if match else None
    except ValueError:
        return None


def run_article(work: str, run_id: str, country: str, article: str, notes: tuple[str, ...] = ()) -> Found:
    """The article's prediction row and candidates from a run's own outputs in the work folder."""
    layout = RunLayout(raw="", work=work, run_id=run_id)
    if not filesystem(layout.run_dir).is_dir(layout.run_dir):
        raise ExplainError(f"there is no run {run_id!r} under {join(work, 'runs')}")
    predictions = read_partitions(layout.predictions, [country], articles=[article])
    if predictions is None:
        raise ExplainError(f"run {run_id} has no complete predictions at {layout.predictions}")
    candidates = read_partitions(layout.candidates, [country], articles=[article])
    if candidates is None:
        notes = (*notes, f"run {run_id} wrote no candidates ({layout.candidates})")
        candidates = pd.DataFrame(columns=list(SHOWN_CANDIDATE_COLUMNS))
    results_uri = layout.country_results
    results = read_json(results_uri) if filesystem(results_uri).exists(results_uri) else {}
    return Found(
        country=country,
        article_id=article,
        source=RUN,
        read_from=f"run {run_id}'s outputs in {layout.run_dir}",
        run_id=run_id,
        valid_from=run_date(layout),
        prediction=None if predictions.empty else {str(key): value for key, value in predictions.iloc[0].items()},
        candidates=candidates,
        model_version=(results.get(country) or {}).get(MODEL_VERSION),
        notes=notes,
    )


def find_article(settings: ErpSettings, work: str, country: str, article: str, run_id: str | None = None) -> Found:
    """The ERP's row for the article; with `run_id`, the ERP's where it holds that run's row, else the run's own
    outputs in the work folder. ExplainError when there is nothing at all."""
    if run_id is None:
        found = read_erp_article(settings, work, country, article)
        if found is None:
            raise ExplainError(
                f"no recommendation for article {article} in {country} in the ERP (schema {settings.schema}): the "
                "latest published run has no row for it (not an active article, excluded by a buyer rule, or the "
                "country not published); --run-id RUN reads a run's own outputs"
            )
        return found
    try:
        found = read_erp_article(settings, work, country, article)
    except ErpUnavailableError as err:
        found, why = None, f"the ERP was not read ({err})"
    else:
        if found is not None and found.run_id == run_id:
            return found
        held = "has no row for this article" if found is None else f"holds run {found.run_id} for this article"
        why = f"the ERP {held}"
    found = run_article(work, run_id, country, article, notes=(f"{why}: read from run {run_id}'s own outputs",))
    if found.prediction is None and found.candidates.empty:
        raise ExplainError(
            f"no recommendation for article {article} in {country} in run {run_id}: neither its predictions nor its "
            "candidates have it"
        )
    return found


def show_explanation(
    settings: ErpSettings, work: str, *, country: str, article: str, run_id: str | None, as_json: bool
) -> str:
    """The explanation of one article as text or JSON; ExplainError when it has no recommendation."""
    document = explanation(find_article(settings, work, country.strip(), article.strip(), run_id))
    if document["recommendation"] is None:
        raise ExplainError(not_found_message(document))
    return json.dumps(document, indent=2) if as_json else format_explanation(document)
