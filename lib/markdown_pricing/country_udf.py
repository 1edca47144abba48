"""The thin adapter between Spark and the per-country model: one `groupBy("country").applyInPandas`."""
from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Collection, Mapping
from typing import Any

import pandas as pd
from pyspark import TaskContext
from pyspark.resource import ResourceInformation
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from markdown_pricing.config import ModelParams, RunRules
from markdown_pricing.gpu import check_mode, device_settings
from markdown_pricing.model import CountryResult, rescore, train_country, train_pooled
from markdown_pricing.schemas import TRAIN_SCORE_OUTPUT
from markdown_pricing.spark import task_cpus

OUTPUT_COLUMNS = TRAIN_SCORE_OUTPUT.fieldNames()
# The one group of the pooled model's applyInPandas.
POOL = "_pool"
# A missing string column would default to all-NaN float64, which Arrow cannot turn into strings cleanly.
STRING_COLUMNS = {f.name: object for f in TRAIN_SCORE_OUTPUT.fields if isinstance(f.dataType, T.StringType)}


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.reindex(columns=OUTPUT_COLUMNS).astype(STRING_COLUMNS)


def _country_record(country: str, **values: object) -> pd.DataFrame:
    return _conform(pd.DataFrame([{"record": "country", "country": country, **values}]))


def task_resources() -> Mapping[str, ResourceInformation]:
    """The resources (GPUs) Spark assigned to the current task; none outside a task."""
    context = TaskContext.get()
    return context.resources() if context else {}


def gpu_addresses(resources: Mapping[str, ResourceInformation]) -> list[str]:
    """The GPU addresses among a task's resources."""
    gpu = resources.get("gpu")
    return list(gpu.addresses) if gpu else []


def _result_frame(result: CountryResult, **task: object) -> pd.DataFrame:
    """A country's prediction rows (if any) and its country record, in the output schema."""
    record = _country_record(
        result.country, model_text=result.model_text, card_json=json.dumps(result.card, default=str),
        **task, **result.metrics,
    )  # fmt: skip
    if result.predictions.empty:
        return record
    return pd.concat([_conform(result.predictions.assign(record="prediction")), record], ignore_index=True)


def _failed(country: str, err: Exception, **task: object) -> pd.DataFrame:
    error = f"{type(err).__name__}: {err}\n" + traceback.format_exc(limit=3)
    return _country_record(country, status="failed", error=error, **task)


SavedModels = Mapping[str, tuple[str | None, dict[str, Any]]]


def country_function(
    params: ModelParams,
    rules: RunRules,
    gpu_mode: str = "off",
    resources: Callable[[], Mapping[str, ResourceInformation]] = task_resources,
    saved: SavedModels | None = None,
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function Spark runs once per country: trains (or, given `saved` models and cards by country, only
    rescores); a failure becomes a 'failed' country record, not a crash."""
    check_mode(gpu_mode)

    def train_score_country(weekly: pd.DataFrame) -> pd.DataFrame:
        country = str(weekly["country"].iloc[0])
        addresses = gpu_addresses(resources())
        task = {"task_gpus": ",".join(addresses) or None}
        try:
            device = device_settings(gpu_mode, addresses)
            if saved is None:
                result = train_country(weekly, params, rules, num_threads=task_cpus(), device=device.params)
            elif country in saved:
                result = rescore(weekly, *saved[country], params, rules)
            else:
                raise LookupError(f"no saved model for {country} in the model run")
        except Exception as err:  # one country's failure must not stop the others
            return _failed(country, err, **task)
        return _result_frame(result, device=device.label, **task)

    return train_score_country


def pooled_function(
    fallback: Mapping[str, str], params: ModelParams, rules: RunRules, gpu_mode: str = "off"
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function Spark runs once over every country's rows: the pooled model scores the fallback countries."""
    check_mode(gpu_mode)

    def train_score_pooled(weekly: pd.DataFrame) -> pd.DataFrame:
        addresses = gpu_addresses(task_resources())
        task = {"task_gpus": ",".join(addresses) or None}
        try:
            device = device_settings(gpu_mode, addresses)
            results = train_pooled(weekly, fallback, params, rules, num_threads=task_cpus(), device=device.params)
        except Exception as err:  # every fallback country reports the pooled model's failure
            return pd.concat([_failed(country, err, **task) for country in sorted(fallback)], ignore_index=True)
        return pd.concat([_result_frame(r, device=device.label, **task) for r in results], ignore_index=True)

    return train_score_pooled


def pooled_scores(
    weekly: DataFrame, fallback: Mapping[str, str], params: ModelParams, rules: RunRules, gpu_mode: str = "off"
) -> DataFrame:
    """Scores the fallback countries with one model over every country's history, in a single task: the pooled
    model needs all countries at once (and its memory: every history row, plus the fallback countries' future)."""
    rows = weekly.where(~F.col("is_future") | F.col("country").isin(list(fallback)))
    pooled = rows.withColumn(POOL, F.lit(0)).groupBy(POOL)
    return pooled.applyInPandas(pooled_function(fallback, params, rules, gpu_mode), TRAIN_SCORE_OUTPUT)


def task_count(country_hashes: Collection[int]) -> int:
    """The fewest partitions that give each country a task of its own.

    Spark's hash partitioning puts a row in partition pmod(hash(country), n) (`F.hash` computes the same hash);
    the smallest n at which the countries' hashes do not collide does it, leaving a few tasks empty.
    """
    distinct = set(country_hashes)
    count = max(len(distinct), 1)
    while len({value % count for value in distinct}) < len(distinct):
        count += 1
    return count


def train_score(
    weekly: DataFrame,
    params: ModelParams,
    rules: RunRules,
    gpu_mode: str = "off",
    tasks: int | None = None,
    saved: SavedModels | None = None,
) -> DataFrame:
    """Trains and scores every country in parallel, one pandas group per country.

    With `tasks` from `task_count`, each country runs in a task of its own: countries train in parallel and each
    holds its own GPU. An explicit partition count is never coalesced by adaptive execution.
    """
    grouped = (weekly.repartition(tasks, "country") if tasks else weekly).groupBy("country")
    return grouped.applyInPandas(
        country_function(params, rules, gpu_mode, saved=saved), TRAIN_SCORE_OUTPUT
    )
