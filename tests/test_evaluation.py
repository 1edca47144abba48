"""Policy evaluation against a known truth, on hand-made frames (pandas only), and the `evaluate` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from markdown_pricing.orchestrate import cli
from markdown_pricing.synthetic.evaluation import (
    OVERALL,
    accuracy_table,
    evaluation_table,
    policy_revenues,
    regret_bar,
    regret_table,
    to_document,
    to_markdown,
    verdict,
)


def truth_frame() -> pd.DataFrame:
    """DEU: A1 is best at 10 % (120), A2 at its current 60 % (50). FRA: A3 is best at 20 % (30)."""
    rows = [
        ("DEU", "A1", 0.0, 0.0, 100.0),
        ("DEU", "A1", 0.1, 0.0, 120.0),
        ("DEU", "A1", 0.2, 0.0, 90.0),
        ("DEU", "A1", 0.3, 0.0, 80.0),
        ("DEU", "A2", 0.6, 0.6, 50.0),
        ("DEU", "A2", 0.7, 0.6, 40.0),
        ("FRA", "A3", 0.0, 0.0, 10.0),
        ("FRA", "A3", 0.1, 0.0, 20.0),
        ("FRA", "A3", 0.2, 0.0, 30.0),
    ]
    truth = pd.DataFrame(rows, columns=["country", "article_id", "candidate", "current_discount", "expected_revenue"])
    best = truth.groupby(["country", "article_id"])["expected_revenue"].transform("max")
    return truth.assign(oracle=truth["expected_revenue"] == best)


def predictions(*picks: tuple[str, str, float]) -> pd.DataFrame:
    return pd.DataFrame(picks, columns=["country", "article_id", "recommended_discount"])


def row(table: pd.DataFrame, country: str) -> pd.Series:
    return table.set_index("country").loc[country]


def test_regret_of_the_oracle_policy_is_zero() -> None:
    truth = truth_frame()
    oracle = truth[truth["oracle"]].rename(columns={"candidate": "recommended_discount"})
    table = regret_table(policy_revenues(truth, oracle))
    assert table["regret_model"].tolist() == [0.0, 0.0, 0.0]
    assert table["regret_oracle"].tolist() == [0.0, 0.0, 0.0]
    assert table["coverage"].tolist() == [1.0, 1.0, 1.0]


def test_regret_of_known_picks_and_baselines() -> None:
    # A1 at the oracle's 10 % (stored rounded to three decimals), A2 one step too deep, A3 not recommended.
    revenues = policy_revenues(truth_frame(), predictions(("DEU", "A1", 0.1000001), ("DEU", "A2", 0.7)))
    by_article = revenues.set_index("article_id")
    assert by_article.loc["A1", ["model", "keep_price", "extra_20", "oracle"]].tolist() == [120, 100, 90, 120]
    # +20 % from 60 % is capped at the ladder's top, 70 %.
    assert by_article.loc["A2", ["model", "keep_price", "extra_20", "oracle"]].tolist() == [40, 50, 40, 50]
    assert math.isnan(by_article.loc["A3", "model"]) and by_article.loc["A3", "extra_20"] == 30

    table = regret_table(revenues)
    deu = row(table, "DEU")
    assert (deu["articles"], deu["covered"]) == (2, 2)
    assert deu["revenue_oracle"] == 170 and deu["revenue_model"] == 160
    assert deu["regret_model"] == pytest.approx(10 / 170)
    assert deu["regret_keep_price"] == pytest.approx(20 / 170)
    assert deu["regret_extra_20"] == pytest.approx(40 / 170)
    # FRA has no recommendation: nothing to compare there, so it adds nothing to the overall regret either.
    fra = row(table, "FRA")
    assert fra["coverage"] == 0 and math.isnan(fra["regret_model"]) and math.isnan(fra["regret_keep_price"])
    overall = row(table, OVERALL)
    assert (overall["articles"], overall["covered"]) == (3, 2)
    assert overall["coverage"] == pytest.approx(2 / 3)
    assert overall["regret_model"] == pytest.approx(10 / 170)
    # Of the covered articles, A1 got the oracle's discount and A2 did not.
    assert deu["oracle_share"] == overall["oracle_share"] == 0.5 and math.isnan(fra["oracle_share"])


def test_overall_regret_is_revenue_weighted() -> None:
    truth = truth_frame()
    revenues = policy_revenues(truth, predictions(("DEU", "A1", 0.0), ("DEU", "A2", 0.6), ("FRA", "A3", 0.0)))
    table = regret_table(revenues)
    assert row(table, "DEU")["regret_model"] == pytest.approx(20 / 170)
    assert row(table, "FRA")["regret_model"] == pytest.approx(20 / 30)
    assert row(table, OVERALL)["regret_model"] == pytest.approx((20 + 20) / (170 + 30))


def test_accuracy_table_reads_old_and_new_country_results() -> None:
    results = {
        "DEU": {"status": "trained", "model_wape": 0.3, "baseline_wape": 0.4, "train_rows": 900},
        "LUX": {
            "status": "trained",
            "model_kind": "pooled",
            "fallback_reason": "5 weeks of history",
            "model_wape": 0.5,
            "recent_average_wape": 0.6,
            "same_price_wape": 0.55,
        },
        "FRA": {"status": "failed", "error": "boom"},
    }
    table = accuracy_table(results).set_index("country")
    assert table.loc["DEU", "model_kind"] == "country"
    assert table.loc["DEU", "improvement"] == pytest.approx(0.25)
    assert math.isnan(table.loc["DEU", "recent_average_wape"])
    assert table.loc["LUX", "baseline_wape"] == 0.55
    assert table.loc["LUX", "improvement"] == pytest.approx(1 - 0.5 / 0.55)
    assert table.loc["FRA", "model_kind"] is None and math.isnan(table.loc["FRA", "improvement"])


def test_verdict_needs_the_improvement_in_own_model_countries_and_low_regret() -> None:
    truth = truth_frame()
    oracle = truth[truth["oracle"]].rename(columns={"candidate": "recommended_discount"})
    regret = regret_table(policy_revenues(truth, oracle))
    results = {
        "DEU": {"status": "trained", "model_kind": "country", "model_wape": 0.3, "baseline_wape": 0.4},
        "FRA": {"status": "trained", "model_kind": "pooled", "model_wape": 0.5, "baseline_wape": 0.5},
    }
    table = evaluation_table(accuracy_table(results), regret)
    assert table["country"].tolist() == ["DEU", "FRA", OVERALL]
    assert verdict(table) == {
        "own_model_countries": 1,
        "improvement_below_bar": [],
        "overall_regret": 0.0,
        "passed": True,
    }
    results["DEU"]["model_wape"] = 0.35
    assert verdict(evaluation_table(accuracy_table(results), regret))["improvement_below_bar"] == ["DEU"]
    markdown = to_markdown(table, "world")
    assert markdown.startswith("## world\n\n| country ")
    assert "| FRA     | pooled     | 0.500 " in markdown and ": met." in markdown


def test_evaluate_command_writes_markdown_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = truth_frame()
    truth.to_parquet(tmp_path / "truth.parquet")
    run = tmp_path / "work" / "runs" / "r1"
    for country, picks in (("DEU", [("A1", 0.1), ("A2", 0.7)]), ("FRA", [("A3", 0.2)])):
        folder = run / "predictions" / f"country={country}"
        folder.mkdir(parents=True)
        pd.DataFrame(picks, columns=["article_id", "recommended_discount"]).to_parquet(folder / "part-0.parquet")
    results = {c: {"status": "trained", "model_wape": 0.3, "baseline_wape": 0.5} for c in ("DEU", "FRA")}
    (run / "country_results.json").write_text(json.dumps(results))
    out = tmp_path / "report" / "evaluation.md"

    code = cli.main(
        [
            "evaluate",
            "--work",
            str(tmp_path / "work"),
            "--run-id",
            "r1",
            "--truth",
            str(tmp_path / "truth.parquet"),
            "--title",
            "World T",
            "--out",
            str(out),
        ]
    )

    assert code == 0
    markdown = out.read_text()
    assert markdown in capsys.readouterr().out
    assert markdown.startswith("## World T\n")
    lines = {line.split("|")[1].strip(): line for line in markdown.splitlines() if line.startswith("| ")}
    assert set(lines) == {"country", "DEU", "FRA", OVERALL}
    assert "40.0%" in lines["DEU"] and "5.88%" in lines["DEU"] and "5.00%" in lines[OVERALL]
    document = json.loads(out.with_suffix(".json").read_text())
    assert document["verdict"]["overall_regret"] == pytest.approx(10 / 200)
    assert [c["country"] for c in document["countries"]] == ["DEU", "FRA", OVERALL]


def test_evaluate_command_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth_frame().to_parquet(tmp_path / "truth.parquet")
    truth = str(tmp_path / "truth.parquet")
    code = cli.main(["evaluate", "--work", str(tmp_path), "--run-id", "none", "--truth", truth])
    assert code == 1
    assert "markdown-pricing evaluate:" in capsys.readouterr().err


def test_issue_15s_bar_holds_every_country_to_the_keep_price_policy() -> None:
    truth = truth_frame()
    # DEU at the oracle; FRA holds today's price, which is what keeping it earns: regret 2/3, but none behind keep.
    table = regret_table(
        policy_revenues(truth, predictions(("DEU", "A1", 0.1), ("DEU", "A2", 0.6), ("FRA", "A3", 0.0)))
    )
    bar = regret_bar(table)
    assert (bar["worst_country"], bar["worst_country_regret"]) == ("FRA", pytest.approx(20 / 30))
    assert bar["most_behind_keep"] == pytest.approx(0.0) and not bar["passed"]
    # Every country at most 5 % and none behind keeping its prices: met.
    assert regret_bar(
        regret_table(
            policy_revenues(truth, truth[truth["oracle"]].rename(columns={"candidate": "recommended_discount"}))
        )
    )["passed"]
    # DEU at the oracle overall, but A2 one step deeper than holding: 10/170 behind keeping its price.
    behind = regret_bar(regret_table(policy_revenues(truth, predictions(("DEU", "A1", 0.0), ("DEU", "A2", 0.7)))))
    assert behind["most_behind_keep_country"] == "DEU" and behind["most_behind_keep"] == pytest.approx(10 / 170)
    # FRA got no recommendation (it failed): the world cannot meet the bar, whatever the others did.
    assert behind["not_covered"] == ["FRA"] and not behind["passed"]


def test_evaluation_summary_puts_the_family_first_development_worlds_before_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truth = truth_frame()
    oracle = truth[truth["oracle"]].rename(columns={"candidate": "recommended_discount"})
    results = {c: {"status": "trained", "model_kind": "country", "model_wape": 0.3} for c in ("DEU", "FRA")}
    worlds = {"z": ("development", oracle), "y": ("validation", predictions(("DEU", "A1", 0.0), ("DEU", "A2", 0.7)))}
    parts = []
    for name, (role, picks) in worlds.items():
        table = evaluation_table(accuracy_table(results), regret_table(policy_revenues(truth, picks)))
        part = tmp_path / f"world-{name}.md"
        part.write_text(to_markdown(table, f"World {name}: flags"))
        part.with_suffix(".json").write_text(json.dumps(to_document(table, f"World {name}: flags", role)))
        parts.append(str(part))
    out = tmp_path / "evaluation.md"

    assert cli.main(["evaluation-summary", *sorted(parts), "--out", str(out)]) == 0

    document = out.read_text()
    family = [line for line in document.split("## The family of worlds")[1].splitlines() if line.startswith("| World")]
    assert [line.split("|")[1].strip() for line in family] == ["World z", "World y"]
    assert "met" in family[0].split("|")[-2] and "not met" in family[1].split("|")[-2]
    assert "development: 1 of 1 worlds meet issue 15's bar; validation: 0 of 1" in document
    assert document.index("## World z: flags") < document.index("## World y: flags")
    assert cli.main(["evaluation-summary", str(tmp_path / "none.md"), "--out", str(out)]) == 1
    assert "markdown-pricing evaluation-summary:" in capsys.readouterr().err
