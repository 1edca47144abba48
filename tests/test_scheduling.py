"""Scheduling: URIs and markers, the Luigi settings, the cron line, the backfill and what killing a stage does.

The backfill runs the real pipeline (spark-submit in local mode, embedded PostgreSQL) under a real `luigid` on
127.0.0.1, whose API then tells each task's state. The kill test interrupts a real child process; the `yarn`
command it calls is a small script that records its arguments, not YARN.
"""

from __future__ import annotations

import configparser
import dataclasses
import datetime as dt
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pandas as pd
import pytest

from markdown_pricing.core.config import ErpSettings, load_config, project_root
from markdown_pricing.core.context import mondays
from markdown_pricing.core.storage import (
    LocalFileSystem,
    RunLayout,
    WebHdfsFileSystem,
    filesystem,
    has_success_marker,
    webhdfs_url,
)
from markdown_pricing.erp import connection, schema, writer
from markdown_pricing.observe import logs
from markdown_pricing.orchestrate.cli import parser
from markdown_pricing.orchestrate.launcher import LaunchedApplication, kill_yarn_application, yarn_kill_command
from markdown_pricing.orchestrate.tasks import Etl, Publish, SparkStage, TrainScore, WeeklyBackfill, WeeklyRun
from markdown_pricing.synthetic.sample import generate_sample
from servers import free_port, running_luigid
from servers import luigid_api as api

BIN = Path(sys.executable).parent
CONF = project_root() / "conf"
WEEKS = (dt.date(2026, 11, 9), dt.date(2026, 11, 16), dt.date(2026, 11, 23))
# Two weeks show the order as well as three do, at two thirds of the Spark applications.
BACKFILLED = WEEKS[-2:]


# --- storage: one abstraction over local paths and hdfs:// -----------------------------------------------------


@pytest.mark.parametrize("uri", ["/data/raw/sales", "relative/raw", "file:///data/raw/sales"])
def test_filesystem_serves_bare_and_file_uris_locally(uri: str) -> None:
    assert isinstance(filesystem(uri), LocalFileSystem)


def test_filesystem_serves_hdfs_through_webhdfs_at_the_namenode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MARKDOWN_WEBHDFS_URL", raising=False)
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("MARKDOWN_WEBHDFS_KERBEROS", raising=False)
    served = filesystem("hdfs://namenode:8020/data/landing/markdown/sales/_SUCCESS")
    assert isinstance(served, WebHdfsFileSystem)
    assert served.url == "http://namenode:9870"


@pytest.mark.parametrize("uri", ["s3://bucket/raw", "gs://bucket/raw", "abfs://c@a.dfs.core.windows.net/raw"])
def test_filesystem_refuses_unknown_schemes_naming_the_uri(uri: str) -> None:
    with pytest.raises(ValueError, match=f"unsupported URI scheme .* in {re.escape(uri)}"):
        filesystem(uri)


def test_webhdfs_url_prefers_the_configured_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKDOWN_WEBHDFS_URL", "https://nn1:9871;https://nn2:9871")
    assert webhdfs_url("hdfs://nameservice1/data") == "https://nn1:9871;https://nn2:9871"


def test_webhdfs_url_of_the_default_filesystem_must_be_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MARKDOWN_WEBHDFS_URL", raising=False)
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    with pytest.raises(ValueError, match="hdfs:///data/raw names no namenode: set HADOOP_CONF_DIR"):
        webhdfs_url("hdfs:///data/raw")


def test_webhdfs_url_of_the_default_filesystem_comes_from_hadoop_conf_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    site = "<configuration><property><name>{}</name><value>{}</value></property></configuration>"
    (tmp_path / "core-site.xml").write_text(site.format("fs.defaultFS", "hdfs://127.0.0.1:41000"))
    (tmp_path / "hdfs-site.xml").write_text(site.format("dfs.namenode.http-address", "0.0.0.0:41001"))
    monkeypatch.delenv("MARKDOWN_WEBHDFS_URL", raising=False)
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))

    assert webhdfs_url("hdfs:///data/raw") == webhdfs_url("hdfs://127.0.0.1:41000/data") == "http://127.0.0.1:41001"
    assert webhdfs_url("hdfs://other-nn:8020/data") == "http://other-nn:9870"


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("hdfs://namenode:8020/data/markdown/runs/r1/results.json", "/data/markdown/runs/r1/results.json"),
        ("hdfs:///data/landing/sales/_SUCCESS", "/data/landing/sales/_SUCCESS"),
        ("hdfs://namenode:8020", "/"),
    ],
)
def test_webhdfs_path_drops_scheme_and_namenode(uri: str, path: str) -> None:
    assert WebHdfsFileSystem.path(uri) == path


