"""country_results.json, the contract between train and publish: written and read through one checked schema."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from markdown_pricing.core.results import (
    RESULT_FIELDS,
    CountryResultsError,
    metric,
    read_country_results,
    write_country_results,
)


def test_country_results_round_trip_completes_missing_fields(tmp_path: Path) -> None:
    uri = str(tmp_path / "country_results.json")
    write_country_results(uri, {"DEU": {"status": "trained", "model_wape": 0.3, "train_rows": 12}})

    read = read_country_results(uri)

    assert set(read["DEU"]) == set(RESULT_FIELDS)
    assert (read["DEU"]["country"], read["DEU"]["model_wape"], read["DEU"]["baseline_wape"]) == ("DEU", 0.3, None)


def test_country_results_of_another_release_drop_fields_the_schema_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / "country_results.json"
    path.write_text(json.dumps({"FRA": {"status": "failed", "error": "boom", "holdout_rows": 10}}))

    assert "holdout_rows" not in read_country_results(str(path))["FRA"]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"status": "needs_fallback"}, r"FRA has status 'needs_fallback', not trained or failed"),
        ({"status": "trained", "train_rows": "12"}, r"FRA\.train_rows is '12', not a int"),
        ({"status": "trained", "model_wape": True}, r"FRA\.model_wape is True, not a float"),
        ({"status": "trained", "country": "DEU"}, r"the record under FRA names DEU"),
    ],
)
def test_country_results_that_break_the_schema_are_named(tmp_path: Path, record: dict, message: str) -> None:
    path = tmp_path / "country_results.json"
    path.write_text(json.dumps({"FRA": record}))

    with pytest.raises(CountryResultsError, match=message):
        read_country_results(str(path))
    with pytest.raises(CountryResultsError, match=message):
        write_country_results(str(tmp_path / "out.json"), {"FRA": record})
    assert not (tmp_path / "out.json").exists()


def test_metric_is_none_for_missing_null_and_nan() -> None:
    record = {"a": 0.25, "b": None, "c": math.nan}

    assert [metric(record, key) for key in ("a", "b", "c", "d")] == [0.25, None, None, None]
