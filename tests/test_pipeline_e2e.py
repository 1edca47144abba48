"""The whole weekly run: Luigi drives spark-submit in local mode on a generated raw root and publishes into
a real embedded PostgreSQL. The ERP table is then checked against the contract from the raw data itself."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from markdown_pricing.core.config import load_config
from markdown_pricing.core.version import package_version
from markdown_pricing.erp import connection, schema
from markdown_pricing.erp.rules import replace_rules_noted
from markdown_pricing.orchestrate.retention import event_log_application
from markdown_pricing.synthetic.rules import SEED_NOTE, sample_rules
from markdown_pricing.synthetic.sample import generate_sample

# Whole runs through `markdown-pricing run` and Luigi's command line.
pytestmark = pytest.mark.slow

RUN_DATE = dt.date(2026, 11, 23)
BIN = Path(sys.executable).parent
LUIGI_PATH_FLAGS = ("--raw-uri", "--work-uri")


def read_raw(raw: Path, dataset: str) -> pd.DataFrame:
    return ds.dataset(raw / dataset, format="parquet", partitioning="hive").to_table().to_pandas()


def expected_active(raw: Path) -> pd.DataFrame:
    """Contract section 2, straight from the raw files: latest stock before the run > 0, season not over."""
    articles = read_raw(raw, "articles")
    stock = read_raw(raw, "stock")
    stock = stock[stock["snapshot_date"] < RUN_DATE].sort_values("snapshot_date")
    latest = stock.groupby(["country", "article_id"], as_index=False).last()
    active = latest.merge(articles, on="article_id")
    active = active[(active["units_on_hand"] > 0) & (active["season_end"] > RUN_DATE)]
    prices = read_raw(raw, "prices")
    prices = prices[(prices["valid_from"] < RUN_DATE) & (prices["price"] > 0)].sort_values("valid_from")
    current = prices.groupby(["country", "article_id"], as_index=False)["price"].last()
    active = active.merge(current, on=["country", "article_id"], how="left")
    active["current_discount"] = 1 - active["price"].fillna(active["original_price"]) / active["original_price"]
    return active[["country", "article_id", "current_discount"]]


def erp_table(dsn: str) -> pd.DataFrame:
    with closing(connection.connect(dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT country, article_id, valid_from, recommended_discount::float8, run_id, model_version "
            "FROM markdown.predictions ORDER BY country, article_id"
        )
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def ledger(dsn: str) -> pd.DataFrame:
    with closing(connection.connect(dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT run_id, country, status, rows, model_kind, fallback_reason, model_version, markdown_events, "
            "markdown_lift_error FROM markdown.publish_ledger ORDER BY run_id, country"
        )
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, erp_dsn: str) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("e2e")
    # Four countries with a history, and a tiny one (the fifth) that opened six weeks ago: too new for a model
    # of its own, so a fallback scores it.
    summary = generate_sample(root / "raw", countries=4, articles=90, weeks=40, seed=11, run_date=RUN_DATE)
    env = {**os.environ, "MARKDOWN_ERP_DSN": erp_dsn, "PATH": f"{BIN}:{os.environ['PATH']}"}
    # Buyers' rules of every kind, one expired and two that disagree, in the ERP before the first run.
    rules = sample_rules(root / "raw", RUN_DATE)
    settings = dataclasses.replace(load_config("local").erp, dsn=erp_dsn)
    with closing(connection.connect(erp_dsn, 5)) as conn:
        schema.migrate(conn, settings)
        replace_rules_noted(conn, settings, rules, SEED_NOTE)
    yield {"raw": root / "raw", "work": root / "work", "env": env, "countries": summary.countries, "rules": rules}
    with closing(connection.connect(erp_dsn, 5)) as conn, conn, conn.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS markdown CASCADE")


def run_pipeline(
    world: dict[str, object], *command: str, path_flags: tuple[str, str] = ("--raw", "--work")
) -> subprocess.CompletedProcess[str]:
    raw_flag, work_flag = path_flags
    result = subprocess.run(
        [*command, "--run-date", RUN_DATE.isoformat(), raw_flag, str(world["raw"]), work_flag, str(world["work"])],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_pipeline_publishes_one_row_per_active_article_by_contract(world: dict[str, object], erp_dsn: str) -> None:
    result = run_pipeline(world, str(BIN / "markdown-pricing"), "run")
    table = erp_table(erp_dsn)
    active = expected_active(world["raw"])  # type: ignore[arg-type]
    active = active[active["country"].isin(world["countries"])]  # type: ignore[arg-type]

    rules: pd.DataFrame = world["rules"]  # type: ignore[assignment]
    exclusions = rules[rules["rule"] == "exclude"]
    excluded = set(zip(exclusions["country"], exclusions["article_id"], strict=True))
    published = sorted(zip(table["country"], table["article_id"], strict=True))
    expected = set(zip(active["country"], active["article_id"], strict=True))
    assert excluded and excluded <= expected
    assert published == sorted(expected - excluded)
    ladder = load_config("local").run.ladder
    assert set(table["recommended_discount"].round(3)) <= set(ladder)
    merged = table.merge(active, on=["country", "article_id"])
    assert (merged["recommended_discount"] >= merged["current_discount"].round(3) - 1e-9).all()
    assert set(table["valid_from"]) == {RUN_DATE}
    assert (table.groupby("country")["run_id"].nunique() == 1).all()
    assert set(table["run_id"]) == {RUN_DATE.isoformat()}
    assert set(table["model_version"]) == {f"{RUN_DATE}/{c}" for c in world["countries"]}  # type: ignore[union-attr]
    assert "run 2026-11-23" in result.stdout and "published" in result.stdout
    published = ledger(erp_dsn)
    assert set(published["status"]) == {"published"}
    assert published.set_index("country")["rows"].to_dict() == table.groupby("country").size().to_dict()
    kinds = published.set_index("country")["model_kind"]
    *regular, tiny = world["countries"]  # type: ignore[misc]
    assert set(kinds[regular]) == {"country"} and kinds[tiny] in ("pooled", "baseline")
    reason = published.set_index("country").loc[tiny, "fallback_reason"]
    assert reason.startswith("6 weeks of in-stock history, fewer than min_history_weeks = 20")
    # Every country with a model has past markdowns to check its price response against, and the ledger says how
    # well the lift they showed was predicted.
    events = published.set_index("country").loc[regular]
    assert (events["markdown_events"] > 0).all() and (events["markdown_lift_error"] >= 0).all()
    models = Path(str(world["work"])) / "models" / RUN_DATE.isoformat()
    for country in regular:
        assert (models / country / "model.txt").is_file()
        card = json.loads((models / country / "card.json").read_text())
        assert card["run_id"] == RUN_DATE.isoformat() and card["model_kind"] == "country"
        assert card["git_commit"] != "unknown" and card["package_version"] == package_version()
        assert card["metrics"]["model_wape"] < card["metrics"]["baseline_wape"]
        assert len(card["data_fingerprint"]) == 64 and len(card["backtest"]["by_origin"]) == 3
    # One JSON line per country on the train+score job's stdout (kept in its log), for log collectors.
    log = Path(str(world["work"])) / "runs" / RUN_DATE.isoformat() / "logs" / "train_score.log"
    lines = [json.loads(line) for line in log.read_text().splitlines() if '"event": "country_result"' in line]
    assert sorted(line["country"] for line in lines) == sorted(
        world["countries"]  # type: ignore[arg-type]
    )


def erp_recommendations(dsn: str) -> pd.DataFrame:
    with closing(connection.connect(dsn, 5)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT p.country, p.article_id, p.current_price::float8, p.recommended_discount::float8,"
            " p.recommended_price::float8, p.expected_revenue, p.hold_expected_revenue, p.gain_over_hold,"
            " p.rule_applied, p.run_id, c.candidates, c.chosen, c.run_ids"
            " FROM markdown.predictions AS p JOIN ("
            "   SELECT country, article_id, count(*) AS candidates,"
            "     array_agg(candidate_discount::float8) FILTER (WHERE chosen) AS chosen,"
            "     array_agg(DISTINCT run_id) AS run_ids"
            "   FROM markdown.candidates GROUP BY 1, 2) AS c USING (country, article_id)"
        )
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def test_published_rows_honour_the_buyers_rules_name_them_and_are_explained(
    world: dict[str, object], erp_dsn: str
) -> None:
    rows = erp_recommendations(erp_dsn).set_index(["country", "article_id"])
    rules: pd.DataFrame = world["rules"]  # type: ignore[assignment]
    in_force = rules[rules["valid_to"].isna()]
    active = expected_active(world["raw"]).set_index(["country", "article_id"])  # type: ignore[arg-type]
    articles = read_raw(world["raw"], "articles").set_index("article_id")  # type: ignore[arg-type]
    for rule in in_force.itertuples():
        if rule.rule == "exclude":
            assert (rule.country, rule.article_id) not in rows.index
            continue
        if rule.article_id is not None:
            keys = [(rule.country, rule.article_id)]
        else:
            in_category = articles.index[articles["category"] == rule.category]
            keys = [key for key in rows.index if key[0] == rule.country and key[1] in in_category]
        assert keys
        for key in keys:
            row, current = rows.loc[key], round(float(active.loc[key, "current_discount"]), 3)
            if rule.rule == "hold":
                assert row["recommended_discount"] == pytest.approx(current, abs=0.005)
            elif rule.rule == "max_discount":
                assert row["recommended_discount"] <= max(rule.value, current) + 1e-9
            elif rule.rule == "min_price":
                assert row["recommended_price"] >= min(rule.value, row["current_price"]) - 1e-9
    # A rule that changed a recommendation is named on its row; an expired one never is.
    bound = rows[rows["rule_applied"].notna()]
    assert not bound.empty
    expired = rules[rules["valid_to"].notna()]
    for rule in expired.itertuples():
        assert "hold" not in str(rows.loc[(rule.country, rule.article_id), "rule_applied"])
    # Every row has its candidate curve of the same run, with exactly the recommended candidate chosen.
    assert (rows["candidates"] >= 1).all()
    assert all(len(chosen) == 1 for chosen in rows["chosen"])
    assert all(c[0] == pytest.approx(d) for c, d in zip(rows["chosen"], rows["recommended_discount"], strict=True))
    assert all(ids == [run] for ids, run in zip(rows["run_ids"], rows["run_id"], strict=True))
    assert list(rows["gain_over_hold"]) == pytest.approx(list(rows["expected_revenue"] - rows["hold_expected_revenue"]))
    # The disagreeing rules are reported, not dropped.
    log = Path(str(world["work"])) / "runs" / RUN_DATE.isoformat() / "logs" / "train_score.log"
    assert "buyer rules:" in log.read_text()
    # explain answers with the ERP's figures.
    (country, article), row = next(iter(bound.iterrows()))
    result = subprocess.run(
        [str(BIN / "markdown-pricing"), "explain", "--country", country, "--article", article, "--json"],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    explained = json.dumps(json.loads(result.stdout))
    for figure in (row["expected_revenue"], row["hold_expected_revenue"]):
        assert repr(float(figure)) in explained or str(float(figure)) in explained
    assert str(row["rule_applied"]) in explained


def test_runs_lists_each_countrys_error_against_both_baselines(world: dict[str, object], erp_dsn: str) -> None:
    shown = subprocess.run(
        [str(BIN / "markdown-pricing"), "runs", "--json", "--work", str(world["work"])],
        env=world["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    rows = pd.DataFrame(json.loads(shown.stdout))
    this_run = rows[rows["run_id"] == RUN_DATE.isoformat()].set_index("country")
    run_dir = Path(str(world["work"])) / "runs" / RUN_DATE.isoformat()
    results = json.loads((run_dir / "country_results.json").read_text())
    # Every country a backtest measured; a shop too new for one (the tiny country) has no errors to list.
    measured = [country for country, result in results.items() if result.get("model_wape") is not None]
    assert sorted(this_run.index) == sorted(measured)
    *_, tiny = world["countries"]  # type: ignore[misc]
    assert set(world["countries"]) - set(measured) == {tiny}  # type: ignore[arg-type]
    for country, row in this_run.iterrows():
        assert row["model_wape"] == pytest.approx(results[country]["model_wape"])
        assert row["same_price_wape"] == pytest.approx(results[country]["same_price_wape"])


def test_pipeline_rerun_through_luigi_cli_is_idempotent_and_new_run_replaces_rows(
    world: dict[str, object], erp_dsn: str
) -> None:
    before = erp_table(erp_dsn)
    luigi = [str(BIN / "luigi"), "--module", "markdown_pricing.orchestrate.tasks", "WeeklyRun", "--local-scheduler"]
    run_pipeline(world, *luigi, path_flags=LUIGI_PATH_FLAGS)
    pd.testing.assert_frame_equal(erp_table(erp_dsn), before)

    run_pipeline(world, *luigi, "--run-id", "2026-11-23-b", path_flags=LUIGI_PATH_FLAGS)
    after = erp_table(erp_dsn)
    assert set(after["run_id"]) == {"2026-11-23-b"}
    pd.testing.assert_frame_equal(
        after.drop(columns=["run_id", "model_version"]), before.drop(columns=["run_id", "model_version"])
    )
    assert len(ledger(erp_dsn)) == 2 * len(world["countries"])  # type: ignore[arg-type]


def test_score_rescores_with_saved_models_without_training(world: dict[str, object], erp_dsn: str) -> None:
    # Runs last: the other tests count this module's runs in the ledger.
    model_run = RUN_DATE.isoformat()
    before = erp_table(erp_dsn)
    run_pipeline(world, str(BIN / "markdown-pricing"), "score", "--model-run", model_run)
    after = erp_table(erp_dsn)
    run_id = f"{model_run}-score-{model_run}"
    assert set(after["run_id"]) == {run_id}
    # The same models on the same data recommend the same, and the rows point at the models that were used.
    pd.testing.assert_frame_equal(
        after.drop(columns=["run_id", "model_version"]), before.drop(columns=["run_id", "model_version"])
    )
    assert set(after["model_version"]) == {f"{model_run}/{country}" for country in after["country"]}
    assert not (Path(str(world["work"])) / "models" / run_id).exists()
    # What `markdown-pricing gc` goes by: the rescore names its model run, each stage record its Spark application,
    # whose event log is in the work folder.
    run_dir = Path(str(world["work"])) / "runs" / run_id
    assert json.loads((run_dir / "run.json").read_text())["model_run"] == model_run
    applications = {json.loads(record.read_text())["application_id"] for record in (run_dir / "stages").glob("*.json")}
    logged = {event_log_application(entry.name) for entry in (Path(str(world["work"])) / "spark-events").iterdir()}
    assert len(applications) == 3 and applications <= logged, (applications, logged)
