"""Buyer rules for a synthetic raw root, as buyers would enter them in the ERP's screens: a few of each kind, one
that has expired, and two that disagree, so that the demo shows every rule honoured and every problem reported."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from markdown_pricing.erp.rules import RULE_COLUMNS

# Every seeded rule's note starts so: a new seed replaces the old one and nothing a buyer entered.
SEED_NOTE = "demo seed:"


def _active_articles(raw: Path, run_date: date) -> pd.DataFrame:
    """(country, article_id, category, original_price) of the articles stocked before the run date whose season runs
    past it: those the run will recommend for."""
    articles = pq.read_table(raw / "articles").to_pandas()
    stock = pq.read_table(raw / "stock", partitioning="hive").to_pandas()
    stock["country"] = stock["country"].astype(str)
    before = stock[stock["snapshot_date"] < run_date].sort_values("snapshot_date")
    latest = before.groupby(["country", "article_id"], as_index=False).last()
    stocked = latest[latest["units_on_hand"] > 0]
    current = articles[articles["season_end"] > run_date].drop_duplicates("article_id")
    joined = stocked.merge(current, on="article_id")[["country", "article_id", "category", "original_price"]]
    return joined.sort_values(["country", "article_id"], ignore_index=True)


def sample_rules(raw: Path, run_date: date, seed: int = 7) -> pd.DataFrame:
    """Rules for the two largest countries of a raw root: in the first, an exclusion, a hold, a category's maximum
    discount and an article's minimum price; in the second, an article's maximum discount that a category rule
    contradicts, and a rule that expired before the run date."""
    rng = np.random.default_rng(seed)
    active = _active_articles(raw, run_date)
    largest = active["country"].value_counts().index[:2].tolist()
    rows: list[dict[str, object]] = []

    def pick(country: str, taken: set[str]) -> pd.Series:
        pool = active[(active["country"] == country) & ~active["article_id"].isin(taken)]
        return pool.iloc[int(rng.integers(len(pool)))]

    def rule(
        country: str,
        kind: str,
        note: str,
        *,
        article: str | None = None,
        category: str | None = None,
        value: float | None = None,
        valid_to: date | None = None,
    ) -> None:
        rows.append(
            {
                "country": country,
                "article_id": article,
                "category": category,
                "rule": kind,
                "value": value,
                "valid_from": None,
                "valid_to": valid_to,
                "note": f"{SEED_NOTE} {note}",
            }
        )

    first = largest[0]
    taken: set[str] = set()
    for kind, note in (("exclude", "sold out in the warehouse"), ("hold", "campaign at full price")):
        article = pick(first, taken)
        taken.add(article["article_id"])
        rule(first, kind, note, article=article["article_id"])
    category = str(active.loc[active["country"] == first, "category"].mode().iloc[0])
    rule(first, "max_discount", "brand agreement for the category", category=category, value=0.2)
    floor = pick(first, taken)
    rule(
        first,
        "min_price",
        "floor price agreed with the brand",
        article=floor["article_id"],
        value=round(float(floor["original_price"]) * 0.85, 2),
    )
    if len(largest) > 1:
        second = largest[1]
        article = pick(second, set())
        rule(second, "max_discount", "slow to restock", article=article["article_id"], value=0.3)
        rule(
            second,
            "max_discount",
            "category cap (disagrees with the article's)",
            category=str(article["category"]),
            value=0.1,
        )
        rule(
            second,
            "hold",
            "last season's campaign, expired",
            article=pick(second, {article["article_id"]})["article_id"],
            valid_to=run_date - timedelta(days=1),
        )
    return pd.DataFrame(rows, columns=list(RULE_COLUMNS))
