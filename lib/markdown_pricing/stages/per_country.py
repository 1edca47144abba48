"""The thin adapter between Spark and the per-country model: one `groupBy("country").applyInPandas`."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
from pyspark import TaskContext
from pyspark.resource import ResourceInformation
from pyspark.sql import DataFrame, GroupedData
from pyspark.sql import functions as F
from pyspark.sql import types as T

from markdown_pricing.core.config import ModelParams, RunRules
from markdown_pricing.core.schemas import TRAIN_SCORE_OUTPUT
from markdown_pricing.core.session import task_cpus
from markdown_pricing.model.country import CountryResult, rescore, train_country
from markdown_pricing.model.fallback import train_pooled
from markdown_pricing.model.forecast import prepare
from markdown_pricing.model.gpu import check_mode, device_settings
from markdown_pricing.model.response import STATISTIC_COLUMNS, PriceResponse, event_statistics

OUTPUT_COLUMNS = TRAIN_SCORE_OUTPUT.fieldNames()
# The one group of the pooled model's applyInPandas.
POOL = "_pool"
# A missing string column would default to all-NaN float64, which Arrow cannot turn into strings cleanly.
STRING_COLUMNS = {f.name: object for f in TRAIN_SCORE_OUTPUT.fields if isinstance(f.dataType, T.StringType)}
BOOLEAN_COLUMNS = {f.name: "boolean" for f in TRAIN_SCORE_OUTPUT.fields if isinstance(f.dataType, T.BooleanType)}


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    # Nullable booleans: a row that is no candidate has no `chosen`, and a float NaN would turn the column to floats.
    return frame.reindex(columns=OUTPUT_COLUMNS).astype({**STRING_COLUMNS, **BOOLEAN_COLUMNS})


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
    """A country's prediction and candidate rows (if any) and its country record, in the output schema."""
    record = _country_record(
        result.country,
        model_text=result.model_text,
        card_json=json.dumps(result.card, default=str),
        rule_problems="\n".join(result.rule_problems) or None,
        **task,
        **result.metrics,
    )
    rows = [
        _conform(frame.assign(record=kind))
        for kind, frame in (("prediction", result.predictions), ("candidate", result.candidates))
        if not frame.empty
    ]
    return pd.concat([*rows, record], ignore_index=True)


def _failed(country: str, err: Exception, **task: object) -> pd.DataFrame:
    error = f"{type(err).__name__}: {err}\n" + traceback.format_exc(limit=3)
    return _country_record(country, status="failed", error=error, **task)


SavedModels = Mapping[str, tuple[str | None, dict[str, Any]]]
# Country -> the buyers' rules in force for it (erp.rules.rules_in_force's frame, split by country).
BuyerRules = Mapping[str, pd.DataFrame]


