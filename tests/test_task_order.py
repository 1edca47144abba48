"""Skew-aware scheduling of the train stage: one country per task, the largest started first."""

from __future__ import annotations

import pandas as pd
from pyspark import TaskContext
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from markdown_pricing.stages.per_country import TASK_KEY, by_task, largest_first, spark_int_hash, task_keys

COUNTRIES = ("AUT", "BEL", "CHE", "DEU", "DNK", "ESP", "FRA", "GBR", "ITA", "NLD", "POL", "SWE")
TASK = "country string, task int, attempt bigint"


def test_spark_int_hash_is_sparks_hash_of_an_int(spark: SparkSession) -> None:
    ints = spark.range(-50, 300).select(F.col("id").cast("int").alias("v"))
    assert all(spark_int_hash(row["v"]) == row["h"] for row in ints.select("v", F.hash("v").alias("h")).collect())


def test_task_keys_give_the_ith_country_task_i() -> None:
    order = list(COUNTRIES)
    keys = task_keys(order)
    assert len(set(keys.values())) == len(order)
    assert [spark_int_hash(keys[country]) % len(order) for country in order] == list(range(len(order)))


def test_largest_first_orders_by_rows_then_name() -> None:
    assert largest_first({"DEU": 5, "AUT": 9, "BEL": 5, "MLT": 1}) == ["AUT", "BEL", "DEU", "MLT"]


def test_by_task_starts_each_country_in_its_own_task_in_the_given_order(spark: SparkSession) -> None:
    # Skewed on purpose: the largest country is the last alphabetically, so name order would start it last.
    rows = [(country, i) for rank, country in enumerate(COUNTRIES) for i in range(rank + 1)]
    weekly = spark.createDataFrame(rows, "country string, i int")
    order = largest_first(dict(weekly.groupBy("country").count().collect()))
    assert order[0] == COUNTRIES[-1]

    def where_it_ran(frame: pd.DataFrame) -> pd.DataFrame:
        context = TaskContext.get()
        assert context is not None and frame["country"].nunique() == 1
        # Task attempt ids are handed out as tasks launch, so they give the launch order without any timing.
        task = {"task": [context.partitionId()], "attempt": [context.taskAttemptId()]}
        return pd.DataFrame({"country": [frame["country"].iloc[0]], **task})

    ran = by_task(weekly, order).applyInPandas(lambda frame: where_it_ran(frame.drop(columns=TASK_KEY)), TASK)
    tasks = ran.toPandas().set_index("country")
    assert [tasks.loc[country, "task"] for country in order] == list(range(len(order)))
    assert tasks.sort_values("attempt").index.tolist() == order


def test_by_task_shuffles_once(spark: SparkSession) -> None:
    weekly = spark.createDataFrame([(country, 1) for country in COUNTRIES], "country string, i int")
    schema = f"{TASK_KEY} int, country string, i int"
    grouped = by_task(weekly, list(COUNTRIES)).applyInPandas(lambda frame: frame, schema)
    plan = grouped._jdf.queryExecution().executedPlan().toString()
    assert plan.count("Exchange") == 1
