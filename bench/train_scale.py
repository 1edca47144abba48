"""`make bench-train-scale`: train+score against its ideal makespan and its joblib peer at the medium and large
sizes, and the largest task's memory against the Python worker memory the yarn profile allows.

`make bench` runs a size whole: at large, its two start orders, the peer, the memory probes and the publish peers
take hours on 2 cores. This runs each size's train+score once, largest first, in a session of its own after one
Python worker per task slot has started, as `make bench` measures its first order, then the same joblib peer.
Worlds are generated as `make bench` generates them and reused, and so is a world's ETL output once its ETL ran.
Writes bench/results/train-scale-<date>.json and train-scale-latest.json: per size the stage against its ideal
makespans and its peer, and the largest Python worker's peak resident memory and address space against the yarn
profile's `spark.executor.pyspark.memory` per executor core.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.harness import (
    SIZES,
    WORLD_STAMP,
    ensure_world,
    joblib_peer,
    largest_first,
    run_train,
    stage_figures,
    train_ratios,
    warm_python_workers,
    world_session,
)
from bench.measure import BenchErp, bench_erp, measured, save_results
from markdown_pricing.core.config import load_config
from markdown_pricing.core.storage import read_json
from markdown_pricing.stages import etl_job
from markdown_pricing.stages.per_country import country_sizes

UNITS_MB = {"m": 1, "g": 1024, "t": 1024 * 1024}


def size_mb(size: str) -> float:
    """A Spark memory setting ("4g", "1536m") in MB."""
    size = size.strip().lower()
    return float(size[:-1]) * UNITS_MB[size[-1]]


def worker_limit_mb(conf: Mapping[str, str]) -> float:
    """The address space Spark lets each Python worker take: the executor's pyspark memory over its cores."""
    return size_mb(conf["spark.executor.pyspark.memory"]) / int(conf["spark.executor.cores"])


def train_figures(
    root: Path, size: str, server: BenchErp, jdbc_jar: str, keep: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Generates the world when needed, runs its ETL (unless it ran on this world already) and measures its
    train+score, then the joblib peer; `keep` gets the figures before the peer runs."""
    raw = root / size / "raw"
    ensure_world(raw, SIZES[size])
    ctx, cfg, spark = world_session(size, root, server, jdbc_jar)
    # The ETL's last output: a world whose profile is newer than the world was curated whole.
    profile = Path(ctx.layout.input_profile)
    try:
        slots = spark.sparkContext.defaultParallelism // int(spark.conf.get("spark.task.cpus"))
        etl = None
        if not profile.is_file() or profile.stat().st_mtime < (raw / WORLD_STAMP).stat().st_mtime:
            with measured() as sample:
                etl_job.run(spark, ctx, cfg)
            etl = sample
        rows_in = sum(dataset["rows"] for dataset in read_json(ctx.layout.etl_record).values())
        sizes = country_sizes(spark.read.parquet(ctx.layout.weekly))
        rows = sizes[0]
        warm_python_workers(spark, slots)
        train = run_train(spark, ctx, cfg, "largest_first", sizes, slots)
        largest = largest_first(rows)[0]
        figures = {
            "world": {"raw_rows": rows_in, "weekly_rows": sum(rows.values()), "countries": len(rows)},
            "largest_country": {"country": largest, "weekly_rows": rows[largest]},
            "etl": stage_figures(etl, rows_in) if etl else None,
            "train_score": train,
            **train_ratios(train),
        }
        keep(figures)
        peer = joblib_peer(ctx, cfg, rows, slots)
    finally:
        spark.stop()
    return {**figures, "joblib": peer, "end_to_end_vs_joblib": train["seconds"] / peer["seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.train_scale", description=__doc__)
    parser.add_argument("--work", type=Path, required=True, help="the bench's work folder (worlds are reused)")
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--sizes", default="medium,large", help="comma-separated, e.g. medium,large")
    parser.add_argument("--jdbc-jar", required=True, help="the PostgreSQL JDBC driver the bench's sessions load")
    args = parser.parse_args(argv)
    root = args.work.resolve()
    figures: dict[str, Any] = {}
    document = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "yarn_worker_limit_mb": worker_limit_mb(load_config("yarn").spark.conf),
        "sizes": figures,
    }
    with bench_erp(args.work / "erp" / "pgdata") as server:
        for size in args.sizes.split(","):

            def keep(found: dict[str, Any], size: str = size) -> None:
                figures[size] = found
                save_results(args.results, "train-scale-", document)

            keep(train_figures(root, size, server, args.jdbc_jar, keep))
            train = figures[size]["train_score"]
            print(
                f"{size}: train+score {train['seconds']:.1f} s, "
                f"{figures[size]['train_score_vs_ideal_makespan']:.2f}x its ideal makespan, "
                f"{figures[size]['end_to_end_vs_joblib']:.2f}x the joblib peer; largest Python worker "
                f"{train['peak_largest_worker_mb']:,.0f} MB resident, "
                f"{train['peak_largest_worker_virtual_mb']:,.0f} MB address space "
                f"(yarn profile: {document['yarn_worker_limit_mb']:,.0f} MB)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
