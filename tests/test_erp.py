"""The ERP writer and the embedded server against a real PostgreSQL: no mocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from markdown_pricing.core.config import ConfigError, ErpSettings
from markdown_pricing.erp import embedded, ledger, writer
from markdown_pricing.erp.connection import ErpUnavailableError, connect, describe_dsn, running_dsn, start_dsn
from markdown_pricing.erp.schema import is_current, migrate, prepare

RUN_DATE = date(2024, 3, 4)
METRICS = {"model_wape": 0.21, "baseline_wape": 0.35, "model_bias": -0.02}
WAIT_S = 10


@pytest.fixture
def conn(erp_settings: ErpSettings) -> Iterator[Connection]:
    with closing(connect(erp_settings.dsn, 5)) as connection:
        migrate(connection, erp_settings)
        yield connection


def _predictions(country: str, *articles: str, price: float = 10.0, discount: float = 0.2) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "country": [country] * len(articles),
            "article_id": list(articles),
            "current_price": [price] * len(articles),
            "recommended_discount": [discount] * len(articles),
            "recommended_price": [round(price * (1 - discount), 2)] * len(articles),
            "predicted_units_next_week": [3.5] * len(articles),
            "expected_revenue": [40.25] * len(articles),
            "expected_sell_through": [0.75] * len(articles),
            "season": ["SS24"] * len(articles),
        }
    )


def _publish(conn: Connection, settings: ErpSettings, run_id: str, frame: pd.DataFrame, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "run_id": run_id,
        "run_date": RUN_DATE,
        "predictions": frame,
        "model_version": f"model-{run_id}",
        "metrics": METRICS,
        **overrides,
    }
    if "country" not in arguments:
        arguments["country"] = frame["country"].iloc[0]
    return writer.publish_country(conn, settings, **arguments)


def _rows(conn: Connection, settings: ErpSettings, table: str, order: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT * FROM {}.{} ORDER BY {}").format(
                sql.Identifier(settings.schema), sql.Identifier(table), sql.SQL(order)
            )
        )
        rows = cur.fetchall()
    conn.rollback()
    return rows


def _predictions_table(conn: Connection, settings: ErpSettings) -> list[tuple[Any, ...]]:
    return _rows(conn, settings, settings.predictions_table, "country, article_id")


def _ledger_table(conn: Connection, settings: ErpSettings) -> list[tuple[Any, ...]]:
    return _rows(conn, settings, settings.ledger_table, "run_id, country")


def _articles(conn: Connection, settings: ErpSettings, country: str) -> list[tuple[str, str]]:
    return [(row[1], row[9]) for row in _predictions_table(conn, settings) if row[0] == country]


class _PausingConnection(psycopg2.extensions.connection):
    """A real connection whose commit waits until the test lets it go."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before_commit = threading.Event()
        self.proceed = threading.Event()

    def commit(self) -> None:
        self.before_commit.set()
        if not self.proceed.wait(WAIT_S):
            raise TimeoutError("the test never released the commit")
        super().commit()


def test_migrate_is_idempotent(conn: Connection, erp_settings: ErpSettings) -> None:
    _publish(conn, erp_settings, "r1", _predictions("DE", "a1"))

    migrate(conn, erp_settings)
    migrate(conn, erp_settings)

    assert [row[1] for row in _predictions_table(conn, erp_settings)] == ["a1"]
    assert ledger.run_statuses(conn, erp_settings, "r1") == {"DE": "published"}


def test_migrate_creates_contract_columns(conn: Connection, erp_settings: ErpSettings) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (erp_settings.schema, erp_settings.predictions_table),
        )
        columns = cur.fetchall()
        cur.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY a.attname",
            (f"{erp_settings.schema}.{erp_settings.predictions_table}",),
        )
        primary_key = [name for (name,) in cur.fetchall()]
    conn.rollback()

    assert columns == [
        ("country", "text", None, None),
        ("article_id", "text", None, None),
        ("valid_from", "date", None, None),
        ("current_price", "numeric", 12, 2),
        ("recommended_discount", "numeric", 4, 3),
        ("recommended_price", "numeric", 12, 2),
        ("predicted_units_next_week", "double precision", 53, None),
        ("expected_revenue", "double precision", 53, None),
        ("expected_sell_through", "double precision", 53, None),
        ("run_id", "text", None, None),
        ("model_version", "text", None, None),
        ("hold_expected_revenue", "double precision", 53, None),
        ("gain_over_hold", "double precision", 53, None),
        ("hold_sell_through", "double precision", 53, None),
        ("stock_on_hand", "integer", 32, 0),
        ("weeks_to_season_end", "integer", 32, 0),
        ("rule_applied", "text", None, None),
    ]
    assert primary_key == ["article_id", "country"]


