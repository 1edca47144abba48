"""Buyer rules read from the ERP, and candidates replaced together with the predictions, against a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from markdown_pricing.core.config import ErpSettings
from markdown_pricing.core.contract import CANDIDATE_COLUMNS, PREDICTION_COLUMNS
from markdown_pricing.erp import ledger, rules, writer
from markdown_pricing.erp.connection import connect, transaction
from markdown_pricing.erp.schema import migrate

RUN_DATE = date(2026, 11, 23)
METRICS = {"model_wape": 0.21, "baseline_wape": 0.35, "model_bias": -0.02}
LADDER = (0.0, 0.1, 0.2, 0.3)


@pytest.fixture
def conn(erp_settings: ErpSettings) -> Iterator[Connection]:
    with closing(connect(erp_settings.dsn, 5)) as connection:
        migrate(connection, erp_settings)
        yield connection


def _table(settings: ErpSettings, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(settings.schema), sql.Identifier(name))


def _rows(conn: Connection, settings: ErpSettings, table: str, order: str) -> list[tuple[Any, ...]]:
    with transaction(conn) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} ORDER BY {}").format(_table(settings, table), sql.SQL(order)))
        return cur.fetchall()


def _predictions_rows(conn: Connection, settings: ErpSettings) -> list[tuple[Any, ...]]:
    return _rows(conn, settings, settings.predictions_table, "country, article_id")


def _candidate_rows(conn: Connection, settings: ErpSettings) -> list[tuple[Any, ...]]:
    return _rows(conn, settings, settings.candidates_table, "country, article_id, candidate_discount")


def _predictions(country: str, *articles: str, discount: float = 0.2) -> pd.DataFrame:
    count = len(articles)
    return pd.DataFrame(
        {
            "country": [country] * count,
            "article_id": list(articles),
            "current_price": [40.0] * count,
            "current_discount": [0.0] * count,
            "recommended_discount": [discount] * count,
            "recommended_price": [round(40.0 * (1 - discount), 2)] * count,
            "predicted_units_next_week": [3.5] * count,
            "expected_revenue": [300.0] * count,
            "expected_sell_through": [0.9] * count,
            "stock_on_hand": [12] * count,
            "hold_expected_revenue": [250.0] * count,
            "gain_over_hold": [50.0] * count,
            "hold_sell_through": [0.6] * count,
            "weeks_to_season_end": [8] * count,
            "rule_applied": [None] * count,
        }
    )


def _candidates(country: str, *articles: str, chosen: float = 0.2) -> pd.DataFrame:
    rows = [
        {
            "country": country,
            "article_id": article,
            "candidate_discount": step,
            "candidate_price": round(40.0 * (1 - step), 2),
            "predicted_units_next_week": 2.0 + 10 * step,
            "predicted_units_season": 10.0 + 20 * step,
            "expected_revenue": 200.0 + 100 * step,
            "expected_sell_through": 0.5 + step,
            "ruled_out_by": None,
            "chosen": step == chosen,
        }
        for article in articles
        for step in LADDER
    ]
    return pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS))


def _publish(
    conn: Connection,
    settings: ErpSettings,
    run_id: str,
    predictions: pd.DataFrame,
    candidates: pd.DataFrame | None,
    **overrides: Any,
) -> str:
    arguments: dict[str, Any] = {
        "run_id": run_id,
        "run_date": RUN_DATE,
        "country": predictions["country"].iloc[0],
        "predictions": predictions,
        "candidates": candidates,
        "model_version": f"model-{run_id}",
        "metrics": METRICS,
        **overrides,
    }
    return writer.publish_country(conn, settings, **arguments)


def _insert_rules(conn: Connection, settings: ErpSettings, *rows: tuple[Any, ...]) -> None:
    with transaction(conn) as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (country, article_id, category, rule, value, valid_from, valid_to, note)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(_table(settings, settings.rules_table)),
            rows,
        )


def _rules_frame(*rows: tuple[Any, ...]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(rules.RULE_COLUMNS), dtype=object)
    return frame.astype({"value": "float64"})


# Rules read from the ERP


def test_rules_in_force_keeps_only_the_rules_in_force_at_the_run_date(
    conn: Connection, erp_settings: ErpSettings
) -> None:
    day = timedelta(days=1)
    _insert_rules(
        conn,
        erp_settings,
        ("DE", "a1", None, "max_discount", Decimal("0.3"), None, None, "always"),
        ("DE", "a2", None, "hold", None, RUN_DATE, RUN_DATE, "this day only"),
        ("DE", "a3", None, "exclude", None, RUN_DATE + day, None, "not yet"),
        ("DE", "a4", None, "exclude", None, None, RUN_DATE - day, "expired yesterday"),
        ("DE", None, "jeans", "min_price", Decimal("39.99"), RUN_DATE - 7 * day, RUN_DATE + 7 * day, None),
        ("AT", "a1", None, "exclude", None, None, RUN_DATE, "ends on the run date"),
        ("DE", "a1", None, "exclude", None, RUN_DATE - day, None, "since yesterday"),
    )

    found = rules.rules_in_force(conn, erp_settings, RUN_DATE)

    expected = _rules_frame(
        ("AT", "a1", None, "exclude", np.nan, None, RUN_DATE, "ends on the run date"),
        ("DE", "a1", None, "exclude", np.nan, RUN_DATE - day, None, "since yesterday"),
        ("DE", "a1", None, "max_discount", 0.3, None, None, "always"),
        ("DE", "a2", None, "hold", np.nan, RUN_DATE, RUN_DATE, "this day only"),
        ("DE", None, "jeans", "min_price", 39.99, RUN_DATE - 7 * day, RUN_DATE + 7 * day, None),
    )
    pd.testing.assert_frame_equal(found, expected)
    assert found["value"].dtype == np.float64
    assert list(found.columns) == [
        "country",
        "article_id",
        "category",
        "rule",
        "value",
        "valid_from",
        "valid_to",
        "note",
    ]


def test_rules_in_force_a_day_later_drops_the_expired_and_adds_the_started(
    conn: Connection, erp_settings: ErpSettings
) -> None:
    later = RUN_DATE + timedelta(days=1)
    _insert_rules(
        conn,
        erp_settings,
        ("DE", "a2", None, "hold", None, RUN_DATE, RUN_DATE, "this day only"),
        ("DE", "a3", None, "exclude", None, later, None, "from tomorrow"),
    )

    assert rules.rules_in_force(conn, erp_settings, RUN_DATE)["article_id"].tolist() == ["a2"]
    assert rules.rules_in_force(conn, erp_settings, later)["article_id"].tolist() == ["a3"]


def test_rules_in_force_without_rules_is_an_empty_frame_with_the_columns(
    conn: Connection, erp_settings: ErpSettings
) -> None:
    found = rules.rules_in_force(conn, erp_settings, RUN_DATE)

    assert found.empty
    assert list(found.columns) == list(rules.RULE_COLUMNS)
    assert found["value"].dtype == np.float64


def _schema_exists(conn: Connection, settings: ErpSettings) -> bool:
    with transaction(conn) as cur:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (settings.schema,))
        return cur.fetchone() is not None


def test_rules_in_force_before_the_first_migrate_reads_none_and_creates_nothing(erp_settings: ErpSettings) -> None:
    with closing(connect(erp_settings.dsn, 5)) as conn:
        found = rules.rules_in_force(conn, erp_settings, RUN_DATE)
        assert not _schema_exists(conn, erp_settings)
        with transaction(conn) as cur:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(erp_settings.schema)))
        in_an_empty_schema = rules.rules_in_force(conn, erp_settings, RUN_DATE)
        with transaction(conn) as cur:
            cur.execute(
                "SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s",
                (erp_settings.schema,),
            )
            relations = cur.fetchone()

    pd.testing.assert_frame_equal(found, rules.empty_rules())
    pd.testing.assert_frame_equal(in_an_empty_schema, rules.empty_rules())
    assert relations == (0,)


# Candidates published with the predictions


def test_publish_country_writes_the_explanations_and_candidates_exactly(
    conn: Connection, erp_settings: ErpSettings
) -> None:
    predictions = _predictions("DE", "a1", 'x,"y"\n').assign(
        rule_applied=["max_discount 0.1 [category jeans]; price_ending 0.99", None],
        stock_on_hand=[7.0, np.nan],
        gain_over_hold=[12.125, np.nan],
    )
    candidates = pd.DataFrame(
        [
            ("DE", "a1", 0.0, 40.0, 2.5, 9.0, 360.0, 0.75, None, False),
            ("DE", "a1", 0.1, 35.99, 3.0, 10.5, 377.895, 0.875, None, True),
            ("DE", "a1", 0.2, 32.0, np.nan, 12.0, 384.0, 1.0, "max_discount 0.1 [category jeans]", False),
            ("DE", 'x,"y"\n', 0.333, 26.68, 1.0, 2.0, 3.0, 0.25, "", True),
            # A buyer excluded a9: it has no recommendation, so its candidates stay out of the ERP.
            ("DE", "a9", 0.0, 10.0, 1.0, 2.0, 20.0, 0.5, "exclude", False),
        ],
        columns=list(CANDIDATE_COLUMNS),
    )

    assert _publish(conn, erp_settings, "r1", predictions, candidates) == ledger.PUBLISHED

    model = "model-r1"
    assert _predictions_rows(conn, erp_settings) == [
        ("DE", "a1", RUN_DATE, Decimal("40.00"), Decimal("0.200"), Decimal("32.00"), 3.5, 300.0, 0.9, "r1", model)
        + (250.0, 12.125, 0.6, 7, 8, "max_discount 0.1 [category jeans]; price_ending 0.99"),
        ("DE", 'x,"y"\n', RUN_DATE, Decimal("40.00"), Decimal("0.200"), Decimal("32.00"), 3.5, 300.0, 0.9, "r1", model)
        + (250.0, None, 0.6, None, 8, None),
    ]
    assert _candidate_rows(conn, erp_settings) == [
        ("DE", "a1", Decimal("0.000"), Decimal("40.00"), 2.5, 9.0, 360.0, 0.75, None, False, "r1"),
        ("DE", "a1", Decimal("0.100"), Decimal("35.99"), 3.0, 10.5, 377.895, 0.875, None, True, "r1"),
        (
            "DE",
            "a1",
            Decimal("0.200"),
            Decimal("32.00"),
            None,
            12.0,
            384.0,
            1.0,
            "max_discount 0.1 [category jeans]",
            False,
            "r1",
        ),
        ("DE", 'x,"y"\n', Decimal("0.333"), Decimal("26.68"), 1.0, 2.0, 3.0, 0.25, None, True, "r1"),
    ]
    # The ledger counts the published recommendations.
    assert ledger.run_statuses(conn, erp_settings, "r1") == {"DE": ledger.PUBLISHED}
    assert _rows(conn, erp_settings, erp_settings.ledger_table, "country")[0][4] == 2


def test_publish_country_takes_the_frames_the_train_score_stage_writes(
    conn: Connection, erp_settings: ErpSettings
) -> None:
    predictions = _predictions("DE", "a1").loc[:, list(PREDICTION_COLUMNS)]
    # As Spark's toPandas gives them: a nullable long with a null is a double column.
    predictions["weeks_to_season_end"] = predictions["weeks_to_season_end"].astype("float64")

    _publish(conn, erp_settings, "r1", predictions, _candidates("DE", "a1"))

    assert [row[11:] for row in _predictions_rows(conn, erp_settings)] == [(250.0, 50.0, 0.6, 12, 8, None)]
    assert [(row[2], row[9]) for row in _candidate_rows(conn, erp_settings)] == [
        (Decimal(str(step)).quantize(Decimal("0.001")), step == 0.2) for step in LADDER
    ]


def _run_ids(conn: Connection, settings: ErpSettings, table: str) -> dict[str, set[str]]:
    held: dict[str, set[str]] = {}
    for row in _rows(conn, settings, table, "1"):
        held.setdefault(row[0], set()).add(row[10 if table == settings.candidates_table else 9])
    return held


def test_publish_country_a_new_run_replaces_both_tables_and_other_countries_stay(
    conn: Connection, erp_settings: ErpSettings
) -> None:
    _publish(conn, erp_settings, "r1", _predictions("DE", "a1", "a2"), _candidates("DE", "a1", "a2"))
    _publish(conn, erp_settings, "r1", _predictions("FR", "f1"), _candidates("FR", "f1"))
    france = [row for row in _candidate_rows(conn, erp_settings) if row[0] == "FR"]

    _publish(conn, erp_settings, "r2", _predictions("DE", "a2", "a3"), _candidates("DE", "a2", "a3", chosen=0.3))

    german = [row for row in _candidate_rows(conn, erp_settings) if row[0] == "DE"]
    assert sorted({(row[1], row[10]) for row in german}) == [("a2", "r2"), ("a3", "r2")]
    assert [row[2] for row in german if row[9]] == [Decimal("0.300"), Decimal("0.300")]
    assert len(german) == 2 * len(LADDER)
    assert [row for row in _candidate_rows(conn, erp_settings) if row[0] == "FR"] == france
    assert _run_ids(conn, erp_settings, erp_settings.predictions_table) == {"DE": {"r2"}, "FR": {"r1"}}


def test_publish_country_without_candidates_leaves_none_of_an_earlier_run(
    conn: Connection, erp_settings: ErpSettings
) -> None:
    _publish(conn, erp_settings, "r1", _predictions("DE", "a1"), _candidates("DE", "a1"))
    _publish(conn, erp_settings, "r1", _predictions("FR", "f1"), _candidates("FR", "f1"))

    # A caller from before candidates, and a run whose every candidate belongs to an excluded article.
    _publish(conn, erp_settings, "r2", _predictions("DE", "a1"), None)
    _publish(conn, erp_settings, "r2", _predictions("FR", "f1"), _candidates("FR", "f9"))

    assert _candidate_rows(conn, erp_settings) == []
    assert _run_ids(conn, erp_settings, erp_settings.predictions_table) == {"DE": {"r2"}, "FR": {"r2"}}


def test_a_superseded_week_and_a_failed_country_change_neither_table(
    conn: Connection, erp_settings: ErpSettings
) -> None:
    _publish(conn, erp_settings, "week-48", _predictions("DE", "a1", "a2"), _candidates("DE", "a1", "a2"))
    predictions, candidates = _predictions_rows(conn, erp_settings), _candidate_rows(conn, erp_settings)

    older = RUN_DATE - timedelta(weeks=1)
    outcome = _publish(conn, erp_settings, "week-47", _predictions("DE", "b1"), _candidates("DE", "b1"), run_date=older)
    writer.record_not_published(
        conn, erp_settings, run_id="week-49", run_date=RUN_DATE, country="DE", message="failed: x", metrics=METRICS
    )

    assert outcome == ledger.SUPERSEDED
    assert _predictions_rows(conn, erp_settings) == predictions
    assert _candidate_rows(conn, erp_settings) == candidates


def test_publish_country_a_candidate_the_table_refuses_keeps_both_old_sets(
    conn: Connection, erp_settings: ErpSettings
) -> None:
    _publish(conn, erp_settings, "r1", _predictions("DE", "a1"), _candidates("DE", "a1"))
    predictions, candidates = _predictions_rows(conn, erp_settings), _candidate_rows(conn, erp_settings)
    # Past numeric(4,3): refused by the COPY into candidates, after the predictions' COPY succeeded.
    overflowing = _candidates("DE", "a2").assign(candidate_discount=[0.0, 0.1, 0.2, 12.5])

    with pytest.raises(psycopg2.errors.NumericValueOutOfRange):
        _publish(conn, erp_settings, "r2", _predictions("DE", "a2"), overflowing)

    assert _predictions_rows(conn, erp_settings) == predictions
    assert _candidate_rows(conn, erp_settings) == candidates
    assert ledger.run_statuses(conn, erp_settings, "r2") == {}


@pytest.mark.parametrize(
    ("predictions", "candidates", "message"),
    [
        (
            _predictions("DE", "a1"),
            pd.concat([_candidates("DE", "a1"), _candidates("FR", "a1")]),
            "candidates for DE contain rows of other countries: FR",
        ),
        (
            _predictions("DE", "a1"),
            pd.concat([_candidates("DE", "a1"), _candidates("DE", "a1").iloc[[2]].assign(candidate_discount=0.2001)]),
            r"candidates for DE repeat \(article_id, candidate_discount\): a1 at 0.2",
        ),
        (
            _predictions("DE", "a1"),
            pd.concat([_candidates("DE", "a1"), _candidates("DE", "a9").iloc[[1, 1]]]),
            r"candidates for DE repeat \(article_id, candidate_discount\): a9 at 0.1",
        ),
        (
            _predictions("DE", "a1"),
            _candidates("DE", "a1").drop(columns="chosen"),
            "candidates for DE lack columns: chosen",
        ),
        (
            _predictions("DE", "a1"),
            _candidates("DE", "a1").assign(chosen=[None, True, False, False]),
            "candidates for DE: chosen must be true or false",
        ),
        (
            _predictions("DE", "a1"),
            _candidates("DE", "a1").assign(chosen=["False", "True", "False", "False"]),
            "candidates for DE: chosen must be true or false",
        ),
        (
            _predictions("DE", "a1").assign(stock_on_hand=[2.5]),
            _candidates("DE", "a1"),
            "predictions for DE hold fractions in integer columns: stock_on_hand",
        ),
    ],
    ids=[
        "other-country",
        "duplicate-at-the-tables-scale",
        "duplicate-of-an-excluded-article",
        "missing-chosen",
        "chosen-missing",
        "chosen-text",
        "fractional-stock",
    ],
)
def test_publish_country_refuses_bad_candidates_before_touching_the_database(
    erp_settings: ErpSettings, predictions: pd.DataFrame, candidates: pd.DataFrame, message: str
) -> None:
    with closing(connect(erp_settings.dsn, 5)) as closed:
        pass

    # A closed connection raises InterfaceError on first use, so a ValueError proves the DB was never reached.
    with pytest.raises(ValueError, match=message):
        _publish(closed, erp_settings, "r1", predictions, candidates)


class SnapshotReader(threading.Thread):
    """An ERP reader polling, in one statement (one snapshot), the run ids each country shows in both tables."""

    def __init__(self, settings: ErpSettings) -> None:
        super().__init__(daemon=True)
        self.settings, self.done = settings, threading.Event()
        self.snapshots: list[list[tuple[Any, ...]]] = []
        self.error: Exception | None = None

    def run(self) -> None:
        settings = self.settings
        query = sql.SQL(
            """
            SELECT 'predictions', country, run_id, count(*) FROM {} GROUP BY country, run_id
            UNION ALL
            SELECT 'candidates', country, run_id, count(*) FROM {} GROUP BY country, run_id
            ORDER BY 1, 2, 3
            """
        ).format(_table(settings, settings.predictions_table), _table(settings, settings.candidates_table))
        try:
            with closing(connect(settings.dsn, 5)) as conn:
                conn.set_session(readonly=True, autocommit=True)
                while not self.done.is_set():
                    with conn.cursor() as cur:
                        cur.execute(query)
                        snapshot = cur.fetchall()
                    if not self.snapshots or snapshot != self.snapshots[-1]:
                        self.snapshots.append(snapshot)
        except Exception as err:  # the test reports it: a thread's exception would vanish
            self.error = err


def _articles_of(run: int) -> tuple[str, ...]:
    """Each run publishes a different number of articles, so that the counts tell runs apart too."""
    return tuple(f"a{n}" for n in range(run % 2, 3 + run % 2 + run % 3))


def test_a_polling_reader_never_sees_candidates_and_predictions_of_different_runs(
    conn: Connection, erp_settings: ErpSettings
) -> None:
    countries, runs = ("DE", "FR"), 24
    for country in countries:
        _publish(
            conn, erp_settings, "run-0", _predictions(country, *_articles_of(0)), _candidates(country, "a0", "a1", "a2")
        )
    reader = SnapshotReader(erp_settings)
    reader.start()
    try:
        for run in range(1, runs):
            for country in countries:
                articles = _articles_of(run)
                # The even runs explain only some articles: their candidate count differs from a full ladder.
                explained = articles if run % 2 else articles[:-1]
                outcome = _publish(
                    conn,
                    erp_settings,
                    f"run-{run}",
                    _predictions(country, *articles),
                    _candidates(country, *explained),
                )
                assert outcome == ledger.PUBLISHED
            time.sleep(0.005)
    finally:
        reader.done.set()
        reader.join(timeout=10)
    assert reader.error is None

    expected_counts = {}
    for run in range(runs):
        articles = _articles_of(run)
        explained = articles if run % 2 or run == 0 else articles[:-1]
        expected_counts[f"run-{run}"] = (len(articles), len(explained) * len(LADDER))
    seen_runs = set()
    for snapshot in reader.snapshots:
        shown: dict[tuple[str, str], set[tuple[str, int]]] = {}
        for table, country, run_id, count in snapshot:
            shown.setdefault((country, table), set()).add((run_id, count))
        for country in countries:
            predictions, candidates = shown.get((country, "predictions")), shown.get((country, "candidates"))
            assert predictions is not None and candidates is not None, f"a gap in {country}: {snapshot}"
            assert len(predictions) == 1 and len(candidates) == 1, f"two runs in {country}: {snapshot}"
            (prediction_run, prediction_count), (candidate_run, candidate_count) = *predictions, *candidates
            assert prediction_run == candidate_run, f"a mix in {country}: {snapshot}"
            assert (prediction_count, candidate_count) == expected_counts[prediction_run], snapshot
            seen_runs.add(prediction_run)
    # The reader saw the runs change under it, not one frozen state.
    assert len(seen_runs) > runs // 2
