"""Policy evaluation where the truth is known: revenue regret of a run's recommendations, and its forecast errors.

Plain pandas, no I/O. The truth is `sample.true_outcomes` (what `generate-sample --truth` writes): per priced
article and candidate discount, the true expected season revenue, with the oracle's pick marked. Each policy picks
one candidate per article and earns that candidate's true revenue:

- model: the run's recommended discount;
- keep price: the current discount (the lowest candidate: markdowns are never reversed);
- +20 %: the current discount plus 0.2, snapped to the nearest candidate, at most the ladder's top;
- oracle: the true best candidate.

Regret is 1 − revenue / oracle revenue, per country and overall (sums over the countries, so the overall figure
is revenue-weighted); `oracle_share` is the share of articles the model gave the oracle's discount. Every policy is
scored on the same articles: those the truth prices and the run recommended
for with one of the candidates. Articles without such a recommendation (a country that failed, an article the run
did not find active) are left out and counted in `coverage`, so a regret never mixes in what another policy
would have earned there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

KEYS = ["country", "article_id"]
EXTRA_DISCOUNT = 0.2
POLICIES = ("model", "keep_price", "extra_20", "oracle")
OVERALL = "overall"
# Issue 3's bar: the model's WAPE at least 20 % below the best baseline's in every country with a model of its own,
# and the recommendations' regret against the oracle under 5 % overall.
MIN_IMPROVEMENT = 0.2
MAX_REGRET = 0.05
# Issue 15's bar, on every world of the family: regret at most 3 % overall and 5 % in every country, and no country
# more than half a point worse than keeping today's price.
MAX_OVERALL_REGRET = 0.03
MAX_COUNTRY_REGRET = 0.05
MAX_REGRET_OVER_KEEP = 0.005
# What country_results.json may hold per country; keys a run did not write show blank.
RESULT_KEYS = (
    "status",
    "model_kind",
    "fallback_reason",
    "model_wape",
    "recent_average_wape",
    "same_price_wape",
    "baseline_wape",
    "model_rwape",
    "model_bias",
    "backtest_origins",
    "train_rows",
)
BASELINE_KEYS = ("recent_average_wape", "same_price_wape")


def _step(discount: pd.Series) -> pd.Series:
    """Discounts as join keys: the pipeline stores them rounded to three decimals."""
    return discount.astype("float64").round(3)


def policy_revenues(truth: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Per article of the truth, the true season revenue of each policy; `model` is NaN where it has no pick."""
    options = truth.assign(step=_step(truth["candidate"])).sort_values([*KEYS, "step"], kind="stable")
    by_article = options.groupby(KEYS, sort=False)["step"]
    target = np.minimum(by_article.transform("min") + EXTRA_DISCOUNT, by_article.transform("max"))
    # idxmin keeps the first of equal distances: the smaller discount.
    extra = (options["step"] - target).abs().groupby([options[k] for k in KEYS], sort=False).idxmin()
    picks = {
        "keep_price": options.loc[by_article.idxmin()],
        "extra_20": options.loc[extra],
        "oracle": options[options["oracle"]],
        "model": options.merge(
            predictions.assign(step=_step(predictions["recommended_discount"]))[[*KEYS, "step"]],
            on=[*KEYS, "step"],
            how="inner",
        ),
    }
    revenues = options[KEYS].drop_duplicates()
    for policy in POLICIES:
        earned = picks[policy].set_index(KEYS)["expected_revenue"].rename(policy)
        revenues = revenues.join(earned, on=KEYS, how="left")
    oracle_pick = picks["model"].set_index(KEYS)["oracle"].rename("oracle_pick")
    return revenues.join(oracle_pick, on=KEYS, how="left").reset_index(drop=True)


