"""Bad deliveries: each gets a clear error naming what is wrong and where, and nothing is published.

Most cases run at the validation layer on the shared SparkSession; two go through a whole `markdown-pricing run`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from markdown_pricing.core.config import load_config
from markdown_pricing.core.context import RunContext, load_run_config
from markdown_pricing.core.drift import DriftCheck, read_drift_check, read_input_profile
from markdown_pricing.core.errors import StaleInputError
from markdown_pricing.core.storage import read_json
from markdown_pricing.erp import connection
from markdown_pricing.etl.transforms import RawSchemaError, RejectedShareError, check_fresh
from markdown_pricing.stages import etl_job as etl_stage
from markdown_pricing.stages.per_country import country_function
from markdown_pricing.synthetic.sample import generate_sample
from servers import receiving_webhooks

RUN_DATE = dt.date(2026, 11, 23)
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def clean_raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    raw = tmp_path_factory.mktemp("clean") / "raw"
    summary = generate_sample(raw, countries=3, articles=40, weeks=20, seed=5, run_date=RUN_DATE)
    return raw, summary.injected


@pytest.fixture()
def raw(clean_raw: tuple[Path, dict[str, int]], tmp_path: Path) -> Path:
    """A private copy of the clean raw root that a test may break."""
    return Path(shutil.copytree(clean_raw[0], tmp_path / "raw"))


def context(raw: Path, tmp_path: Path) -> RunContext:
    return RunContext(RUN_DATE, "bad-input", raw=str(raw), work=str(tmp_path / "work"))


def run_etl(spark: SparkSession, ctx: RunContext, **run_rules: float) -> int:
    cfg = load_run_config(ctx)
    return etl_stage.run(spark, ctx, dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, **run_rules)))


def test_read_raw_names_dataset_without_success_marker(spark: SparkSession, raw: Path, tmp_path: Path) -> None:
    (raw / "stock" / "_SUCCESS").unlink()
    with pytest.raises(etl_stage.MissingInputError, match=r"dataset 'stock' at .*stock has no _SUCCESS marker"):
        etl_stage.read_raw(spark, context(raw, tmp_path), "stock")


def test_read_raw_names_mistyped_column_before_any_work(spark: SparkSession, raw: Path, tmp_path: Path) -> None:
    shutil.rmtree(raw / "prices")
    (raw / "prices").mkdir()
    pq.write_table(
        pa.table({"country": ["DEU"], "article_id": ["A00001"], "valid_from": [RUN_DATE], "price": ["49.99"]}),
        raw / "prices" / "part-0.parquet",
    )
    (raw / "prices" / "_SUCCESS").touch()
    with pytest.raises(RawSchemaError, match="'prices': column 'price' expected double, found string"):
        etl_stage.read_raw(spark, context(raw, tmp_path), "prices")


@pytest.mark.slow
def test_etl_names_a_corrupt_parquet_file(spark: SparkSession, raw: Path, tmp_path: Path) -> None:
    broken = raw / "sales" / "country=DEU" / "part-broken.parquet"
    broken.write_bytes(b"this is not parquet")
    with pytest.raises(etl_stage.CorruptInputError, match=rf"dataset 'sales': cannot read .*{broken.name}"):
        run_etl(spark, context(raw, tmp_path))


def test_etl_rejects_a_complete_but_empty_dataset(spark: SparkSession, raw: Path, tmp_path: Path) -> None:
    for part in (raw / "stock").glob("*.parquet"):
        part.unlink()
    with pytest.raises(etl_stage.EmptyInputError, match="dataset 'stock' at .* holds no Parquet files"):
        run_etl(spark, context(raw, tmp_path))


def test_etl_rejects_a_dataset_with_zero_rows(spark: SparkSession, raw: Path, tmp_path: Path) -> None:
    table = pq.read_table(next((raw / "articles").glob("*.parquet")))
    shutil.rmtree(raw / "articles")
    (raw / "articles").mkdir()
    pq.write_table(table.slice(0, 0), raw / "articles" / "part-0.parquet")
    (raw / "articles" / "_SUCCESS").touch()
    with pytest.raises(etl_stage.EmptyInputError, match="dataset 'articles' .* holds no rows"):
        run_etl(spark, context(raw, tmp_path))


@pytest.mark.slow
def test_etl_quarantines_each_injected_bad_row_with_its_reason(
    spark: SparkSession, clean_raw: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    raw, injected = clean_raw
    ctx = context(raw, tmp_path)
    assert run_etl(spark, ctx) == 0
    record = read_json(ctx.layout.etl_record)
    assert record["sales"]["rejected_by_reason"] == {
        "null key": injected["sales_null_article_id"],
        "unknown article": injected["sales_unknown_article"],
        "malformed country code": injected["sales_malformed_country"],
    }
    # Sales dated on or after the run date are outside its window: counted, not rejected nor quarantined.
    assert record["sales"]["out_of_window"] == injected["sales_after_run_date"]
    assert record["sales"]["duplicates"] == injected["sales_duplicates"]
    assert record["prices"]["rejected_by_reason"] == {"non-positive price": injected["prices_non_positive"]}
    quarantine = spark.read.parquet(ctx.layout.quarantine).groupBy("dataset", "reason").count().collect()
    assert sum(row["count"] for row in quarantine) == sum(
        count for kind, count in injected.items() if kind not in ("sales_duplicates", "sales_after_run_date")
    )
    # The input profile of the curated data, for the next run's drift check: this run has nothing to compare with.
    profile = read_input_profile(ctx.layout.input_profile)
    curated = {row["country"] for row in spark.read.parquet(ctx.layout.weekly).select("country").distinct().collect()}
    assert set(profile.countries) == curated
    assert all(measures["active_articles"] and measures["weekly_units"] for measures in profile.countries.values())
    assert read_drift_check(ctx.layout.drift) == DriftCheck(previous_run_id=None, previous_run_date=None)


@pytest.mark.slow
def test_etl_fails_when_rejected_share_passes_threshold(spark: SparkSession, raw: Path, tmp_path: Path) -> None:
    message = r"dataset 'sales': \d+ of \d+ rows rejected .* above the threshold of 0.00%"
    with pytest.raises(RejectedShareError, match=message):
        run_etl(spark, context(raw, tmp_path), max_rejected_share=0.0)


def deliver_sales_before(raw: Path, day: dt.date) -> dt.date:
    """Re-delivers the sales as complete but ending before `day` (last week's export); returns its latest date."""
    sales = pq.read_table(raw / "sales", partitioning="hive").to_pandas()
    sales["country"] = sales["country"].astype(str)
    kept = sales[sales["sale_date"] < day]
    shutil.rmtree(raw / "sales")
    (raw / "sales").mkdir()
    pq.write_table(pa.Table.from_pandas(kept, preserve_index=False), raw / "sales" / "part-0.parquet")
    (raw / "sales" / "_SUCCESS").touch()
    return max(kept["sale_date"])


def test_etl_refuses_sales_that_do_not_reach_the_week_before_the_run_date_and_writes_nothing(
    spark: SparkSession, raw: Path, tmp_path: Path
) -> None:
    latest = deliver_sales_before(raw, RUN_DATE - dt.timedelta(days=7))
    ctx = context(raw, tmp_path)
    with pytest.raises(StaleInputError, match=rf"dataset 'sales' is stale: its latest sale_date .* is {latest}"):
        run_etl(spark, ctx)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    ("latest", "lag_days", "fresh"),
    [
        (RUN_DATE - dt.timedelta(days=1), 0, True),
        (RUN_DATE - dt.timedelta(days=7), 0, True),
        (RUN_DATE - dt.timedelta(days=8), 0, False),
        (RUN_DATE - dt.timedelta(days=8), 1, True),
        (None, 7, False),
    ],
)
def test_the_feed_is_fresh_when_it_reaches_the_week_before_the_run_date_within_the_allowed_lag(
    latest: dt.date | None, lag_days: int, fresh: bool
) -> None:
    if fresh:
        check_fresh("sales", latest, RUN_DATE, lag_days)
    else:
        with pytest.raises(StaleInputError, match="dataset 'sales' is stale"):
            check_fresh("sales", latest, RUN_DATE, lag_days)


