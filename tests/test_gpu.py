"""GPU selection: what each mode does with the task's GPU addresses, with LightGBM's real OpenCL probe, and the
grouped UDF reading its task's resources and CPUs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import numpy as np
import pandas as pd
import pytest
from pyspark import TaskContext
from pyspark.resource import ResourceInformation
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from markdown_pricing.core.config import load_config
from markdown_pricing.core.schemas import WEEKLY
from markdown_pricing.core.session import task_cpus
from markdown_pricing.model import forecast
from markdown_pricing.model.gpu import Device, GpuUnavailableError, device_settings, gpu_probe_error
from markdown_pricing.stages.per_country import country_function, gpu_addresses, train_score

CFG = load_config("local")
PARAMS = dataclasses.replace(
    CFG.model, num_boost_round=20, min_data_in_leaf=5, backtest_origins=1, backtest_horizon_weeks=4, min_history_weeks=6
)
RULES = CFG.run
RUN_DATE = dt.date(2026, 11, 23)
NO_ADDRESS = "no GPU assigned to the task"


def weekly_rows(country: str, seed: int, articles: int = 6, weeks: int = 12) -> list[tuple[object, ...]]:
    """A small country in the curated weekly shape (schemas.WEEKLY): history weeks, then 4 future weeks."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(articles):
        price = float(rng.choice([30.0, 50.0]))
        for w in range(-weeks, 4):
            week = RUN_DATE + dt.timedelta(weeks=w)
            # Promotions on and off at random: only a model of the price response forecasts them.
            discount = 0.3 * (rng.random() < 0.5) if w < 0 else 0.0
            rows.append(
                (
                    country,
                    f"A{a:02d}",
                    week,
                    w >= 0,
                    None if w >= 0 else int(rng.poisson(5 * (1 - discount) ** -3)),
                    40,
                    round(price * (1 - discount), 2),
                    price,
                    RUN_DATE + dt.timedelta(weeks=4),
                    "tops" if a % 2 else "jeans",
                    discount,
                    w + weeks,
                    4 - w,
                    5.0,
                    20.0,
                )
            )
    return rows


def weekly_frame(country: str = "DEU", seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame(weekly_rows(country, seed), columns=WEEKLY.fieldNames())


def resources(*addresses: str) -> dict[str, ResourceInformation]:
    return {"gpu": ResourceInformation("gpu", list(addresses))}


def country_record(output: pd.DataFrame) -> pd.Series:
    return output[output["record"] == "country"].iloc[0]


def test_device_settings_off_trains_on_cpu_whatever_the_task_got() -> None:
    assert device_settings("off", ["0"]) == Device("cpu")
    assert dict(device_settings("off", []).params) == {}


def test_device_settings_auto_without_a_gpu_falls_back_to_cpu_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="markdown_pricing.gpu"):
        device = device_settings("auto", [])
    assert device.label.startswith(f"cpu (gpu fallback: {NO_ADDRESS}")
    assert dict(device.params) == {}
    assert NO_ADDRESS in caplog.text


def test_device_settings_required_without_a_gpu_names_the_missing_assignment() -> None:
    with pytest.raises(GpuUnavailableError, match=f"gpu mode is 'required' but {NO_ADDRESS}"):
        device_settings("required", [])


def test_device_settings_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="gpu mode 'sometimes' is not one of off, auto, required"):
        device_settings("sometimes", ["0"])


def test_device_settings_with_an_address_follow_lightgbms_real_opencl_probe() -> None:
    # The probe is a real LightGBM GPU training; on a machine without an OpenCL device (the build machines) it
    # raises "No OpenCL device found", on a GPU machine with the OpenCL runtime it trains.
    error = gpu_probe_error(0)
    if error is None:
        expected = Device("gpu:0", {"device_type": "gpu", "gpu_platform_id": 0, "gpu_device_id": 0})
        assert device_settings("auto", ["0", "1"]) == device_settings("required", ["0"]) == expected
        return
    problem = f"LightGBM cannot use GPU 0 through OpenCL: {error}"
    assert device_settings("auto", ["0", "1"]) == Device(f"cpu (gpu fallback: {problem})")
    with pytest.raises(GpuUnavailableError) as raised:
        device_settings("required", ["0"])
    assert str(raised.value) == f"gpu mode is 'required' but {problem}"


def test_lightgbm_params_take_the_device_settings() -> None:
    gpu = {"device_type": "gpu", "gpu_platform_id": 0, "gpu_device_id": 1}
    params = forecast.lightgbm_params(PARAMS, 3, gpu)
    assert {key: params[key] for key in gpu} == gpu
    assert params["num_threads"] == 3
    assert "device_type" not in forecast.lightgbm_params(PARAMS, 3)


def test_gpu_addresses_reads_the_tasks_gpu_resource() -> None:
    assert gpu_addresses(resources("0", "1")) == ["0", "1"]
    assert gpu_addresses({}) == []


def test_country_function_records_the_tasks_gpu_and_the_device_it_trained_on() -> None:
    output = country_function(PARAMS, RULES, "auto", resources=lambda: resources("0"))(weekly_frame())
    record = country_record(output)
    assert record["status"] == "trained"
    assert record["task_gpus"] == "0"
    error = gpu_probe_error(0)
    expected = "gpu:0" if error is None else f"cpu (gpu fallback: LightGBM cannot use GPU 0 through OpenCL: {error})"
    assert record["device"] == expected
    assert f"[device_type: {expected[:3]}]" in record["model_text"]


def test_country_function_in_required_mode_fails_the_country_with_the_reason() -> None:
    output = country_function(PARAMS, RULES, "required", resources=dict)(weekly_frame())
    record = country_record(output)
    assert (output["record"] == "country").all()
    assert record["status"] == "failed"
    assert record["error"].startswith(f"GpuUnavailableError: gpu mode is 'required' but {NO_ADDRESS}")
    assert pd.isna(record["task_gpus"])


def test_task_cpus_is_the_spark_tasks_cpus(spark: SparkSession) -> None:
    seen = (
        spark.sparkContext.parallelize([0], 1)
        .mapPartitions(
            lambda _: [(task_cpus(default=99), TaskContext.get().cpus())]  # type: ignore[union-attr]
        )
        .collect()
    )
    assert seen == [(int(spark.conf.get("spark.task.cpus")), int(spark.conf.get("spark.task.cpus")))]


def test_train_score_runs_each_country_in_its_own_task_with_the_tasks_cpus_as_threads(spark: SparkSession) -> None:
    countries = ["DEU", "FRA", "GBR"]
    weekly = spark.createDataFrame([row for i, c in enumerate(countries) for row in weekly_rows(c, i)], WEEKLY)
    scored = train_score(weekly, PARAMS, RULES, "off", countries).withColumn("task", F.spark_partition_id())
    records = scored.where(F.col("record") == "country").select("country", "task", "device", "model_text").collect()
    assert sorted(row["country"] for row in records) == countries
    assert len({row["task"] for row in records}) == len(countries)
    cpus = spark.conf.get("spark.task.cpus")
    assert all(row["device"] == "cpu" and f"[num_threads: {cpus}]" in row["model_text"] for row in records)
