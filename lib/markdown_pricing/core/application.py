"""What a run's Spark applications are called and where they log their events: for spark-submit and the session."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from markdown_pricing.core.config import Config
from markdown_pricing.core.storage import join

EVENT_LOG_FOLDER = "spark-events"


def app_name(cfg: Config, stage: str, run_date: str | None = None) -> str:
    """Names applications so the Spark UI and History Server show stage and run date."""
    return " ".join(part for part in (f"{cfg.spark.app_name_prefix}-{stage}", run_date) if part)


def event_log_conf(cfg: Config) -> dict[str, str]:
    """Where an application logs its events: the configured folder, else <work>/spark-events."""
    conf = cfg.spark.conf
    if conf.get("spark.eventLog.enabled", "false").lower() != "true" or "spark.eventLog.dir" in conf:
        return {}
    folder = join(cfg.paths.work, EVENT_LOG_FOLDER)
    # A bare path would be resolved against Hadoop's default filesystem, which is HDFS on a cluster.
    return {"spark.eventLog.dir": folder if urlparse(folder).scheme else Path(folder).as_uri()}