def regret_table(revenues: pd.DataFrame) -> pd.DataFrame:
    """Per country and overall: priced articles, coverage, and each policy's revenue and regret on the covered ones."""
    covered = revenues.assign(covered=revenues["model"].notna())
    scored = covered[covered["covered"]]
    per_country = covered.groupby("country").agg(articles=("article_id", "size"), covered=("covered", "sum"))
    sums = scored.assign(oracle_picks=scored["oracle_pick"].astype(bool)).groupby("country")
    per_country = per_country.join(sums[[*POLICIES, "oracle_picks"]].sum()).fillna(
        {policy: 0.0 for policy in (*POLICIES, "oracle_picks")}
    )
    table = pd.concat([per_country, per_country.sum().to_frame(OVERALL).T])
    table["coverage"] = table["covered"] / table["articles"]
    table["oracle_share"] = table["oracle_picks"] / table["covered"].where(table["covered"] > 0)
    oracle = table["oracle"].where(table["oracle"] > 0)
    for policy in POLICIES:
        table[f"regret_{policy}"] = 1 - table[policy] / oracle
    table = table.rename(columns={policy: f"revenue_{policy}" for policy in POLICIES})
    return table.rename_axis("country").reset_index()


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def accuracy_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Per country of country_results.json: status, model kind, forecast errors and the improvement on the best
    baseline (1 − model WAPE / best baseline WAPE); NaN or None where the run did not record a figure."""
    rows = []
    for country, result in sorted(results.items()):
        row: dict[str, Any] = {"country": country, **{key: result.get(key) for key in RESULT_KEYS}}
        if row["model_kind"] is None and row["status"] == "trained":
            # Runs from before model kinds were recorded trained one model per country or failed.
            row["model_kind"] = "country"
        baselines = [_number(row[key]) for key in BASELINE_KEYS if not math.isnan(_number(row[key]))]
        best = _number(row["baseline_wape"])
        row["baseline_wape"] = min(baselines) if math.isnan(best) and baselines else best
        model = _number(row["model_wape"])
        row["improvement"] = 1 - model / row["baseline_wape"] if row["baseline_wape"] > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["country", *RESULT_KEYS, "improvement"])


def evaluation_table(accuracy: pd.DataFrame, regret: pd.DataFrame) -> pd.DataFrame:
    """Forecast accuracy and regret side by side, one row per country and the overall row last."""
    table = accuracy.merge(regret, on="country", how="outer")
    last = table["country"] == OVERALL
    return pd.concat([table[~last].sort_values("country"), table[last]], ignore_index=True)


def verdict(table: pd.DataFrame) -> dict[str, Any]:
    """Issue 3's bar, checked: improvement in every own-model country, overall regret of the recommendations."""
    own = table[table["model_kind"] == "country"]
    short = own[~(own["improvement"] >= MIN_IMPROVEMENT)]["country"].tolist()
    overall = table.loc[table["country"] == OVERALL, "regret_model"].dropna()
    regret = float(overall.iloc[0]) if len(overall) else None
    return {
        "own_model_countries": len(own),
        "improvement_below_bar": short,
        "overall_regret": regret,
        "passed": bool(len(own)) and not short and regret is not None and regret < MAX_REGRET,
    }


def regret_bar(table: pd.DataFrame) -> dict[str, Any]:
    """Issue 15's bar on one world: overall regret, the worst country's, and how far the country that gains least
    on keeping today's price falls behind it (regret points; negative: it does better)."""
    every = table[table["country"] != OVERALL]
    # A country the run recommended nothing for (it failed) cannot meet the bar.
    uncovered = every.loc[every["covered"] < every["articles"], "country"].tolist()
    countries = every.dropna(subset=["regret_model"])
    overall = table.loc[table["country"] == OVERALL, "regret_model"].dropna()
    regret = float(overall.iloc[0]) if len(overall) else None
    over_keep = countries["regret_model"] - countries["regret_keep_price"]
    worst = countries.loc[countries["regret_model"].idxmax()] if len(countries) else None
    behind = countries.loc[over_keep.idxmax()] if len(countries) else None
    return {
        "overall_regret": regret,
        "worst_country": None if worst is None else str(worst["country"]),
        "worst_country_regret": None if worst is None else float(worst["regret_model"]),
        "most_behind_keep_country": None if behind is None else str(behind["country"]),
        "most_behind_keep": None if behind is None else float(over_keep.max()),
        "oracle_share": float(table.loc[table["country"] == OVERALL, "oracle_share"].iloc[0]),
        "not_covered": uncovered,
        "passed": regret is not None
        and not uncovered
        and regret <= MAX_OVERALL_REGRET
        and bool((countries["regret_model"] <= MAX_COUNTRY_REGRET).all())
        and bool((over_keep <= MAX_REGRET_OVER_KEEP).all()),
    }


def to_document(table: pd.DataFrame, title: str = "", role: str | None = None) -> dict[str, Any]:
    """The verdicts and the table as plain JSON values: missing figures become null."""
    return {
        "title": title,
        "role": role,
        "verdict": verdict(table),
        "regret_bar": regret_bar(table),
        "countries": json.loads(table.to_json(orient="records")),
    }


# (column, heading, format): WAPEs as shares, improvements and regrets as percentages.
COLUMNS = (
    ("country", "country", "{}"),
    ("model_kind", "model kind", "{}"),
    ("model_wape", "model WAPE", "{:.3f}"),
    ("recent_average_wape", "recent-average WAPE", "{:.3f}"),
    ("same_price_wape", "same-price WAPE", "{:.3f}"),
    ("baseline_wape", "best baseline WAPE", "{:.3f}"),
    ("improvement", "improvement vs best baseline", "{:.1%}"),
    ("covered", "articles", "{:.0f}"),
    ("coverage", "coverage", "{:.0%}"),
    ("regret_model", "regret: model", "{:.2%}"),
    ("regret_keep_price", "regret: keep price", "{:.2%}"),
    ("regret_extra_20", "regret: +20 %", "{:.2%}"),
    ("oracle_share", "oracle's discount", "{:.0%}"),
    ("model_bias", "model bias", "{:+.3f}"),
)


