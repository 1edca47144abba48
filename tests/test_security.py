"""The ERP password never appears on a command line, in the job's output, or in Spark's event log (which is
what the Spark UI and History Server show)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
from pathlib import Path
from types import MappingProxyType

import pytest
from pyspark.sql import SparkSession

from markdown_pricing.core.config import ErpSettings, load_config, with_paths
from markdown_pricing.core.context import RunContext
from markdown_pricing.core.schemas import PREDICTIONS
from markdown_pricing.core.storage import write_json
from markdown_pricing.orchestrate.submit import job_command, submit_environment

# The publish job through spark-submit.
pytestmark = pytest.mark.slow

RUN_DATE = dt.date(2026, 11, 23)
SECRET = "s3cr3t-must-not-leak"
METRICS = {"train_rows": 100, "holdout_rows": 10, "model_wape": 0.3, "model_bias": 0.0, "baseline_wape": 0.4}


def test_publish_job_keeps_password_out_of_command_output_and_event_log(
    spark: SparkSession, tmp_path: Path, erp_settings: ErpSettings
) -> None:
    events = tmp_path / "events"
    events.mkdir()
    cfg = with_paths(load_config("local"), raw=str(tmp_path / "raw"), work=str(tmp_path / "work"))
    conf = {
        **cfg.spark.conf,
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": events.as_uri(),
        "spark.eventLog.compress": "false",  # searched as text below
        # A secret-looking setting, as an operator might pass one to YARN executors: it must show redacted.
        "spark.executorEnv.PGPASSWORD": SECRET,
    }
    cfg = dataclasses.replace(cfg, spark=dataclasses.replace(cfg.spark, conf=MappingProxyType(conf)), erp=erp_settings)
    ctx = RunContext(RUN_DATE, "security", raw=cfg.paths.raw, work=cfg.paths.work)
    spark.createDataFrame(
        [("DEU", "A1", 50.0, 0.0, 0.1, 45.0, 3.0, 120.0, 0.8, 10, 100.0, 20.0, 0.6, 8, None)], PREDICTIONS
    ).write.partitionBy("country").parquet(ctx.layout.predictions)
    write_json(ctx.layout.country_results, {"DEU": {"status": "trained", **METRICS}})

    command = job_command(dataclasses.replace(cfg, spark=load_config("local").spark), "publish", ctx)
    assert not any(SECRET in part for part in command)
    command = job_command(cfg, "publish", ctx)
    env = submit_environment(cfg)
    env.update(
        {
            "MARKDOWN_ERP_DSN": f"{erp_settings.dsn}&password={SECRET}",
            "PGPASSWORD": SECRET,
            "MARKDOWN_HOME": str(cfg.project_root),
        }
    )
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-3000:]
    assert SECRET not in result.stdout + result.stderr
    # Spark 4 writes a rolling event log: a folder of files per application.
    event_log = "".join(path.read_text(errors="replace") for path in events.rglob("*") if path.is_file())
    assert '"Event":"SparkListenerEnvironmentUpdate"' in event_log
    assert "spark.executorEnv.PGPASSWORD" in event_log and "*********(redacted)" in event_log
    assert SECRET not in event_log
    assert os.environ.get("PGPASSWORD") != SECRET
