"""Publish stage: each country's predictions into the ERP in one transaction, recorded in the ledger."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from contextlib import ExitStack, closing
from typing import Any

import pandas as pd
import psycopg2
from psycopg2.extensions import connection as Connection
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from markdown_pricing.core.config import Config
from markdown_pricing.core.context import RunContext
from markdown_pricing.core.contract import CANDIDATE_COLUMNS, EXCLUDED
from markdown_pricing.core.drift import Finding, checked_now
from markdown_pricing.core.results import read_country_results
from markdown_pricing.core.schemas import CANDIDATES, PREDICTIONS
from markdown_pricing.core.storage import filesystem
from markdown_pricing.erp import ledger, locks, schema, writer
from markdown_pricing.erp.connection import connect_configured, start_dsn
from markdown_pricing.erp.gate import gate_reasons, not_publishable_because
from markdown_pricing.observe.progress import StageProgress

log = logging.getLogger(__name__)

# Exit code when another publisher holds the run date: nothing was done, run again once it has finished.
LOCKED_EXIT_CODE = 3


def model_version(ctx: RunContext, country: str, result: dict[str, Any]) -> str:
    """Points at models/<run_id>/<country>/ under the work folder (a rescore's: the model run's)."""
    return result.get("model_version") or f"{ctx.run_id}/{country}"


def ended_articles(spark: SparkSession, ctx: RunContext) -> dict[str, set[str]]:
    """Country -> its articles that sold out or reached their season end by the run date, as the ETL found them."""
    uri = ctx.layout.article_states
    if not filesystem(uri).exists(uri):
        # A run from before the ETL wrote them: no loss is explained.
        return {}
    states = spark.read.parquet(uri).where(~F.col("active")).select("country", "article_id").toPandas()
    return {str(country): set(group["article_id"]) for country, group in states.groupby("country")}


def candidates_by_country(spark: SparkSession, ctx: RunContext) -> dict[str, pd.DataFrame]:
    """Each country's candidate curves, read in one Spark job as the predictions are (none for a run from before
    train+score wrote them)."""
    uri = ctx.layout.candidates
    if not filesystem(uri).exists(uri):
        return {}
    candidates = spark.read.schema(CANDIDATES).parquet(uri).toPandas()
    return {str(country): rows for country, rows in candidates.groupby("country", sort=False)}


def excluded_articles(candidates: pd.DataFrame) -> set[str]:
    """The articles a buyer rule excluded: they have candidates but no recommendation."""
    excluded = candidates["ruled_out_by"].fillna("").str.startswith(EXCLUDED)
    return set(candidates.loc[excluded, "article_id"])


def publish_or_record(
    conn: Connection,
    ctx: RunContext,
    cfg: Config,
    country: str,
    result: dict[str, Any],
    rows: pd.DataFrame,
    candidates: pd.DataFrame,
    previous_articles: Collection[str],
    ended_articles: Collection[str],
    repair: bool = False,
    drift: Sequence[Finding] = (),
) -> tuple[str, str | None]:
    """Publishes one country unless it has nothing to publish or its gate blocks it; returns (outcome, why not)."""
    settings = cfg.erp
    common = {
        "run_id": ctx.run_id,
        "run_date": ctx.run_date,
        "country": country,
        "metrics": {key: result.get(key) for key in writer.LEDGER_METRICS},
    }
    override = country in ctx.gate_overrides
    problem = not_publishable_because(result, rows)
    if problem is not None:
        if override:
            log.warning("country %s: --override-gate ignored, there is nothing to publish", country)
        writer.record_not_published(conn, settings, message=problem, **common)
        return ledger.FAILED, problem
    rules = cfg.run
    reasons = gate_reasons(
        result,
        rows,
        previous_articles=previous_articles,
        # An article a buyer excluded is no loss, no more than one that sold out.
        ended_articles={*ended_articles, *excluded_articles(candidates)},
        ladder=rules.ladder,
        max_drop_share=rules.max_recommendation_drop_share,
        min_lost_articles=rules.min_lost_articles,
        drift=drift,
        max_lift_error=rules.max_markdown_lift_error,
    )
    if reasons and not override:
        problem = "blocked by the quality gate: " + "; ".join(reasons)
        writer.record_not_published(conn, settings, message=problem, status=ledger.BLOCKED, **common)
        return ledger.BLOCKED, problem
    message = None
    if reasons:
        message = "gate overridden by operator: " + "; ".join(reasons)
        log.warning("country %s: %s", country, message)
    elif override:
        log.warning("country %s: --override-gate given but its quality gate passed: nothing overridden", country)
    try:
        outcome = writer.publish_country(
            conn,
            settings,
            predictions=rows,
            # The writer leaves out the candidates of articles without a row: those a rule excluded.
            candidates=candidates,
            model_version=model_version(ctx, country, result),
            gate_override=bool(reasons),
            message=message,
            rollback=ctx.rollback,
            repair=repair,
            **common,
        )
    except (ValueError, psycopg2.Error) as err:
        # Any database error (a trigger, a constraint, a timeout, a privilege, an oversize value) rolled this
        # country back: it is recorded and the others go on. A lost connection leaves nothing to record with.
        if conn.closed:
            raise
        problem = f"publish rejected: {' '.join(str(err).split())}"
        writer.record_not_published(conn, settings, message=problem, **common)
        return ledger.FAILED, problem
    return outcome, None


def run(spark: SparkSession, ctx: RunContext, cfg: Config) -> int:
    """Publishes every trained country; returns non-zero when any country was not published."""
    results = read_country_results(ctx.layout.country_results)
    if not results:
        log.error("no country reached the publish stage for run %s", ctx.run_id)
        return 1
    spark.sparkContext.setJobGroup(f"publish-{ctx.run_id}", f"publish: read predictions of {len(results)} countries")
    predictions = spark.read.schema(PREDICTIONS).parquet(ctx.layout.predictions).toPandas()
    candidates = candidates_by_country(spark, ctx)
    no_candidates = pd.DataFrame(columns=list(CANDIDATE_COLUMNS))
    ended = ended_articles(spark, ctx)
    # What moved beyond the [drift] limits in force now, against the run the ETL compared with.
    drift = checked_now(ctx.layout, cfg.drift)
    if drift is None:
        # A run from before drift checks, or an ETL stopped between its curated data and its drift check.
        log.warning(
            "run %s has no drift check at %s: no country is blocked for input drift", ctx.run_id, ctx.layout.drift
        )
    settings = cfg.erp
    problems: dict[str, str] = {}
    # The explicit steps before any write: the embedded ERP when none is configured, its tables when missing.
    dsn = start_dsn(settings, cfg.paths.work)
    with closing(connect_configured(dsn, settings, writer=True)) as conn, ExitStack() as held:
        schema.prepare(conn, settings)
        # One publisher per run date, held from the ledger reads below to the last country's commit.
        try:
            held.enter_context(
                locks.publish_run_lock(conn, settings, ctx.run_date, locks.stage_holder("publish", ctx.run_id))
            )
        except locks.PublishLockedError as err:
            log.error("nothing published: %s", err)
            return LOCKED_EXIT_CODE
        writer.record_metrics(conn, settings, run_id=ctx.run_id, run_date=ctx.run_date, results=results)
        # The gate compares each country's articles with those the ERP holds now.
        held_articles = ledger.held_articles(conn, settings)
        # A rerun leaves this run's rows alone: the gate judged them (or an operator overrode it) the first time.
        this_run = ledger.run_statuses(conn, settings, ctx.run_id)
        # A country the ERP holds a week up to this one for must be in this run: else its input went missing.
        absent = {
            country: week
            for country, week in ledger.held_weeks(conn, settings).items()
            if country not in results and week <= ctx.run_date
        }
        # Unless the table lost them: the ledger and the table must agree before a country counts as published.
        missing = ledger.missing_published_rows(conn, settings, ctx.run_id)
        for country, (table_rows, written) in sorted(missing.items()):
            log.warning(
                "country %s: the ledger says run %s published %d rows but the table holds %d of them: publishing again",
                country,
                ctx.run_id,
                written,
                table_rows,
            )
        tracker = StageProgress(ctx.layout, "publish", total=len(results))
        for country, result in sorted(results.items()):
            tracker.begin(country)
            outcome, problem = ledger.ALREADY_PUBLISHED, None
            if this_run.get(country) != ledger.PUBLISHED or country in missing:
                rows = predictions[predictions["country"] == country]
                outcome, problem = publish_or_record(
                    conn,
                    ctx,
                    cfg,
                    country,
                    result,
                    rows,
                    candidates.get(country, no_candidates),
                    held_articles.get(country, set()),
                    ended.get(country, set()),
                    repair=country in missing,
                    drift=drift.of_country(country) if drift else (),
                )
            if problem is not None:
                problems[country] = problem.splitlines()[0]
            log.info("country %s: %s%s", country, outcome, f" ({problems[country]})" if problem else "")
            if outcome == ledger.SUPERSEDED:
                # Not a failure: a later week's rows stand, as the contract wants; the ledger says which week.
                log.warning("country %s: the ERP holds a later week than %s, its rows kept", country, ctx.run_date)
            tracker.finish(country, outcome)
        for country, week in sorted(absent.items()):
            problems[country] = f"missing from this run's input: the ERP keeps its rows of {week}"
            writer.record_not_published(
                conn,
                settings,
                run_id=ctx.run_id,
                run_date=ctx.run_date,
                country=country,
                message=problems[country],
                metrics={},
                status=ledger.MISSING_INPUT,
            )
            log.error("country %s: %s", country, problems[country])
    unknown = sorted(set(ctx.gate_overrides) - set(results))
    if unknown:
        log.warning("--override-gate names countries that are not in this run: %s", ", ".join(unknown))
    if problems:
        log.error(
            "not published (previous ERP rows kept): %s",
            "; ".join(f"{country}: {problem}" for country, problem in problems.items()),
        )
        return 1
    return 0
