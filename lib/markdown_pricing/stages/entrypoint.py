"""What every spark-submit job does around its stage: read the run from the command line, load the config once,
build the session, run the stage, record how it ended.

A job in jobs/ calls `job_entrypoint` with one stage's `run(spark, ctx, cfg)`; tests call `run` with their own
session, context and config.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from collections.abc import Callable, Sequence

from pyspark.sql import SparkSession

from markdown_pricing.core.config import Config
from markdown_pricing.core.context import RunContext, load_run_config
from markdown_pricing.core.errors import InputError
from markdown_pricing.core.session import build_session
from markdown_pricing.core.storage import write_json
from markdown_pricing.observe import logs

Stage = Callable[[SparkSession, RunContext, Config], int]


def configure_logging(ctx: RunContext, stage: str) -> None:
    """Log lines carry run id, stage and country so a collector can group them; they go to the stage's log file too."""
    # Launched by its Luigi task, the stage's whole output already goes to that file.
    log_file = None if os.environ.get(logs.CAPTURED_ENV) else logs.stage_log_path(ctx.layout, stage)
    logs.configure(ctx.run_id, stage, sys.stderr, logging.INFO, log_file)
    logging.getLogger("py4j").setLevel(logging.WARNING)


def job_entrypoint(stage: str, run: Stage, argv: Sequence[str] | None = None) -> int:
    """Reads the run from its arguments, loads config once, builds the session, runs the stage, returns its code."""
    ctx = RunContext.from_args(sys.argv[1:] if argv is None else argv)
    cfg = load_run_config(ctx)
    configure_logging(ctx, stage)
    spark = build_session(cfg, stage, ctx.run_date.isoformat())
    if spark_log_level := os.environ.get(logs.SPARK_LOG_LEVEL_ENV):
        spark.sparkContext.setLogLevel(spark_log_level.upper())
    # Read while the session lives: `markdown-pricing gc` finds the stage's event log by it.
    application_id = spark.sparkContext.applicationId
    started = dt.datetime.now(dt.timezone.utc)
    code, error = 1, None
    try:
        code = run(spark, ctx, cfg)
        return code
    except InputError as err:
        # Bad input is the operator's to fix, not a bug: a clear message, no stack trace.
        logging.getLogger(f"markdown_pricing.{stage}").error("%s stopped, nothing published: %s", stage, err)
        code, error = err.exit_code, str(err)
        return code
    except Exception as err:
        logging.getLogger(f"markdown_pricing.{stage}").error("%s failed: %s", stage, err)
        raise
    finally:
        spark.stop()
        finished = dt.datetime.now(dt.timezone.utc)
        write_json(
            ctx.layout.stage_record(stage),
            {
                "stage": stage,
                "application_id": application_id,
                "started_at": started.isoformat(),
                "finished_at": finished.isoformat(),
                "seconds": (finished - started).total_seconds(),
                "exit_code": code,
                "input_error": error,
            },
        )
