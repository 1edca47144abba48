"""The run report: figure data from small frames, run ordering, and the page rendered in headless Chromium."""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pyspark.sql import SparkSession

from markdown_pricing.core.contract import CANDIDATE_COLUMNS
from markdown_pricing.core.drift import BLOCK, WARNING, DriftCheck, Finding, write_drift_check
from markdown_pricing.core.schemas import PREDICTIONS
from markdown_pricing.core.storage import RunLayout, write_json
from markdown_pricing.observe import run_report
from markdown_pricing.orchestrate import cli

UTC = dt.timezone.utc
COUNTRIES = ("DEU", "FRA", "ITA")


def predictions_frame(rows: list[tuple[str, str, float]], sell_through: float = 0.5, stock: int = 10) -> pd.DataFrame:
    """Prediction rows of (country, article_id, recommended_discount)."""
    frame = pd.DataFrame(rows, columns=["country", "article_id", "recommended_discount"])
    frame["current_discount"] = 0.0
    frame["expected_sell_through"] = sell_through
    frame["stock_on_hand"] = stock
    return frame


def test_model_error_keeps_failed_countries_with_missing_metrics() -> None:
    results = {
        "FRA": {
            "status": "trained",
            "model_wape": 0.3,
            "baseline_wape": 0.4,
            "model_bias": -0.02,
            "markdown_events": 12,
            "markdown_lift_error": 0.25,
        },
        "DEU": {"status": "failed", "error": "ValueError: too short", "model_wape": None, "baseline_wape": None},
    }
    expected = pd.DataFrame(
        {
            "country": ["DEU", "FRA"],
            "status": ["failed", "trained"],
            "model_wape": [np.nan, 0.3],
            "baseline_wape": [np.nan, 0.4],
            "model_bias": [np.nan, -0.02],
            "markdown_events": [np.nan, 12.0],
            "markdown_lift_error": [np.nan, 0.25],
        }
    )
    pd.testing.assert_frame_equal(run_report.model_error(results), expected)
    overview = run_report.model_error(results).set_index("country").assign(error=None)
    table = run_report.overview_html(overview)
    assert '<th class="number">Markdown lift error (events)</th>' in table
    assert "0.250 (12)" in table and "n/a" in table


def test_discount_mix_gives_each_country_shares_per_discount() -> None:
    predictions = predictions_frame(
        [("DEU", "A1", 0.1), ("DEU", "A2", 0.1), ("DEU", "A3", 0.3), ("DEU", "A4", 0.0), ("FRA", "A1", 0.3)]
    )
    mix = run_report.discount_mix(predictions)
    assert mix.index.tolist() == ["DEU", "FRA"]
    assert mix.columns.tolist() == [0.0, 0.1, 0.3]
    assert mix.to_numpy().tolist() == [[0.25, 0.5, 0.25], [0.0, 0.0, 1.0]]


def test_sell_through_gives_quantiles_of_articles_and_the_stock_weighted_share() -> None:
    predictions = predictions_frame([("DEU", f"A{i}", 0.1) for i in range(5)])
    predictions["expected_sell_through"] = [0.2, 0.4, 0.6, 0.8, 1.0]
    predictions["stock_on_hand"] = [10, 10, 10, 10, 60]
    row = run_report.sell_through(predictions).loc["DEU"]
    assert row["articles"] == 5
    assert row[["p10", "p25", "median", "p75", "p90"]].tolist() == pytest.approx([0.28, 0.4, 0.6, 0.8, 0.92])
    # (2 + 4 + 6 + 8 + 60) units of 100 on hand.
    assert row["of_stock"] == pytest.approx(0.8)


def test_week_over_week_compares_articles_of_both_runs_and_ignores_float_noise() -> None:
    previous = predictions_frame(
        [
            ("DEU", "A1", 0.1),
            ("DEU", "A2", 0.3),
            ("DEU", "A3", 0.1 + 0.2),
            ("DEU", "A4", 0.2),
            ("DEU", "OLD", 0.5),
            ("FRA", "A1", 0.0),
        ]
    )
    current = predictions_frame(
        [
            ("DEU", "A1", 0.2),
            ("DEU", "A2", 0.1),
            ("DEU", "A3", 0.3),
            ("DEU", "A4", 0.4),
            ("DEU", "NEW", 0.7),
            ("FRA", "A1", 0.0),
            ("ITA", "A1", 0.1),
        ]
    )
    changes = run_report.week_over_week(current, previous)
    assert changes.index.tolist() == ["DEU", "FRA"]
    assert changes.loc["DEU", ["articles", "up", "same", "down"]].tolist() == [4, 0.5, 0.25, 0.25]
    # (+0.1 - 0.2 + 0 + 0.2) / 4
    assert changes.loc["DEU", "mean_change"] == pytest.approx(0.025)
    assert changes.loc["FRA", ["articles", "up", "same", "down", "mean_change"]].tolist() == [1, 0.0, 1.0, 0.0, 0.0]


