"""country_results.json: per country, the outcome of train+score that publish, the report and the summary read.

The contract between the train and publish stages. Train writes it through `write_country_results`, every reader
goes through `read_country_results`, and both check each record against `RESULT_FIELDS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from markdown_pricing.core.contract import FORECASTERS, MEASURES
from markdown_pricing.core.storage import read_json, write_json

TRAINED, FAILED = "trained", "failed"

# Field -> type of its value (None is always allowed: a failed country has no metrics). The order is the order of
# the per-country columns in the train+score output.
RESULT_FIELDS: dict[str, type] = {
    "country": str,
    "status": str,
    "error": str,
    # Which model scored the country (core.contract.MODEL_KINDS) and, for a fallback, why.
    "model_kind": str,
    "fallback_reason": str,
    "train_rows": int,
    # The rolling-origin backtest: every forecaster's WAPE, bias and revenue-weighted WAPE.
    "backtest_rows": int,
    "backtest_origins": int,
    **{f"{forecaster}_{measure}": float for forecaster in FORECASTERS for measure in MEASURES},
    "baseline": str,
    "baseline_wape": float,
    # The markdown-event backtest of the price response (model.response): past price changes in the country, their
    # count, and the mean absolute and mean log of predicted over seen lift.
    "markdown_events": int,
    "markdown_lift_error": float,
    "markdown_lift_bias": float,
    "fit_seconds": float,
    "score_seconds": float,
    # The task's whole function, from its rows as pandas to its records: what the country costs wherever it runs.
    "function_seconds": float,
    # Where the model trained ("cpu", "gpu:1", "cpu (gpu fallback: <why>)") and the GPUs Spark gave the task.
    "device": str,
    "task_gpus": str,
    # What was wrong with the buyers' rules for the country (contradictions, unknown articles), one per line.
    "rule_problems": str,
}
# What the stage adds for a trained country: models/<run_id>/<country>, the model that scored it.
MODEL_VERSION = "model_version"
METRIC_COLUMNS = tuple(RESULT_FIELDS)

CountryResults = dict[str, dict[str, Any]]


class CountryResultsError(ValueError):
    """Raised when country_results.json does not match its schema."""


def _checked(country: str, record: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The record with every field of the schema, or a named error. Runs of other releases wrote other fields: a
    missing one reads as None, one the schema does not know is left out."""
    if not isinstance(record, Mapping):
        raise CountryResultsError(f"{where}: the record of {country} is not an object")
    types = {**RESULT_FIELDS, MODEL_VERSION: str}
    record = {field: value for field, value in record.items() if field in types}
    if record.get("status") not in (TRAINED, FAILED):
        raise CountryResultsError(f"{where}: {country} has status {record.get('status')!r}, not {TRAINED} or {FAILED}")
    if record.get("country", country) != country:
        raise CountryResultsError(f"{where}: the record under {country} names {record['country']}")
    for field, value in record.items():
        expected = types[field]
        # JSON has one number type: a whole float is an int, any int is a float; a bool is neither.
        ok = value is None or (
            isinstance(value, expected)
            if expected is str
            else isinstance(value, (int, float)) and not isinstance(value, bool)
        )
        if not ok:
            raise CountryResultsError(f"{where}: {country}.{field} is {value!r}, not a {expected.__name__}")
    return {**dict.fromkeys(RESULT_FIELDS), "country": country, **record}


def checked_results(results: Mapping[str, Mapping[str, Any]], where: str) -> CountryResults:
    """Every country's record checked against the schema and completed with the fields it lacks."""
    if not isinstance(results, Mapping):
        raise CountryResultsError(f"{where}: expected an object of countries")
    return {str(country): _checked(str(country), record, where) for country, record in results.items()}


def write_country_results(uri: str, results: Mapping[str, Mapping[str, Any]]) -> None:
    """Writes the train stage's results after checking them."""
    write_json(uri, checked_results(results, uri))


def read_country_results(uri: str) -> CountryResults:
    """Reads the train stage's results, checked: a record that breaks the schema is a named error."""
    return checked_results(read_json(uri), uri)


def metric(result: Mapping[str, Any], key: str) -> float | None:
    """A finite metric of a record, or None (missing, null or NaN)."""
    value = result.get(key)
    return None if value is None or math.isnan(float(value)) else float(value)
