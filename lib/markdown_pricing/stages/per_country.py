"""The thin adapter between Spark and the per-country model: one `groupBy("country").applyInPandas`."""

from __future__ import annotations

import json
import resource
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
from pyspark import TaskContext
from pyspark.resource import ResourceInformation
from pyspark.sql import Column, DataFrame, GroupedData, Row
from pyspark.sql import functions as F
from pyspark.sql import types as T

from markdown_pricing.core.config import ModelParams, RunRules
from markdown_pricing.core.schemas import TRAIN_SCORE_OUTPUT
from markdown_pricing.core.session import task_cpus
from markdown_pricing.model.country import CountryResult, rescore, too_little_history, train_country
from markdown_pricing.model.fallback import PooledModel, fit_pooled, score_fallback
from markdown_pricing.model.forecast import prepare
from markdown_pricing.model.gpu import check_mode, device_settings
from markdown_pricing.model.response import (
    EVENT_COLUMNS,
    PAIR_COLUMNS,
    STATISTIC_COLUMNS,
    STATISTICS,
    PriceResponse,
    country_statistics,
)

OUTPUT_COLUMNS = TRAIN_SCORE_OUTPUT.fieldNames()
# The pooled model's task among the countries', and the record it returns.
POOL, POOLED_RECORD = "_pool", "pooled_model"
# Which task a row goes to: its country's, and the pool's too when the pool samples it (a second row); a country too
# new to train sends its rows to the pool's task alone.
GROUP = "_group"
# Whether a row is in the pooled model's training sample (the pool task also gets the rows of the countries it scores).
IN_POOL = "_in_pool"
# A missing string column would default to all-NaN float64, which Arrow cannot turn into strings cleanly.
STRING_COLUMNS = {f.name: object for f in TRAIN_SCORE_OUTPUT.fields if isinstance(f.dataType, T.StringType)}
BOOLEAN_COLUMNS = {f.name: "boolean" for f in TRAIN_SCORE_OUTPUT.fields if isinstance(f.dataType, T.BooleanType)}
# Every number as a float, in every record: an integer column is null in the other records' rows anyway.
FLOAT_COLUMNS = {
    f.name: "float64"
    for f in TRAIN_SCORE_OUTPUT.fields
    if isinstance(f.dataType, (T.IntegerType, T.LongType, T.DoubleType))
}


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    # Nullable booleans: a row that is no candidate has no `chosen`, and a float NaN would turn the column to floats.
    return frame.reindex(columns=OUTPUT_COLUMNS).astype({**STRING_COLUMNS, **BOOLEAN_COLUMNS, **FLOAT_COLUMNS})


