"""Stage runners: each reads its inputs, calls pure transformations and writes its outputs.

A job in jobs/ calls `job_entrypoint` with one stage's `run(spark, ctx)`; tests call `run` with their own
session and context.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import SparkSession

from markdown_pricing import runlog
from markdown_pricing.config import ENVIRONMENTS, Config, load_config, with_paths
from markdown_pricing.etl import InputError
from markdown_pricing.spark import build_session
from markdown_pricing.storage import RunLayout, write_json

INPUT_ERROR_EXIT_CODE = 2


@dataclass(frozen=True)
class RunContext:
    cfg: Config
    run_date: dt.date
    run_id: str
    # Countries whose publish quality gate an operator explicitly overrides for this run.
    gate_overrides: tuple[str, ...] = ()
    # Rescore with the models this earlier run saved instead of training (`score --model-run`).
    model_run: str | None = None

    @property
    def layout(self) -> RunLayout:
        return RunLayout(raw=self.cfg.paths.raw, work=self.cfg.paths.work, run_id=self.run_id)


def monday(text: str) -> dt.date:
    """Parses a run date; the contract says it is the Monday the recommendations apply from."""
    day = dt.date.fromisoformat(text)
    if day.weekday() != 0:
        raise argparse.ArgumentTypeError(f"run date {day} is a {day:%A}, not a Monday")
    return day


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every stage and the pipeline share."""
    parser.add_argument("--run-date", type=monday, required=True, help="the Monday recommendations apply from")
    parser.add_argument("--run-id", help="defaults to the run date; a new id republishes the same week")
    parser.add_argument(
        "--model-run", metavar="RUN_ID", help="rescore with the models saved by this earlier run instead of training"
    )
    add_pipeline_arguments(parser)


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a run reads and writes, its environment and its gate overrides: shared by runs and backfills."""
    parser.add_argument("--raw", help="raw root URI (default: configured)")
    parser.add_argument("--work", help="work folder URI (default: configured)")
    parser.add_argument("--env", choices=ENVIRONMENTS, default="local")
    parser.add_argument(
        "--override-gate",
        action="append",
        default=[],
        metavar="COUNTRY",
        help="publish this country even if its quality gate blocks it (recorded in the ledger); repeatable",
    )


def context_from_args(args: argparse.Namespace) -> RunContext:
    """The run context named by parsed run arguments."""
    cfg = with_paths(load_config(args.env), raw=args.raw, work=args.work)
    return RunContext(
        cfg=cfg,
        run_date=args.run_date,
        run_id=args.run_id or args.run_date.isoformat(),
        gate_overrides=tuple(sorted(set(args.override_gate))),
        model_run=args.model_run,
    )


def configure_logging(ctx: RunContext, stage: str) -> None:
    """Log lines carry run id, stage and country so a collector can group them; they go to the stage's log file too."""
    # Launched by its Luigi task, the stage's whole output already goes to that file.
    log_file = None if os.environ.get(runlog.CAPTURED_ENV) else runlog.stage_log_path(ctx.layout, stage)
    runlog.configure(ctx.run_id, stage, sys.stderr, logging.INFO, log_file)
    logging.getLogger("py4j").setLevel(logging.WARNING)


def job_entrypoint(
    stage: str, run: Callable[[SparkSession, RunContext], int], argv: Sequence[str] | None = None
) -> int:
    """Parses arguments, loads config once, builds the session, runs the stage, returns its exit code."""
    parser = argparse.ArgumentParser(prog=f"jobs/{stage}.py")
    add_run_arguments(parser)
    ctx = context_from_args(parser.parse_args(argv))
    configure_logging(ctx, stage)
    spark = build_session(ctx.cfg, stage, ctx.run_date.isoformat())
    if spark_log_level := os.environ.get(runlog.SPARK_LOG_LEVEL_ENV):
        spark.sparkContext.setLogLevel(spark_log_level.upper())
    started = dt.datetime.now(dt.timezone.utc)
    code = 1
    try:
        code = run(spark, ctx)
        return code
    except InputError as err:
        # Bad input is the operator's to fix, not a bug: a clear message, no stack trace.
        logging.getLogger(f"markdown_pricing.{stage}").error("%s stopped, nothing published: %s", stage, err)
        code = INPUT_ERROR_EXIT_CODE
        return code
    except Exception as err:
        logging.getLogger(f"markdown_pricing.{stage}").error("%s failed: %s", stage, err)
        raise
    finally:
        spark.stop()
        finished = dt.datetime.now(dt.timezone.utc)
        write_json(
            ctx.layout.stage_record(stage),
            {"stage": stage, "started_at": started.isoformat(), "finished_at": finished.isoformat(),
             "seconds": (finished - started).total_seconds(), "exit_code": code},
        )  # fmt: skip
