"""`markdown-pricing explain` against a real embedded PostgreSQL and a run's own Parquet outputs: the figures it
prints and its JSON equal what is stored, the chosen candidate is marked, the bound rule named."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from markdown_pricing.core.config import Config, ErpSettings, load_config
from markdown_pricing.core.contract import CANDIDATE_COLUMNS, PREDICTION_COLUMNS
from markdown_pricing.core.storage import RunLayout, write_json
from markdown_pricing.erp import tables, writer
from markdown_pricing.erp.connection import connect
from markdown_pricing.erp.ledger import PUBLISHED
from markdown_pricing.erp.schema import migrate
from markdown_pricing.observe import explain
from markdown_pricing.orchestrate import cli

RUN_DATE, RUN_ID = dt.date(2026, 11, 23), "2026-11-23"
LATER_DATE, LATER_RUN = dt.date(2026, 11, 30), "2026-11-30"
METRICS = {"model_wape": 0.3, "baseline_wape": 0.4, "model_bias": 0.01}
CAP = "max_discount 0.2 [article]"


def candidate_rows() -> pd.DataFrame:
    """DEU A1: 30% would earn most, but a buyer caps it at 20%; DEU A2: free, and 30% is best."""
    columns = [c for c in CANDIDATE_COLUMNS if c != "country"]
    rows = [
        ("A1", 0.0, 49.99, 3.123456, 20.5, 1024.799513, 0.5125, None, False),
        ("A1", 0.1, 44.99, 4.2345678, 27.31, 1228.6012345, 0.68275, None, False),
        ("A1", 0.2, 39.99, 5.5123, 35.7, 1427.6431, 0.8925, None, True),
        ("A1", 0.3, 34.99, 6.91234, 44.2, 1502.37, 1.0, CAP, False),
        ("A1", 0.4, 29.99, 8.1, 52.9, 1199.6, 1.0, CAP, False),
        ("A2", 0.1, 26.99, 1.05, 8.4, 226.716, 0.7, None, False),
        ("A2", 0.2, 23.99, 1.5, 11.9, 273.4861, 0.9166666666666666, None, False),
        ("A2", 0.3, 20.99, 2.25, 14.2, 251.88, 1.0, None, True),
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame.insert(0, "country", "DEU")
    return frame


def prediction_rows() -> pd.DataFrame:
    """The published rows of the two articles, consistent with their candidates."""
    frame = pd.DataFrame(
        {
            "country": "DEU",
            "article_id": ["A1", "A2"],
            "current_price": [49.99, 26.99],
            "current_discount": [0.0, 0.1],
            "recommended_discount": [0.2, 0.3],
            "recommended_price": [39.99, 20.99],
            "predicted_units_next_week": [5.5123, 2.25],
            "expected_revenue": [1427.6431, 251.88],
            "expected_sell_through": [0.8925, 1.0],
            "stock_on_hand": [40, 12],
            "hold_expected_revenue": [1024.799513, 226.716],
            "gain_over_hold": [1427.6431 - 1024.799513, 251.88 - 226.716],
            "hold_sell_through": [0.5125, 0.7],
            "weeks_to_season_end": [9, 1],
            "rule_applied": [CAP, None],
        }
    )
    return frame[list(PREDICTION_COLUMNS)]


@pytest.fixture
def conn(erp_settings: ErpSettings) -> Iterator[Connection]:
    with closing(connect(erp_settings.dsn, 5)) as connection:
        migrate(connection, erp_settings)
        yield connection


@pytest.fixture
def config_with(erp_settings: ErpSettings, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The CLI's configuration with the test's own ERP schema."""
    cfg = dataclasses.replace(load_config("local"), erp=erp_settings)
    monkeypatch.setattr(cli, "load_config", lambda env: cfg)
    return cfg


@pytest.fixture
def published(conn: Connection, erp_settings: ErpSettings) -> Connection:
    """DEU published by run 2026-11-23 with its candidates."""
    result = writer.publish_country(
        conn,
        erp_settings,
        run_id=RUN_ID,
        run_date=RUN_DATE,
        country="DEU",
        predictions=prediction_rows(),
        candidates=candidate_rows(),
        model_version=f"{RUN_ID}/DEU",
        metrics=METRICS,
    )
    assert result == PUBLISHED
    return conn