def test_migrate_concurrent_calls_all_succeed(erp_settings: ErpSettings) -> None:
    def create() -> None:
        with closing(connect(erp_settings.dsn, 5)) as connection:
            migrate(connection, erp_settings)

    with ThreadPoolExecutor(max_workers=6) as pool:
        for future in [pool.submit(create) for _ in range(6)]:
            future.result(timeout=WAIT_S)


def test_publish_country_writes_exactly_the_rows(conn: Connection, erp_settings: ErpSettings) -> None:
    model = "lgbm-DE-7"
    frame = pd.DataFrame(
        {
            "country": ["DE", "DE"],
            "article_id": ["a1", "a2"],
            "current_price": [19.99, 5.0],
            "recommended_discount": [0.3, 0.0],
            "recommended_price": [13.99, 5.0],
            "predicted_units_next_week": [2.5, float("nan")],
            "expected_revenue": [100.125, None],
            "expected_sell_through": [0.8, 0.1],
        }
    )

    status = _publish(conn, erp_settings, "r1", frame, model_version=model)

    assert status == "published"
    # A frame without the explanation columns (a caller from before them) leaves them NULL.
    no_explanation = (None,) * 6
    assert _predictions_table(conn, erp_settings) == [
        ("DE", "a1", RUN_DATE, Decimal("19.99"), Decimal("0.300"), Decimal("13.99"), 2.5, 100.125, 0.8, "r1", model)
        + no_explanation,
        ("DE", "a2", RUN_DATE, Decimal("5.00"), Decimal("0.000"), Decimal("5.00"), None, None, 0.1, "r1", model)
        + no_explanation,
    ]
    assert [row[:10] for row in _ledger_table(conn, erp_settings)] == [
        ("r1", "DE", RUN_DATE, "published", 2, model, 0.21, 0.35, -0.02, None)
    ]


def test_publish_country_twice_in_one_run_is_already_published(conn: Connection, erp_settings: ErpSettings) -> None:
    _publish(conn, erp_settings, "r1", _predictions("DE", "a1", "a2"))
    table, ledger_rows = _predictions_table(conn, erp_settings), _ledger_table(conn, erp_settings)

    status = _publish(conn, erp_settings, "r1", _predictions("DE", "b1", price=99.0), model_version="other")

    assert status == "already_published"
    assert _predictions_table(conn, erp_settings) == table
    assert _ledger_table(conn, erp_settings) == ledger_rows


def test_publish_country_new_run_replaces_country_rows(conn: Connection, erp_settings: ErpSettings) -> None:
    _publish(conn, erp_settings, "r1", _predictions("DE", "a1", "a2", "a3"))

    status = _publish(conn, erp_settings, "r2", _predictions("DE", "a3", "a4"))

    assert status == "published"
    assert _articles(conn, erp_settings, "DE") == [("a3", "r2"), ("a4", "r2")]
    assert ledger.run_statuses(conn, erp_settings, "r1") == {"DE": "published"}
    assert ledger.run_statuses(conn, erp_settings, "r2") == {"DE": "published"}


