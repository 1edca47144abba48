"""Tests of the synthetic raw-data generator (pyarrow and pandas only, no Spark session)."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from markdown_pricing.core.schemas import RAW_DATASETS
from markdown_pricing.etl import transforms
from markdown_pricing.orchestrate import cli
from markdown_pricing.synthetic.sample import (
    COUNTRY_CODES,
    ELASTICITY_FLOOR,
    EPOCH,
    PRICE_RESPONSE_ANCHOR,
    RESPONSES,
    SampleSummary,
    WorldShape,
    _sorted_by_name,
    assortment_shares,
    build_world,
    generate_sample,
    price_response,
    seasonal_factor,
    true_daily_demand,
)

RUN_DATE = date(2025, 6, 2)
SMALL = {"countries": 4, "articles": 60, "weeks": 30}
DATASETS = ("articles", "sales", "prices", "stock")
ARROW_CHECKS = {
    T.StringType(): pa.types.is_string,
    T.DateType(): pa.types.is_date32,
    T.DoubleType(): pa.types.is_float64,
    T.LongType(): pa.types.is_integer,
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleSummary]:
    out = tmp_path_factory.mktemp("raw")
    return out, generate_sample(out, seed=7, run_date=RUN_DATE, **SMALL)


def read(root: Path, name: str) -> pd.DataFrame:
    return ds.dataset(root / name, format="parquet", partitioning="hive").to_table().to_pandas()


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_sample_same_seed_is_byte_identical(sample: tuple[Path, SampleSummary], tmp_path: Path) -> None:
    root, summary = sample
    again = generate_sample(tmp_path, seed=7, run_date=RUN_DATE, **SMALL)
    assert again == summary
    assert files(tmp_path) == files(root)
    for name in DATASETS:
        pd.testing.assert_frame_equal(read(tmp_path, name), read(root, name))


# The demo's world, byte for byte as every evaluation and bench figure so far was measured on: a change to the
# generator must leave the default world alone (WorldShape's defaults) or say so here.
DEFAULT_WORLD_SHA256 = "164a2197d6ae363bee6199456d5375b7bc5261277106fb71bea6e6cd4dcd37f7"


def test_the_default_world_is_the_one_every_figure_was_measured_on(sample: tuple[Path, SampleSummary]) -> None:
    root, _ = sample
    digest = hashlib.sha256()
    for name, content in files(root).items():
        digest.update(name.encode())
        digest.update(content)
    assert digest.hexdigest() == DEFAULT_WORLD_SHA256


def test_generate_sample_different_seed_differs(sample: tuple[Path, SampleSummary], tmp_path: Path) -> None:
    root, _ = sample
    generate_sample(tmp_path, seed=8, run_date=RUN_DATE, **SMALL)
    for name in ("articles", "sales"):
        assert not read(tmp_path, name).equals(read(root, name))


def test_generate_sample_contract_columns_and_types(sample: tuple[Path, SampleSummary]) -> None:
    root, _ = sample
    for name, contract in RAW_DATASETS.items():
        schema = ds.dataset(root / name, format="parquet", partitioning="hive").schema
        assert sorted(schema.names) == sorted(contract.fieldNames()), name
        for column in contract.fields:
            assert ARROW_CHECKS[column.dataType](schema.field(column.name).type), (name, column.name)


def test_generate_sample_uses_contract_allowances(sample: tuple[Path, SampleSummary]) -> None:
    root, summary = sample
    sales_file = pq.read_schema(root / "sales" / f"country={summary.countries[0]}" / "part-00000.parquet")
    assert "country" not in sales_file.names
    assert sales_file.field("units").type == pa.int32()
    assert pq.read_schema(next((root / "stock").glob("*.parquet"))).field("units_on_hand").type == pa.int64()
    for name in ("articles", "prices", "stock"):
        parts = list((root / name).glob("*.parquet"))
        assert 1 <= len(parts) <= 3 and all(p.parent == root / name for p in parts)


def test_generate_sample_writes_success_markers(sample: tuple[Path, SampleSummary]) -> None:
    root, summary = sample
    for name in DATASETS:
        marker = root / name / "_SUCCESS"
        assert marker.is_file() and marker.stat().st_size == 0
    assert {f"country={c}" for c in summary.countries} <= {p.name for p in (root / "sales").iterdir()}


def test_generate_sample_country_skew(sample: tuple[Path, SampleSummary]) -> None:
    root, summary = sample
    units = read(root, "sales").groupby("country")["units"].sum()[list(summary.countries)]
    assert units.idxmax() == summary.countries[0] and units.idxmin() == summary.countries[-1]
    assert units.iloc[0] >= 5 * units.iloc[-1]


def test_a_retailers_assortment_skew_puts_ten_times_the_median_in_the_largest_country() -> None:
    shares = assortment_shares(45, largest_to_median=10.0)
    assert shares[0] == pytest.approx(0.95) and np.median(shares) == pytest.approx(0.095)
    assert (np.diff(shares) < 0).all()
    world = build_world(
        np.random.default_rng(3), countries=45, articles=2000, weeks=30, run_date=RUN_DATE, largest_to_median=10.0
    )
    carried = world.carried[:45].sum(axis=1)
    assert 8 < carried[0] / np.median(carried) < 12
    # The default skew is unchanged: 95 % down to 50 %.
    assert assortment_shares(12).tolist() == pytest.approx(list(np.linspace(0.95, 0.5, 12)))


def test_prices_markdowns_never_reverse(sample: tuple[Path, SampleSummary]) -> None:
    root, _ = sample
    articles = read(root, "articles").set_index("article_id")
    prices = read(root, "prices").query("price > 0").sort_values(["country", "article_id", "valid_from"])
    for (_, article), rows in prices.groupby(["country", "article_id"]):
        assert (np.diff(rows["price"].to_numpy()) < 0).all(), article
        assert rows["valid_from"].iloc[0] == articles.at[article, "launch_date"]
        assert rows["price"].iloc[0] == articles.at[article, "original_price"]
        assert all(day.weekday() == 0 for day in rows["valid_from"].iloc[1:])
    discount = 1 - prices["price"] / prices["article_id"].map(articles["original_price"])
    assert np.allclose(discount, discount.round(1), atol=0.01)
    assert discount.max() > 0.2


def test_stock_depletes_without_replenishment(sample: tuple[Path, SampleSummary]) -> None:
    root, _ = sample
    stock = read(root, "stock").sort_values(["country", "article_id", "snapshot_date"])
    assert (stock["units_on_hand"] >= 0).all()
    assert (stock.groupby(["country", "article_id"])["units_on_hand"].diff().dropna() <= 0).all()
    assert all(day.weekday() == 0 for day in stock["snapshot_date"])
    seasons = stock.merge(read(root, "articles"), on="article_id")
    assert (seasons["snapshot_date"] >= seasons["launch_date"]).all()
    assert (seasons["snapshot_date"] < seasons["season_end"] + timedelta(days=7)).all()


def test_stock_drops_by_the_units_sold(sample: tuple[Path, SampleSummary]) -> None:
    root, _ = sample
    keys = ["country", "article_id", "week"]
    stock = read(root, "stock").assign(week=lambda d: pd.to_datetime(d["snapshot_date"])).sort_values(keys)
    stock["drop"] = stock["units_on_hand"] - stock.groupby(keys[:2])["units_on_hand"].shift(-1)
    sales = read(root, "sales").drop_duplicates().query("sale_date < @RUN_DATE")
    day = pd.to_datetime(sales["sale_date"])
    sales["week"] = day - pd.to_timedelta(day.dt.weekday, unit="D")
    weekly = stock.dropna(subset=["drop"]).merge(sales.groupby(keys)["units"].sum().reset_index(), on=keys, how="left")
    # Sold units leave the stock; returned ones (at most one a day) are not put back.
    returned = weekly["drop"] - weekly["units"].fillna(0)
    assert len(weekly) > 100 and returned.between(0, 7).all()


def test_sales_revenue_matches_shelf_price(sample: tuple[Path, SampleSummary]) -> None:
    root, summary = sample
    sales = read(root, "sales")
    clean = (
        sales["country"].isin(summary.countries)
        & sales["article_id"].isin(read(root, "articles")["article_id"])
        & (sales["sale_date"] < RUN_DATE)
    )
    sales = sales[clean].assign(day=lambda d: pd.to_datetime(d["sale_date"]))
    prices = read(root, "prices").query("price > 0").assign(day=lambda d: pd.to_datetime(d["valid_from"]))
    joined = pd.merge_asof(sales.sort_values("day"), prices.sort_values("day"), on="day", by=["country", "article_id"])
    assert joined["price"].notna().all()
    assert np.allclose(joined["revenue"], joined["units"] * joined["price"], atol=0.011)
    assert (sales["units"] < 0).any()


def test_generate_sample_nothing_dated_on_or_after_run_date_but_injected(sample: tuple[Path, SampleSummary]) -> None:
    root, summary = sample
    assert read(root, "stock")["snapshot_date"].max() < RUN_DATE
    assert read(root, "prices")["valid_from"].max() < RUN_DATE
    sales = read(root, "sales")
    assert sales["sale_date"].min() >= summary.first_day
    assert (sales["sale_date"] >= RUN_DATE).sum() == summary.injected["sales_after_run_date"]


@pytest.mark.parametrize("run_date", [RUN_DATE, date(2026, 2, 9), date(2025, 8, 4), date(2025, 7, 28)])
def test_generate_sample_active_share_at_run_date(run_date: date, tmp_path: Path) -> None:
    summary = generate_sample(tmp_path, seed=3, run_date=run_date, inject_bad_rows=False, **SMALL)
    articles = read(tmp_path, "articles")
    in_season = (articles["season_end"] > run_date) & (articles["launch_date"] <= run_date - timedelta(weeks=3))
    assert in_season.mean() >= 0.35
    stock = read(tmp_path, "stock").sort_values("snapshot_date").groupby(["country", "article_id"]).tail(1)
    latest = stock.merge(articles, on="article_id")
    active = latest[(latest["units_on_hand"] > 0) & (latest["season_end"] > run_date)]
    assert active["article_id"].nunique() >= 0.3 * len(articles)
    assert set(active["country"]) == set(summary.countries)


def test_generate_sample_injected_bad_rows_are_few_but_present(sample: tuple[Path, SampleSummary]) -> None:
    root, summary = sample
    sales, prices = read(root, "sales"), read(root, "prices")
    assert len(sales) == summary.sales_rows
    found = {
        "sales_null_article_id": sales["article_id"].isna().sum(),
        "sales_unknown_article": (sales["article_id"] == "ZZ-UNKNOWN").sum(),
        "sales_after_run_date": (sales["sale_date"] >= RUN_DATE).sum(),
        "sales_malformed_country": (sales["country"] == "de").sum(),
        "prices_non_positive": (prices["price"] <= 0).sum(),
        "sales_duplicates": len(sales) - len(sales.drop_duplicates()),
    }
    assert found == summary.injected
    assert all(count > 0 for count in found.values())
    bad_sales = sum(v for k, v in found.items() if k.startswith("sales_") and k != "sales_duplicates")
    assert bad_sales < 0.005 * len(sales)
    assert found["prices_non_positive"] < 0.005 * len(prices)
    assert found["sales_duplicates"] <= 0.005 * len(sales)


def test_generate_sample_without_bad_rows_is_clean_and_overwrites(tmp_path: Path) -> None:
    generate_sample(tmp_path, seed=7, run_date=RUN_DATE, **SMALL)
    summary = generate_sample(tmp_path, seed=7, run_date=RUN_DATE, inject_bad_rows=False, **SMALL)
    sales, prices = read(tmp_path, "sales"), read(tmp_path, "prices")
    assert summary.injected == {}
    assert len(sales) == summary.sales_rows
    assert set(sales["country"]) == set(summary.countries)
    assert sales["article_id"].notna().all() and (sales["article_id"] != "ZZ-UNKNOWN").all()
    assert (sales["sale_date"] < RUN_DATE).all()
    assert len(sales.drop_duplicates()) == len(sales)
    assert (prices["price"] > 0).all()


def test_generate_sample_rejects_non_monday_run_date(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Monday"):
        generate_sample(tmp_path, run_date=date(2025, 6, 3), **SMALL)


def test_true_daily_demand_zero_outside_season_and_rises_with_discount() -> None:
    def demand(since: int, to_end: int, discount: float) -> float:
        return float(
            true_daily_demand(
                np.array([2.0]),
                np.array([since]),
                np.array([to_end]),
                np.array([0]),
                np.array([100]),
                np.array([discount]),
                np.array([2.0]),
            )[0]
        )

    assert demand(-1, 50, 0.0) == 0.0 and demand(30, -1, 0.0) == 0.0
    assert demand(30, 50, 0.3) == pytest.approx(demand(30, 50, 0.0) * 0.7**-2.0)
    assert demand(14, 50, 0.0) > demand(2, 50, 0.0) and demand(14, 50, 0.0) > demand(100, 50, 0.0)


TRUTH_SHAPE = {"countries": 3, "articles": 200, "weeks": 30, "seed": 5}
TRUTH_RUN_DATE = date(2026, 11, 23)
SALVAGE = 0.2


@pytest.fixture(scope="module")
def with_truth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, SampleSummary]:
    root = tmp_path_factory.mktemp("truth")
    summary = generate_sample(
        root / "raw",
        run_date=TRUTH_RUN_DATE,
        inject_bad_rows=False,
        truth_dir=root / "truth",
        salvage_value_share=SALVAGE,
        **TRUTH_SHAPE,
    )
    return root / "raw", pd.read_parquet(root / "truth"), summary


def test_generate_sample_tiny_country_is_new_and_small(with_truth: tuple[Path, pd.DataFrame, SampleSummary]) -> None:
    raw, _, summary = with_truth
    assert summary.tiny_country == COUNTRY_CODES[TRUTH_SHAPE["countries"]] == summary.countries[-1]
    opened = TRUTH_RUN_DATE - timedelta(weeks=6)
    sales = read(raw, "sales").merge(read(raw, "articles"), on="article_id")
    tiny = sales[sales["country"] == summary.tiny_country]
    # Every week of its articles' lives, which the ETL turns into history, lies after the shop opened.
    assert (tiny["launch_date"] >= opened).all() and tiny["sale_date"].min() >= opened
    assert 3 <= tiny["article_id"].nunique() <= 10
    per_country = sales.groupby("country")["article_id"].nunique()
    assert per_country.drop(summary.tiny_country).min() > 5 * tiny["article_id"].nunique()


def test_generate_sample_tiny_country_leaves_the_others_unchanged(
    with_truth: tuple[Path, pd.DataFrame, SampleSummary], tmp_path: Path
) -> None:
    raw, _, summary = with_truth
    without = generate_sample(
        tmp_path, run_date=TRUTH_RUN_DATE, inject_bad_rows=False, tiny_country_weeks=0, **TRUTH_SHAPE
    )
    assert without.tiny_country is None and without.countries == summary.countries[:-1]
    for name in ("sales", "prices", "stock"):
        rows = read(raw, name).astype({"country": str})
        expected = read(tmp_path, name).astype({"country": str})
        keys = list(expected.columns)
        pd.testing.assert_frame_equal(
            rows[rows["country"] != summary.tiny_country].sort_values(keys).reset_index(drop=True),
            expected.sort_values(keys).reset_index(drop=True),
        )


def test_true_outcomes_price_the_articles_etl_finds_active(
    spark: SparkSession, with_truth: tuple[Path, pd.DataFrame, SampleSummary]
) -> None:
    raw, truth, summary = with_truth
    datasets = {name: spark.read.schema(RAW_DATASETS[name]).parquet(str(raw / name)) for name in DATASETS}
    active = transforms.active_articles(
        datasets["articles"],
        datasets["prices"],
        transforms.latest_snapshot(datasets["stock"], TRUTH_RUN_DATE),
        datasets["sales"],
        TRUTH_RUN_DATE,
    ).toPandas()
    expected = set(active[["country", "article_id"]].itertuples(index=False, name=None))
    assert set(truth[["country", "article_id"]].itertuples(index=False, name=None)) == expected
    # The stock the pipeline simulates from is the truth's at the run date, not a week-old snapshot's. The
    # generator keeps returned units off the shelf, the ETL puts them back: a unit here and there.
    stock = active.merge(
        truth.drop_duplicates(["country", "article_id"]), on=["country", "article_id"], suffixes=("_etl", "_true")
    )
    returned = stock["stock_on_hand_etl"] - stock["stock_on_hand_true"]
    assert returned.min() >= 0 and returned.sum() <= 0.005 * stock["stock_on_hand_true"].sum()
    assert summary.tiny_country in set(truth["country"])


def test_true_outcomes_units_are_the_true_daily_means_over_the_future_weeks(
    with_truth: tuple[Path, pd.DataFrame, SampleSummary],
) -> None:
    _, truth, _ = with_truth
    world = build_world(
        np.random.default_rng(TRUTH_SHAPE["seed"]),
        run_date=TRUTH_RUN_DATE,
        **{k: v for k, v in TRUTH_SHAPE.items() if k != "seed"},
    )
    row = truth[(truth["candidate"] == truth["current_discount"]) & (truth["current_discount"] > 0)].iloc[0]
    c, a = world.countries.index(row["country"]), int(np.flatnonzero(world.article_id == row["article_id"])[0])
    launch, season_end = EPOCH + timedelta(days=int(world.launch[a])), EPOCH + timedelta(days=int(world.season_end[a]))
    # future_grid (etl.transforms): weeks from the run date, every 7 days, the last starting on or before season_end.
    weeks = (season_end - TRUTH_RUN_DATE).days // 7 + 1
    days = [TRUTH_RUN_DATE + timedelta(days=i) for i in range(7 * weeks)]
    units = sum(
        float(
            true_daily_demand(
                world.base_demand[a] * world.country_scale[c],
                (day - launch).days,
                (season_end - day).days,
                day.weekday(),
                day.timetuple().tm_yday,
                row["current_discount"],
                world.elasticity[a],
            )
        )
        for day in days
    )
    assert row["expected_units"] == pytest.approx(units, rel=1e-9)
    assert row["current_price"] == pytest.approx(round(world.original_price[a] * (1 - row["current_discount"]), 2))


def test_true_outcomes_revenue_and_stock_follow_the_season_simulation(
    with_truth: tuple[Path, pd.DataFrame, SampleSummary],
) -> None:
    raw, truth, _ = with_truth
    sold = np.minimum(truth["expected_units"], truth["stock_on_hand"])
    price = truth["original_price"] * (1 - truth["candidate"])
    leftover = (truth["stock_on_hand"] - sold) * truth["original_price"] * SALVAGE
    assert np.allclose(truth["expected_revenue"], sold * price + leftover)
    # The truth holds the stock at the run date, at most what the last snapshot a week before showed.
    stock = read(raw, "stock").sort_values("snapshot_date").groupby(["country", "article_id"]).last()
    last_snapshot = truth.join(stock["units_on_hand"], on=["country", "article_id"])
    assert (last_snapshot["stock_on_hand"] <= last_snapshot["units_on_hand"]).all()
    assert (last_snapshot["stock_on_hand"] < last_snapshot["units_on_hand"]).any()


def test_true_outcomes_oracle_is_the_best_candidate(with_truth: tuple[Path, pd.DataFrame, SampleSummary]) -> None:
    _, truth, _ = with_truth
    keys = ["country", "article_id"]
    by_article = truth.groupby(keys)
    assert (by_article["oracle"].sum() == 1).all()
    assert (by_article["candidate"].min() == by_article["current_discount"].first()).all()
    # The best revenue, and among candidates that earn it the smallest discount.
    top = truth[truth["expected_revenue"] == by_article["expected_revenue"].transform("max")]
    best = truth[truth["oracle"]].set_index(keys)["candidate"].sort_index()
    pd.testing.assert_series_equal(best, top.groupby(keys)["candidate"].min().sort_index())
    assert (best > by_article["current_discount"].first().loc[best.index]).any()


def test_price_responses_agree_at_the_anchor_and_part_beyond_it() -> None:
    discounts = np.round(np.arange(8) * 0.1, 1)
    curves = {shape: price_response(discounts, np.full(8, 2.0), shape) for shape in RESPONSES}
    for curve in curves.values():
        assert curve[0] == pytest.approx(1.0) and (np.diff(curve) > 0).all()
        assert curve[3] == pytest.approx((1 - PRICE_RESPONSE_ANCHOR) ** -2.0)
    deep = discounts > PRICE_RESPONSE_ANCHOR + 1e-9
    assert (curves["linear"][deep] < curves["exponential"][deep]).all()
    assert (curves["exponential"][deep] < curves["power"][deep]).all()


def test_a_world_shape_says_what_is_wrong_with_it() -> None:
    with pytest.raises(ValueError, match=r"response 'cubic' is none of power, .*deepest_markdown must be a step"):
        WorldShape(response="cubic", deepest_markdown=0.25)
    with pytest.raises(ValueError, match="stock_cover"):
        WorldShape(stock_cover=(1.0, 0.5))


SHAPED = WorldShape(
    response="linear",
    elasticity_shift=-0.5,
    elasticity_spread=2.0,
    noise=0.5,
    affinity=0.4,
    country_elasticity=0.4,
    volume=0.5,
    markdown_chance=0.3,
    deepest_markdown=0.3,
    stock_cover=(1.5, 2.0),
)


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("shaped")
    generate_sample(
        root / "raw",
        run_date=TRUTH_RUN_DATE,
        inject_bad_rows=False,
        truth_dir=root / "truth",
        shape=SHAPED,
        **TRUTH_SHAPE,
    )
    return root / "raw", pd.read_parquet(root / "truth")


def test_a_shaped_worlds_history_never_goes_deeper_than_its_deepest_markdown(shaped: tuple[Path, pd.DataFrame]) -> None:
    raw, _ = shaped
    prices = read(raw, "prices").merge(read(raw, "articles")[["article_id", "original_price"]], on="article_id")
    discount = (1 - prices["price"] / prices["original_price"]).round(2)
    assert discount.max() == pytest.approx(SHAPED.deepest_markdown, abs=0.01)


def test_a_shaped_worlds_truth_follows_its_demand_curve_and_elasticities(
    shaped: tuple[Path, pd.DataFrame],
) -> None:
    _, truth = shaped
    seed, size = TRUTH_SHAPE["seed"], {k: v for k, v in TRUTH_SHAPE.items() if k != "seed"}
    world = build_world(np.random.default_rng(seed), run_date=TRUTH_RUN_DATE, shape=SHAPED, **size)
    demo = build_world(np.random.default_rng(seed), run_date=TRUTH_RUN_DATE, **size)
    # Stretched twice as far around the center, then moved down: the same articles' elasticities, within new bounds.
    assert world.elasticity.std() > 1.5 * demo.elasticity.std() and world.elasticity.min() >= 0.2
    assert world.elasticity.mean() < demo.elasticity.mean() - 0.3
    assert world.affinity is not None and world.affinity.shape == world.carried.shape
    assert world.country_elasticity is not None and len(world.country_elasticity) == len(world.countries)
    # Every day of a candidate's season is the current discount's, times the curve's lift between the two.
    held = truth[truth["candidate"] == truth["current_discount"]].set_index(["country", "article_id"])
    deeper = truth[truth["candidate"] > truth["current_discount"]].join(
        held["expected_units"].rename("held_units"), on=["country", "article_id"]
    )
    article = deeper["article_id"].map(dict(zip(world.article_id, range(len(world.article_id)), strict=True)))
    country = deeper["country"].map({name: i for i, name in enumerate(world.countries)})
    # Each country shifts its articles' elasticities its own way.
    elasticity = world.pair_elasticity(country.to_numpy(), article.to_numpy())
    assert not np.allclose(elasticity, world.elasticity[article.to_numpy()])
    lift = price_response(deeper["candidate"], elasticity, "linear") / price_response(
        deeper["current_discount"], elasticity, "linear"
    )
    moving = deeper["held_units"] > 0
    assert np.allclose(deeper["expected_units"][moving], (deeper["held_units"] * lift)[moving], rtol=1e-9)


def test_a_tiny_country_may_carry_older_articles_but_sells_nothing_before_it_opened(tmp_path: Path) -> None:
    summary = generate_sample(
        tmp_path,
        run_date=TRUTH_RUN_DATE,
        inject_bad_rows=False,
        tiny_country_weeks=8,
        shape=WorldShape(tiny_carries_older=True),
        **TRUTH_SHAPE,
    )
    opened = TRUTH_RUN_DATE - timedelta(weeks=8)
    articles = read(tmp_path, "articles").set_index("article_id")
    for name, day in (("sales", "sale_date"), ("stock", "snapshot_date")):
        rows = read(tmp_path, name).astype({"country": str})
        tiny = rows[rows["country"] == summary.tiny_country]
        assert tiny[day].min() >= opened
    sold = read(tmp_path, "sales").astype({"country": str})
    older = articles.loc[sold.loc[sold["country"] == summary.tiny_country, "article_id"].unique(), "launch_date"]
    assert (older < opened).any()


def test_a_countrys_elasticity_shift_changes_its_simulated_sales(tmp_path: Path) -> None:
    size = {"countries": 2, "articles": 60, "weeks": 20, "tiny_country_weeks": 0}
    alike, apart = tmp_path / "alike", tmp_path / "apart"
    generate_sample(alike, run_date=TRUTH_RUN_DATE, seed=3, inject_bad_rows=False, **size)
    shape = WorldShape(country_elasticity=0.5)
    generate_sample(apart, run_date=TRUTH_RUN_DATE, seed=3, inject_bad_rows=False, shape=shape, **size)
    world = build_world(np.random.default_rng(3), run_date=TRUTH_RUN_DATE, shape=shape, **size)
    pairs = np.nonzero(world.carried)
    assert (world.pair_elasticity(*pairs) >= ELASTICITY_FLOOR).all()
    assert not np.allclose(world.pair_elasticity(*pairs), world.elasticity[pairs[1]])
    # Both worlds draw the same random numbers (the shift comes from a child generator): their sales differ only
    # because the history follows each country's elasticities.
    assert not read(alike, "sales").equals(read(apart, "sales"))


def test_a_southern_countrys_year_peaks_half_a_year_later_in_its_sales_and_its_truth(tmp_path: Path) -> None:
    size = {"countries": 3, "articles": 60, "weeks": 20, "tiny_country_weeks": 8}
    shape = WorldShape(southern=1)
    world = build_world(np.random.default_rng(3), run_date=TRUTH_RUN_DATE, shape=shape, **size)
    # The smallest regular country is south; the others and the tiny one are north.
    december_15 = np.array([(date(2026, 12, 15) - EPOCH).days])
    peak = [float(seasonal_factor(world.day_of_year(np.array([c]), december_15))[0]) for c in range(4)]
    assert peak[0] == peak[1] == peak[3] == pytest.approx(1.15, abs=1e-3)
    assert peak[2] == pytest.approx(0.85, abs=1e-3)
    north, south = tmp_path / "north", tmp_path / "south"
    generate_sample(north, run_date=TRUTH_RUN_DATE, seed=3, inject_bad_rows=False, **size)
    generate_sample(south, run_date=TRUTH_RUN_DATE, seed=3, inject_bad_rows=False, shape=shape, **size)
    by_country = {
        name: read(root, "sales").astype({"country": str}).groupby("country")["units"].sum()
        for name, root in (("north", north), ("south", south))
    }
    assert by_country["north"][world.countries[2]] != by_country["south"][world.countries[2]]
    with pytest.raises(ValueError, match="southern"):
        build_world(np.random.default_rng(3), run_date=TRUTH_RUN_DATE, shape=WorldShape(southern=4), **size)


def test_generate_sample_takes_the_shape_from_its_flags_and_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = ["--countries", "2", "--articles", "40", "--weeks", "20", "--run-date", TRUTH_RUN_DATE.isoformat()]
    shaped = ["--stock-cover", "1.5", "2.0", "--tiny-carries-older", "--deepest-markdown", "0.3"]
    assert cli.main(["generate-sample", "--out", str(tmp_path / "ok"), *size, *shaped]) == 0
    prices = read(tmp_path / "ok", "prices").merge(read(tmp_path / "ok", "articles"), on="article_id")
    shelf = prices[prices["price"] > 0]  # not the injected bad rows
    assert (1 - shelf["price"] / shelf["original_price"]).max() == pytest.approx(0.3, abs=0.01)
    code = cli.main(["generate-sample", "--out", str(tmp_path / "bad"), *size, "--response", "cubic"])
    assert code == 2 and "response 'cubic' is none of power, exponential, linear" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_prices_and_stock_are_ordered_by_the_text_of_their_ids_not_by_the_codes_they_are_simulated_with() -> None:
    # Beyond 99,999 articles an id's text order is not its number's: "A100000" sorts before "A10001".
    names = {"country": pa.array(["FRA", "DEU"]), "article_id": pa.array(["A10001", "A100000", "A99999"])}
    rows = {
        "country": np.array([0, 1, 1, 0]),
        "article_id": np.array([0, 1, 2, 1]),
        "valid_from": np.array([5, 3, 2, 1]),
    }
    ordered = _sorted_by_name(rows, names, "valid_from")
    assert names["country"].take(pa.array(ordered["country"])).to_pylist() == ["DEU", "DEU", "FRA", "FRA"]
    assert names["article_id"].take(pa.array(ordered["article_id"])).to_pylist() == [
        "A100000",
        "A99999",
        "A100000",
        "A10001",
    ]
    assert ordered["valid_from"].tolist() == [3, 2, 1, 5]
