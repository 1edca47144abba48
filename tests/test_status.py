"""`markdown-pricing status` against a real embedded PostgreSQL: the last runs of the ledger, as a table and as JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterator
from contextlib import closing

import pandas as pd
import pytest
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from markdown_pricing.core.config import Config, ErpSettings, load_config
from markdown_pricing.erp import writer
from markdown_pricing.erp.connection import connect
from markdown_pricing.erp.ledger import BLOCKED, PUBLISHED
from markdown_pricing.erp.schema import migrate
from markdown_pricing.observe import status
from markdown_pricing.orchestrate import cli

UTC = dt.timezone.utc
WEEK_1, WEEK_2 = dt.date(2026, 11, 16), dt.date(2026, 11, 23)
METRICS = {"model_wape": 0.3, "baseline_wape": 0.4, "model_bias": 0.01}
DROP = "blocked by the quality gate: recommendations dropped 25.0% (4 -> 3), more than the allowed 10.0%"


@pytest.fixture
def conn(erp_settings: ErpSettings) -> Iterator[Connection]:
    with closing(connect(erp_settings.dsn, 5)) as connection:
        migrate(connection, erp_settings)
        yield connection


def publish(conn: Connection, settings: ErpSettings, run_id: str, run_date: dt.date, country: str, rows: int) -> None:
    predictions = pd.DataFrame(
        {
            "country": country,
            "article_id": [f"A{i}" for i in range(rows)],
            "current_price": 50.0,
            "recommended_discount": 0.1,
            "recommended_price": 45.0,
            "predicted_units_next_week": 3.0,
            "expected_revenue": 120.0,
            "expected_sell_through": 0.8,
        }
    )
    result = writer.publish_country(
        conn,
        settings,
        run_id=run_id,
        run_date=run_date,
        country=country,
        predictions=predictions,
        model_version=f"{run_id}/{country}",
        metrics=METRICS,
    )
    assert result == PUBLISHED


def three_runs(conn: Connection, settings: ErpSettings) -> None:
    """week-1 publishes DEU and FRA; week-2 publishes DEU, blocks FRA, fails ITA; week-2-b serves FRA a fallback."""
    publish(conn, settings, "2026-11-16", WEEK_1, "DEU", 4)
    publish(conn, settings, "2026-11-16", WEEK_1, "FRA", 4)
    publish(conn, settings, "2026-11-23", WEEK_2, "DEU", 5)
    writer.record_not_published(
        conn,
        settings,
        run_id="2026-11-23",
        run_date=WEEK_2,
        country="FRA",
        message=DROP,
        metrics=METRICS,
        status=BLOCKED,
    )
    writer.record_not_published(
        conn,
        settings,
        run_id="2026-11-23",
        run_date=WEEK_2,
        country="ITA",
        message="ValueError: too few history weeks",
        metrics={},
    )
    # A status the writer does not know yet, as a later ledger may hold: the check constraint goes first.
    ledger = sql.SQL("{}.{}").format(sql.Identifier(settings.schema), sql.Identifier(settings.ledger_table))
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT publish_ledger_status_check").format(ledger))
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (run_id, country, run_date, status, rows, message) VALUES (%s, %s, %s, %s, %s, %s)"
            ).format(ledger),
            ("2026-11-23-b", "FRA", WEEK_2, "fallback", 4, "previous model's rows kept"),
        )


def test_recent_runs_lists_the_last_runs_newest_first_with_each_country(
    conn: Connection, erp_settings: ErpSettings
) -> None:
    three_runs(conn, erp_settings)

    runs = status.recent_runs(conn, erp_settings, limit=2)

    assert [(run.run_id, run.run_date) for run in runs] == [("2026-11-23-b", WEEK_2), ("2026-11-23", WEEK_2)]
    assert [(c.country, c.status, c.rows, c.gate_override, c.message) for c in runs[1].countries] == [
        ("DEU", "published", 5, False, None),
        ("FRA", "blocked", None, False, DROP),
        ("ITA", "failed", None, False, "ValueError: too few history weeks"),
    ]
    assert runs[1].counts() == {"published": 1, "blocked": 1, "failed": 1}
    assert runs[1].recorded_at == max(c.recorded_at for c in runs[1].countries)
    assert all(c.recorded_at.tzinfo == UTC for run in runs for c in run.countries)


def test_recent_runs_without_a_ledger_is_empty(erp_settings: ErpSettings) -> None:
    with closing(connect(erp_settings.dsn, 5)) as connection:
        assert status.recent_runs(connection, erp_settings, limit=5) == []
    assert status.format_status([]) == "no runs in the ledger yet"


def test_format_status_prints_a_table_per_run_with_unknown_statuses_after_known_ones() -> None:
    moment = dt.datetime(2026, 11, 23, 6, 12, 3, tzinfo=UTC)
    later = moment + dt.timedelta(seconds=2)
    run = status.RunStatus(
        "2026-11-23",
        WEEK_2,
        later,
        (
            status.CountryStatus("DEU", "published", 140, moment, False, None),
            status.CountryStatus("FRA", "fallback", 90, later, False, "previous model's rows kept"),
            status.CountryStatus("ITA", "blocked", None, later, False, DROP + "; model loses to its baseline: ..."),
            status.CountryStatus("POL", "failed", None, moment, False, "ValueError:\n  too few\nweeks"),
        ),
    )

    assert status.format_status([run]) == (
        "run 2026-11-23  (run date 2026-11-23, last recorded 2026-11-23 06:12:05 UTC)  "
        "published 1, blocked 1, failed 1, fallback 1\n"
        "  country status        rows  recorded at (UTC)    message\n"
        "  DEU     published      140  2026-11-23 06:12:03\n"
        "  FRA     fallback        90  2026-11-23 06:12:05  previous model's rows kept\n"
        "  ITA     blocked          -  2026-11-23 06:12:05  blocked by the quality gate: recommendations dropped 25.0% "
        "(4 -> 3), more than the allowed 10.0%;...\n"
        "  POL     failed           -  2026-11-23 06:12:03  ValueError: too few weeks"
    )


@pytest.fixture
def config_with(erp_settings: ErpSettings, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The CLI's configuration with the test's own ERP schema."""
    cfg = dataclasses.replace(load_config("local"), erp=erp_settings)
    monkeypatch.setattr(cli, "load_config", lambda env: cfg)
    return cfg