def test_publish_country_leaves_other_countries_untouched(conn: Connection, erp_settings: ErpSettings) -> None:
    _publish(conn, erp_settings, "r1", _predictions("DE", "a1", "a2"))
    _publish(conn, erp_settings, "r1", _predictions("FR", "a1", "f2"))
    france = [row for row in _predictions_table(conn, erp_settings) if row[0] == "FR"]

    _publish(conn, erp_settings, "r2", _predictions("DE", "a9"))

    assert [row for row in _predictions_table(conn, erp_settings) if row[0] == "FR"] == france
    assert _articles(conn, erp_settings, "DE") == [("a9", "r2")]


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (_predictions("DE", "b1", "b2", discount=12.5), psycopg2.errors.NumericValueOutOfRange),
        (_predictions("DE", "b1", "b2", price=float("nan")), psycopg2.errors.NotNullViolation),
        (_predictions("DE", "7", "b2").assign(article_id=[7, "7"]), psycopg2.errors.UniqueViolation),
    ],
    ids=["discount-overflow", "missing-price", "duplicate-after-text-cast"],
)
def test_publish_country_failure_mid_transaction_keeps_old_rows(
    conn: Connection, erp_settings: ErpSettings, frame: pd.DataFrame, error: type[Exception]
) -> None:
    _publish(conn, erp_settings, "r1", _predictions("DE", "a1", "a2"))
    table = _predictions_table(conn, erp_settings)

    with pytest.raises(error):
        _publish(conn, erp_settings, "r2", frame)

    assert _predictions_table(conn, erp_settings) == table
    assert ledger.run_statuses(conn, erp_settings, "r2") == {}


@pytest.mark.parametrize(
    "frame",
    [
        pd.concat([_predictions("DE", "a1"), _predictions("FR", "a2")]),
        _predictions("DE", "a1", "a2", "a1"),
        _predictions("DE", "a1").drop(columns="recommended_price"),
        _predictions("DE"),
    ],
    ids=["other-country", "duplicate-article", "missing-column", "empty"],
)
def test_publish_country_rejects_bad_frame_before_touching_database(
    erp_settings: ErpSettings, frame: pd.DataFrame
) -> None:
    with closing(connect(erp_settings.dsn, 5)) as closed:
        pass

    # A closed connection raises InterfaceError on first use, so a ValueError proves the DB was never reached.
    with pytest.raises(ValueError, match="DE"):
        _publish(closed, erp_settings, "r1", frame, country="DE")


def test_publish_country_refuses_autocommit_connection(conn: Connection, erp_settings: ErpSettings) -> None:
    conn.autocommit = True

    with pytest.raises(ValueError, match="autocommit"):
        _publish(conn, erp_settings, "r1", _predictions("DE", "a1"))

    conn.autocommit = False
    assert _predictions_table(conn, erp_settings) == []


def test_publish_country_stores_sql_looking_text_verbatim(conn: Connection, erp_settings: ErpSettings) -> None:
    nasty = [
        "x'); DROP TABLE predictions; --",
        "\\N",
        "",
        'comma, "quote"\nnewline',
        "$$ ; COPY ; $$",
    ]
    country = "D'E"
    frame = _predictions(country, *nasty)

    _publish(conn, erp_settings, "run'1", frame, model_version="v\\1; DELETE FROM x")

    assert sorted(_articles(conn, erp_settings, country)) == sorted((article, "run'1") for article in nasty)
    assert {row[10] for row in _predictions_table(conn, erp_settings)} == {"v\\1; DELETE FROM x"}
    assert ledger.run_statuses(conn, erp_settings, "run'1") == {country: "published"}


def test_record_not_published_keeps_rows_and_records_failure(conn: Connection, erp_settings: ErpSettings) -> None:
    _publish(conn, erp_settings, "r1", _predictions("DE", "a1", "a2"))
    table = _predictions_table(conn, erp_settings)

    writer.record_not_published(
        conn, erp_settings, run_id="r2", run_date=RUN_DATE, country="DE", message="WAPE check failed", metrics=METRICS
    )

    assert _predictions_table(conn, erp_settings) == table
    assert ledger.run_statuses(conn, erp_settings, "r2") == {"DE": "failed"}
    assert [row[:10] for row in _ledger_table(conn, erp_settings) if row[0] == "r2"] == [
        ("r2", "DE", RUN_DATE, "failed", None, None, 0.21, 0.35, -0.02, "WAPE check failed")
    ]


def test_record_not_published_never_downgrades_published(conn: Connection, erp_settings: ErpSettings) -> None:
    _publish(conn, erp_settings, "r1", _predictions("DE", "a1"))
    ledger_rows = _ledger_table(conn, erp_settings)

    writer.record_not_published(
        conn, erp_settings, run_id="r1", run_date=RUN_DATE, country="DE", message="late failure", metrics={}
    )

    assert _ledger_table(conn, erp_settings) == ledger_rows
    assert _articles(conn, erp_settings, "DE") == [("a1", "r1")]


