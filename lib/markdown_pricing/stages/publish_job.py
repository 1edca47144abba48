"""Publish stage: each country's predictions into the ERP in one transaction, recorded in the ledger."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd
import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
from psycopg2.extensions import connection as Connection
from pyspark import inheritable_thread_target
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

T = TypeVar("T")
R = TypeVar("R")

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


def candidates_of_run(spark: SparkSession, ctx: RunContext) -> pa.Table:
    """Every country's candidate curves, in one Spark job as the predictions are (none for a run from before
    train+score wrote them)."""
    uri = ctx.layout.candidates
    if not filesystem(uri).exists(uri):
        return pa.Table.from_pandas(pd.DataFrame(columns=list(CANDIDATE_COLUMNS)), preserve_index=False)
    return spark.read.schema(CANDIDATES).parquet(uri).toArrow()


def labelled_like_this_thread(spark: SparkSession, function: Callable[..., R]) -> Callable[..., R]:
    """The function, to run in another thread under this thread's Spark job label. With pinned threads off
    (PYSPARK_PIN_THREAD=false) there is nothing to inherit, and PySpark hands the session back instead."""
    wrapper = inheritable_thread_target(spark)
    return function if isinstance(wrapper, SparkSession) else wrapper(function)


def predictions_of_run(spark: SparkSession, ctx: RunContext) -> pa.Table:
    return spark.read.schema(PREDICTIONS).parquet(ctx.layout.predictions).toArrow()


def of_country(rows: pa.Table, country: str) -> pd.DataFrame:
    """One country's rows of a run's output, read as Arrow: pandas only when that country is judged, so that the
    rest of the stage need not wait for every country's conversion."""
    frame: pd.DataFrame = rows.filter(pc.equal(rows["country"], country)).to_pandas()
    return frame


def excluded_articles(candidates: pd.DataFrame) -> set[str]:
    """The articles a buyer rule excluded: they have candidates but no recommendation."""
    ruled = pa.array(candidates["ruled_out_by"], type=pa.string(), from_pandas=True)
    excluded = pc.starts_with(ruled, EXCLUDED).fill_null(False).to_numpy(zero_copy_only=False)
    return set(candidates.loc[excluded, "article_id"])


@dataclass(frozen=True)
class Verdict:
    """What publishing one country comes to before the ERP is touched: its rows encoded to write, with the message
    of an operator's override when it let the country through; or nothing to write, the ledger status and why."""

    encoded: writer.EncodedCountry | None
    message: str | None = None
    status: str = ledger.FAILED
    gate_override: bool = False


def judge(
    ctx: RunContext,
    cfg: Config,
    country: str,
    result: dict[str, Any],
    rows: pd.DataFrame,
    candidates: pd.DataFrame,
    previous_articles: Collection[str],
    ended_articles: Collection[str],
    drift: Sequence[Finding] = (),
) -> Verdict:
    """Whether a country can be published (it has rows, its gate passes or is overridden) and, if so, its rows
    checked and encoded: no ERP access, so the next country's verdict is reached while this one is written."""
    override = country in ctx.gate_overrides
    problem = not_publishable_because(result, rows)
    if problem is not None:
        if override:
            log.warning("country %s: --override-gate ignored, there is nothing to publish", country)
        return Verdict(None, problem)
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
        return Verdict(None, "blocked by the quality gate: " + "; ".join(reasons), ledger.BLOCKED)
    message = None
    if reasons:
        message = "gate overridden by operator: " + "; ".join(reasons)
        log.warning("country %s: %s", country, message)
    elif override:
        log.warning("country %s: --override-gate given but its quality gate passed: nothing overridden", country)
    try:
        encoded = writer.encode_country(
            run_id=ctx.run_id,
            run_date=ctx.run_date,
            country=country,
            predictions=rows,
            model_version=model_version(ctx, country, result),
            # The writer leaves out the candidates of articles without a row: those a rule excluded.
            candidates=candidates,
        )
    except ValueError as err:
        return Verdict(None, _rejected(err))
    return Verdict(encoded, message, gate_override=bool(reasons))


