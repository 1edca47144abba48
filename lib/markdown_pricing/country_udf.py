"""The thin adapter between Spark and the per-country model: one `groupBy("country").applyInPandas`."""
from __future__ import annotations

import traceback
from collections.abc import Callable

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from markdown_pricing.config import ModelParams, RunRules
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


def country_function(params: ModelParams, rules: RunRules) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The function Spark runs once per country; a failure becomes a 'failed' country record, not a crash."""

    def train_score_country(weekly: pd.DataFrame) -> pd.DataFrame:
        country = str(weekly["country"].iloc[0])
        try:
            result = train_and_recommend(weekly, params, rules, num_threads=task_cpus())
        except Exception as err:  # one country's failure must not stop the others
            message = f"{type(err).__name__}: {err}"
            return _country_record(country, status="failed", error=message + "\n" + traceback.format_exc(limit=3))
        predictions = _conform(result.predictions.assign(record="prediction"))
        summary = _country_record(country, status="trained", model_text=result.model_text, **result.metrics)
        return pd.concat([predictions, summary], ignore_index=True)

    return train_score_country


def train_score(weekly: DataFrame, params: ModelParams, rules: RunRules) -> DataFrame:
    """Trains and scores every country in parallel, one pandas group per country."""
    return weekly.groupBy("country").applyInPandas(country_function(params, rules), TRAIN_SCORE_OUTPUT)
