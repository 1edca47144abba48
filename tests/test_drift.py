"""Input drift: the per-country input profile (Spark, chispa), the comparison with the previous run (plain Python),
its files in the run folder, the ETL's log lines and the [drift] settings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import SparkSession

from markdown_pricing.core.config import ConfigError, DriftLimits, DriftSettings, load_config
from markdown_pricing.core.context import RunContext
from markdown_pricing.core.drift import (
    BLOCK,
    PROFILE_FIELDS,
    WARNING,
    DriftCheck,
    DriftContractError,
    Finding,
    InputProfile,
    checked_now,
    describe,
    drift_findings,
    previous_profile,
    read_drift_check,
    read_input_profile,
    write_drift_check,
    write_input_profile,
)
from markdown_pricing.core.schemas import INPUT_PROFILE
from markdown_pricing.core.storage import RunLayout, write_json
from markdown_pricing.etl import transforms
from markdown_pricing.stages import etl_job

RUN_DATE = dt.date(2026, 11, 23)
LAST_WEEK = dt.date(2026, 11, 16)
D = dt.date
WEEKLY = "country string, article_id string, week_start date, is_future boolean, units long, price double, " + (
    "original_price double"
)
STATES = "country string, article_id string, stock_on_hand bigint, season_end date, active boolean"
LIMITS = DriftSettings(
    warn=DriftLimits(weekly_units=0.5, active_articles=0.3, price_level=0.2, markdown_share=0.25),
    block=DriftLimits(weekly_units=0.8),
)


def measures(units: int = 1000, articles: int = 100, price: float = 40.0, share: float = 0.2) -> dict[str, float]:
    return {"weekly_units": units, "active_articles": articles, "price_level": price, "markdown_share": share}


def profile(run_id: str, run_date: dt.date, **countries: dict[str, float]) -> InputProfile:
    return InputProfile(run_id, run_date, countries)


PREVIOUS = profile("2026-11-16", LAST_WEEK, DEU=measures(12_345), FRA=measures())


def test_input_profile_measures_last_weeks_units_and_the_active_articles_prices(spark: SparkSession) -> None:
    weekly = spark.createDataFrame(
        [
            ("DEU", "A1", D(2026, 11, 9), False, 100, 50.0, 50.0),  # two weeks before: not counted
            ("DEU", "A1", LAST_WEEK, False, 3, 40.0, 50.0),
            ("DEU", "A2", LAST_WEEK, False, 4, 80.0, 80.0),
            ("DEU", "A3", LAST_WEEK, False, 5, 10.0, 20.0),  # sold out: its units count, its price does not
            ("DEU", "A1", RUN_DATE, True, None, 40.0, 50.0),
            ("DEU", "A2", RUN_DATE, True, None, 80.0, 80.0),
            ("DEU", "A1", D(2026, 11, 30), True, None, 40.0, 50.0),
            ("FRA", "F1", RUN_DATE, True, None, 30.0, 30.0),  # active, sold nothing last week
            ("ITA", "I1", LAST_WEEK, False, 2, 25.0, 25.0),  # sold last week, nothing active now
        ],
        WEEKLY,
    )
    season_end = D(2027, 1, 31)
    states = spark.createDataFrame(
        [
            ("DEU", "A1", 5, season_end, True),
            ("DEU", "A2", 7, season_end, True),
            ("DEU", "A3", 0, season_end, False),
            ("FRA", "F1", 9, season_end, True),
            ("ITA", "I1", 0, season_end, False),
        ],
        STATES,
    )

    found = transforms.input_profile(weekly, states, RUN_DATE)

    expected = spark.createDataFrame(
        [("DEU", 12, 2, 60.0, 0.5), ("FRA", 0, 1, 30.0, 0.0), ("ITA", 2, 0, None, None)], INPUT_PROFILE
    )
    assert_approx_df_equality(found, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_profile_measures_are_the_drift_limits() -> None:
    assert list(PROFILE_FIELDS) == [field.name for field in dataclasses.fields(DriftLimits)]


def test_drift_findings_warn_beyond_the_warning_limit_with_the_figures() -> None:
    current = profile("2026-11-23", RUN_DATE, DEU=measures(4_690), FRA=measures())

    (finding,) = drift_findings(current, PREVIOUS, LIMITS)

    assert finding == Finding(
        "DEU", "weekly_units", 12_345, 4_690, pytest.approx(1 - 4_690 / 12_345), 0.5, WARNING, "2026-11-16"
    )
    assert describe(finding) == (
        "weekly units fell 62.0% against run 2026-11-16 (12,345 -> 4,690), beyond the warning limit of 50%"
    )


def test_drift_findings_block_beyond_the_block_limit() -> None:
    current = profile("2026-11-23", RUN_DATE, DEU=measures(1_000), FRA=measures(2_500))

    found = {(finding.country, finding.level, finding.limit) for finding in drift_findings(current, PREVIOUS, LIMITS)}

    # DEU fell 91.9%: beyond 80%; FRA rose 150%: beyond 80% too, drift both ways.
    assert found == {("DEU", BLOCK, 0.8), ("FRA", BLOCK, 0.8)}


def test_drift_findings_skip_checks_turned_off() -> None:
    current = profile("2026-11-23", RUN_DATE, DEU=measures(12_345, articles=10, price=10.0, share=0.9))
    off = DriftSettings(warn=DriftLimits(weekly_units=0.5), block=DriftLimits())

    assert drift_findings(current, PREVIOUS, off) == []
    assert {finding.measure for finding in drift_findings(current, PREVIOUS, LIMITS)} == {
        "active_articles",
        "price_level",
        "markdown_share",
    }


def test_drift_findings_skip_a_country_new_in_this_run_or_missing_from_it() -> None:
    current = profile("2026-11-23", RUN_DATE, DEU=measures(12_345), ITA=measures(1))

    assert drift_findings(current, PREVIOUS, LIMITS) == []


def test_drift_findings_measure_the_markdown_share_in_points_and_ignore_float_noise_at_the_limit() -> None:
    previous = profile("week-1", LAST_WEEK, DEU=measures(share=0.25), FRA=measures(share=0.01))
    current = profile("week-2", RUN_DATE, DEU=measures(share=0.55), FRA=measures(share=0.05))

    # 0.55 - 0.25 is 30 points and a little float noise: not beyond 30 points. 1% to 5% is 4 points, however relative.
    assert drift_findings(current, previous, DriftSettings(DriftLimits(markdown_share=0.3), DriftLimits())) == []
    (finding,) = drift_findings(current, previous, LIMITS)
    assert describe(finding) == (
        "share on markdown rose 30.0 points against run week-1 (25.0% -> 55.0%), beyond the warning limit of 25 points"
    )


def test_drift_findings_skip_a_measure_without_a_value_or_a_base() -> None:
    previous = profile("week-1", LAST_WEEK, DEU={**measures(units=0), "price_level": None})
    current = profile("week-2", RUN_DATE, DEU=measures(units=500, price=90.0))

    assert drift_findings(current, previous, LIMITS) == []


def test_input_profile_and_drift_check_read_back_what_was_written(tmp_path: Path) -> None:
    layout = RunLayout(raw="", work=str(tmp_path), run_id="week-2")
    current = profile("week-2", RUN_DATE, DEU=measures(4_690), ITA={**measures(), "price_level": None})
    check = DriftCheck("2026-11-16", LAST_WEEK, tuple(drift_findings(current, PREVIOUS, LIMITS)))

    write_input_profile(layout.input_profile, current)
    write_drift_check(layout.drift, check)

    assert read_input_profile(layout.input_profile) == current
    assert read_drift_check(layout.drift) == check
    assert read_drift_check(RunLayout(raw="", work=str(tmp_path), run_id="old").drift) is None


def test_read_input_profile_names_a_value_of_the_wrong_type(tmp_path: Path) -> None:
    uri = str(tmp_path / "input_profile.json")
    write_json(uri, {"run_id": "r", "run_date": "2026-11-23", "countries": {"DEU": {"active_articles": 2.5}}})

    with pytest.raises(DriftContractError, match=r"DEU.active_articles is 2.5, not a int"):
        read_input_profile(uri)


def write_run(work: Path, run_id: str, run_date: dt.date, *, recorded: bool = True, profiled: bool = True) -> None:
    layout = RunLayout(raw="", work=str(work), run_id=run_id)
    if recorded:
        write_json(layout.run_record, {"run_id": run_id, "run_date": run_date.isoformat()})
    if profiled:
        write_input_profile(layout.input_profile, profile(run_id, run_date, DEU=measures()))


def test_previous_profile_is_the_latest_earlier_run_date_with_a_profile(tmp_path: Path) -> None:
    write_run(tmp_path, "2026-11-09", D(2026, 11, 9))
    write_run(tmp_path, "2026-11-16", LAST_WEEK)
    write_run(tmp_path, "2026-11-16-rerun", LAST_WEEK)
    write_run(tmp_path, "by-hand", D(2026, 11, 2), recorded=False)
    write_run(tmp_path, "no-profile", D(2026, 11, 20), profiled=False)
    write_run(tmp_path, "2026-11-23-other", RUN_DATE)  # the same week is no previous run
    write_run(tmp_path, "2026-11-30", D(2026, 11, 30))  # a later week: this run is a backfill
    rerun = RunLayout(raw="", work=str(tmp_path), run_id="2026-11-16-rerun").input_profile
    os.utime(rerun, (1, 1))

    found = previous_profile(str(tmp_path), "2026-11-23", RUN_DATE)

    # Of the two runs of 2026-11-16 the profile written last.
    assert found is not None and found.run_id == "2026-11-16"
    by_hand = previous_profile(str(tmp_path), "2026-11-09", D(2026, 11, 9))
    assert by_hand is not None and by_hand.run_id == "by-hand"
    assert previous_profile(str(tmp_path), "first", D(2026, 10, 26)) is None


def test_check_drift_logs_each_finding_with_its_figures_and_writes_drift_json(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    layout = RunLayout(raw="", work=str(tmp_path), run_id="2026-11-16")
    write_input_profile(layout.input_profile, PREVIOUS)
    ctx = RunContext(RUN_DATE, "2026-11-23", raw=str(tmp_path / "raw"), work=str(tmp_path))
    current = profile("2026-11-23", RUN_DATE, DEU=measures(4_690), FRA=measures(100))

    with caplog.at_level(logging.INFO, logger=etl_job.log.name):
        check = etl_job.check_drift(ctx, LIMITS, current)

    assert read_drift_check(ctx.layout.drift) == check
    assert (check.previous_run_id, check.previous_run_date) == ("2026-11-16", LAST_WEEK)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        "country DEU: weekly units fell 62.0% against run 2026-11-16 (12,345 -> 4,690), beyond the warning limit "
        "of 50%",
        "country FRA: weekly units fell 90.0% against run 2026-11-16 (1,000 -> 100), beyond the block limit of 80%; "
        "the publish gate blocks it (--override-gate FRA publishes it anyway)",
    ]


def test_previous_profile_leaves_out_a_run_whose_records_cannot_be_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_run(tmp_path, "2026-11-09", D(2026, 11, 9))
    broken = RunLayout(raw="", work=str(tmp_path), run_id="2026-11-16")
    write_input_profile(broken.input_profile, profile("2026-11-16", LAST_WEEK, DEU=measures()))
    Path(broken.run_record.removeprefix("file://")).write_text('{"run_id": "2026-11-16", "run_da')
    damaged = RunLayout(raw="", work=str(tmp_path), run_id="2026-11-16-b")
    write_json(damaged.input_profile, {"countries": "?"})

    found = previous_profile(str(tmp_path), "2026-11-23", RUN_DATE)

    assert found is not None and found.run_id == "2026-11-09"
    assert "run 2026-11-16 left out of the comparison" in caplog.text
    assert "run 2026-11-16-b left out of the comparison" in caplog.text


def test_checked_now_judges_the_etls_comparison_by_the_limits_in_force_at_publish(tmp_path: Path) -> None:
    write_input_profile(RunLayout(raw="", work=str(tmp_path), run_id="2026-11-16").input_profile, PREVIOUS)
    ctx = RunContext(RUN_DATE, "2026-11-23", raw=str(tmp_path / "raw"), work=str(tmp_path))
    write_input_profile(ctx.layout.input_profile, profile("2026-11-23", RUN_DATE, DEU=measures(4_690)))
    at_etl = etl_job.check_drift(ctx, LIMITS, read_input_profile(ctx.layout.input_profile))
    assert [finding.level for finding in at_etl.findings] == [WARNING]

    # The operator lowered the block limit before rerunning publish: the same change now blocks.
    stricter = dataclasses.replace(LIMITS, block=DriftLimits(weekly_units=0.6))
    now = checked_now(ctx.layout, stricter)
    assert now is not None and [(f.country, f.level, f.limit) for f in now.findings] == [("DEU", BLOCK, 0.6)]
    # Without the previous run's profile (gc removed it), what the ETL found stands.
    os.remove(tmp_path / "runs" / "2026-11-16" / "input_profile.json")
    assert checked_now(ctx.layout, stricter) == at_etl


def test_check_drift_without_a_previous_run_says_there_is_nothing_to_compare_with(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = RunContext(RUN_DATE, "2026-11-23", raw=str(tmp_path / "raw"), work=str(tmp_path))

    with caplog.at_level(logging.INFO, logger=etl_job.log.name):
        check = etl_job.check_drift(ctx, LIMITS, profile("2026-11-23", RUN_DATE, DEU=measures()))

    assert check == DriftCheck(previous_run_id=None, previous_run_date=None)
    assert read_drift_check(ctx.layout.drift) == check
    (record,) = caplog.records
    assert record.levelno == logging.INFO and "has an input profile: nothing to compare with" in record.getMessage()


def test_drift_settings_load_with_warnings_on_and_blocks_off() -> None:
    drift = load_config("local").drift

    assert drift.warn == DriftLimits(weekly_units=0.5, active_articles=0.3, price_level=0.2, markdown_share=0.25)
    assert drift.block == DriftLimits()


@pytest.mark.parametrize(
    ("warn", "block", "message"),
    [
        (DriftLimits(price_level=-0.1), DriftLimits(), r"drift.warn limits of price_level must not be negative"),
        (DriftLimits(), DriftLimits(weekly_units=-1), r"drift.block limits of weekly_units must not be negative"),
        (
            DriftLimits(weekly_units=0.5),
            DriftLimits(weekly_units=0.4),
            r"drift.block.weekly_units = 0.4 is below drift.warn.weekly_units = 0.5",
        ),
    ],
)
def test_drift_settings_refuse_a_negative_limit_or_a_block_below_its_warning(
    warn: DriftLimits, block: DriftLimits, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        DriftSettings(warn=warn, block=block)


def test_drift_settings_allow_a_block_limit_without_a_warning() -> None:
    assert DriftSettings(warn=DriftLimits(), block=DriftLimits(weekly_units=0.9)).block.weekly_units == 0.9


def test_drift_settings_name_an_unknown_key_when_the_config_loads(tmp_path: Path) -> None:
    root = load_config("local").project_root
    (tmp_path / "conf").mkdir()
    base = (root / "conf" / "base.toml").read_text()
    (tmp_path / "conf" / "base.toml").write_text(base.replace("[drift.block]\n", "[drift.block]\nunits = 0.9\n"))
    (tmp_path / "conf" / "local.toml").write_text((root / "conf" / "local.toml").read_text())

    with pytest.raises(ConfigError, match="unknown key: .*units"):
        load_config("local", root=tmp_path)
