"""The image, built and run for real with podman and no registry image (`make images`): the weekly run inside it,
and on a Spark standalone cluster of its containers (docker/compose.standalone.yml, run with podman-compose),
publishes the same ERP rows as the run outside it. `make test-containers` runs these; CI runs it after `make test`.

The three runs share the session's PostgreSQL, each in a database of its own: the containers reach it through its
socket folder, mounted, as they would reach an ERP on the host.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from chispa import assert_df_equality
from psycopg2.extensions import make_dsn, parse_dsn
from pyspark.sql import DataFrame, SparkSession

from markdown_pricing.core.config import project_root
from markdown_pricing.erp import connection
from markdown_pricing.synthetic.sample import generate_sample
from servers import free_port

pytestmark = pytest.mark.containers

ROOT = project_root()
BIN = Path(sys.executable).parent
RUN_DATE = dt.date(2026, 11, 23)
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "docker" / "podman" / "containers.conf")}
COMPOSE_FILE = ROOT / "docker" / "compose.standalone.yml"
PREDICTIONS = """
    SELECT country, article_id, valid_from, current_price::float8, recommended_discount::float8,
           recommended_price::float8, predicted_units_next_week, expected_revenue, expected_sell_through,
           hold_expected_revenue, rule_applied, run_id, model_version
    FROM markdown.predictions
"""
# Spared inference: a column that is null in every row (no buyer rule bound anything) has no type to infer.
PREDICTIONS_SCHEMA = (
    "country string, article_id string, valid_from date, current_price double, recommended_discount double, "
    "recommended_price double, predicted_units_next_week double, expected_revenue double, "
    "expected_sell_through double, hold_expected_revenue double, rule_applied string, run_id string, "
    "model_version string"
)


@pytest.fixture(scope="module")
def image() -> str:
    """The image `make images` builds (its layers cached after the first build); its reference."""
    built = subprocess.run(
        [str(ROOT / "docker" / "build-images.sh")],
        env={**PODMAN_ENV, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert built.returncode == 0, built.stderr[-5000:]
    return built.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, erp_dsn: str) -> Iterator[dict[str, object]]:
    """A raw root, and one database per run in the session's PostgreSQL."""
    root = tmp_path_factory.mktemp("containers")
    generate_sample(root / "raw", countries=3, articles=60, weeks=40, seed=11, run_date=RUN_DATE)
    names = ("outside", "inside", "cluster")
    with closing(connection.connect(erp_dsn, 5)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f"DROP DATABASE IF EXISTS containers_{name}")
                cur.execute(f"CREATE DATABASE containers_{name}")
    yield {
        "root": root,
        "raw": root / "raw",
        "socket_dir": parse_dsn(erp_dsn)["host"],
        "dsn": {name: make_dsn(erp_dsn, dbname=f"containers_{name}") for name in names},
    }
    with closing(connection.connect(erp_dsn, 5)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f"DROP DATABASE IF EXISTS containers_{name} WITH (FORCE)")