def test_webhdfs_path_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="is not an hdfs:// URI"):
        WebHdfsFileSystem.path("file:///data/raw")


@pytest.mark.parametrize("as_uri", [str, lambda path: path.as_uri()])
def test_success_marker_on_the_local_filesystem(tmp_path: Path, as_uri: object) -> None:
    folder = tmp_path / "raw" / "sales"
    folder.mkdir(parents=True)
    uri = as_uri(folder)  # type: ignore[operator]
    assert not has_success_marker(uri)
    (folder / "_SUCCESS").touch()
    assert has_success_marker(uri)


# --- Luigi settings, cron line, backfill range --------------------------------------------------------------------


def test_luigi_cfg_sets_retries_and_caps_spark_applications_and_erp_connections() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(CONF / "luigi.cfg")
    assert (cfg.getint("scheduler", "retry_count"), cfg.getint("scheduler", "retry_delay")) == (3, 300)
    assert dict(cfg["resources"]) == {"spark_applications": "2", "erp_connections": "1"}
    assert cfg.has_section("spark")


def test_stages_claim_the_resources_luigi_cfg_caps() -> None:
    week = {"run_date": WEEKS[0]}
    assert Etl(**week).resources == TrainScore(**week).resources == {"spark_applications": 1}
    assert Publish(**week).resources == {"spark_applications": 1, "erp_connections": 1}


def cron_entries() -> list[list[str]]:
    lines = (CONF / "cron" / "markdown-pricing.cron").read_text().splitlines()
    # Comments and NAME=value settings are not entries.
    return [line.split(maxsplit=5) for line in lines if line.strip() and not re.match(r"\s*(#|\w+=)", line)]


def test_cron_runs_mondays_at_eight_one_run_at_a_time() -> None:
    [entry] = cron_entries()
    minute, hour, day_of_month, month, day_of_week, command = entry
    assert (minute, hour, day_of_month, month, day_of_week) == ("0", "8", "*", "*", "1")
    # Cron ends the command at the first unescaped %.
    assert not re.search(r"(?<!\\)%", command)
    assert "flock -n " in command


def test_cron_command_parses_with_the_cli_on_a_monday() -> None:
    command = cron_entries()[0][5].replace("\\%", "%").replace('"$(date +%F)"', "2026-11-23")
    words = shlex.split(command.split(" && ")[-1].split(">>")[0])
    args = parser().parse_args(words[words.index(".venv/bin/markdown-pricing") + 1 :])
    assert (args.command, args.run_date, args.env) == ("run", dt.date(2026, 11, 23), "yarn")
    # Through the central luigid of conf/systemd/luigid.service, on its address and port.
    luigid = shlex.split(luigid_unit()["ExecStart"][0])
    address, port = luigid[luigid.index("--address") + 1], luigid[luigid.index("--port") + 1]
    assert args.scheduler_url == f"http://{address}:{port}/"


