"""The one SparkSession factory, and the labels that make the Spark UI and History Server explain a run."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from markdown_pricing.core.application import app_name, event_log_conf
from markdown_pricing.core.config import Config
from markdown_pricing.core.storage import local_path

SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"

# The local properties SparkContext.setJobGroup sets; restored after each labelled block.
JOB_LABEL_PROPERTIES = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")


def ensure_local_event_log_dir(conf: Mapping[str, str]) -> None:
    """Creates a local event log folder: Spark refuses to start when it is missing."""
    folder = conf.get("spark.eventLog.dir")
    enabled = conf.get("spark.eventLog.enabled", "false").lower() == "true"
    if enabled and folder and urlparse(folder).scheme in ("", "file"):
        local_path(folder).mkdir(parents=True, exist_ok=True)


def build_session(
    cfg: Config, stage: str, run_date: str | None = None, *, extra_conf: Mapping[str, str] | None = None
) -> SparkSession:
    """Builds (or joins) the session for one stage.

    Under spark-submit the command line, built from this same config, already set master, name and conf;
    setting them again here would override a cluster deploy mode. Run directly (tests), the config applies.
    """
    conf = {**cfg.spark.conf, **event_log_conf(cfg), **(extra_conf or {})}
    ensure_local_event_log_dir(conf)
    builder = SparkSession.builder
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):
        # Python workers must run this interpreter, the one that has the package and its dependencies.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.appName(app_name(cfg, stage, run_date)).master(cfg.spark.master)
        for key, value in conf.items():
            builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


@contextmanager
def spark_job(spark: SparkSession, group: str, description: str) -> Iterator[None]:
    """Labels the Spark jobs started in the block (the UI's job group and description), then restores the labels."""
    context = spark.sparkContext
    previous = {key: context.getLocalProperty(key) for key in JOB_LABEL_PROPERTIES}
    context.setJobGroup(group, description)
    try:
        yield
    finally:
        for key, value in previous.items():
            # None removes the property, so no later action runs under this block's description.
            context.setLocalProperty(key, value)  # type: ignore[arg-type]


def shuffle_partitions_setting(spark: SparkSession) -> int:
    # A SQL setting always has a value (Spark's own default when nothing set it).
    return int(str(spark.conf.get(SHUFFLE_PARTITIONS)))


@contextmanager
def shuffle_partitions(spark: SparkSession, partitions: int) -> Iterator[None]:
    """Runs the block's shuffles in this many partitions, then gives the session back its own setting."""
    previous = shuffle_partitions_setting(spark)
    spark.conf.set(SHUFFLE_PARTITIONS, partitions)
    try:
        yield
    finally:
        spark.conf.set(SHUFFLE_PARTITIONS, previous)


def task_cpus(default: int = 1) -> int:
    """CPUs Spark gave the current task: LightGBM must not use more threads than this."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return default
    cpus = context.cpus()
    return int(cpus) if cpus else default
