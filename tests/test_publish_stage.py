"""The publish stage against a real embedded PostgreSQL: trained countries replace their rows, others keep theirs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
from psycopg2 import sql
from pyspark.sql import SparkSession

from markdown_pricing.core.config import Config, ErpSettings
from markdown_pricing.core.context import RunContext, load_run_config
from markdown_pricing.core.drift import BLOCK, WARNING, DriftCheck, Finding, write_drift_check
from markdown_pricing.core.schemas import PREDICTIONS
from markdown_pricing.core.storage import write_json
from markdown_pricing.erp import connection, ledger
from markdown_pricing.stages import publish_job as publish_stage

RUN_DATE = dt.date(2026, 11, 23)
METRICS = {"train_rows": 100, "holdout_rows": 10, "model_wape": 0.3, "model_bias": 0.01, "baseline_wape": 0.4}


def prediction(country: str, article: str, discount: float) -> tuple:
    explanation = (100.0, 20.0, 0.6, 8, None)  # hold revenue, gain over hold, hold sell-through, weeks left, rule
    return (country, article, 50.0, 0.0, discount, round(50.0 * (1 - discount), 2), 3.0, 120.0, 0.8, 10, *explanation)


def context(tmp_path: Path, run_id: str) -> RunContext:
    return RunContext(RUN_DATE, run_id, raw=str(tmp_path / "raw"), work=str(tmp_path / "work"))


def config(ctx: RunContext, settings: ErpSettings) -> Config:
    return dataclasses.replace(load_run_config(ctx), erp=settings)


ARTICLE_STATES = "country string, article_id string, stock_on_hand bigint, season_end date, active boolean"


def stage_outputs(
    spark: SparkSession, ctx: RunContext, rows: list[tuple], results: dict[str, dict], sold_out: tuple[str, ...] = ()
) -> None:
    """The outputs of ETL and train+score that publish reads; `sold_out` are 'COUNTRY/ARTICLE' that ended."""
    spark.createDataFrame(rows, PREDICTIONS).write.mode("overwrite").partitionBy("country").parquet(
        ctx.layout.predictions
    )
    write_json(ctx.layout.country_results, results)
    states = [(*key.split("/"), 0, ctx.run_date + dt.timedelta(weeks=8), False) for key in sold_out]
    spark.createDataFrame(states, ARTICLE_STATES).write.mode("overwrite").parquet(ctx.layout.article_states)


def erp_rows(settings: ErpSettings) -> pd.DataFrame:
    with closing(connection.connect(settings.dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT country, article_id, recommended_discount::float8, run_id FROM {}.{} ORDER BY 1, 2").format(
                sql.Identifier(settings.schema), sql.Identifier(settings.predictions_table)
            )
        )
        return pd.DataFrame(cur.fetchall(), columns=["country", "article_id", "discount", "run_id"])


def test_publish_run_keeps_rows_of_a_country_that_failed_and_reports_it(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    first = context(tmp_path, "week-1")
    stage_outputs(
        spark,
        first,
        [prediction("DEU", "A1", 0.1), prediction("DEU", "A2", 0.2), prediction("FRA", "A1", 0.3)],
        {"DEU": {"status": "trained", **METRICS}, "FRA": {"status": "trained", **METRICS}},
    )
    assert publish_stage.run(spark, first, config(first, erp_settings)) == 0

    second = context(tmp_path, "week-2")
    stage_outputs(
        spark,
        second,
        [prediction("DEU", "A3", 0.4), prediction("DEU", "A4", 0.1)],
        {"DEU": {"status": "trained", **METRICS}, "FRA": {"status": "failed", "error": "ValueError: too short"}},
    )
    assert publish_stage.run(spark, second, config(second, erp_settings)) == 1

    expected = pd.DataFrame(
        [("DEU", "A3", 0.4, "week-2"), ("DEU", "A4", 0.1, "week-2"), ("FRA", "A1", 0.3, "week-1")],
        columns=["country", "article_id", "discount", "run_id"],
    )
    pd.testing.assert_frame_equal(erp_rows(erp_settings), expected)
    with closing(connection.connect(erp_settings.dsn, 5)) as conn:
        assert ledger.run_statuses(conn, erp_settings, "week-2") == {"DEU": "published", "FRA": "failed"}


def test_publish_run_treats_a_trained_country_without_predictions_as_not_published(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    ctx = context(tmp_path, "week-1")
    stage_outputs(
        spark,
        ctx,
        [prediction("DEU", "A1", 0.1)],
        {"DEU": {"status": "trained", **METRICS}, "ITA": {"status": "trained", **METRICS}},
    )
    assert publish_stage.run(spark, ctx, config(ctx, erp_settings)) == 1
    with closing(connection.connect(erp_settings.dsn, 5)) as conn:
        assert ledger.run_statuses(conn, erp_settings, "week-1") == {"DEU": "published", "ITA": "failed"}
    assert erp_rows(erp_settings)["country"].tolist() == ["DEU"]


def ledger_rows(settings: ErpSettings, run_id: str) -> dict[str, tuple]:
    """Country -> (status, rows, gate_override, message) of one run."""
    with closing(connection.connect(settings.dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT country, status, rows, gate_override, message FROM {}.{} WHERE run_id = %s").format(
                sql.Identifier(settings.schema), sql.Identifier(settings.ledger_table)
            ),
            (run_id,),
        )
        return {country: tuple(rest) for country, *rest in cur.fetchall()}


TRAINED = {"status": "trained", **METRICS}
DROP_REASON = (
    "3 of 10 articles recommended last time are missing now although they neither sold out nor reached their season "
    "end (30.0%, more than the allowed 10.0% and at least 3 articles): A7, A8, A9"
)


def dropping_deu(spark: SparkSession, tmp_path: Path, settings: ErpSettings) -> RunContext:
    """Publishes week-1 (DEU 10 articles, FRA 2) and writes week-2's outputs, where DEU has only 6: A6 sold out,
    A7 to A9 lost."""
    first = context(tmp_path, "week-1")
    rows = [prediction("DEU", f"A{i}", 0.1) for i in range(10)] + [prediction("FRA", f"A{i}", 0.3) for i in range(2)]
    stage_outputs(spark, first, rows, {"DEU": TRAINED, "FRA": TRAINED})
    assert publish_stage.run(spark, first, config(first, settings)) == 0
    second = context(tmp_path, "week-2")
    rows = [prediction("DEU", f"A{i}", 0.2) for i in range(6)] + [prediction("FRA", f"A{i}", 0.4) for i in range(2)]
    stage_outputs(spark, second, rows, {"DEU": TRAINED, "FRA": TRAINED}, sold_out=("DEU/A6",))
    return second


def test_publish_run_blocks_a_country_whose_recommendations_drop_and_keeps_its_rows(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings, caplog: pytest.LogCaptureFixture
) -> None:
    second = dropping_deu(spark, tmp_path, erp_settings)

    assert publish_stage.run(spark, second, config(second, erp_settings)) == 1

    table = erp_rows(erp_settings)
    assert table.groupby("country")["run_id"].agg(set).to_dict() == {"DEU": {"week-1"}, "FRA": {"week-2"}}
    assert len(table[table["country"] == "DEU"]) == 10
    assert ledger_rows(erp_settings, "week-2") == {
        "DEU": ("blocked", None, False, f"blocked by the quality gate: {DROP_REASON}"),
        "FRA": ("published", 2, False, None),
    }
    assert f"not published (previous ERP rows kept): DEU: blocked by the quality gate: {DROP_REASON}" in caplog.text


def test_publish_run_with_an_override_publishes_a_blocked_country_and_records_it(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    blocked = dropping_deu(spark, tmp_path, erp_settings)
    assert publish_stage.run(spark, blocked, config(blocked, erp_settings)) == 1

    overridden = dataclasses.replace(blocked, gate_overrides=("DEU",))
    assert publish_stage.run(spark, overridden, config(overridden, erp_settings)) == 0

    table = erp_rows(erp_settings)
    assert table.groupby("country")["run_id"].agg(set).to_dict() == {"DEU": {"week-2"}, "FRA": {"week-2"}}
    assert len(table[table["country"] == "DEU"]) == 6
    recorded = ("published", 6, True, f"gate overridden by operator: {DROP_REASON}")
    assert ledger_rows(erp_settings, "week-2")["DEU"] == recorded
    # A rerun without the override leaves the overridden publish as it is.
    assert publish_stage.run(spark, blocked, config(blocked, erp_settings)) == 0
    assert ledger_rows(erp_settings, "week-2")["DEU"] == recorded


def test_publish_run_blocks_a_country_whose_input_drifted_beyond_a_block_limit_until_an_override(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    ctx = context(tmp_path, "week-2")
    rows = [prediction("DEU", "A1", 0.1), prediction("FRA", "A1", 0.1)]
    stage_outputs(spark, ctx, rows, {"DEU": TRAINED, "FRA": TRAINED})
    fell = Finding("DEU", "weekly_units", 12_345, 1_000, 1 - 1_000 / 12_345, 0.8, BLOCK, "week-1")
    cheaper = Finding("FRA", "price_level", 40.0, 30.0, 0.25, 0.2, WARNING, "week-1")
    write_drift_check(ctx.layout.drift, DriftCheck("week-1", RUN_DATE - dt.timedelta(weeks=1), (fell, cheaper)))

    assert publish_stage.run(spark, ctx, config(ctx, erp_settings)) == 1

    reason = "input drift: weekly units fell 91.9% against run week-1 (12,345 -> 1,000), beyond the block limit of 80%"
    assert ledger_rows(erp_settings, "week-2") == {
        "DEU": ("blocked", None, False, f"blocked by the quality gate: {reason}"),
        "FRA": ("published", 1, False, None),
    }
    overridden = dataclasses.replace(ctx, gate_overrides=("DEU",))
    assert publish_stage.run(spark, overridden, config(overridden, erp_settings)) == 0
    assert ledger_rows(erp_settings, "week-2")["DEU"] == (
        "published",
        1,
        True,
        f"gate overridden by operator: {reason}",
    )
    assert erp_rows(erp_settings)[["country", "run_id"]].values.tolist() == [["DEU", "week-2"], ["FRA", "week-2"]]


def test_publish_run_blocks_a_country_whose_model_loses_to_its_baseline(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    ctx = context(tmp_path, "week-1")
    losing = {**TRAINED, "model_wape": 0.45, "baseline_wape": 0.4}
    stage_outputs(
        spark, ctx, [prediction("DEU", "A1", 0.1), prediction("FRA", "A1", 0.1)], {"DEU": losing, "FRA": TRAINED}
    )

    assert publish_stage.run(spark, ctx, config(ctx, erp_settings)) == 1

    assert erp_rows(erp_settings)["country"].tolist() == ["FRA"]
    assert ledger_rows(erp_settings, "week-1")["DEU"] == (
        "blocked",
        None,
        False,
        "blocked by the quality gate: model loses to its baseline: model WAPE 0.450 >= baseline WAPE 0.400",
    )


def test_publish_run_blocks_a_country_with_a_discount_off_the_ladder(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    ctx = context(tmp_path, "week-1")
    stage_outputs(spark, ctx, [prediction("DEU", "A1", 0.1), prediction("DEU", "A2", 0.15)], {"DEU": TRAINED})

    assert publish_stage.run(spark, ctx, config(ctx, erp_settings)) == 1

    assert erp_rows(erp_settings).empty
    assert ledger_rows(erp_settings, "week-1")["DEU"] == (
        "blocked",
        None,
        False,
        "blocked by the quality gate: 1 of 2 rows recommend a discount off the ladder "
        "(e.g. A2: recommended_discount 0.15)",
    )


def test_a_database_error_in_one_country_fails_it_alone_and_the_others_publish(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    first = context(tmp_path, "week-1")
    stage_outputs(
        spark, first, [prediction("DEU", "A1", 0.1), prediction("FRA", "A1", 0.1)], {"DEU": TRAINED, "FRA": TRAINED}
    )
    assert publish_stage.run(spark, first, config(first, erp_settings)) == 0
    # The ERP team's trigger refuses FRA's rows: an error no ValueError check foresees.
    with closing(connection.connect(erp_settings.dsn, 5)) as conn, conn, conn.cursor() as cur:
        table = sql.SQL("{}.{}").format(sql.Identifier(erp_settings.schema), sql.Identifier("predictions"))
        cur.execute(
            "CREATE FUNCTION refuse_fra() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN IF NEW.country = 'FRA' THEN RAISE EXCEPTION 'FRA is frozen this week'; END IF; RETURN NEW; END $$"
        )
        cur.execute(
            sql.SQL("CREATE TRIGGER refuse BEFORE INSERT ON {} FOR EACH ROW EXECUTE FUNCTION refuse_fra()").format(
                table
            )
        )
    second = context(tmp_path, "week-2")
    rows = [prediction("DEU", "A2", 0.2), prediction("FRA", "A2", 0.2), prediction("ITA", "A2", 0.2)]
    stage_outputs(spark, second, rows, {"DEU": TRAINED, "FRA": TRAINED, "ITA": TRAINED})

    assert publish_stage.run(spark, second, config(second, erp_settings)) == 1

    with closing(connection.connect(erp_settings.dsn, 5)) as conn:
        assert ledger.run_statuses(conn, erp_settings, "week-2") == {
            "DEU": "published",
            "FRA": "failed",
            "ITA": "published",
        }
    assert ledger_rows(erp_settings, "week-2")["FRA"][3].startswith("publish rejected: FRA is frozen this week")
    table = erp_rows(erp_settings)
    assert table[table["country"] == "FRA"]["run_id"].tolist() == ["week-1"]


def test_rows_refused_before_their_transaction_fail_their_country_alone_and_the_others_publish(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    # FRA's rows are checked while DEU's are written, and ITA's while FRA's refusal is recorded.
    ctx = context(tmp_path, "week-1")
    rows = [prediction("DEU", "A1", 0.1), prediction("FRA", "A1", 0.1), prediction("FRA", "A1", 0.2)]
    stage_outputs(spark, ctx, [*rows, prediction("ITA", "A1", 0.3)], {"DEU": TRAINED, "FRA": TRAINED, "ITA": TRAINED})

    assert publish_stage.run(spark, ctx, config(ctx, erp_settings)) == 1

    ledger_of_run = ledger_rows(erp_settings, "week-1")
    assert {country: row[0] for country, row in ledger_of_run.items()} == {
        "DEU": "published",
        "FRA": "failed",
        "ITA": "published",
    }
    assert ledger_of_run["FRA"][3] == "publish rejected: predictions for FRA repeat article_ids: A1"
    assert erp_rows(erp_settings)["country"].tolist() == ["DEU", "ITA"]


def test_one_ahead_keeps_the_order_and_works_on_the_next_item_while_the_caller_uses_this_one() -> None:
    started = {item: threading.Event() for item in "abc"}

    def work(item: str) -> str:
        started[item].set()
        return item.upper()

    seen = []
    for item, result in zip("abc", publish_stage.one_ahead(work, list("abc")), strict=True):
        following = chr(ord(item) + 1)
        if following in started:
            assert started[following].wait(10), f"{following} did not start while {item} was in use"
        seen.append(result)
    assert seen == ["A", "B", "C"]


def test_a_lock_held_by_a_reader_times_out_its_country_instead_of_waiting_forever(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    first = context(tmp_path, "week-1")
    stage_outputs(spark, first, [prediction("DEU", "A1", 0.1)], {"DEU": TRAINED})
    assert publish_stage.run(spark, first, config(first, erp_settings)) == 0
    second = context(tmp_path, "week-2")
    stage_outputs(spark, second, [prediction("DEU", "A2", 0.2)], {"DEU": TRAINED})
    impatient = dataclasses.replace(erp_settings, lock_timeout_s=0.5)

    with closing(connection.connect(erp_settings.dsn, 5)) as reader, reader.cursor() as cur:
        table = sql.SQL("{}.{}").format(sql.Identifier(erp_settings.schema), sql.Identifier("predictions"))
        cur.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(table))
        assert publish_stage.run(spark, second, config(second, impatient)) == 1
        reader.rollback()

    assert "lock timeout" in ledger_rows(erp_settings, "week-2")["DEU"][3]
    assert erp_rows(erp_settings)["run_id"].tolist() == ["week-1"]


def test_a_rerun_republishes_rows_deleted_behind_the_ledgers_back(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = context(tmp_path, "week-1")
    rows = [prediction("DEU", "A1", 0.1), prediction("DEU", "A2", 0.2), prediction("FRA", "A1", 0.3)]
    stage_outputs(spark, ctx, rows, {"DEU": TRAINED, "FRA": TRAINED})
    assert publish_stage.run(spark, ctx, config(ctx, erp_settings)) == 0
    with closing(connection.connect(erp_settings.dsn, 5)) as conn, conn, conn.cursor() as cur:
        table = sql.SQL("{}.{}").format(sql.Identifier(erp_settings.schema), sql.Identifier("predictions"))
        cur.execute(sql.SQL("DELETE FROM {} WHERE country = 'DEU' AND article_id = 'A2'").format(table))

    assert publish_stage.run(spark, ctx, config(ctx, erp_settings)) == 0

    table = erp_rows(erp_settings)
    assert table[["country", "article_id", "run_id"]].values.tolist() == [
        ["DEU", "A1", "week-1"],
        ["DEU", "A2", "week-1"],
        ["FRA", "A1", "week-1"],
    ]
    assert "country DEU: the ledger says run week-1 published 2 rows but the table holds 1 of them" in caplog.text


def test_a_country_missing_from_the_input_keeps_its_rows_is_recorded_and_fails_the_run(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    week_1 = context(tmp_path / "1", "week-1")
    stage_outputs(
        spark, week_1, [prediction("DEU", "A1", 0.1), prediction("FRA", "A1", 0.3)], {"DEU": TRAINED, "FRA": TRAINED}
    )
    assert publish_stage.run(spark, week_1, config(week_1, erp_settings)) == 0
    week_2 = dataclasses.replace(context(tmp_path / "2", "week-2"), run_date=RUN_DATE + dt.timedelta(weeks=1))
    stage_outputs(spark, week_2, [prediction("DEU", "A1", 0.2)], {"DEU": TRAINED})

    assert publish_stage.run(spark, week_2, config(week_2, erp_settings)) == 1

    assert erp_rows(erp_settings)[["country", "run_id"]].values.tolist() == [["DEU", "week-2"], ["FRA", "week-1"]]
    status, rows, _, message = ledger_rows(erp_settings, "week-2")["FRA"]
    assert (status, rows) == ("missing_input", None)
    assert message == f"missing from this run's input: the ERP keeps its rows of {RUN_DATE}"


def test_a_backfilled_week_does_not_miss_a_country_that_only_later_weeks_have(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    newer = context(tmp_path / "new", "newer")
    stage_outputs(
        spark, newer, [prediction("DEU", "A1", 0.1), prediction("FRA", "A1", 0.3)], {"DEU": TRAINED, "FRA": TRAINED}
    )
    assert publish_stage.run(spark, newer, config(newer, erp_settings)) == 0
    older = dataclasses.replace(context(tmp_path / "old", "older"), run_date=RUN_DATE - dt.timedelta(weeks=1))
    stage_outputs(spark, older, [prediction("DEU", "A1", 0.2)], {"DEU": TRAINED})

    assert publish_stage.run(spark, older, config(older, erp_settings)) == 0

    assert ledger_rows(erp_settings, "older") == {
        "DEU": ("superseded", None, False, f"the ERP holds the newer week {RUN_DATE}: its rows kept")
    }


def test_sell_outs_and_a_lost_article_in_a_small_country_do_not_block_it(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    first = context(tmp_path / "1", "week-1")
    stage_outputs(spark, first, [prediction("LUX", f"A{i}", 0.1) for i in range(9)], {"LUX": TRAINED})
    assert publish_stage.run(spark, first, config(first, erp_settings)) == 0
    second = dataclasses.replace(context(tmp_path / "2", "week-2"), run_date=RUN_DATE + dt.timedelta(weeks=1))
    # A0 and A1 sold out, A2 is gone without a reason: one loss in nine is under the minimum number of articles.
    rows = [prediction("LUX", f"A{i}", 0.2) for i in range(3, 9)]
    stage_outputs(spark, second, rows, {"LUX": TRAINED}, sold_out=("LUX/A0", "LUX/A1"))

    assert publish_stage.run(spark, second, config(second, erp_settings)) == 0

    assert ledger_rows(erp_settings, "week-2")["LUX"][:2] == ("published", 6)
