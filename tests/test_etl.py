"""ETL transformations on small inline DataFrames, compared with chispa, and the stage's shuffle partitions."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from markdown_pricing.core.config import EtlSettings, load_config
from markdown_pricing.core.context import RunContext
from markdown_pricing.core.schemas import RAW_DATASETS
from markdown_pricing.core.session import SHUFFLE_PARTITIONS
from markdown_pricing.etl import transforms
from markdown_pricing.stages import etl_job
from markdown_pricing.synthetic.sample import generate_sample

RUN_DATE = dt.date(2026, 11, 23)
D = dt.date


def frame(spark: SparkSession, dataset: str, rows: list[tuple]) -> DataFrame:
    return spark.createDataFrame(rows, RAW_DATASETS[dataset])


@pytest.fixture()
def articles(spark: SparkSession) -> DataFrame:
    return frame(
        spark,
        "articles",
        [
            ("A1", "tops", "2026-AW", D(2026, 10, 28), D(2027, 1, 31), 50.0),
            ("A2", "jeans", "2026-SS", D(2026, 3, 2), D(2026, 7, 31), 80.0),
        ],
    )


def test_check_raw_schema_accepts_int32_for_integer_columns() -> None:
    found = T.StructType(
        [
            *(f for f in RAW_DATASETS["stock"].fields if f.name != "units_on_hand"),
            T.StructField("units_on_hand", T.IntegerType()),
        ]
    )
    transforms.check_raw_schema("stock", found)


def test_check_raw_schema_names_dataset_column_and_types() -> None:
    found = T.StructType(
        [f if f.name != "price" else T.StructField("price", T.StringType()) for f in RAW_DATASETS["prices"].fields]
    )
    with pytest.raises(transforms.RawSchemaError, match=r"'prices': column 'price' expected double, found string"):
        transforms.check_raw_schema("prices", found)


def test_check_raw_schema_reports_missing_column() -> None:
    found = T.StructType([f for f in RAW_DATASETS["sales"].fields if f.name != "units"])
    with pytest.raises(transforms.RawSchemaError, match="column 'units' expected bigint, found missing"):
        transforms.check_raw_schema("sales", found)


def test_with_reject_reason_labels_each_contract_rule(spark: SparkSession, articles: DataFrame) -> None:
    sales = frame(
        spark,
        "sales",
        [
            ("DEU", "A1", D(2026, 11, 2), 3, 150.0),
            (None, "A1", D(2026, 11, 2), 1, 50.0),
            ("de", "A1", D(2026, 11, 2), 1, 50.0),
            ("DEU", "ZZ", D(2026, 11, 2), 1, 50.0),
            ("DEU", "A1", D(2026, 11, 23), 1, 50.0),
            ("de", "A1", D(2026, 11, 30), 1, 50.0),
            ("DEU\n", "A1", D(2026, 11, 2), 1, 50.0),
            ("DEU", "A1", D(2026, 11, 3), -1, -50.0),
        ],
    )
    result = sales.transform(transforms.with_known_article(articles)).transform(
        transforms.with_reject_reason("sales", RUN_DATE)
    )
    expected = spark.createDataFrame(
        [
            ("DEU", "A1", D(2026, 11, 2), None),
            (None, "A1", D(2026, 11, 2), "null key"),
            ("de", "A1", D(2026, 11, 2), "malformed country code"),
            ("DEU", "ZZ", D(2026, 11, 2), "unknown article"),
            # Outside the run's window first, whatever else is wrong with the row: left out, never rejected.
            ("DEU", "A1", D(2026, 11, 23), transforms.OUT_OF_WINDOW),
            ("de", "A1", D(2026, 11, 30), transforms.OUT_OF_WINDOW),
            # A trailing line terminator is no country code (Java's $ would match before it).
            ("DEU\n", "A1", D(2026, 11, 2), "malformed country code"),
            ("DEU", "A1", D(2026, 11, 3), None),
        ],
        "country string, article_id string, sale_date date, reject_reason string",
    )
    assert_df_equality(
        result.select("country", "article_id", "sale_date", "reject_reason"), expected, ignore_row_order=True
    )


def test_with_reject_reason_rejects_non_positive_prices(spark: SparkSession, articles: DataFrame) -> None:
    prices = frame(
        spark,
        "prices",
        [("DEU", "A1", D(2026, 11, 2), 45.0), ("DEU", "A1", D(2026, 11, 9), 0.0), ("DEU", "A1", D(2026, 11, 16), None)],
    )
    result = prices.transform(transforms.with_known_article(articles)).transform(
        transforms.with_reject_reason("prices", RUN_DATE)
    )
    assert sorted((r.valid_from, r.reject_reason) for r in result.collect()) == [
        (D(2026, 11, 2), None),
        (D(2026, 11, 9), "non-positive price"),
        (D(2026, 11, 16), "non-positive price"),
    ]


def test_with_reject_reason_rejects_conflicting_article_rows(spark: SparkSession) -> None:
    articles = frame(
        spark,
        "articles",
        [
            ("A1", "tops", "2026-AW", D(2026, 10, 28), D(2027, 1, 31), 50.0),
            ("A1", "tops", "2026-AW", D(2026, 10, 28), D(2027, 1, 31), 55.0),
            ("A2", "jeans", "2026-SS", D(2026, 3, 2), D(2026, 7, 31), 80.0),
        ],
    )
    result = articles.transform(transforms.with_reject_reason("articles", RUN_DATE))
    assert sorted((r.article_id, r.original_price, r.reject_reason) for r in result.collect()) == [
        ("A1", 50.0, "conflicting article rows"),
        ("A1", 55.0, "conflicting article rows"),
        ("A2", 80.0, None),
    ]


def test_quarantine_rows_keeps_reason_and_original_row(spark: SparkSession, articles: DataFrame) -> None:
    stock = frame(spark, "stock", [("DEU", "A1", D(2026, 11, 2), -4), ("DEU", "A1", D(2026, 11, 9), 7)])
    tagged = stock.transform(transforms.with_known_article(articles)).transform(
        transforms.with_reject_reason("stock", RUN_DATE)
    )
    expected = spark.createDataFrame(
        [
            (
                "stock",
                "negative stock",
                '{"country":"DEU","article_id":"A1","snapshot_date":"2026-11-02","units_on_hand":-4}',
            )
        ],
        "dataset string, reason string, row_json string",
    )
    assert_df_equality(transforms.quarantine_rows("stock")(tagged), expected, ignore_nullable=True)
    assert [r.units_on_hand for r in transforms.valid_rows("stock")(tagged).collect()] == [7]


def test_check_rejected_share_names_dataset_share_and_threshold() -> None:
    transforms.check_rejected_share({"sales": {"rows": 100, "rejected": 5}}, 0.05)
    with pytest.raises(transforms.RejectedShareError, match=r"'sales': 6 of 100 rows rejected \(6.00%\).*5.00%"):
        transforms.check_rejected_share(
            {"prices": {"rows": 0, "rejected": 0}, "sales": {"rows": 100, "rejected": 6}}, 0.05
        )


def test_weekly_units_sums_days_into_monday_weeks_with_returns(spark: SparkSession) -> None:
    sales = frame(
        spark,
        "sales",
        [
            ("DEU", "A1", D(2026, 11, 2), 3, 150.0),
            ("DEU", "A1", D(2026, 11, 8), 2, 100.0),
            ("DEU", "A1", D(2026, 11, 9), -1, -50.0),
        ],
    )
    expected = spark.createDataFrame(
        [("DEU", "A1", D(2026, 11, 2), 5), ("DEU", "A1", D(2026, 11, 9), -1)],
        "country string, article_id string, week_start date, units long",
    )
    assert_df_equality(transforms.weekly_units(sales), expected, ignore_row_order=True, ignore_nullable=True)


def test_history_grid_runs_from_launch_week_to_week_before_run(spark: SparkSession, articles: DataFrame) -> None:
    # Seen before its launch (a stock snapshot of the delivery): its weeks still start at the launch week.
    seen = spark.createDataFrame(
        [("DEU", "A1", D(2026, 10, 19)), ("FRA", "A2", D(2026, 3, 2))],
        "country string, article_id string, first_seen date",
    )
    grid = transforms.history_grid(seen, articles, RUN_DATE)
    deu_weeks = sorted(r.week_start for r in grid.where(F.col("country") == "DEU").collect())
    assert deu_weeks == [D(2026, 10, 26), D(2026, 11, 2), D(2026, 11, 9), D(2026, 11, 16)]
    fra_weeks = sorted(r.week_start for r in grid.where(F.col("country") == "FRA").collect())
    assert (fra_weeks[0], fra_weeks[-1], len(fra_weeks)) == (D(2026, 3, 2), D(2026, 7, 27), 22)


def test_a_pairs_weeks_start_at_its_first_sale_or_stock_snapshot_when_that_is_after_launch(
    spark: SparkSession, articles: DataFrame
) -> None:
    # DEU's data begins weeks after A1's launch (the window's start, or a shop that opened later): those weeks are
    # unknown, not weeks without sales. FRA's first trace is a stock snapshot, before its first sale.
    sales = frame(spark, "sales", [("DEU", "A1", D(2026, 11, 11), 3, 150.0), ("FRA", "A1", D(2026, 11, 18), 1, 50.0)])
    stock = frame(spark, "stock", [("FRA", "A1", D(2026, 11, 2), 30)])
    seen = transforms.first_seen(sales, stock)
    expected = spark.createDataFrame(
        [("DEU", "A1", D(2026, 11, 9)), ("FRA", "A1", D(2026, 11, 2))],
        "country string, article_id string, first_seen date",
    )
    assert_df_equality(seen, expected, ignore_row_order=True, ignore_nullable=True)
    grid = transforms.history_grid(seen, articles, RUN_DATE)
    weeks = {(r.country, r.week_start) for r in grid.collect()}
    deu, fra = [D(2026, 11, 9), D(2026, 11, 16)], [D(2026, 11, 2), D(2026, 11, 9), D(2026, 11, 16)]
    assert weeks == {("DEU", week) for week in deu} | {("FRA", week) for week in fra}


def test_active_articles_needs_stock_and_season_after_run(spark: SparkSession, articles: DataFrame) -> None:
    stock = frame(
        spark,
        "stock",
        [
            ("DEU", "A1", D(2026, 11, 9), 40),
            ("DEU", "A1", D(2026, 11, 16), 30),
            ("DEU", "A1", D(2026, 11, 23), 0),  # on the run date: not before it
            ("FRA", "A1", D(2026, 11, 16), 0),
            ("FRA", "A2", D(2026, 7, 27), 12),  # season over
            ("ITA", "A1", D(2026, 11, 16), 3),
        ],
    )
    prices = frame(spark, "prices", [("DEU", "A1", D(2026, 10, 28), 50.0), ("DEU", "A1", D(2026, 11, 16), 40.0)])
    sales = frame(
        spark,
        "sales",
        [
            ("DEU", "A1", D(2026, 11, 17), 4, 160.0),
            ("ITA", "A1", D(2026, 11, 18), 3, 150.0),  # sold out since its snapshot: active, nothing on hand
            ("ESP", "A1", D(2026, 11, 18), 2, 100.0),  # sales without a snapshot: not stocked
        ],
    )
    expected = spark.createDataFrame(
        [("DEU", "A1", 26, 40.0), ("ITA", "A1", 0, 50.0)],
        "country string, article_id string, stock_on_hand long, price double",
    )
    active = transforms.active_articles(articles, prices, transforms.latest_snapshot(stock, RUN_DATE), sales, RUN_DATE)
    assert_df_equality(active, expected, ignore_row_order=True, ignore_nullable=True)


def test_latest_snapshot_is_the_last_day_before_the_run_date_and_its_higher_count(spark: SparkSession) -> None:
    stock = frame(
        spark,
        "stock",
        [
            ("DEU", "A1", D(2026, 11, 9), 5_000_000_000),  # a larger count on an earlier day loses
            ("DEU", "A1", D(2026, 11, 16), 3),
            ("DEU", "A1", D(2026, 11, 16), 7),  # two counts of one day: the higher
            ("DEU", "A1", D(2026, 11, 23), 99),  # on the run date: not before it
            ("FRA", "A1", D(1969, 12, 1), 4),  # days before 1970 rank as any other
            ("FRA", "A1", D(1969, 11, 1), 9),
            ("ITA", "A1", D(2026, 11, 20), 5_000_000_001),  # beyond the ranking's count bits: the count itself
        ],
    )
    expected = spark.createDataFrame(
        [
            ("DEU", "A1", D(2026, 11, 16), 7),
            ("FRA", "A1", D(1969, 12, 1), 4),
            ("ITA", "A1", D(2026, 11, 20), 5_000_000_001),
        ],
        "country string, article_id string, snapshot_date date, on_hand long",
    )
    found = transforms.latest_snapshot(stock, RUN_DATE)
    assert_df_equality(found, expected, ignore_row_order=True, ignore_nullable=True)


def test_stock_at_the_run_date_is_the_latest_snapshot_less_what_sold_since(spark: SparkSession) -> None:
    stock = frame(
        spark,
        "stock",
        [
            ("DEU", "A1", D(2026, 11, 9), 40),
            ("DEU", "A1", D(2026, 11, 16), 30),
            ("DEU", "A1", D(2026, 11, 23), 99),  # on the run date: not before it
            ("FRA", "A1", D(2026, 11, 16), 5),
            ("ITA", "A1", D(2026, 11, 20), 8),
            ("ITA", "A1", D(2026, 11, 20), 6),  # two counts of one day: the higher, as article_states has it
        ],
    )
    sales = frame(
        spark,
        "sales",
        [
            ("DEU", "A1", D(2026, 11, 15), 9, 450.0),  # before the latest snapshot: already off its count
            ("DEU", "A1", D(2026, 11, 16), 2, 100.0),  # the snapshot counts the start of its day
            ("DEU", "A1", D(2026, 11, 18), 5, 250.0),
            ("DEU", "A1", D(2026, 11, 20), -1, -50.0),  # a return is back on hand
            ("DEU", "A1", D(2026, 11, 23), 7, 350.0),  # on the run date
            ("FRA", "A1", D(2026, 11, 17), 6, 300.0),  # more than the snapshot: none left, not fewer
        ],
    )
    expected = spark.createDataFrame(
        [("DEU", "A1", 24), ("FRA", "A1", 0), ("ITA", "A1", 8)], "country string, article_id string, stock_on_hand long"
    )
    found = transforms.stock_at_run_date(transforms.latest_snapshot(stock, RUN_DATE), sales, RUN_DATE)
    assert_df_equality(found, expected, ignore_row_order=True, ignore_nullable=True)


def test_curated_weekly_fills_zero_weeks_and_carries_price_and_stock(spark: SparkSession, articles: DataFrame) -> None:
    sales = frame(spark, "sales", [("DEU", "A1", D(2026, 10, 28), 2, 100.0), ("DEU", "A1", D(2026, 11, 10), 4, 160.0)])
    prices = frame(spark, "prices", [("DEU", "A1", D(2026, 10, 28), 50.0), ("DEU", "A1", D(2026, 11, 9), 40.0)])
    stock = frame(spark, "stock", [("DEU", "A1", D(2026, 10, 28), 20), ("DEU", "A1", D(2026, 11, 16), 14)])
    curated = transforms.curated_weekly(
        articles.where("article_id = 'A1'"), sales, prices, stock, transforms.latest_snapshot(stock, RUN_DATE), RUN_DATE
    )
    history = curated.where(~F.col("is_future")).select(
        "week_start", "units", "price", "stock_on_hand", "discount", "article_popularity", "weeks_since_launch"
    )
    expected = spark.createDataFrame(
        [
            (D(2026, 10, 26), 2, 50.0, 20, 0.0, None, 0),
            (D(2026, 11, 2), 0, 50.0, 20, 0.0, 2.0, 0),
            (D(2026, 11, 9), 4, 40.0, 20, 0.2, 1.0, 1),
            (D(2026, 11, 16), 0, 40.0, 14, 0.2, 2.0, 2),
        ],
        "week_start date, units long, price double, stock_on_hand long, discount double, "
        "article_popularity double, weeks_since_launch int",
    )
    assert_approx_df_equality(history, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_a_markdown_before_a_pairs_first_week_is_the_price_its_history_starts_at(
    spark: SparkSession, articles: DataFrame
) -> None:
    # Marked down to 40 on 10-30, first sold on 11-11: its first week (11-09) is at 40, not at the original 50.
    sales = frame(spark, "sales", [("DEU", "A1", D(2026, 11, 11), 3, 120.0)])
    prices = frame(spark, "prices", [("DEU", "A1", D(2026, 10, 28), 50.0), ("DEU", "A1", D(2026, 10, 30), 40.0)])
    stock = frame(spark, "stock", [("DEU", "A1", D(2026, 11, 16), 14)])
    curated = transforms.curated_weekly(
        articles.where("article_id = 'A1'"), sales, prices, stock, transforms.latest_snapshot(stock, RUN_DATE), RUN_DATE
    )
    history = curated.where(~F.col("is_future")).select("week_start", "price", "discount")
    expected = spark.createDataFrame(
        [(D(2026, 11, 9), 40.0, 0.2), (D(2026, 11, 16), 40.0, 0.2)], "week_start date, price double, discount double"
    )
    assert_df_equality(history, expected, ignore_row_order=True, ignore_nullable=True)


def test_popularity_everywhere_is_the_articles_mean_week_in_every_country_before_the_rows_week(
    spark: SparkSession, articles: DataFrame
) -> None:
    sales = frame(
        spark,
        "sales",
        [
            ("DEU", "A1", D(2026, 10, 28), 8, 400.0),
            ("FRA", "A1", D(2026, 11, 4), 2, 100.0),
            ("FRA", "A1", D(2026, 11, 11), 4, 200.0),
        ],
    )
    prices = frame(spark, "prices", [])
    stock = frame(spark, "stock", [("DEU", "A1", D(2026, 11, 16), 14), ("FRA", "A1", D(2026, 11, 16), 9)])
    curated = transforms.curated_weekly(
        articles.where("article_id = 'A1'"), sales, prices, stock, transforms.latest_snapshot(stock, RUN_DATE), RUN_DATE
    )
    seen = {(r.country, r.week_start): r.article_popularity_everywhere for r in curated.collect()}
    # DEU's weeks from 10-26 (8, 0, 0, 0), FRA's from 11-02 (2, 4, 0): before 11-09, DEU's two weeks and FRA's one.
    assert seen[("DEU", D(2026, 10, 26))] is None
    assert seen[("FRA", D(2026, 11, 2))] == seen[("DEU", D(2026, 11, 2))] == 8.0
    assert seen[("FRA", D(2026, 11, 9))] == pytest.approx((8 + 0 + 2) / 3)
    # The future weeks know every past week of both countries.
    assert seen[("DEU", RUN_DATE)] == seen[("FRA", D(2027, 1, 25))] == pytest.approx((8 + 2 + 4) / 7)


def test_curated_weekly_future_weeks_reach_season_end_at_current_price(
    spark: SparkSession, articles: DataFrame
) -> None:
    sales = frame(spark, "sales", [("DEU", "A1", D(2026, 11, 10), 6, 240.0)])
    prices = frame(spark, "prices", [("DEU", "A1", D(2026, 11, 9), 40.0)])
    stock = frame(spark, "stock", [("DEU", "A1", D(2026, 11, 16), 14)])
    future = transforms.curated_weekly(
        articles.where("article_id = 'A1'"), sales, prices, stock, transforms.latest_snapshot(stock, RUN_DATE), RUN_DATE
    ).where("is_future")
    rows = sorted(future.collect(), key=lambda r: r.week_start)
    assert [r.week_start for r in rows][:2] == [D(2026, 11, 23), D(2026, 11, 30)]
    assert rows[-1].week_start == D(2027, 1, 25)
    # History from its first sale's week (11-09): 6 then 0 units.
    assert {(r.units, r.price, r.discount, r.stock_on_hand, r.article_popularity) for r in rows} == {
        (None, 40.0, 0.2, 14, 3.0)
    }
    assert rows[0].weeks_to_season_end == 9


def test_check_rejected_share_counts_only_the_rows_in_the_runs_window() -> None:
    # A backfill's raw root holds later weeks: 900 of these 1000 sales lie after the run date.
    within = {"sales": {"rows": 1000, "out_of_window": 900, "rejected": 4}}
    transforms.check_rejected_share(within, 0.05)
    with pytest.raises(transforms.RejectedShareError, match=r"6 of 100 rows rejected \(6.00%\)"):
        transforms.check_rejected_share({"sales": {**within["sales"], "rejected": 6}}, 0.05)


def test_shuffle_partitions_follow_the_raw_input_and_never_go_below_the_sessions() -> None:
    mib = 1024 * 1024
    assert etl_job.shuffle_partitions_for(700 * mib, 8 * mib, at_least=8) == 88
    assert etl_job.shuffle_partitions_for(8 * mib + 1, 8 * mib, at_least=1) == 2
    assert etl_job.shuffle_partitions_for(900 * 1024, 8 * mib, at_least=8) == 8


@pytest.mark.slow
def test_etl_curates_the_same_rows_in_partitions_sized_to_its_input_then_gives_the_session_its_setting_back(
    spark: SparkSession, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tmp_path / "raw"
    generate_sample(raw, countries=2, articles=20, weeks=12, seed=3, run_date=RUN_DATE)
    cfg = load_config("local")
    session_setting = spark.conf.get(SHUFFLE_PARTITIONS)
    raw_bytes = sum(path.stat().st_size for name in RAW_DATASETS for path in (raw / name).rglob("*") if path.is_file())
    seen_by_curate = []

    def curate(*args: Any) -> int:
        seen_by_curate.append(spark.conf.get(SHUFFLE_PARTITIONS))
        return original_curate(*args)

    original_curate = etl_job.curate
    monkeypatch.setattr(etl_job, "curate", curate)
    curated = {}
    twenty_parts = -(-raw_bytes // 20)
    for name, bytes_per_partition in (("default", cfg.etl.raw_bytes_per_shuffle_partition), ("fine", twenty_parts)):
        ctx = RunContext(RUN_DATE, name, raw=str(raw), work=str(tmp_path / name))
        with caplog.at_level(logging.INFO, logger=etl_job.log.name):
            assert etl_job.run(spark, ctx, replace(cfg, etl=EtlSettings(bytes_per_partition))) == 0
        assert spark.conf.get(SHUFFLE_PARTITIONS) == session_setting
        curated[name] = spark.read.parquet(ctx.layout.weekly)
    assert seen_by_curate == [session_setting, "20"]
    assert any("shuffled in 20 partitions" in message for message in caplog.messages)
    assert_df_equality(curated["default"], curated["fine"], ignore_row_order=True)