def _cell(value: Any, template: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return template.format(value)


def _grid(cells: list[list[str]]) -> list[str]:
    """A Markdown table's lines: the first row of cells is the heading."""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return lines


def to_markdown(table: pd.DataFrame, title: str) -> str:
    """A Markdown section: the title, the table, and whether the run meets issue 3's bar."""
    cells = [[heading for _, heading, _ in COLUMNS]]
    cells += [[_cell(row[column], template) for column, _, template in COLUMNS] for _, row in table.iterrows()]
    lines = _grid(cells)
    check = verdict(table)
    short = ", ".join(check["improvement_below_bar"]) or "none"
    bar = (
        f"Issue 3's bar: improvement vs best baseline ≥ {MIN_IMPROVEMENT:.0%} in every country with its own model "
        f"({check['own_model_countries']} countries; short of it: {short}), and overall regret of the "
        f"recommendations < {MAX_REGRET:.0%} (got {_cell(check['overall_regret'], '{:.2%}') or 'nothing'}): "
        f"{'met' if check['passed'] else 'not met'}."
    )
    fallbacks = [
        f"- {row['country']}: {row['model_kind'] or row['status']}, because {row['fallback_reason']}"
        for _, row in table.iterrows()
        if isinstance(row["fallback_reason"], str) and row["fallback_reason"]
    ]
    legend = (
        "Improvement: 1 − model WAPE / best baseline WAPE. Regret: 1 − true season revenue / the oracle's, on the "
        "articles the run recommended for (articles, coverage of those the truth prices); keep price: no further "
        "markdown; +20 %: 20 points more discount, at most the ladder's top."
    )
    notes = [*fallbacks, *([""] if fallbacks else []), legend, "", bar, regret_bar_line(table)]
    return "\n".join([f"## {title}", "", *lines, "", *notes, ""])


def regret_bar_line(table: pd.DataFrame) -> str:
    """One world's issue 15 bar (regret_bar) as a sentence."""
    check = regret_bar(table)
    missing = f", and every country covered (not: {', '.join(check['not_covered'])})" if check["not_covered"] else ""
    return (
        f"Issue 15's bar: overall regret ≤ {MAX_OVERALL_REGRET:.0%} (got {_cell(check['overall_regret'], '{:.2%}')}), "
        f"every country's ≤ {MAX_COUNTRY_REGRET:.0%} (worst: {check['worst_country']} "
        f"{_cell(check['worst_country_regret'], '{:.2%}')}), none more than {MAX_REGRET_OVER_KEEP:.1%} points "
        f"worse than keeping today's price (most behind: {check['most_behind_keep_country']} "
        f"{_cell(check['most_behind_keep'], '{:+.2%}')}){missing}: {'met' if check['passed'] else 'not met'}."
    )


# The family's table: (heading, format, what of a world's document).
FAMILY_COLUMNS: tuple[tuple[str, str, Callable[[Mapping[str, Any]], Any]], ...] = (
    ("world", "{}", lambda d: d["title"].split(":")[0]),
    ("role", "{}", lambda d: d["role"]),
    ("regret: model", "{:.2%}", lambda d: d["regret_bar"]["overall_regret"]),
    ("regret: keep price", "{:.2%}", lambda d: _overall(d)["regret_keep_price"]),
    ("worst country", "{}", lambda d: d["regret_bar"]["worst_country"]),
    ("its regret", "{:.2%}", lambda d: d["regret_bar"]["worst_country_regret"]),
    ("most behind keep price", "{}", lambda d: d["regret_bar"]["most_behind_keep_country"]),
    ("by", "{:+.2%}", lambda d: d["regret_bar"]["most_behind_keep"]),
    ("oracle's discount", "{:.0%}", lambda d: d["regret_bar"]["oracle_share"]),
    ("issue 15's bar", "{}", lambda d: "met" if d["regret_bar"]["passed"] else "not met"),
)


def _overall(document: Mapping[str, Any]) -> Mapping[str, Any]:
    return next(row for row in document["countries"] if row["country"] == OVERALL)


def family_markdown(documents: list[Mapping[str, Any]]) -> str:
    """One row per world, in the order given, and how many worlds of each role meet issue 15's bar."""
    cells = [[heading for heading, _, _ in FAMILY_COLUMNS]]
    cells += [[_cell(pick(d), template) for _, template, pick in FAMILY_COLUMNS] for d in documents]
    lines = _grid(cells)
    counts = [
        f"{role}: {sum(d['regret_bar']['passed'] for d in documents if d['role'] == role)} of "
        f"{sum(d['role'] == role for d in documents)} worlds meet issue 15's bar"
        for role in sorted({d["role"] for d in documents if d["role"]})
    ]
    return "\n".join([*lines, "", "; ".join(counts) + ".", ""])
