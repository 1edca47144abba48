"""The Spark UI explains a run: a real ETL job is submitted, and its event log is read back through a History
Server's REST API (what the History Server's pages show)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from pyspark.sql import SparkSession

from markdown_pricing.core.config import load_config, with_paths
from markdown_pricing.core.session import ensure_local_event_log_dir, spark_job
from markdown_pricing.core.storage import read_json
from markdown_pricing.orchestrate.submit import main as submit_main
from markdown_pricing.orchestrate.submit import spark_submit_command, submit_environment
from markdown_pricing.synthetic.sample import generate_sample
from servers import free_port, stop

RUN_DATE = dt.date(2026, 11, 23)
RUN_ID = RUN_DATE.isoformat()
BIN = Path(sys.executable).parent
DATASETS = ("articles", "sales", "prices", "stock")
APP_WAIT_S = 60


@dataclass(frozen=True)
class EtlApp:
    api: str  # .../api/v1/applications/<id>
    name: str
    raw: Path
    work: Path
    injected: dict[str, int]

    def get(self, path: str) -> Any:
        return get_json(f"{self.api}/{path}")

    def jobs(self, description: str) -> list[dict[str, Any]]:
        return [job for job in self.get("jobs") if job.get("description") == description]

    def stages(self, description: str) -> list[dict[str, Any]]:
        """Every attempt of every stage of the jobs with this description, from the stage detail pages."""
        ids = sorted({stage for job in self.jobs(description) for stage in job["stageIds"]})
        return [attempt for stage in ids for attempt in self.get(f"stages/{stage}")]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def rows(folder: Path) -> int:
    return ds.dataset(folder, format="parquet", partitioning="hive").count_rows()


def wait_for_application(server: str, name: str, server_log: Path) -> str:
    deadline = time.monotonic() + APP_WAIT_S
    while time.monotonic() < deadline:
        try:
            apps = get_json(f"{server}/api/v1/applications?status=completed")
        except OSError:  # not listening yet
            apps = []
        found = [app["id"] for app in apps if app["name"] == name]
        if found:
            return str(found[0])
        time.sleep(1)
    raise AssertionError(f"{name!r} not listed after {APP_WAIT_S} s; server log:\n{server_log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def etl_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtlApp]:
    root = tmp_path_factory.mktemp("spark-ui")
    sample = generate_sample(root / "raw", countries=2, articles=20, weeks=12, seed=3, run_date=RUN_DATE)
    cfg = with_paths(load_config("local"), raw=str(root / "raw"), work=str(root / "work"))
    # The job's default event log folder; the History Server wants it to exist when it starts.
    events = root / "work" / "spark-events"
    events.mkdir(parents=True)
    port = free_port()
    history_opts = (
        f"-Dspark.history.fs.logDirectory={events.as_uri()} -Dspark.history.ui.port={port} "
        "-Dspark.history.fs.update.interval=1s"
    )
    server_log = root / "history-server.log"
    with server_log.open("w") as log:
        # Started first so it is up by the time the job ends; spark-class execs java, so this is the server's PID.
        server = subprocess.Popen(
            [str(BIN / "spark-class"), "org.apache.spark.deploy.history.HistoryServer"],
            env={
                **os.environ,
                "PATH": f"{BIN}:{os.environ['PATH']}",
                "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_HISTORY_OPTS": history_opts,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        run_args = ["--run-date", RUN_ID, "--raw", cfg.paths.raw, "--work", cfg.paths.work]
        result = subprocess.run(
            spark_submit_command(cfg, "etl", run_args, RUN_ID),
            env=submit_environment(cfg),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        name = f"markdown-etl {RUN_ID}"
        server_url = f"http://127.0.0.1:{port}"
        app_id = wait_for_application(server_url, name, server_log)
        yield EtlApp(f"{server_url}/api/v1/applications/{app_id}", name, root / "raw", root / "work", sample.injected)
    finally:
        stop(server)


@pytest.mark.slow
def test_history_server_lists_the_etl_run_by_stage_and_run_date(etl_app: EtlApp) -> None:
    app = get_json(etl_app.api)
    assert app["name"] == "markdown-etl 2026-11-23"
    assert app["attempts"][0]["completed"]


@pytest.mark.slow
def test_every_etl_job_carries_the_run_group_and_a_description(etl_app: EtlApp) -> None:
    jobs = etl_app.get("jobs")
    assert {job.get("jobGroup") for job in jobs} == {f"etl-{RUN_ID}"}
    assert {job.get("description") for job in jobs} == {
        "ETL: check raw schemas",
        "ETL: check the sales reach the run's week",
        *(f"ETL: read and check {name}" for name in DATASETS),
        "ETL: write quarantine",
        "ETL: write curated weekly",
        "ETL: write article states",
        "ETL: profile the input for the drift check",
    }
    assert all(job["status"] == "SUCCEEDED" for job in jobs)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_read_stage_shows_the_rows_the_sample_wrote(etl_app: EtlApp, dataset: str) -> None:
    stages = etl_app.stages(f"ETL: read and check {dataset}")
    # One stage scans the raw files; the others read cached, checked rows (counted in batches, not rows).
    scanned = max(stage["inputRecords"] for stage in stages)
    assert scanned == rows(etl_app.raw / dataset)
    assert read_json(str(etl_app.work / "runs" / RUN_ID / "etl_record.json"))[dataset]["rows"] == scanned


@pytest.mark.slow
def test_quarantine_stage_shows_every_rejected_row(etl_app: EtlApp) -> None:
    written = sum(stage["outputRecords"] for stage in etl_app.stages("ETL: write quarantine"))
    # Duplicates are dropped, and sales after the run date are outside its window: neither is quarantined.
    bad_rows = sum(
        count for kind, count in etl_app.injected.items() if kind not in ("sales_duplicates", "sales_after_run_date")
    )
    record = read_json(str(etl_app.work / "runs" / RUN_ID / "etl_record.json"))
    assert written == bad_rows == sum(counts["rejected"] for counts in record.values())
    assert written == rows(etl_app.work / "runs" / RUN_ID / "quarantine")


@pytest.mark.slow
def test_curated_weekly_stage_shows_the_rows_written(etl_app: EtlApp) -> None:
    written = sum(stage["outputRecords"] for stage in etl_app.stages("ETL: write curated weekly"))
    assert written == rows(etl_app.work / "runs" / RUN_ID / "curated" / "weekly") > 0


def test_spark_job_labels_the_jobs_in_its_block_and_restores_the_previous_labels(spark: SparkSession) -> None:
    context = spark.sparkContext
    context.setJobGroup("outer", "outer work")
    try:
        with spark_job(spark, "etl-test", "ETL: count ten rows"):
            assert context.getLocalProperty("spark.job.description") == "ETL: count ten rows"
            spark.range(10).count()
        assert context.statusTracker().getJobIdsForGroup("etl-test")
        assert (context.getLocalProperty("spark.jobGroup.id"), context.getLocalProperty("spark.job.description")) == (
            "outer",
            "outer work",
        )
        with pytest.raises(ZeroDivisionError), spark_job(spark, "etl-test", "ETL: fails"):
            raise ZeroDivisionError
        assert context.getLocalProperty("spark.job.description") == "outer work"
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
        context.setLocalProperty("spark.job.description", None)
    assert context.getLocalProperty("spark.job.description") is None


def test_spark_submit_command_logs_events_under_the_work_folder(tmp_path: Path) -> None:
    cfg = with_paths(load_config("local"), work=str(tmp_path / "work"))
    command = spark_submit_command(cfg, "etl", ["--run-date", RUN_ID], RUN_ID)
    assert "spark.eventLog.enabled=true" in command
    assert f"spark.eventLog.dir={(tmp_path / 'work' / 'spark-events').as_uri()}" in command
    assert "spark.eventLog.compression.codec=zstd" in command


def test_spark_submit_command_keeps_the_configured_yarn_event_log_and_the_sites_history_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "spark-yarn.conf"
    site.write_text("spark.yarn.historyServer.address historyserver:18080\n")
    monkeypatch.setenv("MARKDOWN_YARN_SPARK_CONF", str(site))
    cfg = with_paths(load_config("yarn"), work="hdfs:///data/markdown")
    command = spark_submit_command(cfg, "train_score", ["--run-date", RUN_ID], RUN_ID)
    assert "spark.eventLog.dir=hdfs:///spark-history" in command
    assert "spark.yarn.historyServer.address=historyserver:18080" in command


@pytest.mark.slow
def test_submit_script_puts_the_event_log_in_the_work_folder_it_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit_main(["etl", "--dry-run", "--run-date", RUN_ID, "--work", str(tmp_path / "w")]) == 0
    line = capsys.readouterr().out
    assert f"spark.eventLog.dir={(tmp_path / 'w' / 'spark-events').as_uri()}" in line
    assert "--name 'markdown-etl 2026-11-23'" in line


def test_ensure_local_event_log_dir_creates_only_local_enabled_folders(tmp_path: Path) -> None:
    local, disabled = tmp_path / "events", tmp_path / "off"
    ensure_local_event_log_dir({"spark.eventLog.enabled": "true", "spark.eventLog.dir": local.as_uri()})
    ensure_local_event_log_dir({"spark.eventLog.enabled": "false", "spark.eventLog.dir": disabled.as_uri()})
    ensure_local_event_log_dir({"spark.eventLog.enabled": "true", "spark.eventLog.dir": "hdfs://nn:8020/history"})
    assert local.is_dir() and not disabled.exists()
