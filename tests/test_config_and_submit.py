"""The config loader and the spark-submit command lines built from it."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest

from markdown_pricing.core.config import ConfigError, load_config, project_root, with_paths
from markdown_pricing.orchestrate.submit import spark_submit_command, submit_environment

ROOT = project_root()


def test_load_config_resolves_relative_paths_against_project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MARKDOWN_RAW", raising=False)
    monkeypatch.delenv("MARKDOWN_WORK", raising=False)
    cfg = load_config("local")
    # A file:// URI: a bare path would be read from HDFS wherever HADOOP_CONF_DIR names a default filesystem.
    assert cfg.paths.raw == (ROOT / ".demo" / "raw").as_uri()
    assert cfg.spark.master == "local[2]"
    assert cfg.run.ladder == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def test_load_config_keeps_hdfs_uris_and_overlays_environment_file() -> None:
    cfg = load_config("yarn")
    assert cfg.paths.work.startswith("hdfs://")
    assert cfg.spark.master == "yarn"
    assert cfg.spark.conf["spark.sql.session.timeZone"] == "UTC"  # from base.toml
    assert cfg.spark.conf["spark.executor.cores"] == "2"


def test_load_config_takes_erp_dsn_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKDOWN_ERP_DSN", "host=erp.example dbname=erp")
    assert load_config("local").erp.dsn == "host=erp.example dbname=erp"


def test_load_config_rejects_unknown_environment() -> None:
    with pytest.raises(ConfigError, match="unknown environment 'prod'"):
        load_config("prod")


def test_load_config_names_a_missing_key(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    base = (ROOT / "conf" / "base.toml").read_text()
    (tmp_path / "conf" / "base.toml").write_text(base.replace("[model", "[modle"))
    (tmp_path / "conf" / "local.toml").write_text("")
    with pytest.raises(ConfigError, match="'model'"):
        load_config("local", root=tmp_path)


def test_with_paths_replaces_raw_and_work() -> None:
    cfg = with_paths(load_config("local"), raw="hdfs://nn:8020/raw", work="/data/work")
    assert (cfg.paths.raw, cfg.paths.work) == ("hdfs://nn:8020/raw", "file:///data/work")


def test_spark_submit_command_carries_conf_name_and_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKDOWN_ERP_DSN", "host=erp user=markdown password=s3cret")
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    cfg = load_config("local")
    command = spark_submit_command(cfg, "train_score", ["--run-date", "2026-11-23"], "2026-11-23")
    assert command[1:5] == ["--master", "local[2]", "--deploy-mode", "client"]
    assert command[5:7] == ["--name", "markdown-train-score 2026-11-23"]
    assert "spark.sql.shuffle.partitions=8" in command
    assert command[-3:] == [str(ROOT / "jobs" / "train_score.py"), "--run-date", "2026-11-23"]
    assert not any("s3cret" in part for part in command)


def test_spark_submit_command_refuses_unknown_job() -> None:
    with pytest.raises(ValueError, match="unknown job 'train'"):
        spark_submit_command(load_config("local"), "train", [])


def test_submit_environment_pins_python_and_loopback_for_local() -> None:
    env = submit_environment(load_config("local"))
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert Path(env["PYSPARK_PYTHON"]).exists()


def test_submit_environment_keeps_the_alerts_secrets_from_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKDOWN_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("MARKDOWN_ALERT_WEBHOOK_URL", "https://hooks.example.com/T0KEN")
    monkeypatch.setenv("MARKDOWN_ERP_DSN", "host=erp dbname=erp")
    env = submit_environment(load_config("local"))
    assert "MARKDOWN_SMTP_PASSWORD" not in env and "MARKDOWN_ALERT_WEBHOOK_URL" not in env
    # What the stages need stays.
    assert env["MARKDOWN_ERP_DSN"] == "host=erp dbname=erp"


def test_submit_script_dry_run_prints_yarn_command() -> None:
    result = subprocess.run(
        [str(ROOT / "spark-submit" / "submit.sh"), "etl", "--env", "yarn", "--dry-run", "--run-date", "2026-11-23"],
        capture_output=True,
        text=True,
        check=True,
    )
    line = result.stdout.strip()
    assert "--master yarn" in line and "spark.yarn.queue=markdown" in line
    # The job gets the whole run, with the yarn environment's configured paths filled in.
    paths = load_config("yarn").paths
    assert line.endswith(
        f"jobs/etl.py --run-date 2026-11-23 --run-id 2026-11-23 --raw {paths.raw} --work {paths.work} --env yarn"
    )


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ({"price_endings": {"GBR": 1.99}}, "run.price_endings of GBR"),
        ({"max_markdown_steps": -1}, "must not be negative"),
    ],
)
def test_run_level_pricing_rules_are_checked_when_the_config_loads(run: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(load_config("local").run, **run)


def test_the_etls_bytes_per_shuffle_partition_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="etl.raw_bytes_per_shuffle_partition must be positive, not 0"):
        dataclasses.replace(load_config("local").etl, raw_bytes_per_shuffle_partition=0)


def test_the_price_responses_sample_needs_at_least_one_row() -> None:
    with pytest.raises(ConfigError, match="max_rows >= 1, got .* and 0"):
        dataclasses.replace(load_config("local").model.price_response, max_rows=0)
