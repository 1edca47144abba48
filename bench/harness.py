"""`make bench`: runs every stage of the package on synthetic worlds of several sizes against its floor and its peer.

Writes bench/results/<date>.json and latest.json, a Markdown table and PNG plots (bench/report.py). Each ratio is
measured in the same run on the same data; the README's Performance section says what each one compares.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import psycopg2
from joblib import Parallel, delayed
from joblib.externals.loky import get_reusable_executor
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from bench import report
from bench.measure import MB, BenchErp, Sample, bench_erp, measured, peaks_mb, save_results, stage_tasks
from markdown_pricing.core.config import Config, ModelParams, RunRules, ScheduleSettings
from markdown_pricing.core.context import RunContext, load_run_config
from markdown_pricing.core.contract import PREDICTION_COLUMNS
from markdown_pricing.core.schemas import CANDIDATES, PREDICTIONS
from markdown_pricing.core.session import build_session
from markdown_pricing.core.storage import read_json
from markdown_pricing.erp import writer
from markdown_pricing.model.country import train_country
from markdown_pricing.model.fallback import PooledModel, fit_pooled, score_fallback
from markdown_pricing.model.forecast import prepare
from markdown_pricing.model.response import PriceResponse, learned_from
from markdown_pricing.stages import etl_job as etl_stage
from markdown_pricing.stages import publish_job as publish_stage
from markdown_pricing.stages import train_score_job as train_stage
from markdown_pricing.stages.per_country import (
    POOL,
    POOLED_RECORD,
    SAMPLE_BUCKETS,
    country_function,
    country_sizes,
    largest_first,
    sample_shares,
    training_tasks,
    with_pool,
)
from markdown_pricing.synthetic.sample import generate_sample


@dataclass(frozen=True)
class WorldSize:
    """generate_sample's parameters. Up to medium, the same 12-country skew (largest/smallest demand 8x, assortment
    95 % to 50 %); from large on, a retailer's 45 countries, the largest carrying 10x the median's assortment."""

    countries: int
    articles: int
    weeks: int
    largest_to_median: float | None = None


# Daily sales rows: tiny ~10 k (the harness test), small ~0.9 M, medium ~10 M, skewed ~12 M, large ~113 M.
# Prediction rows (active articles by country at the run date): small ~5 k, medium ~54 k, skewed ~55 k (45
# countries at medium's volume), large ~1 M, xlarge ~3 M. The generator holds a world's rows as codes (about 26
# bytes a sales row) and writes one country at a time: large peaks at 7.4 GB, xlarge needs about three times that.
SIZES = {
    "tiny": WorldSize(countries=3, articles=60, weeks=30),
    "small": WorldSize(countries=12, articles=1500, weeks=52),
    "medium": WorldSize(countries=12, articles=16500, weeks=52),
    "skewed": WorldSize(countries=45, articles=20_000, weeks=52, largest_to_median=10.0),
    "large": WorldSize(countries=45, articles=362_000, weeks=26, largest_to_median=10.0),
    "xlarge": WorldSize(countries=45, articles=1_090_000, weeks=26, largest_to_median=10.0),
}
RUN_DATE = date(2026, 11, 23)
SEED = 7
ERP_SCHEMA = "bench"
# The parameters a world folder was generated with.
WORLD_STAMP = "bench_world.json"


def ensure_world(raw: Path, size: WorldSize) -> None:
    """Generates the world once; a folder generated with the same parameters is reused."""
    stamp = raw / WORLD_STAMP
    wanted = {**asdict(size), "seed": SEED, "run_date": RUN_DATE.isoformat()}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return
    generate_sample(raw, **asdict(size), seed=SEED, run_date=RUN_DATE)
    stamp.write_text(json.dumps(wanted))


def stage_figures(sample: Sample, rows: int) -> dict[str, float]:
    """Wall time, rows per second and peak memory of one measured block."""
    return {
        "seconds": sample.seconds,
        "rows": rows,
        "rows_per_s": rows / sample.seconds,
        "peak_driver_mb": sample.driver_mb,
        "peak_workers_mb": sample.workers_mb,
        # A reused Python worker's peaks are its largest task's since it started, in this block or before.
        "peak_largest_worker_mb": sample.largest_worker_mb,
        "peak_largest_worker_virtual_mb": sample.largest_worker_virtual_mb,
    }


def ideal_makespan(seconds: list[float], slots: int) -> float:
    """The shortest any schedule of these indivisible jobs on `slots` slots can take (a lower bound)."""
    return max(max(seconds), sum(seconds) / slots)


def _event_log(spark: SparkSession, work: Path) -> list[Path]:
    """The application's event log files, oldest first (a rolling log is a folder of numbered files)."""
    files = (work / "spark-events").glob(f"**/events_*_{spark.sparkContext.applicationId}*")
    return sorted(files, key=lambda path: int(path.name.split("_")[1]))


