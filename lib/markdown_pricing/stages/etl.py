"""ETL stage: raw contract datasets -> quarantine + curated weekly Parquet partitioned by country."""
from __future__ import annotations

import json
import logging
from functools import reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from markdown_pricing import etl
from markdown_pricing.schemas import RAW_DATASETS
from markdown_pricing.stages import RunContext
from markdown_pricing.storage import has_success_marker, write_json

log = logging.getLogger(__name__)


class MissingInputError(RuntimeError):
    """A raw dataset folder is absent or incomplete (no _SUCCESS marker)."""


def read_raw(spark: SparkSession, ctx: RunContext, dataset: str) -> DataFrame:
    """Reads one raw dataset after checking it is complete and carries the contract's columns."""
    path = ctx.layout.raw_dataset(dataset)
    if not has_success_marker(path):
        raise MissingInputError(f"dataset {dataset!r} at {path} has no _SUCCESS marker: upstream export incomplete")
    etl.check_raw_schema(dataset, spark.read.parquet(path).schema)
    # Reading with the contract schema widens int32 files to bigint; a merged inferred schema would fail.
    return spark.read.schema(RAW_DATASETS[dataset]).parquet(path)


def run(spark: SparkSession, ctx: RunContext) -> int:
    """Validates, quarantines, deduplicates and curates the raw datasets of one run."""
    spark.sparkContext.setJobGroup(f"etl-{ctx.run_id}", f"ETL {ctx.run_date}")
    raw = {name: read_raw(spark, ctx, name) for name in RAW_DATASETS}
    counts: dict[str, dict[str, Any]] = {}
    tagged: dict[str, DataFrame] = {}
    for name in RAW_DATASETS:  # articles first: the others are checked against its valid rows
        deduplicated = raw[name].dropDuplicates()
        checked = deduplicated
        if name != "articles":
            checked = checked.transform(etl.with_known_article(etl.valid_rows("articles")(tagged["articles"])))
        tagged[name] = checked.transform(etl.with_reject_reason(name, ctx.run_date)).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        spark.sparkContext.setJobDescription(f"ETL: check {name}")
        by_reason = {row[0]: row[1] for row in tagged[name].groupBy(etl.REJECT_REASON).count().collect()}
        kept, rejected = by_reason.pop(None, 0), sum(by_reason.values())
        rows = raw[name].count()
        counts[name] = {
            "rows": rows,
            "duplicates": rows - kept - rejected,
            "valid": kept,
            "rejected": rejected,
            "rejected_by_reason": by_reason,
        }
        log.info("%s: %s", name, json.dumps(counts[name]))

    spark.sparkContext.setJobDescription("ETL: write quarantine")
    quarantine = reduce(DataFrame.unionByName, (etl.quarantine_rows(n)(df) for n, df in tagged.items()))
    quarantine.write.mode("overwrite").parquet(ctx.layout.quarantine)
    write_json(ctx.layout.etl_record, counts)
    etl.check_rejected_share(counts, ctx.cfg.run.max_rejected_share)

    valid = {name: etl.valid_rows(name)(df) for name, df in tagged.items()}
    curated = etl.curated_weekly(valid["articles"], valid["sales"], valid["prices"], valid["stock"], ctx.run_date)
    spark.sparkContext.setJobDescription("ETL: write curated weekly")
    curated.repartition("country").write.mode("overwrite").partitionBy("country").parquet(ctx.layout.weekly)
    log.info("curated weekly rows written to %s", ctx.layout.weekly)
    return 0
