"""A real Spark standalone cluster on 127.0.0.1: a master and two workers from the pip pyspark, each advertising
two GPUs through a discovery script. The ETL and train+score jobs are submitted with the `standalone` profile;
their predictions must equal a local-mode run's, and every country must have trained in a task that held a GPU
address of its own, falling back to CPU because the workers have no OpenCL device."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from markdown_pricing.core.config import Config, GpuSettings, load_config, with_paths
from markdown_pricing.core.context import RunContext, load_run_config
from markdown_pricing.core.storage import RunLayout, local_path, read_json
from markdown_pricing.orchestrate.submit import job_command, submit_environment
from markdown_pricing.stages import etl_job as etl
from markdown_pricing.stages import train_score_job as train_score
from markdown_pricing.synthetic.sample import generate_sample
from servers import free_port, stop

# A Spark standalone master and two workers of its own.
pytestmark = pytest.mark.cluster

RUN_DATE = dt.date(2026, 11, 23)
RUN_ID = RUN_DATE.isoformat()
BIN = Path(sys.executable).parent
# Distinct per worker, so an address also tells which worker's executor trained a country.
WORKER_GPUS = (("0", "1"), ("2", "3"))
START_WAIT_S = 60


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Starts a daemon; spark-class execs java, so the PID is the JVM's."""
    with log.open("w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_workers(master_ui: str, count: int, logs: list[Path]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        try:
            workers = [w for w in get_json(f"{master_ui}/json/")["workers"] if w["state"] == "ALIVE"]
        except OSError:  # master not listening yet
            workers = []
        if len(workers) == count:
            return workers
        time.sleep(1)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs)
    raise AssertionError(f"{count} workers not ALIVE after {START_WAIT_S} s\n{tails}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A master and two workers with 2 cores and 2 GPU addresses each; yields the master URL and the workers."""
    root = tmp_path_factory.mktemp("standalone")
    # No OpenCL runtime for the cluster's processes, so `auto` falls back to CPU even on a machine with one.
    (root / "no-opencl").mkdir()
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "OCL_ICD_VENDORS": str(root / "no-opencl"),
    }
    port, ui_port = free_port(), free_port()
    master_url, master_ui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    logs = [root / "master.log"]
    processes = [
        start(
            [
                str(BIN / "spark-class"),
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui_port),
            ],
            env,
            logs[0],
        )
    ]
    try:
        for index, addresses in enumerate(WORKER_GPUS):
            script = root / f"gpus-{index}.sh"
            script.write_text(f"#!/bin/sh\necho '{json.dumps({'name': 'gpu', 'addresses': list(addresses)})}'\n")
            script.chmod(0o755)
            worker_opts = (
                f"-Dspark.worker.resource.gpu.amount={len(addresses)} "
                f"-Dspark.worker.resource.gpu.discoveryScript={script}"
            )
            logs.append(root / f"worker-{index}.log")
            processes.append(
                start(
                    [
                        str(BIN / "spark-class"),
                        "org.apache.spark.deploy.worker.Worker",
                        master_url,
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        "2",
                        "--memory",
                        "1g",
                        "--webui-port",
                        str(free_port()),
                        "--work-dir",
                        str(root / f"worker-{index}"),
                    ],
                    {**env, "SPARK_WORKER_OPTS": worker_opts},
                    logs[-1],
                )
            )
        workers = wait_for_workers(master_ui, len(WORKER_GPUS), logs)
        yield {"master": master_url, "workers": workers, "root": root, "env": env, "logs": logs}
    finally:
        for process in reversed(processes):
            stop(process)


def cluster_config(master: str, raw: Path, work: Path) -> Config:
    """The standalone profile pointed at the test's master, with executors asking for both GPUs of a worker."""
    cfg = with_paths(load_config("standalone"), raw=str(raw), work=str(work))
    conf = {
        **cfg.spark.conf,
        # One executor per worker with both its cores and GPUs; a task takes one core and one GPU, so the two
        # countries an executor trains at once hold different addresses. Workers hand their executors the
        # addresses they discovered: no executor discovery script.
        "spark.executor.cores": "2",
        "spark.executor.memory": "1g",
        "spark.executor.resource.gpu.amount": "2",
        "spark.task.resource.gpu.amount": "1",
        # All 4 cores registered before the first job (the ratio counts against spark.cores.max) and no
        # locality wait: every country's task starts in the same scheduling round.
        "spark.cores.max": "4",
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.locality.wait": "0s",
    }
    gpu = GpuSettings(mode="auto", executor_amount=2, task_amount=1.0, discovery_script=cfg.gpu.discovery_script)
    return dataclasses.replace(cfg, spark=dataclasses.replace(cfg.spark, master=master, conf=conf), gpu=gpu)