def test_publish_country_after_recorded_failure_publishes(conn: Connection, erp_settings: ErpSettings) -> None:
    writer.record_not_published(
        conn, erp_settings, run_id="r1", run_date=RUN_DATE, country="DE", message="first try failed", metrics={}
    )

    status = _publish(conn, erp_settings, "r1", _predictions("DE", "a1"))

    assert status == "published"
    assert [(row[3], row[4], row[9]) for row in _ledger_table(conn, erp_settings)] == [("published", 1, None)]


def test_ledger_lists_only_the_run(conn: Connection, erp_settings: ErpSettings) -> None:
    _publish(conn, erp_settings, "r1", _predictions("DE", "a1"))
    _publish(conn, erp_settings, "r2", _predictions("FR", "a1"))
    writer.record_not_published(
        conn, erp_settings, run_id="r2", run_date=RUN_DATE, country="IT", message="x", metrics={}
    )

    assert ledger.run_statuses(conn, erp_settings, "r2") == {"FR": "published", "IT": "failed"}


@pytest.mark.parametrize(
    "override",
    [
        {"schema": "Markdown"},
        {"schema": "markdown; DROP SCHEMA public"},
        {"predictions_table": "pre-dictions"},
        {"ledger_table": ""},
        {"ledger_table": "x" * 64},
    ],
)
def test_migrate_rejects_invalid_identifier(
    conn: Connection, erp_settings: ErpSettings, override: dict[str, str]
) -> None:
    settings = replace(erp_settings, **override)

    with pytest.raises(ConfigError, match="not a valid identifier"):
        migrate(conn, settings)
    with pytest.raises(ConfigError, match="not a valid identifier"):
        _publish(conn, settings, "r1", _predictions("DE", "a1"))