def _rejected(err: Exception) -> str:
    return f"publish rejected: {' '.join(str(err).split())}"


def publish_or_record(
    conn: Connection,
    ctx: RunContext,
    cfg: Config,
    country: str,
    result: dict[str, Any],
    verdict: Verdict,
    repair: bool = False,
) -> tuple[str, str | None]:
    """Publishes one country as judged, or records why not; returns (outcome, why not)."""
    settings = cfg.erp
    metrics = {key: result.get(key) for key in writer.LEDGER_METRICS}
    common: dict[str, Any] = {"run_id": ctx.run_id, "run_date": ctx.run_date, "country": country, "metrics": metrics}
    if verdict.encoded is None:
        problem = verdict.message or "not publishable"
        writer.record_not_published(conn, settings, message=problem, status=verdict.status, **common)
        return verdict.status, problem
    try:
        outcome = writer.write_country(
            conn,
            settings,
            verdict.encoded,
            metrics=metrics,
            gate_override=verdict.gate_override,
            message=verdict.message,
            rollback=ctx.rollback,
            repair=repair,
        )
    except (ValueError, psycopg2.Error) as err:
        # Any database error (a trigger, a constraint, a timeout, a privilege, an oversize value) rolled this
        # country back: it is recorded and the others go on. A lost connection leaves nothing to record with.
        if conn.closed:
            raise
        problem = _rejected(err)
        writer.record_not_published(conn, settings, message=problem, **common)
        return ledger.FAILED, problem
    return outcome, None


def one_ahead(function: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
    """function(item) for each item in order, each next one computed in a thread while the caller uses this one's:
    a country's rows are judged and encoded while the one before is written (the database works in its own
    process, so the two overlap)."""
    with ThreadPoolExecutor(1, thread_name_prefix="publish-judge") as pool:
        upcoming = [pool.submit(function, item) for item in items[:1]]
        for item in items[1:]:
            upcoming.append(pool.submit(function, item))
            yield upcoming.pop(0).result()
        if upcoming:
            yield upcoming.pop(0).result()


def run(spark: SparkSession, ctx: RunContext, cfg: Config) -> int:
    """Publishes every trained country; returns non-zero when any country was not published."""
    results = read_country_results(ctx.layout.country_results)
    if not results:
        log.error("no country reached the publish stage for run %s", ctx.run_id)
        return 1
    spark.sparkContext.setJobGroup(f"publish-{ctx.run_id}", f"publish: read predictions of {len(results)} countries")
    # Three independent Spark jobs at once, beside the ERP's preparation; each thread inherits the job's label.
    with ThreadPoolExecutor(3, thread_name_prefix="publish-read") as readers:
        reads = [
            readers.submit(labelled_like_this_thread(spark, read), spark, ctx)
            for read in (predictions_of_run, candidates_of_run, ended_articles)
        ]
        return publish_all(ctx, cfg, results, reads)


def publish_all(ctx: RunContext, cfg: Config, results: dict[str, dict[str, Any]], reads: list[Future[Any]]) -> int:
    """The ERP's side of run: `reads` give the predictions, the candidates and the ended articles by country."""
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
        # Nothing is written before the run's outputs are read.
        predictions, candidates, ended = (read.result() for read in reads)
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

        def verdict_of(country: str) -> Verdict | None:
            if this_run.get(country) == ledger.PUBLISHED and country not in missing:
                return None
            return judge(
                ctx,
                cfg,
                country,
                results[country],
                of_country(predictions, country),
                of_country(candidates, country),
                held_articles.get(country, set()),
                ended.get(country, set()),
                drift=drift.of_country(country) if drift else (),
            )

        countries = sorted(results)
        for country, verdict in zip(countries, one_ahead(verdict_of, countries), strict=True):
            tracker.begin(country)
            outcome, problem = ledger.ALREADY_PUBLISHED, None
            if verdict is not None:
                outcome, problem = publish_or_record(
                    conn, ctx, cfg, country, results[country], verdict, repair=country in missing
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