def luigid_unit() -> dict[str, list[str]]:
    """conf/systemd/luigid.service: each key's values (systemd allows a key more than once)."""
    unit: dict[str, list[str]] = {}
    for line in (CONF / "systemd" / "luigid.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            unit.setdefault(key, []).append(value)
    return unit


def test_luigid_unit_reads_the_projects_luigi_cfg_and_keeps_its_state_and_history_in_its_state_directory() -> None:
    unit = luigid_unit()
    environment = dict(value.split("=", 1) for value in unit["Environment"])
    [exec_start] = unit["ExecStart"]
    command = shlex.split(exec_start)
    assert Path(command[0]).name == "luigid"
    assert environment["LUIGI_CONFIG_PATH"].endswith("/conf/luigi.cfg")
    state_dir = environment["LUIGID_STATE_DIR"]
    assert unit["StateDirectory"] == [Path(state_dir).name]
    assert command[command.index("--state-path") + 1].startswith(state_dir + "/")
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(CONF / "luigi.cfg")
    assert cfg.getboolean("scheduler", "record_task_history")
    assert "${LUIGID_STATE_DIR}/" in cfg["task_history"]["db_connection"]


def test_backfill_command_parses_a_range_of_mondays() -> None:
    args = parser().parse_args(["backfill", "--from", "2026-11-02", "--to", "2026-11-23", "--override-gate", "DEU"])
    assert (args.command, args.start, args.end, args.override_gate) == (
        "backfill",
        dt.date(2026, 11, 2),
        dt.date(2026, 11, 23),
        ["DEU"],
    )
    with pytest.raises(SystemExit):
        parser().parse_args(["backfill", "--from", "2026-11-03", "--to", "2026-11-23"])


def test_backfill_requires_each_monday_oldest_first_and_publishes_oldest_first() -> None:
    backfill = WeeklyBackfill(start=dt.date(2026, 11, 2), end=dt.date(2026, 11, 23))
    weeks = backfill.requires()
    assert [run.run_date for run in weeks] == [dt.date(2026, 11, d) for d in (2, 9, 16, 23)]
    assert all(isinstance(run, WeeklyRun) and run.ctx.run_id == run.run_date.isoformat() for run in weeks)
    # The scheduler hands out the highest priority first; a WrapperTask's 0 must not raise the weeks' own.
    priorities = [week.priority for week in weeks]
    assert priorities == sorted(priorities, reverse=True) and min(priorities) > backfill.priority


def test_mondays_refuses_other_days_and_reversed_ranges() -> None:
    assert mondays(WEEKS[2], WEEKS[2]) == [WEEKS[2]]
    with pytest.raises(ValueError, match="backfill start 2026-11-17 is a Tuesday"):
        mondays(dt.date(2026, 11, 17), WEEKS[2])
    with pytest.raises(ValueError, match="end 2026-11-16 is before its start 2026-11-23"):
        mondays(WEEKS[2], WEEKS[1])


# --- killing a stage -----------------------------------------------------------------------------------------------


def test_launched_application_reads_id_and_tracking_url_off_spark_submit_output() -> None:
    output = [
        "26/11/23 08:00:01 INFO Client: Requesting a new application from cluster with 4 NodeManagers\n",
        "26/11/23 08:00:02 INFO YarnClientImpl: Submitted application application_1763884800000_0042\n",
        "\t tracking URL: http://rm:8088/proxy/application_1763884800000_0042/\n",
    ]
    launched = LaunchedApplication()
    assert list(launched.watch(iter(output))) == output
    assert launched.application_id == "application_1763884800000_0042"
    assert launched.tracking_url == "http://rm:8088/proxy/application_1763884800000_0042/"


def test_yarn_kill_command_uses_the_configured_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MARKDOWN_YARN_BIN", "/opt/hadoop/bin/yarn")
    assert yarn_kill_command("application_1_0001") == [
        "/opt/hadoop/bin/yarn",
        "application",
        "-kill",
        "application_1_0001",
    ]
    monkeypatch.delenv("MARKDOWN_YARN_BIN")
    monkeypatch.setenv("HADOOP_HOME", str(tmp_path))
    assert yarn_kill_command("application_1_0001")[0] == str(tmp_path / "bin" / "yarn")


# A stand-in for spark-submit: starts a grandchild (as spark-submit starts the driver JVM), reports a YARN
# application like the YARN client does, then runs until stopped.
FAKE_SUBMIT = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(sys.argv[1]).write_text(f"{grandchild.pid}")
    print("26/11/23 08:00:02 INFO YarnClientImpl: Submitted application application_1234_0001", flush=True)
    time.sleep(600)
    """
)
# Stands in for `yarn`: records its arguments.
RECORD_ARGS = '#!/bin/sh\nprintf \'%s\\n\' "$@" > "$(dirname "$0")/yarn-argv"\n'
# The worker: a Luigi build of one SparkStage that runs FAKE_SUBMIT, in a process of its own to be SIGTERMed.
WORKER = textwrap.dedent(
    """
    import datetime as dt, sys
    from pathlib import Path
    import luigi
    from markdown_pricing.orchestrate.tasks import SparkStage

    class Sleeper(SparkStage):
        job = "sleeper"
        poll_s = 0.1

        def command(self):
            return [sys.executable, sys.argv[1], sys.argv[2]]

        def complete(self):
            return False

    result = luigi.build([Sleeper(run_date=dt.date(2026, 11, 23), work_uri=sys.argv[3])], local_scheduler=True)
    print("worker finished", result, flush=True)
    """
)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a container's init may be slow to reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_to_the_worker_stops_the_job_group_and_kills_its_yarn_application(tmp_path: Path, erp_dsn: str) -> None:
    (tmp_path / "submit.py").write_text(FAKE_SUBMIT)
    (tmp_path / "worker.py").write_text(WORKER)
    yarn = tmp_path / "yarn"
    yarn.write_text(RECORD_ARGS)
    yarn.chmod(0o755)
    pid_file = tmp_path / "grandchild.pid"
    env = {
        **os.environ,
        "MARKDOWN_YARN_BIN": str(yarn),
        "LUIGI_CONFIG_PATH": str(CONF / "luigi.cfg"),
        "MARKDOWN_ERP_DSN": erp_dsn,
    }
    worker = subprocess.Popen(
        [sys.executable, *(str(tmp_path / name) for name in ("worker.py", "submit.py", "grandchild.pid", "work"))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log = logs.stage_log_path(RunLayout(raw="", work=str(tmp_path / "work"), run_id="2026-11-23"), "sleeper")
        deadline = time.monotonic() + 60
        while not (log.exists() and "application_1234_0001" in log.read_text()):
            assert time.monotonic() < deadline and worker.poll() is None, worker.stdout.read()  # type: ignore[union-attr]
            time.sleep(0.1)
        grandchild = int(pid_file.read_text())
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert "sleeper for run 2026-11-23 interrupted: stopping it" in output
    assert "stopped by signal SIGTERM" in output
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(grandchild)
    assert (tmp_path / "yarn-argv").read_text().split() == ["application", "-kill", "application_1234_0001"]


def test_a_missing_yarn_command_is_logged_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MARKDOWN_YARN_BIN", str(tmp_path / "no-such-yarn"))
    kill_yarn_application("application_1234_0002")
    assert "kill YARN application application_1234_0002 by hand" in caplog.text


# --- a two-week backfill under a real luigid -----------------------------------------------------------------------


@contextmanager
def central_luigid(folder: Path, **changes: dict[str, str]) -> Iterator[tuple[Path, int]]:
    """conf/luigi.cfg pointed at a luigid of the test's own, which reads the same file (with the options of `changes`,
    section -> options, changed) and records its task history under `folder`."""
    port = free_port()
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(CONF / "luigi.cfg")
    cfg["core"]["default_scheduler_url"] = f"http://127.0.0.1:{port}/"
    for section, options in changes.items():
        cfg[section].update(options)
    path = folder / "luigi.cfg"
    with path.open("w") as out:
        cfg.write(out)
    with running_luigid(folder, port, env={**os.environ, "LUIGI_CONFIG_PATH": str(path)}):
        yield path, port


@pytest.fixture()
def central_config(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    with central_luigid(tmp_path) as config:
        yield config


def erp_rows(dsn: str, query: str) -> list[tuple[object, ...]]:
    with closing(connection.connect(dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute(query)
        return list(cur.fetchall())


def drop_markdown_schema(dsn: str) -> None:
    with closing(connection.connect(dsn, 5)) as conn, conn, conn.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS markdown CASCADE")


class PollingReader(threading.Thread):
    """An ERP reader that takes one consistent snapshot after another of what each country shows: its run, its week,
    its row count and the count the ledger says that run wrote. Keeps every distinct snapshot."""

    QUERY = """
        SELECT p.country, p.run_id, p.valid_from, count(*), min(l.rows), count(DISTINCT p.article_id)
        FROM markdown.predictions AS p
        LEFT JOIN markdown.publish_ledger AS l ON l.run_id = p.run_id AND l.country = p.country
        GROUP BY p.country, p.run_id, p.valid_from ORDER BY 1, 2
    """

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.snapshots, self.done = dsn, [], threading.Event()

    def run(self) -> None:
        with closing(connection.connect(self.dsn, 5)) as conn:
            conn.set_session(readonly=True, autocommit=True)
            while not self.done.is_set():
                with conn.cursor() as cur:
                    cur.execute(self.QUERY)
                    snapshot = cur.fetchall()
                if not self.snapshots or snapshot != self.snapshots[-1]:
                    self.snapshots.append(snapshot)
                time.sleep(0.02)


@pytest.mark.slow
def test_backfill_of_two_weeks_through_luigid_publishes_oldest_first_and_never_replaces_a_newer_week(
    central_config: tuple[Path, int], tmp_path: Path, erp_dsn: str
) -> None:
    config_path, port = central_config
    raw, work = tmp_path / "raw", tmp_path / "work"
    # Data up to the last week: each earlier week leaves the sales on or after its run date out of its window.
    summary = generate_sample(
        raw, countries=2, articles=40, weeks=30, seed=3, run_date=WEEKS[-1], inject_bad_rows=False
    )
    newer_country, *backfilled = summary.countries
    newer_week = WEEKS[-1] + dt.timedelta(weeks=1)
    drop_markdown_schema(erp_dsn)
    settings = dataclasses.replace(load_config("local").erp, dsn=erp_dsn)
    with closing(connection.connect(erp_dsn, 5)) as conn:
        schema.migrate(conn, settings)
        frame = pd.DataFrame(
            {
                "country": [newer_country],
                "article_id": ["A-newer"],
                "current_price": [50.0],
                "recommended_discount": [0.1],
                "recommended_price": [45.0],
                "predicted_units_next_week": [3.0],
                "expected_revenue": [120.0],
                "expected_sell_through": [0.8],
            }
        )
        writer.publish_country(
            conn,
            settings,
            run_id="newer",
            run_date=newer_week,
            country=newer_country,
            predictions=frame,
            model_version="newer/model",
            metrics={},
        )
    env = {
        **os.environ,
        "MARKDOWN_ERP_DSN": erp_dsn,
        "LUIGI_CONFIG_PATH": str(config_path),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    # The gate compares each week with the ERP's rows; overriding keeps every week publishing on any sample.
    overrides = [part for country in summary.countries for part in ("--override-gate", country)]
    reader = PollingReader(erp_dsn)
    reader.start()
    try:
        result = subprocess.run(
            [
                str(BIN / "markdown-pricing"),
                "backfill",
                "--from",
                BACKFILLED[0].isoformat(),
                "--to",
                WEEKS[-1].isoformat(),
                "--raw",
                str(raw),
                "--work",
                str(work),
                *overrides,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        reader.done.set()
        reader.join()
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

        ledger = erp_rows(
            erp_dsn, "SELECT run_id, country, status FROM markdown.publish_ledger WHERE run_id <> 'newer'"
        )
        weeks = [week.isoformat() for week in BACKFILLED]
        expected = [(week, country, "published") for week in weeks for country in backfilled]
        expected += [(week, newer_country, "superseded") for week in weeks]
        assert sorted(ledger) == sorted(expected)
        published = erp_rows(
            erp_dsn, "SELECT DISTINCT country, run_id, valid_from FROM markdown.predictions ORDER BY 1"
        )
        assert published == sorted(
            [(newer_country, "newer", newer_week)] + [(c, weeks[-1], WEEKS[-1]) for c in backfilled]
        )
        order = erp_rows(
            erp_dsn,
            "SELECT run_id FROM markdown.publish_ledger WHERE status = 'published' "
            "GROUP BY 1 ORDER BY max(recorded_at)",
        )
        assert [row[0] for row in order] == ["newer", *weeks]
    finally:
        reader.done.set()
        drop_markdown_schema(erp_dsn)

    # What the reader saw: one run and one week per country at a time (no mix), exactly the rows its ledger row
    # counts (no gap, no double), a country never gone once there, and a country's week never going back.
    assert len(reader.snapshots) >= 2
    weeks_seen: dict[str, list[dt.date]] = {}
    for snapshot in reader.snapshots:
        countries = [row[0] for row in snapshot]
        assert len(countries) == len(set(countries)), snapshot
        assert set(weeks_seen) <= set(countries), snapshot
        for country, _run_id, week, rows, ledger_rows, articles in snapshot:
            assert rows == ledger_rows == articles, snapshot
            weeks_seen.setdefault(country, []).append(week)
    assert weeks_seen[newer_country] == [newer_week] * len(weeks_seen[newer_country])
    for country in backfilled:
        assert weeks_seen[country] == sorted(weeks_seen[country])
        assert set(weeks_seen[country]) == set(BACKFILLED)

    done = api(port, "task_list", status="DONE")
    families = {
        family: sorted(t["params"]["run_date"] for t in done.values() if t["name"] == family)
        for family in ("WeeklyRun", "Etl", "TrainScore", "Publish")
    }
    assert families == {family: weeks for family in families}
    assert any(t["name"] == "WeeklyBackfill" for t in done.values())
    for status in ("PENDING", "RUNNING", "FAILED", "DISABLED"):
        assert api(port, "task_list", status=status) == {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/resource_list", timeout=5) as response:
        resources = {r["name"]: r["num_total"] for r in json.load(response)["response"]}
    assert resources == {"spark_applications": 2, "erp_connections": 1}


def test_a_stage_past_its_time_limit_is_stopped_with_its_yarn_application_and_fails_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, erp_settings: ErpSettings
) -> None:
    (tmp_path / "submit.py").write_text(FAKE_SUBMIT)
    yarn = tmp_path / "yarn"
    yarn.write_text(RECORD_ARGS)
    yarn.chmod(0o755)
    monkeypatch.setenv("MARKDOWN_YARN_BIN", str(yarn))
    pid_file = tmp_path / "grandchild.pid"

    class Hanging(SparkStage):
        job = "hanging"
        poll_s = 0.1

        def command(self) -> list[str]:
            return [sys.executable, str(tmp_path / "submit.py"), str(pid_file)]

    task = Hanging(run_date=WEEKS[-1], work_uri=str(tmp_path / "work"))
    task.cfg = dataclasses.replace(
        task.cfg, erp=erp_settings, schedule=dataclasses.replace(task.cfg.schedule, stage_timeout_s={"hanging": 3})
    )
    started = time.monotonic()
    with pytest.raises(
        RuntimeError,
        match=r"hanging for run 2026-11-23 failed with exit code 124: timed out: it ran "
        r"past schedule.stage_timeout_s.hanging = 3 s and was stopped with its Spark application",
    ):
        task.run()

    # Stopped at its limit, not when the job would have ended (600 s), with its YARN application and its children.
    assert time.monotonic() - started < 60
    assert (tmp_path / "yarn-argv").read_text().split() == ["application", "-kill", "application_1234_0001"]
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(grandchild)


# --- the central scheduler: caps that hold across runs, and its task history ---------------------------------------

# Stands in for a Spark application: writes when it started and, three seconds later, when it ended.
APPLICATION = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    times = Path(sys.argv[1])
    times.write_text(f"{time.time()}\\n")
    time.sleep(3)
    times.write_text(times.read_text() + f"{time.time()}\\n")
    """
)
# A stage that runs APPLICATION; the worker builds it for one run date through luigid.
CAPPED_WORKER = textwrap.dedent(
    """
    import datetime as dt, sys
    from pathlib import Path
    import luigi
    from markdown_pricing.orchestrate.tasks import SparkStage, build_waiting_for_resources

    class Capped(SparkStage):
        job = "capped"
        poll_s = 0.1

        def command(self):
            times = Path(sys.argv[3]) / f"{self.run_date}.times"
            return [sys.executable, str(Path(sys.argv[3]) / "application.py"), str(times)]

        def complete(self):
            times = Path(sys.argv[3]) / f"{self.run_date}.times"
            return times.exists() and len(times.read_text().split()) == 2

    run_date, work, folder, url = dt.date.fromisoformat(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    capped = Capped(run_date=run_date, work_uri=work)
    result = build_waiting_for_resources([capped], poll_s=0.5, max_wait_s=120, scheduler_url=url)
    sys.exit(0 if result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS else 1)
    """
)


