"""ETL stage: raw contract datasets -> quarantine + curated weekly Parquet partitioned by country."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial, reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from markdown_pricing.core.config import Config, DriftSettings
from markdown_pricing.core.context import RunContext
from markdown_pricing.core.drift import (
    BLOCK,
    PROFILE_FIELDS,
    DriftCheck,
    InputProfile,
    describe,
    drift_findings,
    previous_profile,
    write_drift_check,
    write_input_profile,
)
from markdown_pricing.core.errors import InputError
from markdown_pricing.core.schemas import RAW_DATASETS
from markdown_pricing.core.session import shuffle_partitions, shuffle_partitions_setting, spark_job
from markdown_pricing.core.storage import filesystem, has_success_marker, join, write_json
from markdown_pricing.etl import transforms
from markdown_pricing.observe.progress import StageProgress

log = logging.getLogger(__name__)


UNREADABLE_FILE = re.compile(r"FAILED_READ_FILE\S*\] Encountered error while reading file (\S+?)\.?\s")


class MissingInputError(InputError):
    """A raw dataset folder is absent or incomplete (no _SUCCESS marker)."""


class EmptyInputError(InputError):
    """A complete raw dataset holds no rows."""


class CorruptInputError(InputError):
    """A raw file is not readable Parquet."""


def read_raw(spark: SparkSession, ctx: RunContext, dataset: str) -> DataFrame:
    """Reads one raw dataset after checking it is complete and carries the contract's columns."""
    path = ctx.layout.raw_dataset(dataset)
    if not has_success_marker(path):
        raise MissingInputError(f"dataset {dataset!r} at {path} has no _SUCCESS marker: upstream export incomplete")
    try:
        found = spark.read.parquet(path).schema
    except AnalysisException as err:
        if "UNABLE_TO_INFER_SCHEMA" in str(err):
            raise EmptyInputError(
                f"dataset {dataset!r} at {path} is marked complete but holds no Parquet files"
            ) from err
        raise
    transforms.check_raw_schema(dataset, found)
    # Reading with the contract schema widens int32 files to bigint; a merged inferred schema would fail.
    return spark.read.schema(RAW_DATASETS[dataset]).parquet(path)


@contextmanager
def naming_unreadable_files(dataset: str) -> Iterator[None]:
    """Turns Spark's failure to read a file into an error that names the dataset and the file."""
    try:
        yield
    except Exception as err:
        unreadable = UNREADABLE_FILE.search(str(err))
        if unreadable is None:
            raise
        raise CorruptInputError(
            f"dataset {dataset!r}: cannot read {unreadable.group(1)}: not a readable Parquet file"
        ) from None


def check_drift(ctx: RunContext, limits: DriftSettings, profile: InputProfile) -> DriftCheck:
    """Compares the run's input profile with the previous run's, logs each change beyond the limits and writes
    drift.json, which the publish gate and the report read."""
    previous = previous_profile(ctx.work, ctx.run_id, ctx.run_date)
    if previous is None:
        log.info(
            "input drift: no earlier run under %s has an input profile: nothing to compare with", join(ctx.work, "runs")
        )
        check = DriftCheck(previous_run_id=None, previous_run_date=None)
    else:
        check = DriftCheck(previous.run_id, previous.run_date, tuple(drift_findings(profile, previous, limits)))
        if not check.findings:
            log.info("input drift against run %s: nothing beyond the limits", previous.run_id)
    for finding in check.findings:
        blocks = (
            f"; the publish gate blocks it (--override-gate {finding.country} publishes it anyway)"
            if finding.level == BLOCK
            else ""
        )
        log.warning("country %s: %s%s", finding.country, describe(finding), blocks)
    write_drift_check(ctx.layout.drift, check)
    return check


def shuffle_partitions_for(raw_bytes: int, bytes_per_partition: int, at_least: int) -> int:
    """One shuffle partition per bytes_per_partition bytes of raw input, and at least `at_least`."""
    return max(at_least, math.ceil(raw_bytes / bytes_per_partition))


def input_shuffle_partitions(spark: SparkSession, ctx: RunContext, cfg: Config) -> tuple[int, int]:
    """The bytes of the run's raw datasets and the shuffle partitions the ETL gives them."""
    raw_bytes = sum(filesystem(path).size(path) for path in map(ctx.layout.raw_dataset, RAW_DATASETS))
    return raw_bytes, shuffle_partitions_for(
        raw_bytes, cfg.etl.raw_bytes_per_shuffle_partition, shuffle_partitions_setting(spark)
    )


def run(spark: SparkSession, ctx: RunContext, cfg: Config) -> int:
    """Curates one run's raw datasets in shuffle partitions sized to them: a small delivery pays for no more tasks
    than the session's setting, a large one comes in pieces that an executor (or a local driver) holds."""
    raw_bytes, partitions = input_shuffle_partitions(spark, ctx, cfg)
    log.info("raw input: %.1f MB of Parquet, shuffled in %d partitions", raw_bytes / 1e6, partitions)
    with shuffle_partitions(spark, partitions):
        return curate(spark, ctx, cfg)