def stored(conn: Connection, table: sql.Composed, article: str, order: str = "") -> list[dict[str, Any]]:
    """The table's rows of DEU `article` as stored, numeric values as floats."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT * FROM {} WHERE country = 'DEU' AND article_id = %s " + order).format(table), (article,)
        )
        names = [column.name for column in cur.description or ()]
        rows = [
            {
                name: float(value) if isinstance(value, Decimal) else value
                for name, value in zip(names, row, strict=True)
            }
            for row in cur.fetchall()
        ]
    conn.rollback()
    return rows


def explain_json(capsys: pytest.CaptureFixture[str], *arguments: str) -> dict[str, Any]:
    assert cli.main(["explain", "--json", *arguments]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_explain_json_carries_the_erp_figures_unrounded(
    published: Connection, erp_settings: ErpSettings, config_with: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    document = explain_json(capsys, "--country", "DEU", "--article", "A1")

    (row,) = stored(published, tables.predictions(erp_settings), "A1")
    curve = stored(published, tables.candidates(erp_settings), "A1", "ORDER BY candidate_discount")
    assert (document["source"], document["run_id"], document["valid_from"]) == ("erp", RUN_ID, "2026-11-23")
    assert document["model_version"] == row["model_version"] == f"{RUN_ID}/DEU"
    assert document["today"] == {
        "price": row["current_price"],
        "discount": curve[0]["candidate_discount"],
        "stock_on_hand": row["stock_on_hand"],
        "weeks_to_season_end": row["weeks_to_season_end"],
    }
    assert document["recommendation"] == {
        "discount": row["recommended_discount"],
        "price": row["recommended_price"],
        "predicted_units_next_week": row["predicted_units_next_week"],
        "expected_revenue": row["expected_revenue"],
        "expected_sell_through": row["expected_sell_through"],
    }
    assert document["hold"] == {
        "expected_revenue": row["hold_expected_revenue"],
        "sell_through": row["hold_sell_through"],
        "gain": row["gain_over_hold"],
        "gain_share": row["gain_over_hold"] / row["hold_expected_revenue"],
    }
    assert document["candidates"] == [
        {column: stored_row[column] for column in explain.SHOWN_CANDIDATE_COLUMNS} for stored_row in curve
    ]
    # And they are the numbers published, to the last digit.
    assert row["expected_revenue"] == 1427.6431 and curve[1]["predicted_units_next_week"] == 4.2345678
    drivers = document["drivers"]
    assert drivers["level"] == {"units_next_week": 3.123456, "price": 49.99}
    # 30% and 40% are ruled out: the deepest allowed candidate is the chosen 20%.
    assert drivers["price_response"] == {
        "deepest_allowed_discount": 0.2,
        "deepest_allowed_price": 39.99,
        "units_next_week": 5.5123,
        "lift": 5.5123 / 3.123456,
    }
    assert drivers["stock"] == {"stock_on_hand": 40, "season_units": 35.7, "sells_out": False}
    assert (drivers["weeks_to_season_end"], drivers["rule_applied"]) == (9, CAP)


def test_explain_prints_the_curve_with_the_chosen_candidate_marked_and_the_rule_that_bound_it(
    published: Connection, erp_settings: ErpSettings, config_with: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["explain", "--country", "DEU", "--article", "A1"]) == 0

    out = capsys.readouterr().out
    (row,) = stored(published, tables.predictions(erp_settings), "A1")
    assert out.startswith(f"Article A1 in DEU, run {RUN_ID} (valid from 2026-11-23)\n")
    assert f"Read from the ERP (schema {erp_settings.schema}), model {RUN_ID}/DEU" in out
    assert "Today: 49.99 EUR at 0.0% off, 40 units on hand, 9 weeks to season end" in out
    table = [line for line in out.splitlines() if re.match(r"^  [* ] +\d+\.\d%", line)]
    assert [line.startswith("  *") for line in table] == [False, False, True, False, False]
    assert re.fullmatch(r"  \* +20\.0% +39\.99 +5\.5 +35\.7 +1,427\.64 +89\.2% +-", table[2])
    assert table[3].endswith(CAP) and table[4].endswith(CAP)
    assert (
        f"Recommendation: 20.0% off at 39.99 EUR, expected season revenue {row['expected_revenue']:,.2f} EUR "
        "(89.2% of the stock sold)"
    ) in out
    assert f"Holding today's price: expected season revenue {row['hold_expected_revenue']:,.2f} EUR" in out
    gain, share = row["gain_over_hold"], row["gain_over_hold"] / row["hold_expected_revenue"]
    assert f"Gain over holding: {gain:+,.2f} EUR ({share:+.1%})" in out
    assert "  level           3.1 units next week at today's price (49.99 EUR)" in out
    assert (
        "  price response  5.5 units next week at the deepest allowed discount, 20.0% (39.99 EUR): 1.76x today's" in out
    )
    assert (
        "  stock           35.7 units of demand by season end at the recommended price against 40 on hand: does" in out
    )
    assert "  weeks left      9 weeks to season end" in out
    assert f"  rule            {CAP}" in out


def test_explain_says_when_no_rule_bound_it_and_the_stock_sells_out(
    published: Connection, config_with: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["explain", "--country", "DEU", "--article", "A2"]) == 0

    out = capsys.readouterr().out
    assert "Today: 26.99 EUR at 10.0% off, 12 units on hand, 1 week to season end" in out
    assert "against 12 on hand: sells out" in out
    assert "2.25 units" not in out and "2.2 units next week at the deepest allowed discount, 30.0% (20.99 EUR)" in out
    assert "  rule            no rule bound it" in out


def test_explain_without_a_row_exits_1_with_a_message(
    published: Connection, config_with: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["explain", "--country", "DEU", "--article", "A9"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "markdown-pricing explain: no recommendation for article A9 in DEU in the ERP" in captured.err
    assert cli.main(["explain", "--country", "FRA", "--article", "A1", "--json"]) == 1
    assert "no recommendation for article A1 in FRA" in capsys.readouterr().err


def test_explain_before_the_first_migrate_finds_nothing(
    erp_settings: ErpSettings, config_with: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["explain", "--country", "DEU", "--article", "A1"]) == 1
    assert "no recommendation for article A1 in DEU" in capsys.readouterr().err


# --- a run's own outputs -------------------------------------------------------------------------------------------


def write_parquet(folder: Path, frame: pd.DataFrame) -> None:
    """A frame as train-and-score leaves it: Parquet partitioned by country, then _SUCCESS."""
    pq.write_to_dataset(pa.Table.from_pandas(frame, preserve_index=False), folder, partition_cols=["country"])
    (folder / "_SUCCESS").touch()


def later_run(work: Path) -> RunLayout:
    """Run 2026-11-30 in the work folder: A1 and A2 recommended a week later, A3 excluded by a buyer rule."""
    layout = RunLayout(raw="", work=str(work), run_id=LATER_RUN)
    predictions = prediction_rows()
    predictions["expected_revenue"] = [1300.123456789, 240.5]
    predictions["gain_over_hold"] = predictions["expected_revenue"] - predictions["hold_expected_revenue"]
    write_parquet(Path(layout.predictions), predictions)
    excluded = pd.DataFrame(
        [("DEU", "A3", discount, 19.99, 1.0, 5.0, 99.95, 0.5, "exclude", False) for discount in (0.0, 0.1)],
        columns=list(CANDIDATE_COLUMNS),
    )
    write_parquet(Path(layout.candidates), pd.concat([candidate_rows(), excluded], ignore_index=True))
    write_json(layout.run_record, {"run_id": LATER_RUN, "run_date": LATER_DATE.isoformat()})
    write_json(layout.country_results, {"DEU": {"status": "trained", "model_version": f"{LATER_RUN}/DEU"}})
    return layout


def test_explain_a_run_the_erp_does_not_hold_reads_its_own_outputs(
    published: Connection, config_with: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = later_run(tmp_path)
    arguments = ("--country", "DEU", "--article", "A1", "--run-id", LATER_RUN, "--work", str(tmp_path))

    document = explain_json(capsys, *arguments)

    assert (document["source"], document["run_id"], document["valid_from"]) == ("run", LATER_RUN, "2026-11-30")
    assert document["model_version"] == f"{LATER_RUN}/DEU"
    assert document["notes"] == [
        f"the ERP holds run {RUN_ID} for this article: read from run {LATER_RUN}'s own outputs"
    ]
    # --work is resolved to a URI: the folder itself, as a file:// URI.
    assert document["read_from"] == f"run {LATER_RUN}'s outputs in {Path(layout.run_dir).as_uri()}"
    assert document["recommendation"]["expected_revenue"] == 1300.123456789
    assert document["hold"]["gain"] == 1300.123456789 - 1024.799513
    assert document["today"]["discount"] == 0.0
    expected = candidate_rows().query("article_id == 'A1'")[list(explain.SHOWN_CANDIDATE_COLUMNS)]
    assert document["candidates"] == expected.astype(object).where(expected.notna(), None).to_dict(orient="records")

    assert cli.main(["explain", *arguments]) == 0
    out = capsys.readouterr().out
    assert f"Note: the ERP holds run {RUN_ID} for this article: read from run {LATER_RUN}'s own outputs" in out
    assert "expected season revenue 1,300.12 EUR" in out
    assert f"  rule            {CAP}" in out


def test_explain_a_run_the_erp_holds_reads_the_erp(
    published: Connection, config_with: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    later_run(tmp_path)

    document = explain_json(capsys, "--country", "DEU", "--article", "A1", "--run-id", RUN_ID, "--work", str(tmp_path))

    assert (document["source"], document["run_id"], document["notes"]) == ("erp", RUN_ID, [])
    assert document["recommendation"]["expected_revenue"] == 1427.6431


def test_explain_says_a_buyer_rule_excluded_an_article_of_a_run(
    published: Connection, config_with: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    later_run(tmp_path)

    assert (
        cli.main(["explain", "--country", "DEU", "--article", "A3", "--run-id", LATER_RUN, "--work", str(tmp_path)])
        == 1
    )

    err = capsys.readouterr().err
    assert f"no recommendation for article A3 in DEU in run {LATER_RUN}: a buyer rule excluded it (exclude)" in err


def test_explain_a_run_without_the_erp_or_the_article_exits_1(
    erp_settings: ErpSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No ERP configured and no embedded one running under this work folder: the run's outputs still answer.
    cfg = dataclasses.replace(load_config("local"), erp=dataclasses.replace(erp_settings, dsn=""))
    monkeypatch.setattr(cli, "load_config", lambda env: cfg)
    for variable in ("PGHOST", "PGHOSTADDR", "PGSERVICE"):
        monkeypatch.delenv(variable, raising=False)
    later_run(tmp_path)
    base = ["explain", "--country", "DEU", "--work", str(tmp_path)]

    assert cli.main([*base, "--article", "A2", "--run-id", LATER_RUN]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"^Note: the ERP was not read \(no ERP is configured .*\): read from run 2026-11-30's own", out, re.M
    )
    assert "expected season revenue 240.50 EUR" in out

    assert cli.main([*base, "--article", "A9", "--run-id", LATER_RUN]) == 1
    assert f"no recommendation for article A9 in DEU in run {LATER_RUN}" in capsys.readouterr().err
    assert cli.main([*base, "--article", "A2", "--run-id", "2026-12-07"]) == 1
    assert "there is no run '2026-12-07' under" in capsys.readouterr().err
    assert cli.main([*base, "--article", "A2"]) == 1
    assert "no ERP is configured" in capsys.readouterr().err


def test_explanation_of_a_row_without_candidates_says_so() -> None:
    found = explain.Found(
        country="DEU",
        article_id="A1",
        source=explain.ERP,
        read_from="the ERP (schema markdown)",
        run_id=RUN_ID,
        valid_from=RUN_DATE,
        prediction=prediction_rows().drop(columns=["current_discount"]).iloc[1].to_dict(),
        candidates=pd.DataFrame(columns=list(explain.SHOWN_CANDIDATE_COLUMNS)),
    )

    document = explain.explanation(found)
    text = explain.format_explanation(document)

    assert document["today"]["discount"] is None and document["candidates"] == []
    assert "Candidate curve: none stored for this article." in text
    assert "  level           n/a: no candidates stored for this article" in text
    assert "  stock           12 on hand" in text