def test_rejected_rows_lists_reasons_with_rows_largest_first() -> None:
    record = {
        "articles": {"rows": 100, "rejected_by_reason": {"null key": 2}},
        "sales": {"rows": 1000, "rejected_by_reason": {"unknown article": 30, "null key": 2, "sale after run date": 0}},
        "stock": {"rows": 50, "rejected_by_reason": {}},
    }
    expected = pd.DataFrame(
        {
            "dataset": ["sales", "articles", "sales"],
            "reason": ["unknown article", "null key", "null key"],
            "rows": [30, 2, 2],
            "share": [0.03, 0.02, 0.002],
        }
    )
    pd.testing.assert_frame_equal(run_report.rejected_rows(record), expected)


def test_stage_timings_orders_stages_by_start_and_offsets_them_from_the_first() -> None:
    records = {
        "publish": {"started_at": "2026-11-23T06:10:30+00:00", "seconds": 12.5, "exit_code": 1},
        "etl": {"started_at": "2026-11-23T06:00:00+00:00", "seconds": 90.0, "exit_code": 0},
        "train_score": {"started_at": "2026-11-23T06:02:00+00:00", "seconds": 480.0, "exit_code": 0},
    }
    expected = pd.DataFrame(
        {
            "stage": ["etl", "train_score", "publish"],
            "start_s": [0.0, 120.0, 630.0],
            "seconds": [90.0, 480.0, 12.5],
            "exit_code": [0, 0, 1],
        }
    )
    pd.testing.assert_frame_equal(run_report.stage_timings(records), expected)


def test_run_date_of_reads_a_dated_run_id_else_the_day_it_was_trained() -> None:
    trained = dt.datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
    assert run_report.run_date_of("2026-11-23", trained) == dt.date(2026, 11, 23)
    assert run_report.run_date_of("2026-11-23-b", trained) == dt.date(2026, 11, 23)
    assert run_report.run_date_of("backfill", trained) == dt.date(2026, 12, 2)
    assert run_report.run_date_of("2026-13-45", trained) == dt.date(2026, 12, 2)


def test_previous_run_is_the_latest_run_sorting_before_the_current_one() -> None:
    def run(run_id: str, day: int, hour: int) -> run_report.RunFolder:
        return run_report.RunFolder(run_id, dt.date(2026, 11, day), dt.datetime(2026, 12, 1, hour, tzinfo=UTC))

    week_1, week_2, rerun_2, week_3 = run("w1", 16, 9), run("w2", 23, 1), run("w2b", 23, 5), run("w3", 30, 2)
    runs = [week_3, rerun_2, week_1, week_2]
    # A later rerun of the same week follows the first run of that week; a backfill of an older week compares with
    # the week before it, not with whatever ran last.
    assert run_report.previous_run(runs, week_3) == rerun_2
    assert run_report.previous_run(runs, rerun_2) == week_2
    assert run_report.previous_run(runs, week_2) == week_1
    assert run_report.previous_run(runs, week_1) is None


def write_predictions(layout: RunLayout, frame: pd.DataFrame) -> None:
    """Predictions as the train-and-score stage leaves them: Parquet partitioned by country, then _SUCCESS."""
    folder = Path(layout.predictions)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_to_dataset(table, folder, partition_cols=["country"])
    (folder / "_SUCCESS").touch()


def write_candidates(layout: RunLayout, predictions: pd.DataFrame) -> None:
    """Each article's candidate curve as train-and-score leaves it: from today's discount up the ladder, expected
    revenue rising to the recommended discount and falling after it, the step above it ruled out by a rule."""
    rows = []
    for row in predictions.itertuples():
        steps = np.round(np.arange(row.current_discount, 0.71, 0.1), 3)
        for step in steps:
            distance = abs(step - row.recommended_discount)
            rows.append(
                (
                    row.country,
                    row.article_id,
                    float(step),
                    round(50.0 * (1 - step), 2),
                    3.0 * (1 + step),
                    20.0 * (1 + step),
                    row.expected_revenue - 300.0 * distance,
                    min(1.0, row.expected_sell_through * (1 + step)),
                    "max_discount 0.5 [category jeans]" if step > max(0.5, row.recommended_discount) else None,
                    bool(distance < 1e-9),
                )
            )
    frame = pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS))
    folder = Path(layout.candidates)
    pq.write_to_dataset(pa.Table.from_pandas(frame, preserve_index=False), folder, partition_cols=["country"])
    (folder / "_SUCCESS").touch()


