"""ETL transformations: raw contract datasets in, curated weekly rows out. Pure functions, no I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from markdown_pricing.core.errors import InputError, StaleInputError
from markdown_pricing.core.schemas import ACCEPTED_RAW_TYPES, INPUT_PROFILE, RAW_DATASETS, WEEKLY

KEYS = ("country", "article_id")
# Three ASCII capitals and nothing else: \z is the true end (Java's $ also matches before a final line terminator).
COUNTRY_CODE = r"^[A-Z]{3}\z"
REJECT_REASON = "reject_reason"
# Rows dated on or after the run date are outside its window, not bad (a backfill reads a raw root that holds later
# weeks): they carry this reason so that they are left out and counted, but never quarantined nor rejected.
OUT_OF_WINDOW = "dated on or after the run date"
# The date that places each dated dataset's rows in or out of a run's window.
DATE_COLUMNS = {"sales": "sale_date", "prices": "valid_from", "stock": "snapshot_date"}
# Bits of a stock count in latest_snapshot's ranking: counts above 2^32 - 1 units rank as that many.
COUNT_BITS = 32


class RawSchemaError(InputError):
    """A raw dataset lacks a contract column or delivers it with an incompatible type."""

    def __init__(self, dataset: str, column: str, expected: T.DataType, found: T.DataType | None) -> None:
        found_text = found.simpleString() if found else "missing"
        super().__init__(
            f"dataset {dataset!r}: column {column!r} expected {expected.simpleString()}, found {found_text}"
        )
        self.dataset, self.column = dataset, column


class RejectedShareError(InputError):
    """Too many rows of a dataset were rejected for the run to go on."""


def check_raw_schema(dataset: str, found: T.StructType) -> None:
    """Raises RawSchemaError unless every contract column is present with an accepted physical type."""
    found_types = {field.name: field.dataType for field in found.fields}
    for field in RAW_DATASETS[dataset].fields:
        actual = found_types.get(field.name)
        if actual not in ACCEPTED_RAW_TYPES[field.dataType]:
            raise RawSchemaError(dataset, field.name, field.dataType, actual)


def week_start(column: Column) -> Column:
    """The Monday that starts the ISO week of a date."""
    return F.date_trunc("week", column).cast(T.DateType())


def _null_key(*columns: str) -> Column:
    condition = F.lit(False)
    for column in columns:
        condition = condition | F.col(column).isNull()
    return condition


def _reject_rules(dataset: str, run_date: dt.date) -> list[tuple[str, Column]]:
    """(reason, condition) pairs, first match wins; `known_article` comes from with_known_article."""
    keyed = [
        ("null key", _null_key(*KEYS)),
        ("malformed country code", ~F.col("country").rlike(COUNTRY_CODE)),
        ("unknown article", F.col("known_article").isNull()),
    ]
    rules: dict[str, list[tuple[str, Column]]] = {
        "articles": [
            ("null key", _null_key("article_id")),
            ("missing launch or season end", _null_key("launch_date", "season_end")),
            ("season ends before launch", F.col("season_end") < F.col("launch_date")),
            ("non-positive original price", F.coalesce(F.col("original_price"), F.lit(0.0)) <= 0),
            ("conflicting article rows", F.count("*").over(Window.partitionBy("article_id")) > 1),
        ],
        "sales": [
            *keyed,
            ("null key", _null_key("sale_date", "units")),
        ],
        "prices": [
            *keyed,
            ("null key", _null_key("valid_from")),
            ("non-positive price", F.coalesce(F.col("price"), F.lit(0.0)) <= 0),
        ],
        "stock": [
            *keyed,
            ("null key", _null_key("snapshot_date", "units_on_hand")),
            ("negative stock", F.col("units_on_hand") < 0),
        ],
    }
    if dataset not in DATE_COLUMNS:
        return rules[dataset]
    # First: a row outside the window is left out whatever else is wrong with it. A null date falls through.
    outside = F.coalesce(F.col(DATE_COLUMNS[dataset]) >= F.lit(run_date), F.lit(False))
    return [(OUT_OF_WINDOW, outside), *rules[dataset]]


def with_known_article(articles: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """Adds `known_article` (true or null) from the valid articles."""
    known = articles.select("article_id", F.lit(True).alias("known_article")).distinct()
    return lambda df: df.join(F.broadcast(known), on="article_id", how="left")


def with_reject_reason(dataset: str, run_date: dt.date) -> Callable[[DataFrame], DataFrame]:
    """Adds `reject_reason`: null for a good row, else the first contract rule the row breaks."""

    def transform(df: DataFrame) -> DataFrame:
        reason: Column = F.lit(None).cast(T.StringType())
        for label, condition in reversed(_reject_rules(dataset, run_date)):
            reason = F.when(F.coalesce(condition, F.lit(True)), F.lit(label)).otherwise(reason)
        return df.withColumn(REJECT_REASON, reason)

    return transform


def valid_rows(dataset: str) -> Callable[[DataFrame], DataFrame]:
    """Keeps the rows without a reject reason, in the contract's columns."""
    columns = RAW_DATASETS[dataset].fieldNames()
    return lambda df: df.where(F.col(REJECT_REASON).isNull()).select(*columns)


