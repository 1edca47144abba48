"""The thin adapter between Spark and the per-country model: one `groupBy("country").applyInPandas`."""
from __future__ import annotations

import traceback
from collections.abc import Callable, Collection, Mapping

import pandas as pd
from pyspark import TaskContext
from pyspark.resource import ResourceInformation
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from markdown_pricing.config import ModelParams, RunRules
from markdown_pricing.gpu import check_mode, device_settings
from markdown_pricing.model import train_and_recommend
from markdown_pricing.schemas import TRAIN_SCORE_OUTPUT
from markdown_pricing.spark import task_cpus

OUTPUT_COLUMNS = TRAIN_SCORE_OUTPUT.fieldNames()
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


def country_function(
    params: ModelParams,
    rules: RunRules,
    gpu_mode: str = "off",
    resources: Callable[[], Mapping[str, ResourceInformation]] = task_resources,
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function Spark runs once per country; a failure becomes a 'failed' country record, not a crash."""
    check_mode(gpu_mode)

    def train_score_country(weekly: pd.DataFrame) -> pd.DataFrame:
        country = str(weekly["country"].iloc[0])
        addresses = gpu_addresses(resources())
        task = {"task_gpus": ",".join(addresses) or None}
        try:
            device = device_settings(gpu_mode, addresses)
            result = train_and_recommend(weekly, params, rules, num_threads=task_cpus(), device=device.params)
        except Exception as err:  # one country's failure must not stop the others
            message = f"{type(err).__name__}: {err}"
            error = message + "\n" + traceback.format_exc(limit=3)
            return _country_record(country, status="failed", error=error, **task)
        predictions = _conform(result.predictions.assign(record="prediction"))
        summary = _country_record(
            country, status="trained", model_text=result.model_text, device=device.label, **task, **result.metrics
        )
        return pd.concat([predictions, summary], ignore_index=True)

    return train_score_country


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
    weekly: DataFrame, params: ModelParams, rules: RunRules, gpu_mode: str = "off", tasks: int | None = None
) -> DataFrame:
    """Trains and scores every country in parallel, one pandas group per country.

    With `tasks` from `task_count`, each country runs in a task of its own: countries train in parallel and each
    holds its own GPU. An explicit partition count is never coalesced by adaptive execution.
    """
    grouped = (weekly.repartition(tasks, "country") if tasks else weekly).groupBy("country")
    return grouped.applyInPandas(country_function(params, rules, gpu_mode), TRAIN_SCORE_OUTPUT)
