"""The benchmark harness's own logic: event log reading, ratios, the document and its report (no timings)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import zstandard
from bench import report, yarn
from bench.harness import finite_ratios, ideal_makespan, ratios, summarise
from bench.measure import measured, save_results, stage_tasks
from bench.publish_scale import stand_in_outputs
from bench.train_scale import worker_limit_mb

from markdown_pricing.core.context import RunContext
from markdown_pricing.core.storage import read_json, write_json

DESCRIPTION = "train+score 2 countries"
RUN_DATE_OF_BENCH = date(2026, 11, 23)


def test_ideal_makespan_is_the_longest_job_or_an_even_share_whichever_is_longer() -> None:
    assert ideal_makespan([4.0, 1.0, 1.0], slots=2) == 4.0
    assert ideal_makespan([3.0, 3.0, 3.0, 3.0], slots=2) == 6.0


def _event(kind: str, **fields: Any) -> str:
    return json.dumps({"Event": kind, **fields})


def test_stage_tasks_reads_the_shuffle_stage_of_the_job_not_its_file_scan(tmp_path: Path) -> None:
    def submitted(stage: int, parents: list[int], label: str = DESCRIPTION) -> str:
        info = {"Stage ID": stage, "Number of Tasks": 2, "Parent IDs": parents}
        properties = {"spark.job.description": label}
        return _event("SparkListenerStageSubmitted", **{"Stage Info": info, "Properties": properties})

    def ended(stage: int, index: int, launch: int, finish: int) -> str:
        info = {"Index": index, "Launch Time": launch, "Finish Time": finish}
        return _event("SparkListenerTaskEnd", **{"Stage ID": stage, "Task Info": info})

    first, second = tmp_path / "events_1_app", tmp_path / "events_2_app"
    # The scan (no parents), an earlier run of the shuffle stage, another job's stage, then the latest run.
    first.write_text("\n".join([submitted(0, []), ended(0, 0, 0, 1), submitted(1, [0]), ended(1, 0, 0, 9000)]) + "\n")
    lines = [submitted(2, [0], "other"), ended(2, 0, 0, 1), submitted(4, [3]), ended(4, 1, 2000, 3000)]
    second.write_text("\n".join([*lines, ended(4, 0, 1000, 5000)]) + "\n")
    tasks = stage_tasks([first, second], DESCRIPTION, 2)
    assert tasks == [{"index": 0, "launch": 1.0, "finish": 5.0}, {"index": 1, "launch": 2.0, "finish": 3.0}]


def _stage(seconds: float, rows: int) -> dict[str, float]:
    memory = {"peak_driver_mb": 1.0, "peak_workers_mb": 2.0}
    return {"seconds": seconds, "rows": rows, "rows_per_s": rows / seconds, **memory}


def _figures(etl_rows_per_s: float) -> dict[str, Any]:
    tasks = [{"country": "DEU", "index": 0, "launch": 0.0, "finish": 3.0}]
    train = {**_stage(4.0, 100), "ideal_makespan_s": 3.0, "ideal_makespan_tasks_s": 3.5, "tasks": tasks}
    train["ideal_makespan_functions_s"] = 3.3
    publish = {**_stage(2.0, 50), "erp_write_s": 1.5, "raw_copy": _stage(0.5, 50), "spark_jdbc": _stage(20.0, 50)}
    return {
        "world": {"raw_rows": 1000},
        "etl": _stage(1000 / etl_rows_per_s, 1000),
        "train_score": train,
        "train_score_name_order": {**train, "seconds": 5.0},
        "joblib": _stage(3.2, 100),
        "publish": publish,
        "probes": {"cases": [_probe(1000, 1, 210.0), _probe(3000, 1, 230.0), _probe(3000, 2, 900.0)]},
    }


def _probe(rows: int, threads: int, peak_mb: float) -> dict[str, float]:
    return {"rows": rows, "threads": threads, "peak_mb": peak_mb, "peak_virtual_mb": peak_mb + 1000}


def test_ratios_compare_figures_of_the_same_run() -> None:
    found = ratios(_figures(500.0))
    assert math.isclose(found["train_score_vs_ideal_makespan"], 4.0 / 3.0)
    assert math.isclose(found["train_score_vs_ideal_makespan_functions"], 4.0 / 3.3)
    assert math.isclose(found["end_to_end_vs_joblib"], 4.0 / 3.2)
    assert math.isclose(found["publish_vs_raw_copy"], 0.25)
    assert math.isclose(found["publish_vs_spark_jdbc"], 10.0)
    assert math.isclose(found["largest_first_vs_name_order"], 0.8)


def test_summary_and_report_carry_every_ratio(tmp_path: Path) -> None:
    runs = {"small": _figures(500.0), "medium": _figures(450.0)}
    sizes = {name: {**figures, **ratios(figures)} for name, figures in runs.items()}
    document = summarise(sizes)
    assert math.isclose(document["etl_per_row_scaling"], 0.9)
    assert finite_ratios(document)
    report.write(document, tmp_path, "2026-11-23")
    text = (tmp_path / "latest.md").read_text()
    assert all(f"`{key}`" in text for key in [*report.RATIOS, "etl_per_row_scaling"])
    assert {path.name for path in tmp_path.glob("*.png")} >= {"latest-stages.png", "latest-train_tasks.png"}
    sizes["small"]["publish_vs_raw_copy"] = math.nan
    assert not finite_ratios(document)


def test_measured_times_the_block_and_sees_this_process() -> None:
    with measured(poll_s=0.01) as sample:
        block = bytearray(50 * 1024 * 1024)
    assert sample.seconds > 0 and sample.driver_mb >= 50 and len(block)


def test_measured_sees_the_largest_python_worker_peaks_after_it_ended() -> None:
    allocate = "block = bytearray(200 * 1024 * 1024); import time; time.sleep(0.5)"
    with measured(poll_s=0.01) as sample:
        subprocess.run([sys.executable, "-c", allocate], check=True)
    assert sample.largest_worker_mb >= 200 and sample.largest_worker_virtual_mb >= sample.largest_worker_mb
    assert sample.workers_mb >= 200


def test_each_python_worker_may_take_the_executors_pyspark_memory_over_its_cores() -> None:
    assert worker_limit_mb({"spark.executor.pyspark.memory": "8g", "spark.executor.cores": "2"}) == 4096
    assert worker_limit_mb({"spark.executor.pyspark.memory": "1536M", "spark.executor.cores": "1"}) == 1536


def test_memory_model_fits_one_threaded_probes_and_gives_the_largest_country_per_limit() -> None:
    model = report.memory_model({"sizes": {"small": _figures(500.0)}})
    assert math.isclose(model["resident_mb_per_million_rows"], 10_000.0)  # 20 MB per 2000 rows
    assert math.isclose(model["resident_base_mb"], 200.0)
    assert math.isclose(model["virtual_base_mb"], 1200.0)
    assert math.isclose(report.largest_country_rows(model, "virtual", 1300.0), 10_000.0)
    assert report.largest_country_rows(model, "virtual", 1000.0) == 0.0


def test_the_yarn_bench_reads_jobs_from_a_zstd_event_log_and_counts_overlapping_jobs_once(tmp_path: Path) -> None:
    lines = [
        _event("SparkListenerJobStart", **{"Job ID": 0, "Submission Time": 1_000}),
        _event("SparkListenerJobStart", **{"Job ID": 1, "Submission Time": 2_000}),
        _event("SparkListenerJobEnd", **{"Job ID": 0, "Completion Time": 3_000}),
        _event("SparkListenerJobEnd", **{"Job ID": 1, "Completion Time": 4_000}),
        _event("SparkListenerJobStart", **{"Job ID": 2, "Submission Time": 6_000}),
        _event("SparkListenerJobEnd", **{"Job ID": 2, "Completion Time": 6_500}),
        _event("SparkListenerJobStart", **{"Job ID": 3, "Submission Time": 7_000}),
    ]
    # Spark's rolling log: a folder of numbered parts, here compressed.
    rolled = tmp_path / "eventlog_v2_local-1"
    rolled.mkdir()
    for number, part in ((1, lines[:3]), (2, lines[3:])):
        compressed = zstandard.ZstdCompressor().compress("\n".join(part).encode())
        (rolled / f"events_{number}_local-1.zstd").write_bytes(compressed)
    (rolled / "appstatus_local-1").write_text("")
    (tmp_path / "eventlog_v2_local-2").mkdir()
    spans = yarn.job_spans(yarn.event_log(str(tmp_path), "local-1"))
    # The job that never ended (the log was cut) is left out.
    assert spans == [(1.0, 3.0), (2.0, 4.0), (6.0, 6.5)]
    assert yarn.busy_seconds(spans) == 3.5


def test_the_publish_scale_bench_copies_each_countrys_rows_into_new_countries_with_unique_articles(
    tmp_path: Path,
) -> None:
    source = RunContext(RUN_DATE_OF_BENCH, "medium", raw=str(tmp_path / "raw"), work=str(tmp_path / "source"))
    for name in ("predictions", "candidates"):
        rows = pa.table({"country": ["DEU", "DEU", "FRA"], "article_id": ["A1", "A2", "A1"], "value": [1.0, 2.0, 3.0]})
        pq.write_to_dataset(rows, getattr(source.layout, name), partition_cols=["country"])
    write_json(source.layout.country_results, {"DEU": {"country": "DEU"}, "FRA": {"country": "FRA"}})
    target = RunContext(RUN_DATE_OF_BENCH, "scale", raw=str(tmp_path / "raw"), work=str(tmp_path / "target"))

    assert stand_in_outputs(source, target, copies=3) == {"predictions": 9, "candidates": 9}

    copied = ds.dataset(target.layout.predictions, format="parquet", partitioning="hive").to_table().to_pandas()
    assert copied.groupby("country")["article_id"].apply(sorted).to_dict() == {
        "DEU": ["A1-0", "A2-0"],
        "FRA": ["A1-0"],
        "GBR": ["A1-1", "A2-1"],
        "ITA": ["A1-1"],
        "ESP": ["A1-2", "A2-2"],
        "NLD": ["A1-2"],
    }
    assert {code: result["country"] for code, result in read_json(target.layout.country_results).items()} == {
        code: code for code in ("DEU", "FRA", "GBR", "ITA", "ESP", "NLD")
    }


def test_save_results_writes_the_days_document_and_the_latest(tmp_path: Path) -> None:
    save_results(tmp_path / "results", "etl-scale-", {"sizes": {}})
    written = sorted(path.name for path in (tmp_path / "results").iterdir())
    today = datetime.now(timezone.utc).date().isoformat()
    assert written == sorted([f"etl-scale-{today}.json", "etl-scale-latest.json"])
    assert all(json.loads(path.read_text()) == {"sizes": {}} for path in (tmp_path / "results").iterdir())
    # A run that began on another day names its document by that day.
    save_results(tmp_path / "results", "yarn-", {"sizes": {}}, "2026-12-01")
    assert (tmp_path / "results" / "yarn-2026-12-01.json").is_file()
