"""`make bench-train-scale`: train+score against its ideal makespan at the medium and large sizes, and the largest
task's memory against the Python worker memory the yarn profile allows.

`make bench` runs a size whole: at large, two start orders, the joblib peer and the memory probes take hours on 2
cores. This runs each size's ETL and then its train+score once, largest first, in a session of its own after one
Python worker per task slot has started, as `make bench` measures its first order. Worlds are generated as
`make bench` generates them (and reused). Writes bench/results/train-scale-<date>.json and train-scale-latest.json:
per size the stage against its ideal makespans, and the largest Python worker's peak resident memory and address
space against the yarn profile's `spark.executor.pyspark.memory` per executor core.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.harness import (
    SIZES,
    ensure_world,
    largest_first,
    run_train,
    stage_figures,
    warm_python_workers,
    world_session,
)
from bench.measure import BenchErp, bench_erp, measured, save_results
from markdown_pricing.core.config import load_config
from markdown_pricing.core.storage import read_json
from markdown_pricing.stages import etl_job

UNITS_MB = {"m": 1, "g": 1024, "t": 1024 * 1024}


def yarn_worker_limit_mb() -> float:
    """The address space each Python worker may take under the yarn profile: its pyspark memory over its cores."""
    conf = load_config("yarn").spark.conf
    memory = conf["spark.executor.pyspark.memory"].strip().lower()
    return float(memory[:-1]) * UNITS_MB[memory[-1]] / int(conf["spark.executor.cores"])


def train_figures(root: Path, size: str, server: BenchErp, jdbc_jar: str) -> dict[str, Any]:
    """Generates the world when needed, runs its ETL and measures its train+score."""
    ensure_world(root / size / "raw", SIZES[size])
    ctx, cfg, spark = world_session(size, root, server, jdbc_jar)
    try:
        slots = spark.sparkContext.defaultParallelism // int(spark.conf.get("spark.task.cpus"))
        with measured() as etl:
            etl_job.run(spark, ctx, cfg)
        rows_in = sum(dataset["rows"] for dataset in read_json(ctx.layout.etl_record).values())
        rows = dict(spark.read.parquet(ctx.layout.weekly).groupBy("country").count().collect())
        warm_python_workers(spark, slots)
        train = run_train(spark, ctx, cfg, "largest_first", rows, slots)
    finally:
        spark.stop()
    largest = largest_first(rows)[0]
    return {
        "world": {"raw_rows": rows_in, "weekly_rows": sum(rows.values()), "countries": len(rows)},
        "largest_country": {"country": largest, "weekly_rows": rows[largest]},
        "etl": stage_figures(etl, rows_in),
        "train_score": train,
        "train_score_vs_ideal_makespan": train["seconds"] / train["ideal_makespan_s"],
        "train_score_vs_ideal_makespan_functions": train["seconds"] / train["ideal_makespan_functions_s"],
        "train_score_vs_ideal_makespan_tasks": train["seconds"] / train["ideal_makespan_tasks_s"],
    }


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
        "yarn_worker_limit_mb": yarn_worker_limit_mb(),
        "sizes": figures,
    }
    with bench_erp(args.work / "erp" / "pgdata") as server:
        for size in args.sizes.split(","):
            figures[size] = train_figures(root, size, server, args.jdbc_jar)
            train = figures[size]["train_score"]
            print(
                f"{size}: train+score {train['seconds']:.1f} s, "
                f"{figures[size]['train_score_vs_ideal_makespan']:.2f}x its ideal makespan; largest Python worker "
                f"{train['peak_largest_worker_mb']:,.0f} MB resident, "
                f"{train['peak_largest_worker_virtual_mb']:,.0f} MB address space "
                f"(yarn profile: {document['yarn_worker_limit_mb']:,.0f} MB)",
                flush=True,
            )
            # Written after every size, so a long run that is stopped keeps the sizes it finished.
            save_results(args.results, "train-scale-", document)
    print(json.dumps({size: f["train_score_vs_ideal_makespan"] for size, f in figures.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
