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
    """(country, article_id, category, original_price, cover) of the articles stocked before the run date whose season
    runs past it: those the run will recommend for. `cover` is the stock over what the last four weeks' pace sells by
    the season's end (infinite for an article that sold nothing): the higher, the more it needs a markdown."""
    articles = pq.read_table(raw / "articles").to_pandas()
    stock = pq.read_table(raw / "stock", partitioning="hive").to_pandas()
    stock["country"] = stock["country"].astype(str)
    before = stock[stock["snapshot_date"] < run_date].sort_values("snapshot_date")
    latest = before.groupby(["country", "article_id"], as_index=False).last()
    stocked = latest[latest["units_on_hand"] > 0]
    current = articles[articles["season_end"] > run_date].drop_duplicates("article_id")
    last_weeks = [("sale_date", ">=", run_date - timedelta(weeks=4)), ("sale_date", "<", run_date)]
    sales = pq.read_table(raw / "sales", partitioning="hive", filters=last_weeks).to_pandas()
    sales["country"] = sales["country"].astype(str)
    # The raw rows, bad ones included: a pace close enough to rank articles by how much they need a markdown.
    recent = sales.groupby(["country", "article_id"])["units"].sum() / 4
    joined = stocked.merge(current, on="article_id")
    weekly = recent.reindex(pd.MultiIndex.from_frame(joined[["country", "article_id"]])).fillna(0).to_numpy()
    weeks_left = (pd.to_datetime(joined["season_end"]) - pd.Timestamp(run_date)).dt.days / 7
    joined["cover"] = joined["units_on_hand"] / (weekly * weeks_left.to_numpy())
    return joined[["country", "article_id", "category", "original_price", "cover"]].sort_values(
        ["country", "article_id"], ignore_index=True
    )


def sample_rules(raw: Path, run_date: date, seed: int = 7) -> pd.DataFrame:
    """Rules for the two largest countries of a raw root: in the first, an exclusion, a hold on its most overstocked
    article, a maximum discount for the category of the next one and an article's minimum price; in the second, a
    maximum discount on its most overstocked article that a category rule contradicts, and a rule that expired
    before the run date. The overstocked ones need a markdown, so that their rules change a recommendation."""
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

    def most_overstocked(country: str, taken: set[str]) -> pd.Series:
        # Among the articles that sell: a hold or a cap binds where a markdown pays, whatever the model. When none
        # sold in the last four weeks (a stale feed), any article will do.
        pool = active[(active["country"] == country) & ~active["article_id"].isin(taken) & np.isfinite(active["cover"])]
        return pool.loc[pool["cover"].idxmax()] if len(pool) else pick(country, taken)

    first = largest[0]
    taken: set[str] = set()
    excluded = pick(first, taken)
    taken.add(excluded["article_id"])
    rule(first, "exclude", "sold out in the warehouse", article=excluded["article_id"])
    held = most_overstocked(first, taken)
    taken.add(held["article_id"])
    rule(first, "hold", "campaign at full price", article=held["article_id"])
    category = str(most_overstocked(first, taken)["category"])
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
        article = most_overstocked(second, set())
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
