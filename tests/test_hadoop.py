"""The weekly run on a real Hadoop: HDFS and YARN of `markdown-pricing hadoop start` on 127.0.0.1.

Every stage runs as a YARN application, in client and in cluster deploy mode, on hdfs:// raw and work folders, and
publishes the rows local mode publishes. A killed task leaves its application KILLED on the ResourceManager; a
_SUCCESS marker that appears on HDFS while the run waits starts it; the report and the History Server read HDFS.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from markdown_pricing.core.config import ErpSettings, load_config
from markdown_pricing.core.context import RunContext, load_run_config
from markdown_pricing.core.storage import filesystem, join, read_json
from markdown_pricing.erp.connection import connect
from markdown_pricing.erp.schema import migrate
from markdown_pricing.orchestrate import cli
from markdown_pricing.orchestrate.retention import human_size
from markdown_pricing.orchestrate.tasks import RawDataset
from markdown_pricing.stages import etl_job, publish_job, train_score_job
from servers import free_port, stop

# A Hadoop of its own, and each stage a YARN application that costs tens of seconds to start.
pytestmark = pytest.mark.hadoop

RUN_DATE = dt.date(2026, 11, 23)
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
# Compared between local mode and YARN: what buyers see, not which run wrote it.
ROW_COLUMNS = (
    "country, article_id, valid_from, current_price, recommended_discount, recommended_price, "
    "predicted_units_next_week, expected_revenue, expected_sell_through"
)
APP_WAIT_S = 240


def rows(dsn: str) -> pd.DataFrame:
    with closing(connect(dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {ROW_COLUMNS} FROM markdown.predictions ORDER BY country, article_id")
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def applications(resourcemanager: str) -> list[dict[str, str]]:
    """The ResourceManager's applications, from its web UI's table (its /apps REST resource is broken in the
    shaded minicluster jar: the JSON it writes carries protobuf internals)."""
    with urllib.request.urlopen(f"{resourcemanager}/cluster/apps", timeout=30) as response:
        page = response.read().decode()
    table = json.loads(re.search(r"appsTableData=(\[.*?\n\])", page, re.DOTALL).group(1))  # type: ignore[union-attr]
    fields = (
        "id",
        "user",
        "name",
        "type",
        "tags",
        "queue",
        "priority",
        "started",
        "launched",
        "finished",
        "state",
        "final_status",
    )
    found = [dict(zip(fields, row[: len(fields)], strict=True)) for row in table]
    for app in found:
        app["id"] = re.sub(r"<[^>]+>", "", app["id"])
    return found


def state(resourcemanager: str, application_id: str) -> str:
    url = f"{resourcemanager}/ws/v1/cluster/apps/{application_id}/state"
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(json.load(response)["state"])


@pytest.fixture(scope="module")
def yarn(hadoop: dict[str, str], erp_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The dev cluster with the release deployed, a raw root on HDFS, and an ERP database of the module's own."""
    env = {
        **os.environ,
        **{key: value for key, value in hadoop.items() if key.isupper()},
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    env["MARKDOWN_ERP_DSN"] = database_of_its_own(erp_dsn, "yarn_tests")
    started = time.monotonic()
    deployed = subprocess.run(
        [str(BIN / "markdown-pricing"), "deploy", "--env", "yarn"], env=env, capture_output=True, text=True, timeout=900
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    deploy_s = time.monotonic() - started
    # The same world twice: on this machine for local mode, and on HDFS, written by `generate-sample` itself.
    world = [
        "--countries",
        "3",
        "--articles",
        "40",
        "--weeks",
        "30",
        "--seed",
        "5",
        "--run-date",
        RUN_DATE.isoformat(),
        "--tiny-country-weeks",
        "0",
    ]
    local_raw, raw = tmp_path_factory.mktemp("hadoop") / "raw", "hdfs:///tests/raw"
    for out in (str(local_raw), raw):
        written = subprocess.run(
            [str(BIN / "markdown-pricing"), "generate-sample", "--out", out, *world],
            env=env,
            capture_output=True,
            text=True,
        )
        assert written.returncode == 0, written.stderr
    previous = {key: os.environ.get(key) for key in ("HADOOP_CONF_DIR", "MARKDOWN_WEBHDFS_URL")}
    os.environ.update({key: hadoop[key] for key in previous})
    try:
        assert filesystem(raw).list(raw) == ["articles", "prices", "sales", "stock"]
        yield {
            "env": env,
            "raw": raw,
            "local_raw": local_raw,
            "dsn": env["MARKDOWN_ERP_DSN"],
            "server_dsn": erp_dsn,
            "deploy_s": deploy_s,
        }
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def database_of_its_own(server_dsn: str, name: str) -> str:
    """A fresh database `name` on the session's ERP server, and its DSN."""
    with closing(connect(server_dsn, 5)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
            cur.execute(f"CREATE DATABASE {name}")
    return re.sub(r"^postgresql://([^/]*)/postgres", rf"postgresql://\1/{name}", server_dsn)


@pytest.fixture(scope="module")
def local_rows(yarn: dict[str, Any], spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """What local mode publishes for the same input: its three stages in this process's local session (the command
    line's local run is the end-to-end tests'). file:// paths, as the default filesystem here is HDFS."""
    work = tmp_path_factory.mktemp("local-work").as_uri()
    ctx = RunContext(RUN_DATE, "local", raw=Path(yarn["local_raw"]).as_uri(), work=work)
    cfg = load_run_config(ctx)
    cfg = dataclasses.replace(cfg, erp=dataclasses.replace(cfg.erp, dsn=yarn["dsn"]))
    for stage in (etl_job, train_score_job, publish_job):
        assert stage.run(spark, ctx, cfg) == 0, stage.__name__
    return rows(yarn["dsn"])


DEPLOY_MODES = ("client", "cluster")


@pytest.fixture(scope="module")
def yarn_runs(
    yarn: dict[str, Any], hadoop: dict[str, str], local_rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """The weekly run on YARN in each deploy mode, on hdfs:// folders: the rows it published, its applications.
    Both modes run at once, each publishing to an ERP database of its own (one publisher per run date and ERP)."""
    logs = tmp_path_factory.mktemp("yarn-runs")
    started = {}
    for deploy_mode in DEPLOY_MODES:
        work, run_id = f"hdfs:///tests/work-{deploy_mode}", f"yarn-{deploy_mode}"
        dsn = database_of_its_own(yarn["server_dsn"], f"yarn_tests_{deploy_mode}")
        env = {**yarn["env"], "MARKDOWN_DEPLOY_MODE": deploy_mode, "MARKDOWN_ERP_DSN": dsn}
        command = [
            *(str(BIN / "markdown-pricing"), "run", "--run-date", RUN_DATE.isoformat(), "--wait-for-inputs", "0"),
            *("--env", "yarn", "--run-id", run_id, "--raw", yarn["raw"], "--work", work),
        ]
        with (logs / f"{deploy_mode}.log").open("w") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        started[deploy_mode] = (process, work, run_id, dsn)
    try:
        for process, *_ in started.values():
            process.wait(timeout=1200)
    finally:
        for process, *_ in started.values():
            stop(process)
    runs = {}
    for deploy_mode, (process, work, run_id, dsn) in started.items():
        assert process.returncode == 0, (logs / f"{deploy_mode}.log").read_text()[-6000:]
        # Each stage records the YARN application it ran as.
        stages = join(work, "runs", run_id, "stages")
        ids = {
            read_json(join(stages, name))["application_id"]
            for name in filesystem(stages).list(stages)
            if name.endswith(".json")
        }
        apps = [app for app in applications(hadoop["resourcemanager"]) if app["id"] in ids]
        seconds = {app["name"]: (int(app["finished"]) - int(app["started"])) / 1000 for app in apps}
        print(f"\n{deploy_mode} mode, seconds each application ran on YARN: {seconds}")
        runs[deploy_mode] = {"rows": rows(dsn), "apps": apps, "work": work, "run_id": run_id, "dsn": dsn}
    print(f"deploy took {yarn['deploy_s']:.0f} s")
    return runs


@pytest.mark.parametrize("deploy_mode", DEPLOY_MODES)
def test_weekly_run_on_yarn_publishes_the_rows_local_mode_publishes(
    yarn_runs: dict[str, dict[str, Any]], local_rows: pd.DataFrame, deploy_mode: str
) -> None:
    ran = yarn_runs[deploy_mode]

    pd.testing.assert_frame_equal(ran["rows"], local_rows)
    assert sorted((app["name"], app["type"], app["state"], app["final_status"]) for app in ran["apps"]) == sorted(
        (f"markdown-{stage} {RUN_DATE}", "SPARK", "FINISHED", "SUCCEEDED")
        for stage in ("etl", "train-score", "publish")
    )
    # Every output is on HDFS, the report of the run too.
    run_dir = join(ran["work"], "runs", ran["run_id"])
    for output in ("predictions/_SUCCESS", "country_results.json", "report.html"):
        assert filesystem(run_dir).exists(join(run_dir, output)), output
    assert "Markdown pricing run" in filesystem(run_dir).read_text(join(run_dir, "report.html"))


def test_report_and_status_read_an_hdfs_work_folder(yarn: dict[str, Any], yarn_runs: dict[str, dict[str, Any]]) -> None:
    work, run_id = yarn_runs["client"]["work"], yarn_runs["client"]["run_id"]
    cli = [str(BIN / "markdown-pricing")]
    env = {**yarn["env"], "MARKDOWN_ERP_DSN": yarn_runs["client"]["dsn"]}

    report = subprocess.run([*cli, "report", "--work", work], env=env, capture_output=True, text=True)
    status = subprocess.run([*cli, "status", "--work", work], env=env, capture_output=True, text=True)

    assert report.returncode == 0 and report.stdout.strip() == f"{work}/runs/{run_id}/report.html", report.stderr
    assert status.returncode == 0 and run_id in status.stdout, status.stderr


def test_a_success_marker_written_during_the_wait_starts_the_run(yarn: dict[str, Any]) -> None:
    raw = "hdfs:///tests/late-raw"
    hdfs = filesystem(raw)
    hdfs.write_text(join(raw, "sales", "part-0.parquet.placeholder"), "")
    threading.Timer(3.0, hdfs.write_text, (join(raw, "sales", "_SUCCESS"), "")).start()
    started = time.monotonic()

    assert RawDataset(dataset="sales", raw_uri=raw, wait_s=60, poll_s=0.5).complete()
    assert 3.0 <= time.monotonic() - started < 60
    assert not RawDataset(dataset="stock", raw_uri=raw, wait_s=1, poll_s=0.5).complete()


def test_a_killed_run_leaves_its_yarn_application_killed(yarn: dict[str, Any], hadoop: dict[str, str]) -> None:
    before = {app["id"] for app in applications(hadoop["resourcemanager"])}
    command = [
        str(BIN / "markdown-pricing"),
        "run",
        "--run-date",
        RUN_DATE.isoformat(),
        "--run-id",
        "yarn-killed",
        "--env",
        "yarn",
        "--raw",
        yarn["raw"],
        "--work",
        "hdfs:///tests/work-killed",
        "--wait-for-inputs",
        "0",
    ]
    worker = subprocess.Popen(command, env=yarn["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + APP_WAIT_S
        running: list[dict[str, str]] = []
        while not running and time.monotonic() < deadline:
            time.sleep(1)
            running = [
                app
                for app in applications(hadoop["resourcemanager"])
                if app["id"] not in before and app["state"] == "RUNNING"
            ]
        assert running, "no application of the run reached RUNNING"

        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=120)
    finally:
        stop(worker)

    assert worker.returncode != 0
    assert f"killed YARN application {running[0]['id']}" in output, output[-3000:]
    assert state(hadoop["resourcemanager"], running[0]["id"]) == "KILLED"


def test_history_server_reads_the_event_logs_on_hdfs(
    yarn: dict[str, Any], yarn_runs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    port = free_port()
    options = f"-Dspark.history.fs.logDirectory=hdfs:///spark-history -Dspark.history.ui.port={port}"
    log = tmp_path / "history.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(BIN / "spark-class"), "org.apache.spark.deploy.history.HistoryServer"],
            env={**yarn["env"], "SPARK_HISTORY_OPTS": options},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        names: set[str] = set()
        deadline = time.monotonic() + APP_WAIT_S
        while f"markdown-publish {RUN_DATE}" not in names and time.monotonic() < deadline:
            time.sleep(2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/applications", timeout=10) as response:
                    names = {app["name"] for app in json.load(response)}
            except OSError:
                continue
    finally:
        stop(server)

    assert {f"markdown-{stage} {RUN_DATE}" for stage in ("etl", "train-score", "publish")} <= names, log.read_text()[
        -3000:
    ]


def test_run_on_yarn_without_a_release_names_deploy(
    yarn: dict[str, Any], hadoop: dict[str, str], tmp_path: Path
) -> None:
    site = tmp_path / "spark-yarn.conf"
    site.write_text(
        Path(hadoop["MARKDOWN_YARN_SPARK_CONF"]).read_text()
        + "spark.submit.pyFiles hdfs:///apps/markdown-pricing/0.0.0-never-deployed/markdown_pricing.whl\n"
    )
    command = [
        str(BIN / "markdown-pricing"),
        "run",
        "--run-date",
        RUN_DATE.isoformat(),
        "--env",
        "yarn",
        "--raw",
        yarn["raw"],
        "--work",
        "hdfs:///tests/work-none",
    ]

    result = subprocess.run(
        command, env={**yarn["env"], "MARKDOWN_YARN_SPARK_CONF": str(site)}, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 2
    assert "0.0.0-never-deployed/markdown_pricing.whl" in result.stderr
    assert "run `markdown-pricing deploy --env yarn` first" in result.stderr
    assert not filesystem("hdfs:///tests").exists("hdfs:///tests/work-none")


def test_gc_removes_an_old_run_its_models_and_event_log_on_hdfs(
    hadoop: dict[str, str],
    erp_settings: ErpSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key in ("HADOOP_CONF_DIR", "MARKDOWN_WEBHDFS_URL"):
        monkeypatch.setenv(key, hadoop[key])
    work = "hdfs:///tests/gc-work"
    fs = filesystem(work)
    for run_id, application in (("2026-11-16", "application_1_0001"), ("2026-11-23", "application_1_0002")):
        fs.write_text(join(work, "runs", run_id, "run.json"), json.dumps({"run_id": run_id, "run_date": run_id}))
        fs.write_text(join(work, "runs", run_id, "stages", "etl.json"), json.dumps({"application_id": application}))
        fs.write_text(join(work, "models", run_id, "AUT", "model.txt"), "m" * 1000)
        fs.write_text(join(work, "spark-events", f"{application}_1.zstd"), "e" * 100)
    with closing(connect(erp_settings.dsn, 5)) as conn:
        migrate(conn, erp_settings)
    cfg = dataclasses.replace(load_config("local"), erp=erp_settings)
    monkeypatch.setattr(cli, "load_config", lambda env: cfg)
    old_run = join(work, "runs", "2026-11-16")
    record = json.dumps({"run_id": "2026-11-16", "run_date": "2026-11-16"})
    stage = json.dumps({"application_id": "application_1_0001"})
    removed = [old_run, join(work, "models", "2026-11-16"), join(work, "spark-events", "application_1_0001_1.zstd")]
    try:
        assert fs.size(old_run) == len(record) + len(stage)

        assert cli.main(["gc", "--keep-weeks", "1", "--work", work]) == 0

        lines = capsys.readouterr().out.splitlines()
        assert [line.split("  ")[:2] for line in lines[:3]] == [["remove", uri] for uri in removed]
        assert lines[-1] == f"freed {human_size(len(record) + len(stage) + 1000 + 100)}"
        assert not any(fs.exists(uri) for uri in removed)
        assert fs.list(join(work, "runs")) == fs.list(join(work, "models")) == ["2026-11-23"]
        assert fs.size(old_run) == 0
    finally:
        fs.delete(work)
