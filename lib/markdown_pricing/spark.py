"""The one SparkSession factory."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from pyspark.sql import SparkSession

from markdown_pricing.config import Config


def app_name(cfg: Config, stage: str, run_date: str | None = None) -> str:
    """Names applications so the Spark UI and History Server show stage and run date."""
    return " ".join(part for part in (f"{cfg.spark.app_name_prefix}-{stage}", run_date) if part)


def build_session(
    cfg: Config, stage: str, run_date: str | None = None, *, extra_conf: Mapping[str, str] | None = None
) -> SparkSession:
    """Builds (or joins) the session for one stage.

    Under spark-submit the command line, built from this same config, already set master, name and conf;
    setting them again here would override a cluster deploy mode. Run directly (tests), the config applies.
    """
    builder = SparkSession.builder
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):
        # Python workers must run this interpreter, the one that has the package and its dependencies.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.appName(app_name(cfg, stage, run_date)).master(cfg.spark.master)
        for key, value in {**cfg.spark.conf, **(extra_conf or {})}.items():
            builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def task_cpus(default: int = 1) -> int:
    """CPUs Spark gave the current task: LightGBM must not use more threads than this."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return default
    cpus = context.cpus()
    return int(cpus) if cpus else default