def test_publish_country_reader_sees_old_set_until_commit(conn: Connection, erp_settings: ErpSettings) -> None:
    _publish(conn, erp_settings, "r1", _predictions("DE", "a1", "a2", "a3"))
    old = _articles(conn, erp_settings, "DE")

    with (
        closing(psycopg2.connect(erp_settings.dsn, connection_factory=_PausingConnection)) as writer,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        assert isinstance(writer, _PausingConnection)
        publishing = pool.submit(_publish, writer, erp_settings, "r2", _predictions("DE", "a3", "a4"))
        assert writer.before_commit.wait(WAIT_S)

        during = _articles(conn, erp_settings, "DE")
        ledger_during = ledger.run_statuses(conn, erp_settings, "r2")
        writer.proceed.set()
        assert publishing.result(timeout=WAIT_S) == "published"

    assert during == old
    assert ledger_during == {}
    assert _articles(conn, erp_settings, "DE") == [("a3", "r2"), ("a4", "r2")]


def _waits_on_lock(conn: Connection, pid: int) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
        found = cur.fetchone()
    conn.rollback()
    return found is not None and found[0] == "Lock"


def test_publish_country_serialises_publishers_of_one_country(conn: Connection, erp_settings: ErpSettings) -> None:
    with (
        closing(psycopg2.connect(erp_settings.dsn, connection_factory=_PausingConnection)) as first,
        closing(connect(erp_settings.dsn, 5)) as second,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        assert isinstance(first, _PausingConnection)
        first_publish = pool.submit(_publish, first, erp_settings, "r1", _predictions("DE", "a1"))
        assert first.before_commit.wait(WAIT_S)
        second_publish = pool.submit(_publish, second, erp_settings, "r1", _predictions("DE", "b1"))
        deadline = time.monotonic() + WAIT_S
        while not _waits_on_lock(conn, second.info.backend_pid):
            assert time.monotonic() < deadline, "the second publisher never waited for the first"
            time.sleep(0.02)
        first.proceed.set()

        assert first_publish.result(timeout=WAIT_S) == "published"
        assert second_publish.result(timeout=WAIT_S) == "already_published"
    assert _articles(conn, erp_settings, "DE") == [("a1", "r1")]


def test_connect_unreachable_names_target_without_password() -> None:
    dsn = "postgresql://alice:s3cret@/erp?host=/nonexistent-socket-dir&port=5999"

    with pytest.raises(ErpUnavailableError) as raised:
        connect(dsn, 2)

    assert "/nonexistent-socket-dir" in str(raised.value)
    assert "s3cret" not in str(raised.value)


@pytest.fixture
def no_libpq_target(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("PGHOST", "PGHOSTADDR", "PGSERVICE"):
        monkeypatch.delenv(variable, raising=False)


def _erp_settings(dsn: str = "") -> ErpSettings:
    return ErpSettings(
        dsn=dsn,
        schema="markdown",
        predictions_table="p",
        ledger_table="l",
        metrics_table="m",
        connect_timeout_s=5,
        connect_attempts=1,
        connect_backoff_s=0.0,
    )


def test_start_dsn_configured_dsn_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PGHOST", "erp.example.com")

    assert start_dsn(_erp_settings("host=erp.internal dbname=erp"), str(tmp_path)) == "host=erp.internal dbname=erp"
    assert not (tmp_path / "erp").exists()


@pytest.mark.parametrize("variable", ["PGHOST", "PGSERVICE"])
def test_start_dsn_pg_environment_gives_empty_dsn(
    monkeypatch: pytest.MonkeyPatch, no_libpq_target: None, tmp_path: Path, variable: str
) -> None:
    monkeypatch.setenv(variable, "erp")

    assert start_dsn(_erp_settings(), str(tmp_path)) == ""
    assert not (tmp_path / "erp").exists()


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_start_dsn_unconfigured_starts_embedded_under_work_and_running_dsn_finds_it(
    no_libpq_target: None, tmp_path: Path, scheme: str
) -> None:
    pgdata = tmp_path / "work" / "erp" / "pgdata"
    work = f"{scheme}{tmp_path / 'work'}"
    try:
        start_dsn(_erp_settings(), work)
        with closing(psycopg2.connect(running_dsn(_erp_settings(), work))) as conn, conn.cursor() as cur:
            cur.execute("SHOW data_directory")
            data_directory = cur.fetchone()
    finally:
        embedded.stop(pgdata)

    assert data_directory == (str(pgdata),)
    with pytest.raises(ErpUnavailableError):
        running_dsn(_erp_settings(), work)


def test_running_dsn_starts_nothing_and_says_how_to_start(no_libpq_target: None, tmp_path: Path) -> None:
    with pytest.raises(ErpUnavailableError, match="markdown-pricing erp start"):
        running_dsn(_erp_settings(), str(tmp_path / "work"))

    assert not (tmp_path / "work").exists()


def test_start_dsn_non_local_work_without_erp_is_refused(no_libpq_target: None) -> None:
    with pytest.raises(ConfigError, match="MARKDOWN_ERP_DSN"):
        start_dsn(_erp_settings(), "hdfs://namenode:8020/markdown/work")


def test_embedded_erp_stop_and_restart(tmp_path: Path) -> None:
    pgdata = tmp_path / "nested" / "pgdata"
    assert embedded.stop(pgdata) is False

    try:
        first = embedded.ensure_running(pgdata)
        assert embedded.ensure_running(pgdata) == first
        assert embedded.stop(pgdata) is True
        assert embedded.stop(pgdata) is False
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(first, connect_timeout=2).close()
        with closing(psycopg2.connect(embedded.ensure_running(pgdata))) as connection:
            assert connection.info.server_version >= 180000
    finally:
        embedded.stop(pgdata)


def test_embedded_erp_refuses_path_with_space(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="spaces"):
        embedded.ensure_running(tmp_path / "my work" / "pgdata")


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://alice:s3cret@erp.example.com:5433/erp?sslmode=require",
        "host=erp.example.com port=5433 user=alice password='s3cret' dbname=erp",
        "host=erp.example.com user=alice dbname=erp sslpassword=s3cret",
    ],
)
def test_describe_dsn_strips_password(dsn: str) -> None:
    described = describe_dsn(dsn)

    assert "s3cret" not in described
    assert "host=erp.example.com" in described
    assert "user=alice" in described


def test_describe_dsn_hides_unparseable_dsn() -> None:
    assert describe_dsn("host=erp password='s3cret") == "<malformed DSN>"


def test_describe_dsn_shows_allowed_keys_only() -> None:
    dsn = (
        "host=erp.example.com port=5433 dbname=erp user=alice password=s3cret sslpassword=s3cret sslmode=require "
        "options='-c search_path=s3cret' sslkey=/keys/s3cret.key application_name=s3cret"
    )

    assert describe_dsn(dsn) == "host=erp.example.com port=5433 dbname=erp user=alice sslmode=require"


def test_describe_dsn_quotes_values_as_conninfo() -> None:
    assert describe_dsn("host='/run/my sockets' dbname=it\\'s") == "host='/run/my sockets' dbname='it\\'s'"


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://alice:s3/cret@erp.example.com/erp",  # libpq: host alice, port s3, dbname cret@erp...
        "postgresql://alice:s3@cret@erp.example.com/erp",  # libpq: password s3, host cret@erp.example.com
        "postgresql://alice:s3%zzcret@erp.example.com/erp",
        "host=erp port=54s3cret",
    ],
)
def test_describe_dsn_and_connect_refuse_a_dsn_libpq_would_misread(dsn: str) -> None:
    assert describe_dsn(dsn) == "<malformed DSN>"
    with pytest.raises(ConfigError, match="the ERP DSN is malformed") as raised:
        connect(dsn, 2)
    assert "s3" not in str(raised.value) and "cret" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__context__ is None