def test_country_with_one_article_and_two_weeks_asks_for_a_fallback_not_raised() -> None:
    weeks = [RUN_DATE - dt.timedelta(weeks=2), RUN_DATE - dt.timedelta(weeks=1), RUN_DATE]
    tiny = pd.DataFrame(
        {
            "country": "LUX",
            "article_id": "A1",
            "week_start": weeks,
            "is_future": [False, False, True],
            "units": [3, 2, None],
            "stock_on_hand": 10,
            "price": 20.0,
            "original_price": 20.0,
            "season_end": RUN_DATE + dt.timedelta(weeks=4),
            "category": "tops",
            "discount": 0.0,
            "weeks_since_launch": [0, 1, 2],
            "weeks_to_season_end": [6, 5, 4],
            "article_popularity": [None, 3.0, 2.5],
            "article_popularity_everywhere": [None, 30.0, 25.0],
        }
    )
    cfg = load_config("local")
    record = country_function(cfg.model, cfg.run)(tiny)
    assert record[["record", "country", "status"]].values.tolist() == [["country", "LUX", "needs_fallback"]]
    assert record["fallback_reason"].iloc[0].startswith("2 weeks of in-stock history, fewer than min_history_weeks")


def run_cli(
    raw: Path, work: Path, erp_dsn: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MARKDOWN_ERP_DSN": erp_dsn, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run(
        [
            str(BIN / "markdown-pricing"),
            "run",
            "--run-date",
            RUN_DATE.isoformat(),
            "--run-id",
            "bad-input-cli",
            "--raw",
            str(raw),
            "--work",
            str(work),
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def published_runs(erp_dsn: str) -> list[str]:
    with closing(connection.connect(erp_dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('markdown.publish_ledger') IS NOT NULL")
        if not cur.fetchone()[0]:
            return []
        cur.execute("SELECT DISTINCT run_id FROM markdown.publish_ledger")
        return [row[0] for row in cur.fetchall()]


@pytest.mark.slow
def test_run_without_waiting_names_the_missing_dataset(raw: Path, tmp_path: Path, erp_dsn: str) -> None:
    (raw / "sales" / "_SUCCESS").unlink()
    result = run_cli(raw, tmp_path / "work", erp_dsn, "--wait-for-inputs", "0")
    assert result.returncode != 0
    assert "input dataset 'sales' is missing" in result.stderr + result.stdout
    assert "bad-input-cli" not in published_runs(erp_dsn)
    assert not (tmp_path / "work" / "runs").exists()


@pytest.mark.slow
def test_run_with_mistyped_column_exits_non_zero_naming_it(raw: Path, tmp_path: Path, erp_dsn: str) -> None:
    table = pq.read_table(raw / "stock")
    shutil.rmtree(raw / "stock")
    (raw / "stock").mkdir()
    pq.write_table(
        table.set_column(3, "units_on_hand", table["units_on_hand"].cast(pa.string())), raw / "stock" / "part-0.parquet"
    )
    (raw / "stock" / "_SUCCESS").touch()
    result = run_cli(raw, tmp_path / "work", erp_dsn)
    output = result.stderr + result.stdout
    assert result.returncode != 0
    assert "dataset 'stock': column 'units_on_hand' expected bigint, found string" in output
    assert "Traceback" not in output.split("etl stopped")[-1].split("\n")[0]
    assert "bad-input-cli" not in published_runs(erp_dsn)


@pytest.mark.slow
def test_a_run_waits_for_fresh_sales_then_fails_naming_the_dataset_and_its_latest_date(
    raw: Path, tmp_path: Path, erp_dsn: str
) -> None:
    latest = deliver_sales_before(raw, RUN_DATE - dt.timedelta(days=10))
    with receiving_webhooks("/hooks/stale") as webhook:
        result = run_cli(
            raw,
            tmp_path / "work",
            erp_dsn,
            "--wait-for-inputs",
            "5",
            env={"MARKDOWN_ALERT_WEBHOOK_URL": webhook.url},
        )
    output = result.stderr + result.stdout
    assert result.returncode != 0
    # Submitted again after the wait, and stale both times.
    stale = f"dataset 'sales' is stale: its latest sale_date before the run date is {latest}"
    assert output.count(stale) >= 2
    assert "waiting for fresh data" in output
    # One alert, naming the stage and the stale dataset.
    [alert] = webhook.bodies
    assert alert["subject"] == "markdown-pricing run bad-input-cli: stage etl failed"
    [problem] = alert["runs"][0]["problems"]
    assert problem["message"].startswith(stale)
    assert "alert sent by webhook" in result.stdout
    assert "bad-input-cli" not in published_runs(erp_dsn)
    assert not (tmp_path / "work" / "weekly").exists()