@pytest.mark.slow
def test_luigid_caps_spark_applications_across_runs_and_records_each_tasks_history(
    tmp_path: Path, erp_dsn: str
) -> None:
    (tmp_path / "worker.py").write_text(CAPPED_WORKER)
    (tmp_path / "application.py").write_text(APPLICATION)
    weeks = WEEKS[-2:]
    with central_luigid(tmp_path, resources={"spark_applications": "1"}) as (config_path, port):
        env = {**os.environ, "LUIGI_CONFIG_PATH": str(config_path), "MARKDOWN_ERP_DSN": erp_dsn}
        # Two runs of different weeks (so no run-folder lock orders them), started together.
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(tmp_path / "worker.py"),
                    week.isoformat(),
                    str(tmp_path / "work"),
                    str(tmp_path),
                    f"http://127.0.0.1:{port}/",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for week in weeks
        ]
        outputs = [worker.communicate(timeout=120)[0] for worker in workers]
        assert [worker.returncode for worker in workers] == [0, 0], outputs
    first, second = sorted(
        [float(stamp) for stamp in (tmp_path / f"{week}.times").read_text().split()] for week in weeks
    )
    # With one Spark application allowed, the second run's stage waited for the first one's to end.
    assert second[0] >= first[1]
    with closing(sqlite3.connect(tmp_path / "task-history.sqlite")) as history:
        events = history.execute(
            "SELECT p.value, e.event_name FROM tasks AS t JOIN task_events AS e ON e.task_id = t.id "
            "JOIN task_parameters AS p ON p.task_id = t.id AND p.name = 'run_date' "
            "WHERE t.name = 'Capped' ORDER BY e.id"
        ).fetchall()
    for week in weeks:
        # Scheduled (again at each ask while it waited), run once, done.
        week_events = [event for value, event in events if value == week.isoformat()]
        assert set(week_events[:-2]) == {"PENDING"}
        assert week_events[-2:] == ["RUNNING", "DONE"]