@pytest.fixture(scope="module")
def runs(cluster: dict[str, Any], spark: SparkSession, erp_dsn: str) -> dict[str, Path]:
    """The same sample run on the cluster (spark-submit, standalone profile) and in local mode (stage functions)."""
    root = cluster["root"]
    raw = root / "raw"
    # Three countries on four GPU slots, as the assertions reason: no tiny country, and history enough
    # (min_history_weeks) for each to train in a task of its own, not in the pool's.
    generate_sample(raw, countries=3, articles=40, weeks=24, seed=5, run_date=RUN_DATE, tiny_country_weeks=0)
    cfg = cluster_config(cluster["master"], raw, root / "cluster-work")
    # This interpreter runs the driver and the executors' Python workers: it has the package and LightGBM.
    # The session's ERP, where train+score reads the buyers' rules (none): no embedded server under the work folder.
    env = {
        **submit_environment(cfg),
        **cluster["env"],
        "PYSPARK_PYTHON": sys.executable,
        "MARKDOWN_GPU_MODE": "auto",
        "MARKDOWN_ERP_DSN": erp_dsn,
    }
    for job in ("etl", "train_score"):
        ctx = RunContext(RUN_DATE, RUN_ID, raw=str(raw), work=cfg.paths.work, env="standalone")
        result = subprocess.run(job_command(cfg, job, ctx), env=env, capture_output=True, text=True, timeout=300)
        logs = "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}" for log in cluster["logs"])
        assert result.returncode == 0, f"{job}: {result.stderr[-4000:]}\n{logs}"

    local = RunContext(RUN_DATE, RUN_ID, raw=str(raw), work=str(root / "local-work"))
    local_cfg = load_run_config(local)
    local_cfg = dataclasses.replace(local_cfg, erp=dataclasses.replace(local_cfg.erp, dsn=erp_dsn))
    assert etl.run(spark, local, local_cfg) == 0
    assert train_score.run(spark, local, local_cfg) == 0
    return {"cluster": local_path(cfg.paths.work), "local": root / "local-work"}


def layout(work: Path) -> RunLayout:
    return RunLayout(raw="", work=str(work), run_id=RUN_ID)


def test_master_lists_both_workers_with_their_gpus(cluster: dict[str, Any]) -> None:
    advertised = sorted(tuple(worker["resources"]["gpu"]["addresses"]) for worker in cluster["workers"])
    assert advertised == sorted(WORKER_GPUS)


def test_cluster_predictions_equal_local_mode(runs: dict[str, Path], spark: SparkSession) -> None:
    on_cluster = spark.read.parquet(layout(runs["cluster"]).predictions)
    in_local_mode = spark.read.parquet(layout(runs["local"]).predictions)
    assert on_cluster.count() > 0
    assert_df_equality(on_cluster, in_local_mode, ignore_row_order=True)


def test_each_country_held_its_own_gpu_and_fell_back_to_cpu(runs: dict[str, Path]) -> None:
    # The first pass's records: each country in a task of its own (a fallback pass would run in one pooled task).
    output = pd.read_parquet(layout(runs["cluster"]).train_score_output)
    records = output[output["record"] == "country"]
    assert sorted(records["country"]) == sorted(read_json(layout(runs["cluster"]).country_results))
    assert set(records["status"]) <= {"trained", "needs_fallback"}
    results = records.set_index("country").to_dict("index")
    addresses = [result["task_gpus"] for result in results.values()]
    # Every country ran at once (4 task slots, at most 4 tasks), so no two shared an address; three countries on
    # two executors put two on one executor, and those two got its two different addresses.
    assert len(set(addresses)) == len(addresses)
    assert set(addresses) <= {address for pair in WORKER_GPUS for address in pair}
    assert any(set(pair) <= set(addresses) for pair in WORKER_GPUS)
    for result in results.values():
        assert result["device"].startswith(
            f"cpu (gpu fallback: LightGBM cannot use GPU {result['task_gpus']} through OpenCL: "
        ), result["device"]


def test_models_use_the_tasks_cpus_as_threads_in_both_modes(runs: dict[str, Path]) -> None:
    local_results = read_json(layout(runs["local"]).country_results)
    assert {result["device"] for result in local_results.values()} == {"cpu"}
    for work in runs.values():
        results = read_json(layout(work).country_results)
        # A country scored by its baseline's level has no model; the others have theirs, or the pooled one.
        modelled = [country for country, result in results.items() if result["model_kind"] != "baseline"]
        assert modelled
        for country in modelled:
            model_text = Path(layout(work).model_file(country)).read_text()
            assert "[num_threads: 1]" in model_text and "[device_type: cpu]" in model_text
