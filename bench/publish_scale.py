"""`make bench-publish-scale`: the publish stage against a raw COPY of the same rows at a retailer's size.

The large world's train+score takes hours on 2 cores, so its publish is measured on stand-in outputs: the medium
world's predictions and candidates (from `make bench BENCH_SIZES=medium`) copied `--copies` times, each copy's
article ids made unique, spread over 45 countries (18 copies: about 1 M predictions and 7 M candidates). Publish
reads nothing but these outputs and the country results, so the rows it writes are the ones a large run would.
bench.harness.publish measures it as `make bench` does, twice (the first pays for the JVM's first reads), and
writes bench/results/publish-scale-<date>.json and publish-scale-latest.json.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from bench.harness import ERP_SCHEMA, RUN_DATE
from bench.harness import publish as measure_publish
from bench.measure import bench_erp, save_results
from markdown_pricing.core.context import RunContext, load_run_config
from markdown_pricing.core.session import build_session
from markdown_pricing.core.storage import read_json, write_json
from markdown_pricing.synthetic.sample import COUNTRY_CODES

COUNTRIES = 45


def stand_in_outputs(source: RunContext, target: RunContext, copies: int) -> dict[str, int]:
    """Writes `copies` copies of the source run's predictions, candidates and country results into the target run,
    copy k of a country's rows under article ids suffixed "-k", the copies dealt over COUNTRIES countries. A country
    that several copies land in takes the result of the last one: the medium run's countries all trained."""
    results = read_json(source.layout.country_results)
    dealt = {
        (k, country): COUNTRY_CODES[i % COUNTRIES]
        for i, (k, country) in enumerate((k, country) for k in range(copies) for country in sorted(results))
    }
    rows = {}
    for name in ("predictions", "candidates"):
        table = ds.dataset(getattr(source.layout, name), format="parquet", partitioning="hive").to_table()
        parts = []
        for (k, country), code in dealt.items():
            part = table.filter(pc.equal(table["country"], country))
            article_ids = pc.binary_join_element_wise(part["article_id"], f"-{k}", "")
            part = part.set_column(part.schema.get_field_index("article_id"), "article_id", article_ids)
            countries = pa.array([code] * len(part), pa.string())
            parts.append(part.set_column(part.schema.get_field_index("country"), "country", countries))
        folder = Path(getattr(target.layout, name))
        shutil.rmtree(folder, ignore_errors=True)
        pq.write_to_dataset(pa.concat_tables(parts), folder, partition_cols=["country"])
        (folder / "_SUCCESS").touch()
        rows[name] = sum(len(part) for part in parts)
    write_json(
        target.layout.country_results,
        {code: {**results[country], "country": code} for (_, country), code in dealt.items()},
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.publish_scale", description=__doc__)
    parser.add_argument("--work", type=Path, required=True, help="the bench's work folder, with the medium world run")
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--jdbc-jar", required=True)
    parser.add_argument("--copies", type=int, default=18)
    args = parser.parse_args(argv)
    work = args.work.resolve()
    source = RunContext(RUN_DATE, "bench-medium", raw=str(work / "medium" / "raw"), work=str(work / "medium" / "work"))
    if not Path(source.layout.country_results).is_file():
        parser.error(f"no medium run under {work}: run `make bench BENCH_SIZES=medium` first")
    root = work / "publish-scale"
    target = RunContext(RUN_DATE, "bench-publish-scale", raw=str(root / "raw"), work=str(root / "work"))
    written = stand_in_outputs(source, target, args.copies)
    runs: list[dict[str, Any]] = []
    with bench_erp(work / "erp" / "pgdata") as server:
        cfg = load_run_config(target)
        cfg = replace(cfg, erp=replace(cfg.erp, dsn=server.dsn, schema=ERP_SCHEMA))
        conf = {"spark.jars": args.jdbc_jar, "spark.eventLog.compress": "false"}
        spark = build_session(cfg, "bench-publish-scale", RUN_DATE.isoformat(), extra_conf=conf)
        try:
            for _ in range(2):
                figures = measure_publish(spark, target, cfg, server)
                runs.append({**figures, "publish_vs_raw_copy": figures["raw_copy"]["seconds"] / figures["seconds"]})
                print(
                    f"publish {figures['seconds']:.1f} s, raw COPY {figures['raw_copy']['seconds']:.1f} s: "
                    f"{runs[-1]['publish_vs_raw_copy']:.2f}",
                    flush=True,
                )
        finally:
            spark.stop()
    document = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "copies_of_medium": args.copies,
        "countries": COUNTRIES,
        "rows": written,
        "runs": runs,
    }
    save_results(args.results, "publish-scale-", document)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
