"""`make bench-etl-scale`: the ETL's cost per raw row at the medium and large sizes, side by side in one process.

`make bench` runs a size whole, and the large world's train+score takes hours on 2 cores; the ETL alone takes
minutes. Each world is generated as `make bench` generates it (and reused from its work folder), then the ETL stage
runs on it in one session, after a warm-up on the tiny world. Writes bench/results/etl-scale-<date>.json and
etl-scale-latest.json: per size the rows, seconds, rows per second, shuffle partitions and peak memory, and the
large world's cost per row over the medium world's.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from bench.harness import RUN_DATE, SIZES, ensure_world, stage_figures
from bench.measure import measured, save_results
from markdown_pricing.core.context import RunContext, load_run_config
from markdown_pricing.core.session import build_session
from markdown_pricing.core.storage import read_json
from markdown_pricing.stages import etl_job


def etl_figures(spark: SparkSession, root: Path, size: str) -> dict[str, Any]:
    """Generates the world when needed and measures its ETL."""
    ensure_world(root / size / "raw", SIZES[size])
    ctx = RunContext(RUN_DATE, f"bench-{size}", raw=str(root / size / "raw"), work=str(root / size / "work"))
    cfg = load_run_config(ctx)
    with measured() as sample:
        etl_job.run(spark, ctx, cfg)
    rows = sum(dataset["rows"] for dataset in read_json(ctx.layout.etl_record).values())
    raw_bytes, partitions = etl_job.input_shuffle_partitions(spark, ctx, cfg)
    return {**stage_figures(sample, rows), "raw_bytes": raw_bytes, "shuffle_partitions": partitions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.etl_scale", description=__doc__)
    parser.add_argument("--work", type=Path, required=True, help="the bench's work folder (worlds are reused)")
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--sizes", default="medium,large", help="the reference size first, e.g. medium,large")
    args = parser.parse_args(argv)
    sizes = args.sizes.split(",")
    root = args.work.resolve()
    warm_up = RunContext(RUN_DATE, "bench-tiny", raw=str(root / "tiny" / "raw"), work=str(root / "tiny" / "work"))
    spark = build_session(load_run_config(warm_up), "bench-etl-scale", RUN_DATE.isoformat())
    try:
        etl_figures(spark, root, "tiny")
        figures = {size: etl_figures(spark, root, size) for size in sizes}
    finally:
        spark.stop()
    reference = figures[sizes[0]]
    document = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sizes": figures,
        # Cost per row: above 1 a size pays more per raw row than the reference size does.
        "cost_per_row_vs_reference": {
            size: reference["rows_per_s"] / figures[size]["rows_per_s"] for size in sizes[1:]
        },
    }
    print(json.dumps(document["cost_per_row_vs_reference"]), flush=True)
    save_results(args.results, "etl-scale-", document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