def curate(spark: SparkSession, ctx: RunContext, cfg: Config) -> int:
    """Validates, quarantines, deduplicates and curates the raw datasets of one run."""
    job = partial(spark_job, spark, f"etl-{ctx.run_id}")
    with job("ETL: check raw schemas"):
        raw = {name: read_raw(spark, ctx, name) for name in RAW_DATASETS}
    # Before any write: a stale feed leaves nothing behind, so the scheduler can wait and submit the job again.
    with job("ETL: check the sales reach the run's week"), naming_unreadable_files("sales"):
        latest = raw["sales"].transform(transforms.latest_in_window("sales", ctx.run_date)).first()
    transforms.check_fresh("sales", latest["latest"] if latest else None, ctx.run_date, cfg.run.max_sales_lag_days)
    counts: dict[str, dict[str, Any]] = {}
    tagged: dict[str, DataFrame] = {}
    progress = StageProgress(ctx.layout, "etl", total=len(RAW_DATASETS), unit="datasets")
    for name in RAW_DATASETS:  # articles first: the others are checked against its valid rows
        # Counted in the pass that finds the reject reasons, not by a second scan; the UI shows them as the
        # scan stage's Input records.
        read = Observation(f"rows read: {name}")
        deduplicated = raw[name].observe(read, F.count(F.lit(1)).alias("rows")).dropDuplicates()
        checked = deduplicated
        if name != "articles":
            checked = checked.transform(
                transforms.with_known_article(transforms.valid_rows("articles")(tagged["articles"]))
            )
        # On disk: a cached block that was spilled is read back into the heap whole, which failed the bench's large
        # world with a Java heap error. Its three reads come from the page cache at the same speed (medium world).
        tagged[name] = checked.transform(transforms.with_reject_reason(name, ctx.run_date)).persist(
            StorageLevel.DISK_ONLY
        )
        with job(f"ETL: read and check {name}"), naming_unreadable_files(name):
            by_reason = {row[0]: row[1] for row in tagged[name].groupBy(transforms.REJECT_REASON).count().collect()}
        if not by_reason:
            # Checked before reading the observation: Spark may skip an empty input's metrics altogether.
            raise EmptyInputError(f"dataset {name!r} at {ctx.layout.raw_dataset(name)} holds no rows")
        rows = int(read.get["rows"])
        kept, out_of_window = by_reason.pop(None, 0), by_reason.pop(transforms.OUT_OF_WINDOW, 0)
        rejected = sum(by_reason.values())
        counts[name] = {
            "rows": rows,
            "duplicates": rows - kept - rejected - out_of_window,
            "valid": kept,
            "out_of_window": out_of_window,
            "rejected": rejected,
            "rejected_by_reason": by_reason,
        }
        log.info("%s: %s", name, json.dumps(counts[name]))
        progress.update(f"{name}: {rows} rows, {rejected} rejected", done=len(counts))

    quarantine = reduce(DataFrame.unionByName, (transforms.quarantine_rows(n)(df) for n, df in tagged.items()))
    with job("ETL: write quarantine"):
        quarantine.write.mode("overwrite").parquet(ctx.layout.quarantine)
    write_json(ctx.layout.etl_record, counts)
    transforms.check_rejected_share(counts, cfg.run.max_rejected_share)

    valid = {name: transforms.valid_rows(name)(df) for name, df in tagged.items()}
    # Read by the article states and, several times, by the future weeks (which articles, their stock): one
    # aggregate of the snapshots, kept rather than computed from them each time.
    latest = transforms.latest_snapshot(valid["stock"], ctx.run_date).persist(StorageLevel.DISK_ONLY)
    curated = transforms.curated_weekly(
        valid["articles"], valid["sales"], valid["prices"], valid["stock"], latest, ctx.run_date
    )
    with job("ETL: write curated weekly"):
        curated.repartition("country").write.mode("overwrite").partitionBy("country").parquet(ctx.layout.weekly)
    log.info("curated weekly rows written to %s", ctx.layout.weekly)
    # The publish gate tells an article that sold out or whose season ended from one that went missing.
    with job("ETL: write article states"):
        transforms.article_states(valid["articles"], latest, ctx.run_date).write.mode("overwrite").parquet(
            ctx.layout.article_states
        )
    # From what was written, so that the profile is what training reads.
    with job("ETL: profile the input for the drift check"):
        rows = transforms.input_profile(
            spark.read.parquet(ctx.layout.weekly), spark.read.parquet(ctx.layout.article_states), ctx.run_date
        ).collect()
    profile = InputProfile(
        ctx.run_id,
        ctx.run_date,
        {row["country"]: {measure: row[measure] for measure in PROFILE_FIELDS} for row in rows},
    )
    write_input_profile(ctx.layout.input_profile, profile)
    check_drift(ctx, cfg.drift, profile)
    return 0