def test_status_command_prints_json_for_scripts(
    conn: Connection, erp_settings: ErpSettings, config_with: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    three_runs(conn, erp_settings)

    assert cli.main(["status", "--json", "--limit", "3"]) == 0

    document = json.loads(capsys.readouterr().out)
    assert [run["run_id"] for run in document] == ["2026-11-23-b", "2026-11-23", "2026-11-16"]
    assert document[0]["counts"] == {"fallback": 1}
    assert document[0]["countries"] == [
        {
            "country": "FRA",
            "status": "fallback",
            "rows": 4,
            "recorded_at": document[0]["recorded_at"],
            "gate_override": False,
            "message": "previous model's rows kept",
        }
    ]
    week_2 = document[1]
    assert (week_2["run_date"], week_2["counts"]) == ("2026-11-23", {"published": 1, "blocked": 1, "failed": 1})
    assert [(c["country"], c["status"], c["rows"], c["message"]) for c in week_2["countries"]] == [
        ("DEU", "published", 5, None),
        ("FRA", "blocked", None, DROP),
        ("ITA", "failed", None, "ValueError: too few history weeks"),
    ]
    for run in document:
        assert dt.datetime.fromisoformat(run["recorded_at"]).utcoffset() == dt.timedelta(0)


def test_status_command_prints_the_last_runs_as_a_table(
    conn: Connection, erp_settings: ErpSettings, config_with: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    three_runs(conn, erp_settings)

    assert cli.main(["status", "--limit", "2"]) == 0

    out = capsys.readouterr().out
    headers = re.findall(r"^run (\S+)  \(run date (\S+), last recorded .* UTC\)  (.*)$", out, flags=re.MULTILINE)
    assert headers == [
        ("2026-11-23-b", "2026-11-23", "fallback 1"),
        ("2026-11-23", "2026-11-23", "published 1, blocked 1, failed 1"),
    ]
    when = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"
    assert re.search(rf"^  DEU     published        5  {when}$", out, flags=re.MULTILINE)
    assert re.search(rf"^  FRA     blocked          -  {when}  {re.escape(DROP)}$", out, flags=re.MULTILINE)
    assert "2026-11-16" not in out


def test_status_command_refuses_a_limit_below_one(config_with: Config, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--limit", "0"]) == 1
    assert "--limit must be at least 1" in capsys.readouterr().err
