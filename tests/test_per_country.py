"""The per-country function's output frame: every record in one schema that Spark's Arrow conversion takes."""

from __future__ import annotations

import resource
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pandas as pd
from lightgbm.basic import LightGBMError
from pyspark.sql import SparkSession

from markdown_pricing.core.schemas import TRAIN_SCORE_OUTPUT
from markdown_pricing.model.country import CountryResult
from markdown_pricing.stages.per_country import OUTPUT_COLUMNS, _result_frame, failure_message


def test_a_country_result_becomes_its_prediction_candidate_and_country_rows_in_the_output_schema(
    spark: SparkSession,
) -> None:
    predictions = pd.DataFrame(
        {"country": ["DEU", "DEU"], "article_id": ["A1", "A2"], "stock_on_hand": [5, 7], "rule_applied": [None, "hold"]}
    )
    candidates = pd.DataFrame({"country": ["DEU"], "article_id": ["A1"], "candidate_discount": [0.1], "chosen": [True]})
    result = CountryResult("DEU", predictions, {"status": "trained", "train_rows": 12}, "tree", {}, candidates)

    frame = _result_frame(result, device="cpu")

    assert list(frame.columns) == list(OUTPUT_COLUMNS)
    assert frame["record"].tolist() == ["prediction", "prediction", "candidate", "country"]
    assert frame["article_id"].tolist()[:3] == ["A1", "A2", "A1"] and pd.isna(frame["article_id"].iloc[3])
    assert frame["stock_on_hand"].tolist()[:2] == [5.0, 7.0] and frame["stock_on_hand"].iloc[2:].isna().all()
    assert frame["chosen"].isna().tolist() == [True, True, False, True]
    assert frame["train_rows"].iloc[3] == 12 and frame["model_text"].iloc[3] == "tree"
    # Returned from an applyInPandas task, as the stage's are, it comes back in the schema, integers and nulls kept.
    rows = spark.range(1).groupBy("id").applyInPandas(lambda _: frame, TRAIN_SCORE_OUTPUT).collect()
    assert [row["stock_on_hand"] for row in rows] == [5, 7, None, None]
    assert [row["chosen"] for row in rows] == [None, None, True, None]
    assert rows[3]["train_rows"] == 12 and rows[3]["device"] == "cpu"


def _messages_under_limit(limit: int) -> list[str]:
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    messages = []
    for err in (MemoryError(), LightGBMError("std::bad_alloc")):
        try:
            raise err
        except Exception as raised:
            messages.append(failure_message(raised, 4_760_000))
    return messages


def test_a_memory_error_names_the_countrys_rows_and_the_workers_limit_and_where_it_comes_from() -> None:
    # In a child process of its own: the limit is the worker's, as Spark sets it there.
    with ProcessPoolExecutor(1, mp_context=get_context("fork")) as child:
        python, lightgbm = child.submit(_messages_under_limit, 64 * 2**30).result()
    assert python.startswith("MemoryError (the country's 4,760,000 weekly rows did not fit")
    assert lightgbm.startswith("LightGBMError: std::bad_alloc (the country's 4,760,000 weekly rows did not fit")
    for message in (python, lightgbm):
        assert "limited to 65,536 MB, spark.executor.pyspark.memory / spark.executor.cores" in message
        assert "README 'Memory limits'" in message

    try:
        raise ValueError("no rows")
    except ValueError as err:
        other = failure_message(err, 10)
    assert other.startswith("ValueError: no rows\nTraceback") and "weekly rows" not in other