def _import_model(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    import markdown_pricing.stages.per_country  # noqa: F401  (pandas, LightGBM)

    yield from batches


def warm_python_workers(spark: SparkSession, slots: int) -> None:
    """Starts one Python worker per task slot with the model code imported, as the train runs compared find them:
    otherwise the first run alone would pay for starting them."""
    spark.range(slots, numPartitions=slots).mapInPandas(_import_model, "id long").collect()


def run_train(
    spark: SparkSession,
    ctx: RunContext,
    cfg: Config,
    order: str,
    sizes: tuple[dict[str, int], dict[str, int]],
    slots: int,
) -> dict[str, Any]:
    """The train+score stage with one start order (on a world of these country_sizes): wall time against the ideal
    makespan and the task launch order."""
    rows, weeks = sizes
    ordered = replace(cfg, schedule=ScheduleSettings(start_order=order))
    with measured() as sample:
        train_stage.run(spark, ctx, ordered)
    results = read_json(ctx.layout.country_results)
    # A fallback country's fit is the pooled model's, which trained once, in the pool task.
    function_s = {
        c: (0.0 if r["model_kind"] in ("pooled", "baseline") else r["fit_seconds"]) + (r.get("score_seconds") or 0.0)
        for c, r in results.items()
    }
    # The training pass's own records: every country's first (a fallback country's too; a country too new to train,
    # its scoring in the pool's task) and the pool's.
    first_pass = spark.read.parquet(ctx.layout.train_score_output).where(F.col("record").isin("country", POOLED_RECORD))
    columns = ("country", "status", "fit_seconds", "function_seconds")
    first = {row["country"]: row for row in first_pass.select(*columns).collect()}
    function_s[POOL] = first[POOL]["fit_seconds"] or 0.0
    # Each task's function whole, from its rows as pandas to its records, as it records it: the work any runner pays
    # for. A country whose own model lost has its training task's and its scoring task's; one too new to train was
    # scored once, in the pool's task, which records its seconds apart from the pooled model's.
    whole_s = {
        c: (first[c]["function_seconds"] or 0.0)
        + ((r.get("function_seconds") or 0.0) if first[c]["status"] == "needs_fallback" else 0.0)
        for c, r in results.items()
    } | {POOL: first[POOL]["function_seconds"] or 0.0}
    _, task_rows, _ = training_tasks(rows, weeks, cfg.model)
    tasks = stage_tasks(_event_log(spark, Path(ctx.work)), f"train+score {len(rows)} countries", len(task_rows))
    planned = largest_first(task_rows) if order == "largest_first" else sorted(task_rows)
    launched = [planned[task["index"]] for task in sorted(tasks, key=lambda task: (task["launch"], task["index"]))]
    task_s = [task["finish"] - task["launch"] for task in tasks]
    return {
        **stage_figures(sample, sum(rows.values())),
        "ideal_makespan_s": ideal_makespan(list(function_s.values()), slots),
        "ideal_makespan_functions_s": ideal_makespan(list(whole_s.values()), slots),
        "ideal_makespan_tasks_s": ideal_makespan(task_s, slots),
        "score_seconds_recorded": all("score_seconds" in r for r in results.values()),
        "country_seconds": function_s,
        "function_seconds": whole_s,
        "launch_order": launched,
        "started_largest_first": launched == largest_first(task_rows),
        "tasks": [{"country": planned[t["index"]], **t} for t in tasks],
    }


def _peer_country(
    weekly: str, out: Path, country: str, params: ModelParams, rules: RunRules
) -> tuple[float, str | None]:
    """One country of the joblib peer: read its curated rows, the same per-country function, write its predictions;
    returns its seconds and, when it needs the pooled fallback, why."""
    started = time.perf_counter()
    frame = pd.read_parquet(weekly, filters=[("country", "==", country)])
    frame["country"] = frame["country"].astype(str)  # a Hive partition column comes back categorical
    output = country_function(params, rules)(frame)
    output.loc[output["record"] == "prediction", list(PREDICTION_COLUMNS)].to_parquet(out / f"{country}.parquet")
    record = output[output["record"] == "country"].iloc[0]
    return time.perf_counter() - started, record["fallback_reason"] if record["status"] == "needs_fallback" else None


def _peer_pool(
    weekly: str, shares: dict[str, float], response_shares: dict[str, float], countries: list[str], params: ModelParams
) -> tuple[float, PooledModel, PriceResponse]:
    """The peer's pool job, beside its countries' as the stage's: the pooled model on the same share of each
    country's articles (sampled by a pandas hash), and the price response on the response's share of them, as deep
    as every article sold."""
    started = time.perf_counter()
    frame = pd.read_parquet(weekly, filters=[("is_future", "==", False)])
    frame["country"] = frame["country"].astype(str)
    bucket = pd.util.hash_pandas_object(frame[["country", "article_id"]], index=False).to_numpy() % SAMPLE_BUCKETS

    def sample(at: dict[str, float]) -> pd.DataFrame:
        return frame[bucket < frame["country"].map(at).to_numpy() * SAMPLE_BUCKETS]

    pooled = fit_pooled(sample(shares), params, num_threads=1, countries=countries)
    response = learned_from(prepare(sample(response_shares)), params.price_response, frame)
    return time.perf_counter() - started, pooled, response


def _peer_fallback(
    weekly: str,
    out: Path,
    country: str,
    reason: str,
    pool: tuple[float, PooledModel, PriceResponse],
    params: ModelParams,
    rules: RunRules,
) -> None:
    """One fallback country of the peer, scored by its pooled model."""
    frame = pd.read_parquet(weekly, filters=[("country", "==", country)])
    frame["country"] = frame["country"].astype(str)
    _, pooled, response = pool
    result = score_fallback(frame, reason, pooled, params, rules, response)
    result.predictions.loc[:, list(PREDICTION_COLUMNS)].to_parquet(out / f"{country}.parquet")


def joblib_peer(ctx: RunContext, cfg: Config, rows: dict[str, int], processes: int) -> dict[str, Any]:
    """The train+score stage as a user would write it without Spark: a joblib loop over the countries and the
    pooled model (the largest first), then over the fallback countries."""
    out = Path(ctx.layout.run_dir) / "joblib_predictions"
    out.mkdir(parents=True, exist_ok=True)
    weekly, params, rules = ctx.layout.weekly, cfg.model, cfg.run
    shares, tasks = with_pool(rows, params.pooled_max_rows)
    response_shares = sample_shares(rows, params.price_response.max_rows)
    order = largest_first(tasks)
    with measured() as sample:
        outcomes = Parallel(n_jobs=processes, batch_size=1)(
            delayed(_peer_pool)(weekly, shares, response_shares, sorted(rows), params)
            if country == POOL
            else delayed(_peer_country)(weekly, out, country, params, rules)
            for country in order
        )
        done = dict(zip(order, outcomes, strict=True))
        pool = done.pop(POOL)
        fallback = {country: reason for country, (_, reason) in done.items() if reason}
        Parallel(n_jobs=processes, batch_size=1)(
            delayed(_peer_fallback)(weekly, out, country, reason, pool, params, rules)
            for country, reason in fallback.items()
        )
    # joblib keeps its workers for the next call: they would count as Python workers in the stages measured later.
    get_reusable_executor().shutdown(wait=True)
    seconds = {country: seconds for country, (seconds, _) in done.items()}
    return {**stage_figures(sample, sum(rows.values())), "country_seconds": seconds, "pool_seconds": pool[0]}


def _probe_country(weekly: str, country: str, params: ModelParams, rules: RunRules, threads: int) -> dict[str, float]:
    """In a fresh process: one country's rows, its peak memory while training and scoring, and its fit time."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    frame = pd.read_parquet(weekly, filters=[("country", "==", country)])
    frame["country"] = frame["country"].astype(str)
    result = train_country(frame, params, rules, num_threads=threads)
    return {
        "rows": len(frame),
        "frame_mb": frame.memory_usage(deep=True).sum() / MB,
        "baseline_mb": before,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_virtual_mb": peaks_mb(os.getpid())[1],
        "fit_seconds": result.metrics.get("fit_seconds"),
    }


def probes(ctx: RunContext, cfg: Config, order: list[str], threads: int) -> dict[str, Any]:
    """Memory per country size (largest and smallest) and whether the largest fits faster with more threads."""
    cases = [(order[0], 1), (order[-1], 1), (order[0], threads)]
    found = []
    for country, count in cases:
        # A fresh process per case: a reused one would report the largest earlier peak as every later one's.
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            job = pool.submit(_probe_country, ctx.layout.weekly, country, cfg.model, cfg.run, count)
            found.append({"country": country, "threads": count, **job.result()})
    one, more = found[0]["fit_seconds"], found[2]["fit_seconds"]
    # A largest country whose model loses to its baseline fits nothing to compare (fit_seconds is None).
    return {"cases": found, "largest_fit_speedup": one / more if one and more else None}


def publish(spark: SparkSession, ctx: RunContext, cfg: Config, server: BenchErp) -> dict[str, Any]:
    """The publish stage against a raw COPY of the same rows into the same table and Spark's JDBC writer."""
    table = f"{ERP_SCHEMA}.{cfg.erp.predictions_table}"
    candidates_table = f"{ERP_SCHEMA}.{cfg.erp.candidates_table}"
    server.psql(f"DROP SCHEMA IF EXISTS {ERP_SCHEMA} CASCADE")
    # Every country published, as the peers write every row: the gate judges models, this measures throughput.
    countries = tuple(read_json(ctx.layout.country_results))
    with measured() as sample:
        publish_stage.run(spark, replace(ctx, gate_overrides=countries), cfg)
    with measured() as read:
        spark.read.schema(PREDICTIONS).parquet(ctx.layout.predictions).toPandas()
    with psycopg2.connect(server.dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        published = int(cur.fetchone()[0])
        cur.execute(f"SELECT count(*) FROM {candidates_table}")
        candidates = int(cur.fetchone()[0])
        cur.execute(f"SELECT count(*) FROM {ERP_SCHEMA}.{cfg.erp.ledger_table} WHERE status = 'published'")
        published_countries = int(cur.fetchone()[0])
    # The same rows the stage wrote, predictions and the candidates behind them, COPYed on one connection.
    published_tables = [table, candidates_table]
    files = {name: Path(ctx.layout.run_dir) / f"published_{name}.csv" for name in published_tables}
    server.psql(*(f"\\copy (SELECT * FROM {name}) TO '{file}' WITH (FORMAT csv)" for name, file in files.items()))
    copied = published + candidates
    server.psql(f"TRUNCATE {', '.join(published_tables)}")
    with measured() as copy:
        server.psql(*(f"\\copy {name} FROM '{file}' WITH (FORMAT csv)" for name, file in files.items()))
    server.psql(f"TRUNCATE {', '.join(published_tables)}")
    # The columns the publish stage copies, in its order; the three it adds itself are computed the same way.
    added = {
        "valid_from": F.lit(ctx.run_date),
        "run_id": F.lit(ctx.run_id),
        "model_version": F.concat(F.lit(f"{ctx.run_id}/"), "country"),
    }
    predictions = (
        spark.read.schema(PREDICTIONS)
        .parquet(ctx.layout.predictions)
        .select(*(added[column].alias(column) if column in added else F.col(column) for column in writer.COPY_COLUMNS))
    )
    curves = (
        spark.read.schema(CANDIDATES)
        .parquet(ctx.layout.candidates)
        .withColumn("run_id", F.lit(ctx.run_id))
        .select(*writer.CANDIDATE_COPY_COLUMNS)
    )
    jdbc_rows = predictions.count() + curves.count()
    properties = {"user": "postgres", "driver": "org.postgresql.Driver"}
    with measured() as jdbc:
        predictions.write.jdbc(server.jdbc_url, table, "append", properties)
        curves.write.jdbc(server.jdbc_url, candidates_table, "append", properties)
    server.psql(f"TRUNCATE {', '.join(published_tables)}")
    stage = stage_figures(sample, published)
    return {
        **stage,
        "countries_published": published_countries,
        "predictions": published,
        "candidates": candidates,
        "read_predictions_s": read.seconds,
        "erp_write_s": sample.seconds - read.seconds,
        "raw_copy": stage_figures(copy, copied),
        # Spark's JDBC writer of the same rows: the predictions, then their candidates.
        "spark_jdbc": stage_figures(jdbc, jdbc_rows),
    }


def world_session(name: str, root: Path, server: BenchErp, jdbc_jar: str) -> tuple[RunContext, Config, SparkSession]:
    """The run context of one size's world and a session of its own (event log under its work folder)."""
    raw, work = root / name / "raw", root / name / "work"
    ctx = RunContext(RUN_DATE, f"bench-{name}", raw=str(raw), work=str(work))
    cfg = load_run_config(ctx)
    cfg = replace(cfg, erp=replace(cfg.erp, dsn=server.dsn, schema=ERP_SCHEMA))
    # Uncompressed, so the harness reads task launch times without a zstd library.
    conf = {"spark.jars": jdbc_jar, "spark.eventLog.compress": "false"}
    spark = build_session(cfg, f"bench-{name}", RUN_DATE.isoformat(), extra_conf=conf)
    return ctx, cfg, spark


def warm_up(root: Path, server: BenchErp, jdbc_jar: str) -> None:
    """Runs the ETL on the tiny world first: the JVM's start and JIT would otherwise count against the first size."""
    ensure_world(root / "tiny" / "raw", SIZES["tiny"])
    ctx, cfg, spark = world_session("tiny", root, server, jdbc_jar)
    try:
        etl_stage.run(spark, ctx, cfg)
    finally:
        spark.stop()


def bench_size(name: str, root: Path, server: BenchErp, jdbc_jar: str) -> dict[str, Any]:
    """Every stage of one world size, its floors and its peers."""
    with measured() as generated:
        ensure_world(root / name / "raw", SIZES[name])
    ctx, cfg, spark = world_session(name, root, server, jdbc_jar)
    try:
        slots = spark.sparkContext.defaultParallelism // int(spark.conf.get("spark.task.cpus"))
        with measured() as etl:
            etl_stage.run(spark, ctx, cfg)
        rows_in = sum(dataset["rows"] for dataset in read_json(ctx.layout.etl_record).values())
        sizes = country_sizes(spark.read.parquet(ctx.layout.weekly))
        rows = sizes[0]
        weekly_rows = sum(rows.values())
        # Both orders train the same models (fixed seed, one thread each); largest first runs first, so any warm-up
        # left over helps the alphabetical order it is compared with.
        warm_python_workers(spark, slots)
        train = {order: run_train(spark, ctx, cfg, order, sizes, slots) for order in ("largest_first", "name")}
        peer = joblib_peer(ctx, cfg, rows, slots)
        probe = probes(ctx, cfg, largest_first(rows), slots)
        published = publish(spark, ctx, cfg, server)
    finally:
        spark.stop()
    figures = {
        "world": {**asdict(SIZES[name]), "raw_rows": rows_in, "weekly_rows": weekly_rows, "country_rows": rows},
        "generate_s": generated.seconds,
        "task_slots": slots,
        "etl": stage_figures(etl, rows_in),
        "train_score": train["largest_first"],
        "train_score_name_order": train["name"],
        "joblib": peer,
        "probes": probe,
        "publish": published,
    }
    return {**figures, **ratios(figures)}


def train_ratios(train: dict[str, Any]) -> dict[str, float]:
    """A train+score run (run_train's figures) against its ideal makespans."""
    return {
        "train_score_vs_ideal_makespan": train["seconds"] / train["ideal_makespan_s"],
        "train_score_vs_ideal_makespan_functions": train["seconds"] / train["ideal_makespan_functions_s"],
        "train_score_vs_ideal_makespan_tasks": train["seconds"] / train["ideal_makespan_tasks_s"],
    }


def ratios(figures: dict[str, Any]) -> dict[str, float]:
    """One size's ratios, each between two figures measured in the same run."""
    train, publish = figures["train_score"], figures["publish"]
    return {
        **train_ratios(train),
        "largest_first_vs_name_order": train["seconds"] / figures["train_score_name_order"]["seconds"],
        "end_to_end_vs_joblib": train["seconds"] / figures["joblib"]["seconds"],
        # The same rows on both sides (predictions and candidates): the time of one against the other.
        "publish_vs_raw_copy": publish["raw_copy"]["seconds"] / publish["seconds"],
        # The stage less its read of the predictions: the ERP transactions alone against the raw COPY.
        "publish_write_vs_raw_copy": publish["raw_copy"]["seconds"] / publish["erp_write_s"],
        "publish_vs_spark_jdbc": publish["spark_jdbc"]["seconds"] / publish["seconds"],
    }


def summarise(sizes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The run's document: per size figures, and ETL throughput of the largest size against the smallest."""
    names = [name for name in SIZES if name in sizes]
    smallest, largest = sizes[names[0]], sizes[names[-1]]
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
        "sizes": sizes,
        "etl_per_row_scaling": largest["etl"]["rows_per_s"] / smallest["etl"]["rows_per_s"],
        "etl_scaling_sizes": [names[-1], names[0]],
    }


def finite_ratios(document: dict[str, Any]) -> bool:
    """Whether every headline ratio is a positive finite number."""
    values = [document["etl_per_row_scaling"]] + [
        size[key] for size in document["sizes"].values() for key in report.RATIOS
    ]
    return all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--sizes", default="small,medium,skewed", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--work", type=Path, required=True, help="where worlds, runs and the bench ERP live")
    parser.add_argument("--results", type=Path, required=True, help="where the JSON, table and plots go")
    parser.add_argument("--jdbc-jar", required=True, help="PostgreSQL JDBC driver for Spark's JDBC writer (the peer)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.sizes.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SIZES))
    if unknown:
        parser.error(f"unknown sizes {', '.join(unknown)}: expected {', '.join(SIZES)}")
    sizes: dict[str, dict[str, Any]] = {}
    stem = datetime.now(timezone.utc).date().isoformat()
    with bench_erp(args.work / "erp" / "pgdata") as server:
        warm_up(args.work.resolve(), server, args.jdbc_jar)
        for name in sorted(names, key=list(SIZES).index):
            sizes[name] = bench_size(name, args.work.resolve(), server, args.jdbc_jar)
            print(report.size_line(name, sizes[name]), flush=True)
            # Written after every size, so a long run that is stopped keeps the sizes it finished.
            document = summarise(sizes)
            save_results(args.results, "", document, stem)
    report.write(document, args.results, stem)
    print((args.results / "latest.md").read_text())
    return 0 if finite_ratios(document) else 1


if __name__ == "__main__":
    raise SystemExit(main())
