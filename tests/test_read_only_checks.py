"""Checks only read: a Luigi target, `summary` and `status` start no server and create no table."""

from __future__ import annotations

import dataclasses
import datetime as dt
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from markdown_pricing.core.config import ErpSettings, load_config
from markdown_pricing.core.context import RunContext, load_run_config
from markdown_pricing.core.results import write_country_results
from markdown_pricing.erp import writer
from markdown_pricing.erp.connection import connect
from markdown_pricing.erp.schema import migrate
from markdown_pricing.observe.summary import print_run_summary
from markdown_pricing.orchestrate import cli
from markdown_pricing.orchestrate.tasks import LedgerTarget

RUN_DATE = dt.date(2026, 11, 23)


@pytest.fixture
def no_erp_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("PGHOST", "PGHOSTADDR", "PGSERVICE", "MARKDOWN_ERP_DSN"):
        monkeypatch.delenv(variable, raising=False)


def trained_run(tmp_path: Path) -> RunContext:
    ctx = RunContext(RUN_DATE, "week-48", raw=str(tmp_path / "raw"), work=str(tmp_path / "work"))
    write_country_results(ctx.layout.country_results, {"DEU": {"status": "trained", "model_wape": 0.3}})
    return ctx


def schema_exists(settings: ErpSettings) -> bool:
    with closing(connect(settings.dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (settings.schema,))
        return cur.fetchone() is not None


def test_ledger_target_without_a_running_embedded_erp_is_incomplete_and_starts_none(
    no_erp_configured: None, tmp_path: Path
) -> None:
    ctx = trained_run(tmp_path)

    assert not LedgerTarget(ctx, load_run_config(ctx)).exists()
    assert not (tmp_path / "work" / "erp").exists()


def test_ledger_target_before_the_first_migrate_is_incomplete_and_creates_nothing(
    tmp_path: Path, erp_settings: ErpSettings
) -> None:
    ctx = trained_run(tmp_path)
    cfg = dataclasses.replace(load_run_config(ctx), erp=erp_settings)

    assert not LedgerTarget(ctx, cfg).exists()
    assert not schema_exists(erp_settings)

    with closing(connect(erp_settings.dsn, 5)) as conn:
        migrate(conn, erp_settings)
        rows = pd.DataFrame(
            {
                "country": ["DEU"],
                "article_id": ["A1"],
                "current_price": [50.0],
                "recommended_discount": [0.1],
                "recommended_price": [45.0],
                "predicted_units_next_week": [3.0],
                "expected_revenue": [120.0],
                "expected_sell_through": [0.8],
            }
        )
        writer.publish_country(
            conn,
            erp_settings,
            run_id=ctx.run_id,
            run_date=RUN_DATE,
            country="DEU",
            predictions=rows,
            model_version="m",
            metrics={},
        )
    assert LedgerTarget(ctx, cfg).exists()


def test_summary_reads_a_fresh_erp_without_creating_tables(
    tmp_path: Path, erp_settings: ErpSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    print_run_summary(trained_run(tmp_path), erp_settings)

    assert "DEU     trained" in capsys.readouterr().out
    assert not schema_exists(erp_settings)


def test_status_without_a_running_embedded_erp_says_how_to_start_it(
    no_erp_configured: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--work", str(tmp_path / "work")]) == 1

    assert "markdown-pricing erp start" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
    assert load_config("local").erp.dsn == ""