def test_describe_dsn_empty_shows_pg_environment_without_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "erp.example.com")
    monkeypatch.setenv("PGPASSWORD", "s3cret")

    described = describe_dsn("")

    assert "host=erp.example.com" in described
    assert "s3cret" not in described


def test_migrate_migrates_a_ledger_from_before_the_quality_gate(erp_settings: ErpSettings) -> None:
    with closing(connect(erp_settings.dsn, 5)) as connection:
        with connection, connection.cursor() as cur:
            schema = sql.Identifier(erp_settings.schema)
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            cur.execute(
                sql.SQL(
                    "CREATE TABLE {}.{} (run_id text NOT NULL, country text NOT NULL, run_date date NOT NULL, "
                    "status text NOT NULL CHECK (status IN ('published', 'failed')), rows integer, "
                    "model_version text, model_wape double precision, baseline_wape double precision, "
                    "model_bias double precision, message text, recorded_at timestamptz NOT NULL DEFAULT now(), "
                    "PRIMARY KEY (run_id, country))"
                ).format(schema, sql.Identifier(erp_settings.ledger_table))
            )
            cur.execute(
                sql.SQL(
                    "INSERT INTO {}.{} (run_id, country, run_date, status, rows) "
                    "VALUES ('r1', 'DE', %s, 'published', 3)"
                ).format(schema, sql.Identifier(erp_settings.ledger_table)),
                (RUN_DATE,),
            )

        assert not is_current(connection, erp_settings)
        prepare(connection, erp_settings)
        assert is_current(connection, erp_settings)
        migrate(connection, erp_settings)
        writer.record_not_published(
            connection,
            erp_settings,
            run_id="r2",
            run_date=RUN_DATE,
            country="DE",
            message="blocked: x",
            metrics=METRICS,
            status=ledger.BLOCKED,
        )

        assert ledger.run_statuses(connection, erp_settings, "r2") == {"DE": "blocked"}
        assert [(row[0], row[3], row[11]) for row in _ledger_table(connection, erp_settings)] == [
            ("r1", "published", False),
            ("r2", "blocked", False),
        ]


def test_migrate_ledger_refuses_an_unknown_status(conn: Connection, erp_settings: ErpSettings) -> None:
    with pytest.raises(psycopg2.IntegrityError), conn.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {}.{} (run_id, country, run_date, status) VALUES ('r1', 'DE', %s, 'maybe')").format(
                sql.Identifier(erp_settings.schema), sql.Identifier(erp_settings.ledger_table)
            ),
            (RUN_DATE,),
        )
    conn.rollback()


def test_publish_country_records_a_gate_override(conn: Connection, erp_settings: ErpSettings) -> None:
    message = "gate overridden by operator: model loses to its baseline"

    _publish(conn, erp_settings, "r1", _predictions("DE", "a1"), gate_override=True, message=message)
    _publish(conn, erp_settings, "r1", _predictions("FR", "a1"))

    assert [(row[1], row[3], row[9], row[11]) for row in _ledger_table(conn, erp_settings)] == [
        ("DE", "published", message, True),
        ("FR", "published", None, False),
    ]