def country_function(
    params: ModelParams,
    rules: RunRules,
    gpu_mode: str = "off",
    resources: Callable[[], Mapping[str, ResourceInformation]] = task_resources,
    saved: SavedModels | None = None,
    buyer_rules: BuyerRules | None = None,
    response: PriceResponse | None = None,
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function Spark runs once per country: trains (or, given `saved` models and cards by country, only
    rescores) and recommends within the country's buyer rules and with the shared price `response`; a failure
    becomes a 'failed' country record, not a crash."""
    check_mode(gpu_mode)

    def train_score_country(weekly: pd.DataFrame) -> pd.DataFrame:
        country = str(weekly["country"].iloc[0])
        addresses = gpu_addresses(resources())
        task = {"task_gpus": ",".join(addresses) or None}
        try:
            device = device_settings(gpu_mode, addresses)
            own_rules = (buyer_rules or {}).get(country)
            if saved is None:
                result = train_country(
                    weekly,
                    params,
                    rules,
                    num_threads=task_cpus(),
                    device=device.params,
                    buyer_rules=own_rules,
                    response=response,
                )
            elif country in saved:
                result = rescore(weekly, *saved[country], params, rules, buyer_rules=own_rules, response=response)
            else:
                raise LookupError(f"no saved model for {country} in the model run")
        except Exception as err:  # one country's failure must not stop the others
            return _failed(country, err, **task)
        return _result_frame(result, device=device.label, **task)

    return train_score_country


def pooled_function(
    fallback: Mapping[str, str],
    params: ModelParams,
    rules: RunRules,
    gpu_mode: str = "off",
    buyer_rules: BuyerRules | None = None,
    response: PriceResponse | None = None,
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function Spark runs once over every country's rows: the pooled model scores the fallback countries."""
    check_mode(gpu_mode)

    def train_score_pooled(weekly: pd.DataFrame) -> pd.DataFrame:
        addresses = gpu_addresses(task_resources())
        task = {"task_gpus": ",".join(addresses) or None}
        try:
            device = device_settings(gpu_mode, addresses)
            results = train_pooled(
                weekly,
                fallback,
                params,
                rules,
                num_threads=task_cpus(),
                device=device.params,
                buyer_rules=buyer_rules or {},
                response=response,
            )
        except Exception as err:  # every fallback country reports the pooled model's failure
            return pd.concat([_failed(country, err, **task) for country in sorted(fallback)], ignore_index=True)
        return pd.concat([_result_frame(r, device=device.label, **task) for r in results], ignore_index=True)

    return train_score_pooled


def pooled_scores(
    weekly: DataFrame,
    fallback: Mapping[str, str],
    params: ModelParams,
    rules: RunRules,
    gpu_mode: str = "off",
    buyer_rules: BuyerRules | None = None,
    response: PriceResponse | None = None,
) -> DataFrame:
    """Scores the fallback countries with one model over every country's history, in a single task: the pooled
    model needs all countries at once (and its memory: every history row, plus the fallback countries' future)."""
    rows = weekly.where(~F.col("is_future") | F.col("country").isin(list(fallback)))
    train_pooled_countries = pooled_function(fallback, params, rules, gpu_mode, buyer_rules, response)
    return (
        rows.withColumn(POOL, F.lit(0))
        .groupBy(POOL)
        .applyInPandas(lambda frame: train_pooled_countries(frame.drop(columns=POOL)), TRAIN_SCORE_OUTPUT)
    )


_MASK = 0xFFFFFFFF
# A column of its own for the task key: grouping by it keeps Spark from shuffling again after the repartition.
TASK_KEY = "_task_key"


def _rotl(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def spark_int_hash(value: int, seed: int = 42) -> int:
    """Spark's hash of an int column (Murmur3_x86_32.hashInt, seed 42): what `repartition(n, col)` partitions by."""
    k1 = _rotl((value & _MASK) * 0xCC9E2D51 & _MASK, 15) * 0x1B873593 & _MASK
    h1 = (_rotl(seed ^ k1, 13) * 5 + 0xE6546B64) & _MASK
    h1 ^= 4
    h1 = (h1 ^ (h1 >> 16)) * 0x85EBCA6B & _MASK
    h1 = (h1 ^ (h1 >> 13)) * 0xC2B2AE35 & _MASK
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


def task_keys(order: Sequence[str]) -> dict[str, int]:
    """Per country, the smallest free integer that hash partitioning into len(order) tasks puts in task i for the
    i-th country of `order`.

    Spark launches a stage's tasks in partition order, so repartitioning by these keys starts countries in `order`,
    one per task, with no empty task and no two countries sharing one.
    """
    count = len(order)
    keys: dict[str, int] = {}
    taken: set[int] = set()
    for task, country in enumerate(order):
        candidate = 0
        while candidate in taken or spark_int_hash(candidate) % count != task:
            candidate += 1
        keys[country] = candidate
        taken.add(candidate)
    return keys


def largest_first(rows: Mapping[str, int]) -> list[str]:
    """Countries by row count, largest first (then by name): the order that keeps the longest country off the end."""
    return sorted(rows, key=lambda country: (-rows[country], country))


def by_task(weekly: DataFrame, order: Sequence[str]) -> GroupedData:
    """Weekly rows grouped by country, each country in a task of its own, the tasks numbered (and so started) in
    `order`. An explicit partition count is never coalesced by adaptive execution."""
    keys = task_keys(order)
    key_of = F.create_map(*(F.lit(value) for pair in keys.items() for value in pair))
    return weekly.withColumn(TASK_KEY, key_of[F.col("country")]).repartition(len(order), TASK_KEY).groupBy(TASK_KEY)


def train_score(
    weekly: DataFrame,
    params: ModelParams,
    rules: RunRules,
    gpu_mode: str = "off",
    order: Sequence[str] | None = None,
    saved: SavedModels | None = None,
    buyer_rules: BuyerRules | None = None,
    response: PriceResponse | None = None,
) -> DataFrame:
    """Trains and scores every country in parallel, one pandas group per country.

    With `order` (every country of `weekly`), each country runs in a task of its own, started in that order:
    countries train in parallel, each holds its own GPU, and the largest can start first.
    """
    train_country = country_function(params, rules, gpu_mode, saved=saved, buyer_rules=buyer_rules, response=response)
    if not order:
        return weekly.groupBy("country").applyInPandas(train_country, TRAIN_SCORE_OUTPUT)
    return by_task(weekly, order).applyInPandas(
        lambda frame: train_country(frame.drop(columns=TASK_KEY)), TRAIN_SCORE_OUTPUT
    )


RESPONSE_STATISTICS = T.StructType(
    [T.StructField(name, T.StringType()) for name in STATISTIC_COLUMNS[:2]]
    + [T.StructField("events", T.LongType())]
    + [T.StructField(name, T.DoubleType()) for name in STATISTIC_COLUMNS[3:]]
)


def response_statistics(weekly: DataFrame, window_weeks: int) -> DataFrame:
    """Each country's markdown events summed by category (model.response.event_statistics), one task per country:
    the driver adds these few rows into the shared price response."""
    history = weekly.where(~F.col("is_future"))
    return history.groupBy("country").applyInPandas(
        lambda rows: event_statistics(prepare(rows), window_weeks), RESPONSE_STATISTICS
    )