def quarantine_rows(dataset: str) -> Callable[[DataFrame], DataFrame]:
    """The rejected rows as (dataset, reason, row_json), for operators to inspect; rows outside the window are not."""
    columns = RAW_DATASETS[dataset].fieldNames()
    return lambda df: df.where(F.col(REJECT_REASON).isNotNull() & (F.col(REJECT_REASON) != OUT_OF_WINDOW)).select(
        F.lit(dataset).alias("dataset"),
        F.col(REJECT_REASON).alias("reason"),
        F.to_json(F.struct(*columns)).alias("row_json"),
    )


def check_rejected_share(counts: Mapping[str, Mapping[str, int]], threshold: float) -> None:
    """Raises RejectedShareError naming the dataset whose rejected share of the rows in the run's window passes the
    threshold."""
    for dataset, count in counts.items():
        in_window = count["rows"] - count.get("out_of_window", 0)
        share = count["rejected"] / in_window if in_window else 0.0
        if share > threshold:
            raise RejectedShareError(
                f"dataset {dataset!r}: {count['rejected']} of {in_window} rows rejected "
                f"({share:.2%}), above the threshold of {threshold:.2%}; see the quarantine folder"
            )


def latest_in_window(dataset: str, run_date: dt.date) -> Callable[[DataFrame], DataFrame]:
    """One row, `latest`: the dataset's latest date before the run date (null when it holds none)."""
    column = F.col(DATE_COLUMNS[dataset])

    def transform(df: DataFrame) -> DataFrame:
        return df.where(column < F.lit(run_date)).agg(F.max(column).alias("latest"))

    return transform


def check_fresh(dataset: str, latest: dt.date | None, run_date: dt.date, max_lag_days: int) -> None:
    """Raises StaleInputError unless the dataset reaches the week before the run date, give or take the allowed lag:
    older data under a _SUCCESS marker is last week's delivery, not this week's."""
    needed = run_date - dt.timedelta(days=7 + max_lag_days)
    if latest is not None and latest >= needed:
        return
    found = f"its latest {DATE_COLUMNS[dataset]} before the run date is {latest}" if latest else "it holds no rows"
    raise StaleInputError(
        f"dataset {dataset!r} is stale: {found}, but the run of {run_date} needs data from {needed} on "
        f"(the week before the run date, run.max_sales_lag_days = {max_lag_days}); this week's delivery has not "
        "arrived"
    )


def weekly_units(sales: DataFrame) -> DataFrame:
    """Daily sales summed to (country, article, week); returns net out within the week."""
    return sales.groupBy(*KEYS, week_start(F.col("sale_date")).alias("week_start")).agg(F.sum("units").alias("units"))


def weekly_last_price(prices: DataFrame, seen: DataFrame) -> DataFrame:
    """The price in effect at the end of each week that has a price change. A change before a pair's first_seen
    week counts in that week, so its history starts at the price then on the shelf."""
    dated = prices.join(seen, on=list(KEYS), how="left").select(
        *KEYS,
        "valid_from",
        "price",
        F.greatest(week_start(F.col("valid_from")), F.col("first_seen")).alias("week_start"),
    )
    return dated.groupBy(*KEYS, "week_start").agg(F.max_by("price", "valid_from").alias("price"))


def weekly_first_stock(stock: DataFrame) -> DataFrame:
    """Stock at the first snapshot of each week that has one."""
    return stock.groupBy(*KEYS, week_start(F.col("snapshot_date")).alias("week_start")).agg(
        F.min_by("units_on_hand", "snapshot_date").alias("stock_on_hand")
    )


def first_seen(sales: DataFrame, stock: DataFrame) -> DataFrame:
    """Per (country, article), the week of its first sale or stock snapshot (`first_seen`)."""
    days = sales.select(*KEYS, F.col("sale_date").alias("day")).unionByName(
        stock.select(*KEYS, F.col("snapshot_date").alias("day"))
    )
    return days.groupBy(*KEYS).agg(week_start(F.min("day")).alias("first_seen"))


