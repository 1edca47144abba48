"""The publish stage against a real embedded PostgreSQL: trained countries replace their rows, the others keep theirs."""
from __future__ import annotations

import dataclasses
import datetime as dt
from contextlib import closing
from pathlib import Path

import pandas as pd
from psycopg2 import sql
from pyspark.sql import SparkSession

from markdown_pricing import erp
from markdown_pricing.config import ErpSettings, load_config, with_paths
from markdown_pricing.schemas import PREDICTIONS
from markdown_pricing.stages import RunContext
from markdown_pricing.stages import publish as publish_stage
from markdown_pricing.storage import write_json

RUN_DATE = dt.date(2026, 11, 23)
METRICS = {"train_rows": 100, "holdout_rows": 10, "model_wape": 0.3, "model_bias": 0.01, "baseline_wape": 0.4}


def prediction(country: str, article: str, discount: float) -> tuple:
    return (country, article, 50.0, 0.0, discount, round(50.0 * (1 - discount), 2), 3.0, 120.0, 0.8, 10)


def context(tmp_path: Path, settings: ErpSettings, run_id: str) -> RunContext:
    cfg = with_paths(load_config("local"), raw=str(tmp_path / "raw"), work=str(tmp_path / "work"))
    return RunContext(cfg=dataclasses.replace(cfg, erp=settings), run_date=RUN_DATE, run_id=run_id)


def stage_outputs(spark: SparkSession, ctx: RunContext, rows: list[tuple], results: dict[str, dict]) -> None:
    spark.createDataFrame(rows, PREDICTIONS).write.mode("overwrite").partitionBy("country").parquet(
        ctx.layout.predictions
    )
    write_json(ctx.layout.country_results, results)


def erp_rows(settings: ErpSettings) -> pd.DataFrame:
    with closing(erp.connect(settings.dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT country, article_id, recommended_discount::float8, run_id FROM {}.{} ORDER BY 1, 2").format(
                sql.Identifier(settings.schema), sql.Identifier(settings.predictions_table)
            )
        )
        return pd.DataFrame(cur.fetchall(), columns=["country", "article_id", "discount", "run_id"])


def test_publish_run_keeps_rows_of_a_country_that_failed_and_reports_it(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    first = context(tmp_path, erp_settings, "week-1")
    stage_outputs(
        spark, first,
        [prediction("DEU", "A1", 0.1), prediction("DEU", "A2", 0.2), prediction("FRA", "A1", 0.3)],
        {"DEU": {"status": "trained", **METRICS}, "FRA": {"status": "trained", **METRICS}},
    )  # fmt: skip
    assert publish_stage.run(spark, first) == 0

    second = context(tmp_path, erp_settings, "week-2")
    stage_outputs(
        spark, second,
        [prediction("DEU", "A3", 0.4)],
        {"DEU": {"status": "trained", **METRICS}, "FRA": {"status": "failed", "error": "ValueError: too short"}},
    )  # fmt: skip
    assert publish_stage.run(spark, second) == 1

    expected = pd.DataFrame(
        [("DEU", "A3", 0.4, "week-2"), ("FRA", "A1", 0.3, "week-1")], columns=["country", "article_id", "discount", "run_id"]
    )
    pd.testing.assert_frame_equal(erp_rows(erp_settings), expected)
    with closing(erp.connect(erp_settings.dsn, 5)) as conn:
        assert erp.ledger(conn, erp_settings, "week-2") == {"DEU": "published", "FRA": "failed"}


def test_publish_run_treats_a_trained_country_without_predictions_as_not_published(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    ctx = context(tmp_path, erp_settings, "week-1")
    stage_outputs(spark, ctx, [prediction("DEU", "A1", 0.1)],
                  {"DEU": {"status": "trained", **METRICS}, "ITA": {"status": "trained", **METRICS}})  # fmt: skip
    assert publish_stage.run(spark, ctx) == 1
    with closing(erp.connect(erp_settings.dsn, 5)) as conn:
        assert erp.ledger(conn, erp_settings, "week-1") == {"DEU": "published", "ITA": "failed"}
    assert erp_rows(erp_settings)["country"].tolist() == ["DEU"]
