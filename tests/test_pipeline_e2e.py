"""The whole weekly run: Luigi drives spark-submit in local mode on a generated raw root and publishes into
a real embedded PostgreSQL. The ERP table is then checked against the contract from the raw data itself."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from markdown_pricing import erp
from markdown_pricing.config import load_config
from markdown_pricing.sample import generate_sample

RUN_DATE = dt.date(2026, 11, 23)
BIN = Path(sys.executable).parent
LUIGI_PATH_FLAGS = ("--raw-uri", "--work-uri")


def read_raw(raw: Path, dataset: str) -> pd.DataFrame:
    return ds.dataset(raw / dataset, format="parquet", partitioning="hive").to_table().to_pandas()


def expected_active(raw: Path) -> pd.DataFrame:
    """Contract section 2, straight from the raw files: latest stock before the run > 0, season not over."""
    articles = read_raw(raw, "articles")
    stock = read_raw(raw, "stock")
    stock = stock[stock["snapshot_date"] < RUN_DATE].sort_values("snapshot_date")
    latest = stock.groupby(["country", "article_id"], as_index=False).last()
    active = latest.merge(articles, on="article_id")
    active = active[(active["units_on_hand"] > 0) & (active["season_end"] > RUN_DATE)]
    prices = read_raw(raw, "prices")
    prices = prices[(prices["valid_from"] < RUN_DATE) & (prices["price"] > 0)].sort_values("valid_from")
    current = prices.groupby(["country", "article_id"], as_index=False)["price"].last()
    active = active.merge(current, on=["country", "article_id"], how="left")
    active["current_discount"] = 1 - active["price"].fillna(active["original_price"]) / active["original_price"]
    return active[["country", "article_id", "current_discount"]]


def erp_table(dsn: str) -> pd.DataFrame:
    with closing(erp.connect(dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute("SELECT country, article_id, valid_from, recommended_discount::float8, run_id, model_version "
                    "FROM markdown.predictions ORDER BY country, article_id")  # fmt: skip
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def ledger(dsn: str) -> pd.DataFrame:
    with closing(erp.connect(dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, country, status, rows FROM markdown.publish_ledger ORDER BY run_id, country")
        return pd.DataFrame(cur.fetchall(), columns=["run_id", "country", "status", "rows"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, erp_dsn: str) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("e2e")
    # No tiny country: every country must publish here, and one too new for a model of its own would be blocked
    # by the quality gate until the pipeline falls back for it.
    summary = generate_sample(root / "raw", countries=4, articles=90, weeks=40, seed=11, run_date=RUN_DATE,
                              tiny_country_weeks=0)
    env = {**os.environ, "MARKDOWN_ERP_DSN": erp_dsn, "PATH": f"{BIN}:{os.environ['PATH']}"}
    yield {"raw": root / "raw", "work": root / "work", "env": env, "countries": summary.countries}
    with closing(erp.connect(erp_dsn, 5)) as conn, conn, conn.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS markdown CASCADE")


def run_pipeline(world: dict[str, object], *command: str, path_flags: tuple[str, str] = ("--raw", "--work")
                 ) -> subprocess.CompletedProcess[str]:
    raw_flag, work_flag = path_flags
    result = subprocess.run(
        [*command, "--run-date", RUN_DATE.isoformat(), raw_flag, str(world["raw"]), work_flag, str(world["work"])],
        env=world["env"], capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_pipeline_publishes_one_row_per_active_article_by_contract(world: dict[str, object], erp_dsn: str) -> None:
    result = run_pipeline(world, str(BIN / "markdown-pricing"), "run")
    table = erp_table(erp_dsn)
    active = expected_active(world["raw"])  # type: ignore[arg-type]
    active = active[active["country"].isin(world["countries"])]  # type: ignore[arg-type]

    published = sorted(zip(table["country"], table["article_id"], strict=True))
    assert published == sorted(zip(active["country"], active["article_id"], strict=True))
    ladder = load_config("local").run.ladder
    assert set(table["recommended_discount"].round(3)) <= set(ladder)
    merged = table.merge(active, on=["country", "article_id"])
    assert (merged["recommended_discount"] >= merged["current_discount"].round(3) - 1e-9).all()
    assert set(table["valid_from"]) == {RUN_DATE}
    assert (table.groupby("country")["run_id"].nunique() == 1).all()
    assert set(table["run_id"]) == {RUN_DATE.isoformat()}
    assert set(table["model_version"]) == {f"{RUN_DATE}/{c}" for c in world["countries"]}  # type: ignore[union-attr]
    assert "run 2026-11-23" in result.stdout and "published" in result.stdout
    published = ledger(erp_dsn)
    assert set(published["status"]) == {"published"}
    assert published.set_index("country")["rows"].to_dict() == table.groupby("country").size().to_dict()
    for country in world["countries"]:  # type: ignore[union-attr]
        assert (Path(str(world["work"])) / "models" / RUN_DATE.isoformat() / country / "model.txt").is_file()


def test_pipeline_rerun_through_luigi_cli_is_idempotent_and_new_run_replaces_rows(
    world: dict[str, object], erp_dsn: str
) -> None:
    before = erp_table(erp_dsn)
    luigi = [str(BIN / "luigi"), "--module", "markdown_pricing.tasks", "WeeklyRun", "--local-scheduler"]
    run_pipeline(world, *luigi, path_flags=LUIGI_PATH_FLAGS)
    pd.testing.assert_frame_equal(erp_table(erp_dsn), before)

    run_pipeline(world, *luigi, "--run-id", "2026-11-23-b", path_flags=LUIGI_PATH_FLAGS)
    after = erp_table(erp_dsn)
    assert set(after["run_id"]) == {"2026-11-23-b"}
    pd.testing.assert_frame_equal(
        after.drop(columns=["run_id", "model_version"]), before.drop(columns=["run_id", "model_version"])
    )
    assert len(ledger(erp_dsn)) == 2 * len(world["countries"])  # type: ignore[arg-type]