def fabricate_run(
    work: Path,
    run_id: str,
    started: dt.datetime,
    shift: float,
    failed: tuple[str, ...] = (),
    explained: bool = True,
) -> None:
    """One run's small outputs: predictions, country results, ETL record and stage records; unless the run is
    from before explanations, the predictions say what holding would bring and the candidates are written."""
    layout = RunLayout(raw="", work=str(work), run_id=run_id)
    # The same base discounts in every run, so that the week-over-week change is exactly the shift.
    rng = np.random.default_rng(7)
    rows = []
    for index, country in enumerate(COUNTRIES):
        count = 40 + 10 * index
        base = rng.choice([0.0, 0.1, 0.2, 0.3, 0.4], size=count, p=[0.3, 0.25, 0.2, 0.15, 0.1])
        sold, stock = rng.beta(5, 2.5, size=count), rng.integers(1, 60, size=count)
        if country in failed:
            continue
        for article in range(count):
            discount = round(min(0.7, base[article] + (shift if article % 3 == 0 else 0.0)), 1)
            rows.append((country, f"A{article:03d}", discount, float(sold[article]), int(stock[article])))
    frame = pd.DataFrame(
        rows, columns=["country", "article_id", "recommended_discount", "expected_sell_through", "stock_on_hand"]
    )
    frame["current_discount"] = (frame["recommended_discount"] - 0.1).clip(lower=0.0)
    frame["expected_revenue"] = 400.0 + 1000.0 * frame["expected_sell_through"]
    if explained:
        frame["hold_expected_revenue"] = frame["expected_revenue"] - 600.0 * (
            frame["recommended_discount"] - frame["current_discount"]
        )
        frame["gain_over_hold"] = frame["expected_revenue"] - frame["hold_expected_revenue"]
        write_candidates(layout, frame)
    write_predictions(layout, frame)
    results = {
        country: (
            {
                "status": "failed",
                "error": "ValueError: too few history weeks",
                "model_wape": None,
                "baseline_wape": None,
                "model_bias": None,
            }
            if country in failed
            else {
                "status": "trained",
                "model_wape": 0.28 + 0.03 * index,
                "baseline_wape": 0.35 + 0.02 * index,
                "model_bias": 0.01 * (index - 1),
            }
        )
        for index, country in enumerate(COUNTRIES)
    }
    write_json(layout.country_results, results)
    write_json(
        layout.etl_record,
        {
            "articles": {"rows": 300, "rejected": 1, "rejected_by_reason": {"null key": 1}},
            "sales": {
                "rows": 40000,
                "rejected": 420,
                "rejected_by_reason": {"unknown article": 300, "sale on or after the run date": 100, "null key": 20},
            },
            "prices": {"rows": 5000, "rejected": 12, "rejected_by_reason": {"non-positive price": 12}},
            "stock": {"rows": 9000, "rejected": 0, "rejected_by_reason": {}},
        },
    )
    offset = 0.0
    for stage, seconds in (("etl", 74.2), ("train_score", 301.5), ("publish", 8.9)):
        begin = started + dt.timedelta(seconds=offset + 3)
        write_json(
            layout.stage_record(stage),
            {
                "stage": stage,
                "started_at": begin.isoformat(),
                "finished_at": (begin + dt.timedelta(seconds=seconds)).isoformat(),
                "seconds": seconds,
                "exit_code": 1 if stage == "publish" and failed else 0,
            },
        )
        offset += seconds + 3