def test_publish_country_after_a_blocked_run_clears_the_block(conn: Connection, erp_settings: ErpSettings) -> None:
    writer.record_not_published(
        conn,
        erp_settings,
        run_id="r1",
        run_date=RUN_DATE,
        country="DE",
        message="blocked by the quality gate: x",
        metrics=METRICS,
        status=ledger.BLOCKED,
    )

    _publish(conn, erp_settings, "r1", _predictions("DE", "a1"), gate_override=True, message="gate overridden: x")

    assert [(row[3], row[4], row[9], row[11]) for row in _ledger_table(conn, erp_settings)] == [
        ("published", 1, "gate overridden: x", True)
    ]


def test_record_not_published_refuses_an_unknown_status(conn: Connection, erp_settings: ErpSettings) -> None:
    with pytest.raises(ValueError, match="not published is one of .*, not 'published'"):
        writer.record_not_published(
            conn,
            erp_settings,
            run_id="r1",
            run_date=RUN_DATE,
            country="DE",
            message="x",
            metrics={},
            status="published",
        )
    assert _ledger_table(conn, erp_settings) == []


def _held_weeks(conn: Connection, settings: ErpSettings, country: str) -> set[Any]:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT DISTINCT valid_from FROM {}.{} WHERE country = %s").format(
                sql.Identifier(settings.schema), sql.Identifier(settings.predictions_table)
            ),
            (country,),
        )
        held = {row[0] for row in cur.fetchall()}
    conn.rollback()
    return held


def test_an_older_week_never_replaces_a_newer_one_and_is_recorded_superseded(
    conn: Connection, erp_settings: ErpSettings
) -> None:
    newer, older = RUN_DATE, RUN_DATE - timedelta(weeks=1)
    assert _publish(conn, erp_settings, "week-48", _predictions("DE", "a1", "a2"), run_date=newer) == "published"

    outcome = _publish(conn, erp_settings, "backfill-47", _predictions("DE", "a9"), run_date=older)

    assert outcome == "superseded"
    assert _held_weeks(conn, erp_settings, "DE") == {newer}
    assert ledger.run_statuses(conn, erp_settings, "backfill-47") == {"DE": "superseded"}
    row = next(row for row in _ledger_table(conn, erp_settings) if row[0] == "backfill-47")
    assert f"the ERP holds the newer week {newer}" in row[9]


def test_a_rollback_replaces_a_newer_week_and_says_so(conn: Connection, erp_settings: ErpSettings) -> None:
    newer, older = RUN_DATE, RUN_DATE - timedelta(weeks=1)
    _publish(conn, erp_settings, "week-48", _predictions("DE", "a1"), run_date=newer)

    assert _publish(conn, erp_settings, "rollback-47", _predictions("DE", "a9"), run_date=older, rollback=True) == (
        "published"
    )

    assert _held_weeks(conn, erp_settings, "DE") == {older}
    row = next(row for row in _ledger_table(conn, erp_settings) if row[0] == "rollback-47")
    assert f"rollback by operator: replaced the newer week {newer}" in row[9]


def test_two_weeks_racing_end_with_the_newer_week_in_every_country(erp_settings: ErpSettings) -> None:
    weeks = [RUN_DATE - timedelta(weeks=n) for n in range(4)]
    countries = ("DE", "FR", "IT")
    with closing(connect(erp_settings.dsn, 5)) as conn:
        migrate(conn, erp_settings)

    def publish_week(week: date) -> None:
        with closing(connect(erp_settings.dsn, 5)) as conn:
            for country in countries:
                _publish(conn, erp_settings, f"run-{week}", _predictions(country, "a1", "a2"), run_date=week)

    # Oldest weeks submitted last, so that without the rule they would finish last and win.
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(publish_week, sorted(weeks, reverse=True)))

    with closing(connect(erp_settings.dsn, 5)) as conn:
        assert all(_held_weeks(conn, erp_settings, country) == {RUN_DATE} for country in countries)