def history_grid(seen: DataFrame, articles: DataFrame, run_date: dt.date) -> DataFrame:
    """Every week from a pair's first week to the week before the run (or its season's end). The first week is
    the article's launch week, or the pair's `first_seen` when later: before any sale or stock snapshot (before
    the data's window began, or before the country carried the article) nothing says the article was on sale,
    so those weeks are not zero-sales weeks."""
    last_week = run_date - dt.timedelta(days=7)
    bounded = seen.join(articles, on="article_id", how="inner").select(
        *KEYS,
        F.greatest(week_start(F.col("launch_date")), F.col("first_seen")).alias("first_week"),
        F.least(week_start(F.col("season_end")), F.lit(last_week)).alias("last_week"),
    )
    return bounded.where(F.col("first_week") <= F.col("last_week")).select(
        *KEYS,
        F.explode(F.sequence("first_week", "last_week", F.expr("INTERVAL 7 DAYS"))).alias("week_start"),
    )


def article_states(articles: DataFrame, latest: DataFrame, run_date: dt.date) -> DataFrame:
    """Where each stocked article stands at the run date: its latest stock snapshot before it (`latest`, from
    latest_snapshot), its season end, and whether it is active (stock above zero, season running past the run
    date)."""
    return latest.join(articles, on="article_id", how="inner").select(
        *KEYS,
        F.col("on_hand").alias("stock_on_hand"),
        "season_end",
        ((F.col("on_hand") > 0) & (F.col("season_end") > F.lit(run_date))).alias("active"),
    )


def latest_snapshot(stock: DataFrame, run_date: dt.date) -> DataFrame:
    """Per stocked (country, article), its latest snapshot before the run date: `snapshot_date` and `on_hand`. Of
    two on the same day, the one with more units, so whatever reads it agrees on one."""
    # One long ranks the snapshots, its day in the high bits and its count below: Spark hashes a long's maximum,
    # while an ordering by a struct would make it sort every snapshot to aggregate them.
    rank = F.shiftleft(F.unix_date("snapshot_date").cast(T.LongType()), COUNT_BITS) + F.least(
        "units_on_hand", F.lit((1 << COUNT_BITS) - 1)
    )
    return (
        stock.where(F.col("snapshot_date") < F.lit(run_date))
        .groupBy(*KEYS)
        .agg(F.max(rank).alias("rank"), F.max_by("units_on_hand", rank).alias("on_hand"))
        .select(
            *KEYS,
            F.date_from_unix_date(F.shiftright("rank", COUNT_BITS).cast(T.IntegerType())).alias("snapshot_date"),
            "on_hand",
        )
    )


def input_profile(weekly: DataFrame, states: DataFrame, run_date: dt.date) -> DataFrame:
    """Per country, its input as the drift check compares it: the units of the week before the run date, the active
    articles (from the article states), their median shelf price and the share of them below their original price."""
    last_week = F.lit(run_date - dt.timedelta(days=7))
    units = (
        weekly.where(~F.col("is_future") & (F.col("week_start") == last_week))
        .groupBy("country")
        .agg(F.sum("units").alias("weekly_units"))
    )
    # The run date's week carries each active article's shelf price as the model scores it.
    prices = weekly.where(F.col("is_future") & (F.col("week_start") == F.lit(run_date))).select(
        *KEYS, "price", "original_price"
    )
    active = (
        states.where(F.col("active"))
        .select(*KEYS)
        .join(prices, on=list(KEYS), how="left")
        .groupBy("country")
        .agg(
            F.count(F.lit(1)).alias("active_articles"),
            F.median("price").alias("price_level"),
            F.avg((F.col("price") < F.col("original_price")).cast(T.DoubleType())).alias("markdown_share"),
        )
    )
    # A country with sales but nothing active, or active articles that sold nothing, counts zero of the other.
    return (
        units.join(active, on="country", how="full")
        .withColumn("weekly_units", F.coalesce("weekly_units", F.lit(0)))
        .withColumn("active_articles", F.coalesce("active_articles", F.lit(0)))
        .select(*(F.col(field.name).cast(field.dataType) for field in INPUT_PROFILE.fields))
    )


def stock_at_run_date(snapshots: DataFrame, sales: DataFrame, run_date: dt.date) -> DataFrame:
    """Per (country, article) of `snapshots` (latest_snapshot's rows, or some of them), the units on hand at the
    start of the run date (`stock_on_hand`): the snapshot, stock at the start of its day, less the net units sold
    from that day until the run date, never below zero. A weekly snapshot is a week old on the run date, and that
    week's sales are gone."""
    # Sales before the earliest of these snapshots count for none of them: bounded by a scalar subquery, which Spark
    # runs first, they are left out as they are read, not shuffled to meet the snapshots.
    earliest = snapshots.select(F.min("snapshot_date")).scalar()
    since = (
        sales.where((F.col("sale_date") >= earliest) & (F.col("sale_date") < F.lit(run_date)))
        .join(snapshots.select(*KEYS, "snapshot_date"), on=list(KEYS), how="inner")
        .where(F.col("sale_date") >= F.col("snapshot_date"))
        .groupBy(*KEYS)
        .agg(F.sum("units").alias("sold"))
    )
    return snapshots.join(since, on=list(KEYS), how="left").select(
        *KEYS,
        F.greatest(F.lit(0), F.col("on_hand") - F.coalesce("sold", F.lit(0))).cast(T.LongType()).alias("stock_on_hand"),
    )