def image_sources(page: str) -> dict[str, bytes]:
    """alt text -> PNG bytes of each embedded image."""
    found = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)">', page)
    return {alt: base64.b64decode(data) for alt, data in found}


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with everything that could reach the network turned off."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run `apt-get install -y chromium` (`make test` does it as root)")
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_command_writes_a_page_with_every_plot_that_chromium_renders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    fabricate_run(work, "2026-11-16", dt.datetime(2026, 11, 16, 5, 0, tzinfo=UTC), shift=0.0)
    fabricate_run(work, "2026-11-23", dt.datetime(2026, 11, 23, 5, 0, tzinfo=UTC), shift=0.1, failed=("ITA",))

    assert cli.main(["report", "--work", str(work), "--run-id", "2026-11-23"]) == 0

    path = work / "runs" / "2026-11-23" / "report.html"
    assert capsys.readouterr().out.strip() == path.as_uri()
    page = path.read_text()
    images = image_sources(page)
    assert sorted(images) == sorted(run_report.PLOT_ALTS)
    for alt, data in images.items():
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and image.width >= 1000 and image.height >= 250, alt
    assert "compared with run 2026-11-16" in page
    assert "ValueError: too few history weeks" in page
    assert "http://" not in page and "https://" not in page

    dom = chromium("--dump-dom", path.as_uri(), profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert "<h1>Markdown pricing run 2026-11-23</h1>" in dom.stdout
    assert sorted(re.findall(r'<img alt="([^"]+)"', dom.stdout)) == sorted(run_report.PLOT_ALTS)

    screenshot = tmp_path / "report.png"
    shot = chromium(
        f"--screenshot={screenshot}", "--window-size=1400,3000", path.as_uri(), profile=tmp_path / "profile-shot"
    )
    assert shot.returncode == 0, shot.stderr[-3000:]
    with Image.open(screenshot) as image:
        assert image.size == (1400, 3000)
        # A blank or error page has a handful of colours; plots have thousands.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 500
    # To look at the page yourself: MARKDOWN_REPORT_SCREENSHOT=/tmp/run_report.png pytest tests/test_report.py
    if keep := os.environ.get("MARKDOWN_REPORT_SCREENSHOT"):
        shutil.copyfile(screenshot, keep)


def test_report_defaults_to_the_latest_written_run_and_says_when_there_is_nothing_to_compare(tmp_path: Path) -> None:
    work = tmp_path / "work"
    fabricate_run(work, "2026-11-23", dt.datetime(2026, 11, 23, 5, 0, tzinfo=UTC), shift=0.0)
    fabricate_run(work, "backfill", dt.datetime(2026, 11, 9, 5, 0, tzinfo=UTC), shift=0.1)
    os.utime(work / "runs" / "2026-11-23" / "country_results.json", (1, 1))

    path = run_report.write_report(str(work), generated_at=dt.datetime(2026, 11, 24, 8, 0, tzinfo=UTC))

    assert path == str(work / "runs" / "backfill" / "report.html")
    page = Path(path).read_text()
    # "backfill" was trained on 2026-11-09, so it sorts before 2026-11-23 and has no earlier run.
    assert "run date 2026-11-09" in page and "written 2026-11-24 08:00 UTC" in page
    assert "There is no earlier run with predictions in this work folder" in page
    assert sorted(image_sources(page)) == sorted(set(run_report.PLOT_ALTS) - {run_report.WEEK_OVER_WEEK_ALT})


def test_report_without_runs_says_so(tmp_path: Path) -> None:
    with pytest.raises(run_report.ReportError, match="no run under .* has train-and-score results"):
        run_report.write_report(str(tmp_path))


def test_read_predictions_reads_what_spark_writes(spark: SparkSession, tmp_path: Path) -> None:
    layout = RunLayout(raw="", work=str(tmp_path), run_id="r")
    rows = [
        ("DEU", "A1", 50.0, 0.0, 0.1, 45.0, 3.0, 120.0, 0.8, 10, 100.0, 20.0, 0.6, 9, None),
        ("FRA", "A2", 40.0, 0.1, 0.2, 32.0, 1.0, 50.0, 0.5, 4, 50.0, 0.0, 0.5, 3, "hold [article]"),
    ]
    spark.createDataFrame(rows, PREDICTIONS).write.partitionBy("country").parquet(layout.predictions)

    frame = run_report.read_predictions(layout.predictions)

    expected = pd.DataFrame(
        {
            "country": ["DEU", "FRA"],
            "article_id": ["A1", "A2"],
            "current_discount": [0.0, 0.1],
            "recommended_discount": [0.1, 0.2],
            "expected_sell_through": [0.8, 0.5],
            "stock_on_hand": [10, 4],
            "expected_revenue": [120.0, 50.0],
            "hold_expected_revenue": [100.0, 50.0],
            "gain_over_hold": [20.0, 0.0],
        }
    )
    pd.testing.assert_frame_equal(frame.sort_values("country", ignore_index=True), expected)


# --- the money section ---------------------------------------------------------------------------------------------


def money_frame() -> pd.DataFrame:
    """Predictions of two countries with what holding today's discount would bring."""
    frame = pd.DataFrame(
        [
            ("DEU", "A1", 0.0, 0.3, 500.0, 400.0),
            ("DEU", "A2", 0.1, 0.1, 200.0, 200.0),
            ("DEU", "A3", 0.0, 0.2, 310.0, 250.0),
            ("FRA", "A1", 0.2, 0.5, 900.0, 750.0),
            ("FRA", "A2", 0.0, 0.1, 100.0, 100.0),
            ("ITA", "A1", 0.0, 0.0, 0.0, 0.0),
        ],
        columns=[
            "country",
            "article_id",
            "current_discount",
            "recommended_discount",
            "expected_revenue",
            "hold_expected_revenue",
        ],
    )
    frame["gain_over_hold"] = frame["expected_revenue"] - frame["hold_expected_revenue"]
    return frame


def test_revenue_against_hold_sums_each_country_in_euros_and_percent() -> None:
    revenue = run_report.revenue_against_hold(money_frame())

    assert revenue.index.tolist() == ["DEU", "FRA", "ITA"]
    assert revenue["articles"].tolist() == [3, 2, 1]
    assert revenue["expected_revenue"].tolist() == [1010.0, 1000.0, 0.0]
    assert revenue["hold_expected_revenue"].tolist() == [850.0, 850.0, 0.0]
    assert revenue["gain"].tolist() == [160.0, 150.0, 0.0]
    # Nothing to hold, no percentage.
    assert revenue["gain_share"].tolist()[:2] == pytest.approx([160 / 850, 150 / 850])
    assert np.isnan(revenue.loc["ITA", "gain_share"])


def test_largest_gains_ranks_the_gaining_articles_of_every_country() -> None:
    gains = run_report.largest_gains(money_frame(), top=2)

    assert list(zip(gains["country"], gains["article_id"], gains["gain_over_hold"], strict=True)) == [
        ("FRA", "A1", 150.0),
        ("DEU", "A1", 100.0),
    ]
    assert gains["gain_share"].tolist() == pytest.approx([0.2, 0.25])
    # Articles that gain nothing are not among the largest gains.
    assert run_report.largest_gains(money_frame())["article_id"].tolist() == ["A1", "A1", "A3"]


def test_candidate_curves_keep_the_order_of_the_articles_and_sort_each_by_discount() -> None:
    candidates = pd.DataFrame(
        [
            ("DEU", "A1", 0.2, 480.0, None, False),
            ("DEU", "A1", 0.0, 400.0, None, False),
            ("DEU", "A1", 0.3, 500.0, None, True),
            ("FRA", "A1", 0.5, 900.0, None, True),
            ("FRA", "A1", 0.2, 750.0, None, False),
            ("FRA", "A2", 0.0, 100.0, None, True),
        ],
        columns=["country", *run_report.CURVE_COLUMNS],
    )
    top = run_report.largest_gains(money_frame(), top=2)

    curves = run_report.candidate_curves(candidates, top)

    assert list(zip(curves["curve"], curves["country"], curves["candidate_discount"], strict=True)) == [
        (0, "FRA", 0.2),
        (0, "FRA", 0.5),
        (1, "DEU", 0.0),
        (1, "DEU", 0.2),
        (1, "DEU", 0.3),
    ]


def test_read_partitions_reads_only_the_countries_and_articles_asked_for(tmp_path: Path) -> None:
    layout = RunLayout(raw="", work=str(tmp_path), run_id="r")
    assert run_report.read_partitions(layout.candidates, ["DEU"]) is None
    write_candidates(layout, money_frame().assign(expected_sell_through=0.5))

    found = run_report.read_partitions(
        layout.candidates, ["FRA", "ITA", "POL"], articles={"A1"}, columns=run_report.CURVE_COLUMNS
    )

    assert found is not None
    assert found.columns.tolist() == ["country", *run_report.CURVE_COLUMNS]
    assert sorted(set(zip(found["country"], found["article_id"], strict=True))) == [("FRA", "A1"), ("ITA", "A1")]


def test_report_shows_revenue_against_holding_and_the_curves_of_the_largest_gains(tmp_path: Path) -> None:
    work = tmp_path / "work"
    fabricate_run(work, "2026-11-23", dt.datetime(2026, 11, 23, 5, 0, tzinfo=UTC), shift=0.1)

    page = Path(run_report.write_report(str(work), "2026-11-23")).read_text()

    with Image.open(io.BytesIO(image_sources(page)[run_report.CURVES_ALT])) as image:
        assert image.format == "PNG" and image.width >= 1000
    outputs = run_report.read_run(str(work), "2026-11-23")
    assert outputs.predictions is not None and outputs.candidates is not None
    revenue = run_report.revenue_against_hold(outputs.predictions)
    for country, row in revenue.iterrows():
        cells = (f"{row['expected_revenue']:,.0f} EUR", f"{row['gain']:+,.0f} EUR", f"{row['gain_share']:+.1%}")
        assert re.search(rf"<td[^>]*>{country}</td>.*" + ".*".join(map(re.escape, cells)), page), country
    gains = run_report.largest_gains(outputs.predictions)
    assert len(gains) == run_report.TOP_GAINS
    assert "<h3>Largest gains over holding</h3>" in page
    for row in gains.itertuples():
        assert re.search(rf"<td[^>]*>{row.country}</td><td[^>]*>{row.article_id}</td>", page)
    # Only the curves plotted are read: those of the first three of the largest gains.
    shown = set(zip(gains["country"][:3], gains["article_id"][:3], strict=True))
    assert set(zip(outputs.candidates["country"], outputs.candidates["article_id"], strict=True)) == shown


def test_report_of_a_run_from_before_explanations_shows_a_note_for_the_money(tmp_path: Path) -> None:
    work = tmp_path / "work"
    fabricate_run(work, "2026-11-23", dt.datetime(2026, 11, 23, 5, 0, tzinfo=UTC), shift=0.1, explained=False)

    page = Path(run_report.write_report(str(work), "2026-11-23")).read_text()

    assert run_report.CURVES_ALT not in image_sources(page)
    assert "<h2>Revenue against holding today&#x27;s prices</h2>" in page
    assert "do not say what holding today&#x27;s prices would bring (no hold_expected_revenue)" in page
    assert sorted(image_sources(page)) == sorted(
        set(run_report.PLOT_ALTS) - {run_report.CURVES_ALT, run_report.WEEK_OVER_WEEK_ALT}
    )


def test_money_section_without_candidates_keeps_the_tables_and_notes_the_curves() -> None:
    section = run_report.money_section(money_frame(), None)

    assert section.png is None
    assert "<h3>Largest gains over holding</h3>" in section.table and "+150 EUR" in section.table
    assert "no candidates folder" in section.missing


LAST_WEEK = dt.date(2026, 11, 16)


@pytest.mark.parametrize(
    ("check", "note"),
    [
        (None, "This run has no drift check (drift.json)"),
        (DriftCheck(None, None), "There is no previous run to compare with"),
        (
            DriftCheck("2026-11-16", LAST_WEEK),
            "No drift beyond the limits against run 2026-11-16 (run date 2026-11-16).",
        ),
    ],
)
def test_drift_section_says_why_it_has_no_findings(check: DriftCheck | None, note: str) -> None:
    section = run_report.drift_section(check)

    assert section.title == "Input drift" and section.table == "" and section.png is None
    assert note in section.missing


def test_report_lists_the_input_drift_findings_blocking_ones_first(tmp_path: Path) -> None:
    fell = Finding("DEU", "weekly_units", 12_345, 4_690, 1 - 4_690 / 12_345, 0.5, WARNING, "2026-11-16")
    marked_down = Finding("FRA", "markdown_share", 0.2, 0.6, 0.4, 0.3, BLOCK, "2026-11-16")
    check = DriftCheck("2026-11-16", LAST_WEEK, (fell, marked_down))
    write_drift_check(RunLayout(raw="", work=str(tmp_path), run_id="2026-11-23").drift, check)

    outputs = run_report.read_run(str(tmp_path), "2026-11-23")
    page = run_report.render_page("2026-11-23", [], "", [run_report.drift_section(outputs.drift)])

    assert outputs.drift == check
    assert "<h2>Input drift</h2>" in page and "against run 2026-11-16 (run date 2026-11-16)" in page
    cells = [
        ("FRA", "share on markdown", "20.0%", "60.0%", "rose 40.0 points", "30 points", "block"),
        ("DEU", "weekly units", "12,345", "4,690", "fell 62.0%", "50%", "warning"),
    ]
    rows = re.findall(r"<tr>(<td.*?)</tr>", page)
    assert [tuple(re.findall(r"<td[^>]*>([^<]*)</td>", row)) for row in rows] == cells
    assert 'class="missing"' not in page