def predictions(spark: SparkSession, dsn: str) -> DataFrame:
    with closing(connection.connect(dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute(PREDICTIONS)
        rows = cur.fetchall()
    assert rows, f"nothing published in {parse_dsn(dsn)['dbname']}"
    return spark.createDataFrame(rows, PREDICTIONS_SCHEMA)


@pytest.fixture(scope="module")
def outside(world: dict[str, object]) -> str:
    """The week run here, in local mode, as `make demo` runs it; the DSN of its database."""
    dsn = world["dsn"]["outside"]  # type: ignore[index]
    ran = subprocess.run(
        [str(BIN / "markdown-pricing"), "run", "--run-date", RUN_DATE.isoformat(), "--raw", str(world["raw"])]
        + ["--work", str(world["root"] / "outside")],  # type: ignore[operator]
        env={**os.environ, "MARKDOWN_ERP_DSN": dsn, "PATH": f"{BIN}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    return dsn


def mounts(*folders: object) -> list[str]:
    """podman's bind mounts of host folders at the same paths in the container."""
    return [option for folder in folders for option in ("--volume", f"{folder}:{folder}")]


def test_the_week_in_the_image_publishes_the_rows_of_the_run_outside_it(
    image: str, world: dict[str, object], outside: str, spark: SparkSession
) -> None:
    work = world["root"] / "inside"  # type: ignore[operator]
    work.mkdir()
    dsn = world["dsn"]["inside"]  # type: ignore[index]
    ran = subprocess.run(
        ["podman", "run", "--rm", "--init", *mounts(world["raw"], work, world["socket_dir"])]
        + ["--env", f"MARKDOWN_ERP_DSN={dsn}", image]
        + ["markdown-pricing", "run", "--run-date", RUN_DATE.isoformat(), "--raw", str(world["raw"])]
        + ["--work", str(work)],
        env=PODMAN_ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert_df_equality(predictions(spark, dsn), predictions(spark, outside), ignore_row_order=True)
    # Its model cards name the commit the image was built from.
    revision = subprocess.run(
        ["podman", "image", "inspect", "--format", '{{ index .Labels "org.opencontainers.image.revision" }}', image],
        env=PODMAN_ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    cards = list((work / "models" / RUN_DATE.isoformat()).glob("*/card.json"))
    assert cards and {json.loads(card.read_text())["git_commit"] for card in cards} == {revision}
    assert (
        revision.split("-")[0]
        == subprocess.check_output(["git", "-C", str(ROOT), "rev-parse", "HEAD"]).decode().strip()
    )


def wait_for_workers(master_ui: str, count: int) -> None:
    deadline = time.monotonic() + 120
    alive: list[object] = []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{master_ui}/json/", timeout=5) as response:
                alive = [w for w in json.load(response)["workers"] if w["state"] == "ALIVE"]
        except OSError:  # the master is not listening yet
            alive = []
        if len(alive) == count:
            return
        time.sleep(1)
    raise AssertionError(f"{len(alive)} of {count} workers ALIVE at {master_ui} after 120 s")


def test_a_standalone_cluster_of_its_containers_publishes_the_rows_of_the_run_outside_it(
    image: str, world: dict[str, object], outside: str, spark: SparkSession
) -> None:
    work, scratch = (world["root"] / name for name in ("cluster", "scratch"))  # type: ignore[operator]
    work.mkdir()
    scratch.mkdir()
    dsn = world["dsn"]["cluster"]  # type: ignore[index]
    ports = {
        name: str(free_port())
        for name in (
            "SPARK_MASTER_PORT",
            "SPARK_MASTER_UI_PORT",
            "SPARK_WORKER_1_PORT",
            "SPARK_WORKER_1_UI_PORT",
            "SPARK_WORKER_2_PORT",
            "SPARK_WORKER_2_UI_PORT",
        )
    }
    env = {
        **PODMAN_ENV,
        **ports,
        "MARKDOWN_IMAGE": image,
        "MARKDOWN_RAW": str(world["raw"]),
        "MARKDOWN_WORK": str(work),
        "MARKDOWN_ERP_DSN": dsn,
        "MARKDOWN_ERP_SOCKET_DIR": str(world["socket_dir"]),
        "SPARK_SCRATCH": str(scratch),
        "RUN_DATE": RUN_DATE.isoformat(),
    }
    compose = [str(BIN / "podman-compose"), "--project-name", f"markdown-test-{os.getpid()}", "-f", str(COMPOSE_FILE)]

    def podman_compose(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*compose, *args], env=env, capture_output=True, text=True, timeout=900)

    try:
        started = podman_compose("up", "-d", "master", "worker-1", "worker-2")
        assert started.returncode == 0, started.stderr[-3000:]
        wait_for_workers(f"http://127.0.0.1:{ports['SPARK_MASTER_UI_PORT']}", 2)
        ran = podman_compose("run", "--rm", "driver")
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    finally:
        podman_compose("down")
    assert_df_equality(predictions(spark, dsn), predictions(spark, outside), ignore_row_order=True)
    # The stages ran on the cluster, not in local mode inside the driver's container.
    applications = [entry.name for entry in (work / "spark-events").iterdir()]
    assert len(applications) == 3
    assert all(name.startswith(("app-", "eventlog_v2_app-")) for name in applications), applications