def active_articles(
    articles: DataFrame, prices: DataFrame, latest: DataFrame, sales: DataFrame, run_date: dt.date
) -> DataFrame:
    """The active articles (article_states of the `latest` snapshots) with their stock (stock_at_run_date) and shelf
    price at the run date."""
    current_price = (
        prices.where(F.col("valid_from") < F.lit(run_date))
        .groupBy(*KEYS)
        .agg(F.max_by("price", "valid_from").alias("price"))
    )
    active = article_states(articles, latest, run_date).where(F.col("active")).select(*KEYS)
    # The active articles' snapshots alone: an article whose season ended long ago would reach back to its sales.
    snapshots = latest.join(active, on=list(KEYS), how="left_semi")
    return (
        stock_at_run_date(snapshots, sales, run_date)
        .join(articles.select("article_id", "original_price"), on="article_id", how="inner")
        .join(current_price, on=list(KEYS), how="left")
        .select(*KEYS, "stock_on_hand", F.coalesce("price", "original_price").alias("price"))
    )


def future_grid(active: DataFrame, articles: DataFrame, run_date: dt.date) -> DataFrame:
    """The weeks from the run date to each active article's season end, at its current price and stock."""
    return active.join(articles.select("article_id", "season_end"), on="article_id", how="inner").select(
        *KEYS,
        F.explode(F.sequence(F.lit(run_date), F.col("season_end"), F.expr("INTERVAL 7 DAYS"))).alias("week_start"),
        "price",
        "stock_on_hand",
    )


def _forward_filled(column: str, window: Window) -> Column:
    return F.last(column, ignorenulls=True).over(window.rowsBetween(Window.unboundedPreceding, 0))


def curated_weekly(
    articles: DataFrame, sales: DataFrame, prices: DataFrame, stock: DataFrame, latest: DataFrame, run_date: dt.date
) -> DataFrame:
    """History and future weeks per (country, article) with the features the model uses; `latest` is the stock's
    latest_snapshot.

    Every feature is computed by the same expression for past and future weeks, so training and scoring
    cannot drift apart. Popularity, the article's in its country and everywhere, uses only weeks before the row's.
    """
    seen = first_seen(sales, stock)
    history = (
        history_grid(seen, articles, run_date)
        .join(weekly_units(sales), on=[*KEYS, "week_start"], how="left")
        .join(weekly_last_price(prices, seen), on=[*KEYS, "week_start"], how="left")
        .join(weekly_first_stock(stock), on=[*KEYS, "week_start"], how="left")
        .withColumn("units", F.coalesce("units", F.lit(0)).cast(T.LongType()))
        .withColumn("is_future", F.lit(False))
    )
    future = (
        future_grid(active_articles(articles, prices, latest, sales, run_date), articles, run_date)
        .withColumn("units", F.lit(None).cast(T.LongType()))
        .withColumn("is_future", F.lit(True))
    )
    by_article = Window.partitionBy(*KEYS).orderBy("week_start")
    # Every country's rows of the article dated in earlier weeks (a week is 7 days: -1 day leaves its own out).
    everywhere_before = (
        Window.partitionBy("article_id").orderBy(F.unix_date("week_start")).rangeBetween(Window.unboundedPreceding, -1)
    )
    return (
        history.unionByName(future)
        .join(articles, on="article_id", how="inner")
        .withColumn("price", F.coalesce(_forward_filled("price", by_article), F.col("original_price")))
        .withColumn("stock_on_hand", _forward_filled("stock_on_hand", by_article))
        .withColumn(
            "article_popularity",
            F.avg("units").over(by_article.rowsBetween(Window.unboundedPreceding, -1)),
        )
        # How the same article sells elsewhere, which a young article's own few weeks (or a new shop's) say little of.
        .withColumn("article_popularity_everywhere", F.avg("units").over(everywhere_before))
        .withColumn("discount", F.round(F.greatest(F.lit(0.0), 1 - F.col("price") / F.col("original_price")), 3))
        .withColumn(
            "weeks_since_launch",
            F.greatest(F.lit(0), F.floor(F.datediff("week_start", "launch_date") / 7)).cast(T.IntegerType()),
        )
        .withColumn("weeks_to_season_end", F.floor(F.datediff("season_end", "week_start") / 7).cast(T.IntegerType()))
        .select(*(F.col(field.name).cast(field.dataType) for field in WEEKLY.fields))
    )