# A task that always fails, built once plainly and then as `run` builds its tasks.
FAILING_WORKER = textwrap.dedent(
    """
    import sys
    import luigi
    from markdown_pricing.orchestrate.tasks import SchedulerRefusedError, build_waiting_for_resources

    class Failing(luigi.Task):
        def complete(self):
            return False

        def run(self):
            raise RuntimeError("boom")

    url = sys.argv[1]
    print("first", luigi.build([Failing()], detailed_summary=True, scheduler_url=url).status.name, flush=True)
    try:
        build_waiting_for_resources([Failing()], poll_s=0.5, max_wait_s=600, scheduler_url=url)
    except SchedulerRefusedError as err:
        print("refused:", err, flush=True)
    """
)


@pytest.mark.slow
def test_a_stage_luigid_disabled_after_repeated_failures_stops_the_wait_at_once_saying_so(tmp_path: Path) -> None:
    (tmp_path / "worker.py").write_text(FAILING_WORKER)
    with central_luigid(tmp_path, scheduler={"retry_count": "1"}) as (config_path, port):
        worked = subprocess.run(
            [sys.executable, str(tmp_path / "worker.py"), f"http://127.0.0.1:{port}/"],
            env={**os.environ, "LUIGI_CONFIG_PATH": str(config_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    lines = [line for line in worked.stdout.splitlines() if line.startswith(("first", "refused"))]
    # Not 600 s of polling: luigid disabled the task after its one allowed failure.
    assert lines == [
        "first FAILED",
        "refused: the scheduler disabled Failing() after repeated failures (luigi.cfg [scheduler] retry_count within "
        "disable_window): re-enable it on luigid's page, then run again",
    ], worked.stdout + worked.stderr