def _stacked(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Conformed frames' rows one after another. Column by column: a whole-frame pd.concat checks every null of a
    text column one value at a time (half a second for a large country's candidates, outside its recorded time)."""
    return pd.DataFrame({name: pd.concat([part[name] for part in parts], ignore_index=True) for name in OUTPUT_COLUMNS})


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
    return _stacked([*rows, record])


def _timed(records: pd.DataFrame, started: float) -> pd.DataFrame:
    """The task's records with the seconds since `started` on its country or pool record (whatever became of it:
    a failed task held its slot as long)."""
    return records.assign(
        function_seconds=records["function_seconds"].mask(
            records["record"].isin(("country", POOLED_RECORD)), time.perf_counter() - started
        )
    )


def failure_message(err: Exception, rows: int) -> str:
    """What a country task's failure says: the error, what running out of memory means and where the limit comes
    from, and the last frames of the traceback."""
    message = type(err).__name__ + (f": {err}" if str(err) else "")
    # LightGBM reports its C++ allocation failures as LightGBMError("std::bad_alloc").
    if isinstance(err, MemoryError) or "bad_alloc" in str(err):
        limit, _ = resource.getrlimit(resource.RLIMIT_AS)
        allowed = (
            "it has no address-space limit, so the machine ran out"
            if limit == resource.RLIM_INFINITY
            else f"its address space is limited to {limit / 2**20:,.0f} MB, spark.executor.pyspark.memory / "
            "spark.executor.cores"
        )
        message += (
            f" (the country's {rows:,} weekly rows did not fit this Python worker's memory: {allowed}; README "
            "'Memory limits' sizes it by the largest country's weekly rows)"
        )
    return message + "\n" + traceback.format_exc(limit=3)


def _failed(country: str, err: Exception, rows: int, **task: object) -> pd.DataFrame:
    return _country_record(country, status="failed", error=failure_message(err, rows), **task)


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
        started = time.perf_counter()
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
            records = _result_frame(result, device=device.label, **task)
        except Exception as err:  # one country's failure must not stop the others
            records = _failed(country, err, len(weekly), **task)
        return _timed(records, started)

    return train_score_country


def _pooled_record(pooled: PooledModel | None, error: str | None = None, **task: object) -> pd.DataFrame:
    """The pool task's one row: the pooled model's text and the rest of it as JSON, or why it failed."""
    values = (
        {
            "status": "trained",
            "model_text": pooled.model_text,
            "card_json": pooled.as_json(),
            "fit_seconds": pooled.fit_seconds,
        }
        if pooled
        else {"status": "failed", "error": error}
    )
    return _conform(pd.DataFrame([{"record": POOLED_RECORD, "country": POOL, **values, **task}]))


def pooled_function(
    params: ModelParams,
    rules: RunRules,
    gpu_mode: str = "off",
    countries: Sequence[str] = (),
    too_new: Mapping[str, str] | None = None,
    response: PriceResponse | None = None,
    buyer_rules: BuyerRules | None = None,
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function Spark runs once, in the pool task: the pooled model, trained on the rows IN_POOL (the sampled
    history of every country), that may score any of `countries`, as one record (a failure becomes a failed
    record); then, in the same task, each country of `too_new` (country -> why), all of whose rows it is given,
    scored as a fallback country with the shared `response`."""
    check_mode(gpu_mode)
    if too_new and response is None:
        raise ValueError("the pool task scores the countries too new to train only with a shared price response")

    def train_pooled_model(rows: pd.DataFrame) -> pd.DataFrame:
        started = time.perf_counter()
        addresses = gpu_addresses(task_resources())
        task: dict[str, object] = {"task_gpus": ",".join(addresses) or None}
        pooled, failure = None, "no pooled model was trained"
        try:
            device = device_settings(gpu_mode, addresses)
            task["device"] = device.label
            history = rows.loc[rows[IN_POOL], [name for name in rows.columns if name != IN_POOL]]
            pooled = fit_pooled(history, params, task_cpus(), device.params, countries)
            record = _pooled_record(pooled, **task)
        except Exception as err:  # the fallback countries then take their baselines' level
            failure = f"{type(err).__name__}: {err}"
            record = _pooled_record(None, failure, **task)
        records = [_timed(record, started)]
        if too_new and response is not None:
            # As its record carries it (JSON), so these countries' cards read as the later pass's would.
            model = PooledModel.of(pooled.model_text, pooled.as_json()) if pooled else None
            score = _fallback_scorer(too_new, model, failure, task, params, rules, response, buyer_rules)
            own = rows[rows["country"].isin(list(too_new))].drop(columns=IN_POOL)
            records += [score(country_rows) for _, country_rows in own.groupby("country", sort=True)]
        return _stacked(records)

    return train_pooled_model


def sample_shares(rows: Mapping[str, int], max_rows: int) -> dict[str, float]:
    """The share of each country's articles the pooled model trains on: every row while they fit in `max_rows`,
    else the same number of rows from each country (a small country keeps all of its own, the rest shared out
    among the larger ones)."""
    shares, budget = {}, float(max_rows)
    for left, country in enumerate(sorted(rows, key=lambda c: (rows[c], c))):
        allotted = budget / (len(rows) - left)
        shares[country] = min(1.0, allotted / rows[country]) if rows[country] else 1.0
        budget -= min(allotted, rows[country])
    return shares


def with_pool(rows: Mapping[str, int], max_rows: int) -> tuple[dict[str, float], dict[str, int]]:
    """The pool's sample shares by country, no bigger than the largest country (so its task holds no more rows than
    that country's), and the tasks' sizes: every country's rows and the pool's under POOL."""
    shares = sample_shares(rows, min(max_rows, max(rows.values())))
    return shares, {**rows, POOL: round(sum(rows[country] * shares[country] for country in rows))}


def samples_any(shares: Mapping[str, float]) -> bool:
    """Whether these shares (sample_shares') leave any article out."""
    return any(share < 1.0 for share in shares.values())


def country_sizes(weekly: DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    """Each country's weekly rows, and its weeks of in-stock history: the training window model.country trains on
    (model.backtest.in_stock's weeks)."""
    in_stock = ~F.col("is_future") & (F.col("stock_on_hand").isNull() | (F.col("stock_on_hand") > 0))
    found = (
        weekly.groupBy("country")
        .agg(F.count("*").alias("rows"), F.countDistinct(F.when(in_stock, F.col("week_start"))).alias("weeks"))
        .collect()
    )
    return {row["country"]: row["rows"] for row in found}, {row["country"]: row["weeks"] for row in found}


def training_tasks(
    rows: Mapping[str, int], weeks: Mapping[str, int], params: ModelParams
) -> tuple[dict[str, float], dict[str, int], dict[str, str]]:
    """The pool's sample shares (with_pool's), the tasks' sizes, and the countries too new to train a model of
    their own (country -> why): the pool's task scores those once its model is trained, so they wait for no other
    country, and they have no task of their own. That task then holds its sample and those countries' other rows
    (their future weeks, and any history its sample left out): a country of fewer weeks than min_history_weeks."""
    shares, tasks = with_pool(rows, params.pooled_max_rows)
    too_new = {country: reason for country in rows if (reason := too_little_history(weeks[country], params))}
    for country in too_new:
        tasks[POOL] += round(tasks.pop(country) * (1 - shares[country]))
    return shares, tasks, too_new


# Articles are sampled by a hash of their key into this many buckets, whole: the model sees complete series.
SAMPLE_BUCKETS = 1_000_000


def sampled_history(shares: Mapping[str, float]) -> Column:
    """Whether a weekly row is a history row of an article sampled at its country's share (sample_shares): the
    pooled model's training rows, and the price response's."""
    share_of = F.create_map(*(F.lit(value) for pair in shares.items() for value in pair))
    bucket = F.pmod(F.xxhash64("country", "article_id"), F.lit(SAMPLE_BUCKETS))
    return ~F.col("is_future") & (bucket < share_of[F.col("country")] * SAMPLE_BUCKETS)


def _fallback_scorer(
    fallback: Mapping[str, str],
    model: PooledModel | None,
    failure: str,
    task: Mapping[str, object],
    params: ModelParams,
    rules: RunRules,
    response: PriceResponse,
    buyer_rules: BuyerRules | None,
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Scores one fallback country's rows (country -> why in `fallback`) with the pooled `model` (none: it failed,
    `failure` says why), its records carrying the pool task's `task` fields."""

    def score_fallback_country(weekly: pd.DataFrame) -> pd.DataFrame:
        started = time.perf_counter()
        country = str(weekly["country"].iloc[0])
        try:
            own_rules = (buyer_rules or {}).get(country)
            result = score_fallback(weekly, fallback[country], model, params, rules, response, own_rules, failure)
            records = _result_frame(result, **task)
        except Exception as err:  # one country's failure must not stop the others
            records = _failed(country, err, len(weekly), **task)
        return _timed(records, started)

    return score_fallback_country


def fallback_function(
    fallback: Mapping[str, str],
    pooled: Row | None,
    params: ModelParams,
    rules: RunRules,
    response: PriceResponse,
    buyer_rules: BuyerRules | None = None,
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function Spark runs once per fallback country (country -> why): scores it with the pool task's
    record `pooled` (none: no pool task ran)."""
    model = PooledModel.of(pooled["model_text"], pooled["card_json"]) if pooled and pooled["model_text"] else None
    failure = (pooled["error"] if pooled else None) or "no pooled model was trained"
    # Where the pooled model trained: its recommendations are that training's.
    task = {"task_gpus": pooled["task_gpus"] if pooled else None, "device": pooled["device"] if pooled else None}
    return _fallback_scorer(fallback, model, failure, task, params, rules, response, buyer_rules)


def fallback_scores(
    weekly: DataFrame,
    fallback: Mapping[str, str],
    order: Sequence[str],
    pooled: Row | None,
    params: ModelParams,
    rules: RunRules,
    response: PriceResponse,
    buyer_rules: BuyerRules | None = None,
) -> DataFrame:
    """Scores the fallback countries, each in a task of its own, started in `order`."""
    score_country = fallback_function(fallback, pooled, params, rules, response, buyer_rules)
    countries = [country for country in order if country in fallback]
    rows = weekly.where(F.col("country").isin(countries))
    return by_task(rows, countries).applyInPandas(
        lambda frame: score_country(frame.drop(columns=TASK_KEY)), TRAIN_SCORE_OUTPUT
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


def by_task(weekly: DataFrame, order: Sequence[str], group: str = "country") -> GroupedData:
    """Weekly rows grouped by `group` (a country), each group in a task of its own, the tasks numbered (and so
    started) in `order`. An explicit partition count is never coalesced by adaptive execution."""
    keys = task_keys(order)
    key_of = F.create_map(*(F.lit(value) for pair in keys.items() for value in pair))
    return weekly.withColumn(TASK_KEY, key_of[F.col(group)]).repartition(len(order), TASK_KEY).groupBy(TASK_KEY)


def train_score(
    weekly: DataFrame,
    params: ModelParams,
    rules: RunRules,
    gpu_mode: str = "off",
    order: Sequence[str] | None = None,
    saved: SavedModels | None = None,
    buyer_rules: BuyerRules | None = None,
    response: PriceResponse | None = None,
    pool_shares: Mapping[str, float] | None = None,
    too_new: Mapping[str, str] | None = None,
) -> DataFrame:
    """Trains and scores every country in parallel, one pandas group per country.

    With `order` (every country of `weekly` but those `too_new`), each country runs in a task of its own, started in
    that order: countries train in parallel, each holds its own GPU, and the largest can start first. With
    `pool_shares` (sample_shares'), the pooled model trains beside them on the sampled_history rows, in a task of its
    own started where POOL stands in `order`, and comes back as one POOLED_RECORD row; that task then scores the
    countries `too_new` (training_tasks'), from all of their rows, with the shared `response`.
    """
    too_new = too_new or {}
    if too_new and (pool_shares is None or not order):
        raise ValueError("only the pool's task scores the countries too new to train: order and pool_shares needed")
    train_country = country_function(params, rules, gpu_mode, saved=saved, buyer_rules=buyer_rules, response=response)
    if not order:
        return weekly.groupBy("country").applyInPandas(train_country, TRAIN_SCORE_OUTPUT)
    countries = sorted({country for country in order if country != POOL} | set(too_new))
    train_pooled_model = pooled_function(params, rules, gpu_mode, countries, too_new, response, buyer_rules)

    def train_group(frame: pd.DataFrame) -> pd.DataFrame:
        # One copy of the rows beside Arrow's frame, not two: a large country's task is bounded by its memory.
        if frame[GROUP].iloc[0] == POOL:
            return train_pooled_model(frame.drop(columns=[TASK_KEY, GROUP]))
        return train_country(frame.drop(columns=[TASK_KEY, GROUP, IN_POOL]))

    group, in_pool = F.col("country"), F.lit(False)
    if pool_shares is not None:
        # A sampled row goes to its country's task and to the pool's: the weekly rows are read once for both. A
        # country too new to train sends every row to the pool's task alone.
        in_pool = sampled_history(pool_shares)
        group = F.explode(
            F.when(F.col("country").isin(list(too_new)), F.array(F.lit(POOL)))
            .when(in_pool, F.array(group, F.lit(POOL)))
            .otherwise(F.array(group))
        )
    rows = weekly.withColumn(GROUP, group).withColumn(IN_POOL, in_pool)
    return by_task(rows, order, GROUP).applyInPandas(train_group, TRAIN_SCORE_OUTPUT)


RESPONSE_STATISTICS = T.StructType(
    [T.StructField(name, T.StringType()) for name in STATISTIC_COLUMNS[:2]]
    + [T.StructField("events", T.LongType())]
    + [T.StructField(name, T.DoubleType()) for name in STATISTIC_COLUMNS[3:]]
    + [T.StructField("week_start", T.DateType()), T.StructField("now", T.DoubleType())]
    + [T.StructField("before", T.DoubleType())]
)


def response_statistics(weekly: DataFrame, window_weeks: int, shares: Mapping[str, float] | None = None) -> DataFrame:
    """Each country's markdown events summed by category and its steady pairs by week
    (model.response.country_statistics), one task per country: the driver adds these few rows into the shared price
    response. With `shares` (sample_shares') below 1, on the articles sampled at them; the deepest discount each
    category sold at then comes from every article (model.response.deepest_sold's rows)."""
    history = weekly.where(~F.col("is_future"))
    sampled = shares if shares is not None and samples_any(shares) else None
    # Only the columns it reads cross the shuffle and Arrow: about half of the weekly rows' bytes.
    events = history.where(sampled_history(sampled)) if sampled else history
    statistics = (
        events.select(*EVENT_COLUMNS)
        .groupBy("country")
        .applyInPandas(lambda rows: country_statistics(prepare(rows), window_weeks), RESPONSE_STATISTICS)
    )
    if not sampled:
        return statistics
    deepest = history.where(F.col("units") > 0).groupBy("country", "category").agg(F.max("discount").alias("deepest"))
    # Rows of no events: they add nothing to the sums, only their deepest discount (what deepest_sold gives).
    filled = {name: F.lit(0) for name in STATISTICS} | {name: F.lit(None) for name in PAIR_COLUMNS if name != "country"}
    return statistics.unionByName(
        deepest.select(
            *(
                filled.get(field.name, F.col(field.name)).cast(field.dataType).alias(field.name)
                for field in RESPONSE_STATISTICS
            )
        )
    )
