"""The run report: one self-contained HTML page of plots about a run, at <work>/runs/<run_id>/report.html.

Pure functions turn the run's small outputs into tables (pandas), the `*_figure` functions turn those tables into
matplotlib figures, and `write_report` reads and writes at the edge. Plots are embedded as PNG data URIs, so the
page is one file that makes no external request.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import re
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from markdown_pricing.core.drift import (
    BLOCK,
    MEASURE_NAMES,
    DriftCheck,
    Finding,
    format_change,
    format_limit,
    format_value,
    read_drift_check,
)
from markdown_pricing.core.results import read_country_results
from markdown_pricing.core.storage import SUCCESS_MARKER, LocalFileSystem, RunLayout, filesystem, join, local_path

REPORT_FILE = "report.html"
# The prediction columns the report reads.
REPORT_COLUMNS = (
    "country",
    "article_id",
    "current_discount",
    "recommended_discount",
    "expected_sell_through",
    "stock_on_hand",
)
# The prediction columns of the money section, which runs from before buyer rules and explanations lack.
MONEY_COLUMNS = ("expected_revenue", "hold_expected_revenue", "gain_over_hold")
# The candidate columns the money section's curves read.
CURVE_COLUMNS = ("article_id", "candidate_discount", "expected_revenue", "ruled_out_by", "chosen")
# How many of the articles with the largest gains the money section lists, and how many of their curves it plots.
TOP_GAINS = 5
CURVES_SHOWN = 3
# The alt texts name the plots: tests and screen readers find each plot by its alt text.
ERROR_ALT = "Backtest WAPE per country: model against the better of its two baselines"
MIX_ALT = "Recommended discount mix per country"
SELL_THROUGH_ALT = "Expected sell-through per country"
WEEK_OVER_WEEK_ALT = "Week-over-week change of the recommended discount per country"
REJECTED_ALT = "Rejected rows by dataset and reason"
TIMINGS_ALT = "Stage timings"
CURVES_ALT = "Expected season revenue by candidate discount of the articles with the largest gains over holding"
PLOT_ALTS = (ERROR_ALT, MIX_ALT, SELL_THROUGH_ALT, CURVES_ALT, WEEK_OVER_WEEK_ALT, REJECTED_ALT, TIMINGS_ALT)

_DATED_RUN_ID = re.compile(r"^(\d{4}-\d{2}-\d{2})")
# Discounts are stored as numeric(4,3) in the ERP: a difference below that is float noise, not a change.
_DISCOUNT_DECIMALS = 3
_WIDTH_IN = 11.0
_MODEL_COLOR, _BASELINE_COLOR = "#1f77b4", "#b0b0b0"
_UP_COLOR, _SAME_COLOR, _DOWN_COLOR = "#d95f02", "#cfcfcf", "#1b9e77"
_OK_COLOR, _FAILED_COLOR = "#4c9a5b", "#c0392b"


class ReportError(ValueError):
    """Raised when a report cannot be written: no such run, or a work folder that is not local."""


# --- which runs ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFolder:
    """A run folder under <work>/runs and where it sorts: by run date, then by when it was trained."""

    run_id: str
    run_date: dt.date
    trained_at: dt.datetime

    @property
    def order(self) -> tuple[dt.date, dt.datetime]:
        return self.run_date, self.trained_at


def run_date_of(run_id: str, trained_at: dt.datetime) -> dt.date:
    """A run's date: the ISO date its id starts with (the default id is the run date), else the day it was trained."""
    match = _DATED_RUN_ID.match(run_id)
    if match:
        try:
            return dt.date.fromisoformat(match.group(1))
        except ValueError:
            pass
    return trained_at.date()


def previous_run(candidates: list[RunFolder], current: RunFolder) -> RunFolder | None:
    """The latest candidate that sorts before the current run, or None."""
    earlier = [run for run in candidates if run.run_id != current.run_id and run.order < current.order]
    return max(earlier, key=lambda run: run.order, default=None)


# --- figure data (pure) --------------------------------------------------------------------------------------------


def model_error(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Per country: status, holdout metrics and the markdown-event backtest from country_results.json (NaN where
    training failed)."""
    numbers = ["model_wape", "baseline_wape", "model_bias", "markdown_events", "markdown_lift_error"]
    columns = ["status", *numbers]
    frame = pd.DataFrame(
        [(country, *(result.get(column) for column in columns)) for country, result in sorted(results.items())],
        columns=["country", *columns],
    )
    return frame.astype(dict.fromkeys(numbers, float))


def discount_mix(predictions: pd.DataFrame) -> pd.DataFrame:
    """Share of each country's articles per recommended discount: countries as rows, discounts as columns."""
    counts = pd.crosstab(predictions["country"], predictions["recommended_discount"].round(_DISCOUNT_DECIMALS))
    return counts.div(counts.sum(axis=1), axis=0)


def sell_through(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per country: the spread of articles' expected sell-through, and the share of all its stock expected to sell."""
    grouped = predictions.groupby("country")["expected_sell_through"]
    frame = pd.DataFrame(
        {
            "articles": grouped.size(),
            "p10": grouped.quantile(0.10),
            "p25": grouped.quantile(0.25),
            "median": grouped.quantile(0.50),
            "p75": grouped.quantile(0.75),
            "p90": grouped.quantile(0.90),
        }
    )
    sold = (predictions["expected_sell_through"] * predictions["stock_on_hand"]).groupby(predictions["country"]).sum()
    frame["of_stock"] = sold / predictions.groupby("country")["stock_on_hand"].sum()
    return frame


def week_over_week(current: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    """Per country, over the articles both runs recommend for: shares whose discount went up / stayed / went down."""
    keys = ["country", "article_id"]
    both = current[[*keys, "recommended_discount"]].merge(
        previous[[*keys, "recommended_discount"]], on=keys, how="inner", suffixes=("", "_previous")
    )
    change = (both["recommended_discount"] - both["recommended_discount_previous"]).round(_DISCOUNT_DECIMALS)
    country = both["country"]
    return pd.DataFrame(
        {
            "articles": change.groupby(country).size(),
            "up": (change > 0).groupby(country).mean(),
            "same": (change == 0).groupby(country).mean(),
            "down": (change < 0).groupby(country).mean(),
            "mean_change": change.groupby(country).mean(),
        }
    )


def rejected_rows(etl_record: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (dataset, reason) with rejected rows: the count and its share of the dataset's rows."""
    frame = pd.DataFrame(
        [
            (dataset, reason, int(count), int(count) / record["rows"] if record.get("rows") else np.nan)
            for dataset, record in etl_record.items()
            for reason, count in (record.get("rejected_by_reason") or {}).items()
            if count
        ],
        columns=["dataset", "reason", "rows", "share"],
    )
    return frame.sort_values(["rows", "dataset", "reason"], ascending=[False, True, True], ignore_index=True)


def stage_timings(records: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Per stage, in the order they started: seconds after the first stage started, duration and exit code."""
    frame = pd.DataFrame(
        [
            (stage, dt.datetime.fromisoformat(record["started_at"]), float(record["seconds"]), record.get("exit_code"))
            for stage, record in records.items()
        ],
        columns=["stage", "started_at", "seconds", "exit_code"],
    ).sort_values(["started_at", "stage"], ignore_index=True)
    frame["start_s"] = (frame["started_at"] - frame["started_at"].min()).dt.total_seconds()
    return frame[["stage", "start_s", "seconds", "exit_code"]]


def country_overview(
    results: Mapping[str, Mapping[str, Any]], predictions: pd.DataFrame | None, changes: pd.DataFrame | None
) -> pd.DataFrame:
    """The per-country table: status, error, articles, discounts, sell-through, change against the previous run."""
    frame = model_error(results).set_index("country")
    frame["error"] = [results[country].get("error") for country in frame.index]
    if predictions is not None:
        grouped = predictions.groupby("country")
        frame["articles"] = grouped.size()
        frame["current_discount"] = grouped["current_discount"].mean()
        frame["recommended_discount"] = grouped["recommended_discount"].mean()
        frame["sell_through"] = sell_through(predictions)["of_stock"]
    if changes is not None:
        frame = frame.join(changes[["up", "same", "down"]])
    return frame


def has_money(predictions: pd.DataFrame | None) -> bool:
    """Whether predictions say what holding today's prices would bring (runs from before explanations do not)."""
    return predictions is not None and set(MONEY_COLUMNS) <= set(predictions.columns)


def revenue_against_hold(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per country: expected season revenue of the recommendations against holding today's prices, in EUR and as a
    share of holding's."""
    grouped = predictions.groupby("country")
    frame = pd.DataFrame(
        {
            "articles": grouped.size(),
            "expected_revenue": grouped["expected_revenue"].sum(),
            "hold_expected_revenue": grouped["hold_expected_revenue"].sum(),
        }
    )
    frame["gain"] = frame["expected_revenue"] - frame["hold_expected_revenue"]
    hold = frame["hold_expected_revenue"]
    frame["gain_share"] = frame["gain"] / hold.where(hold > 0)
    return frame


def largest_gains(predictions: pd.DataFrame, top: int = TOP_GAINS) -> pd.DataFrame:
    """The `top` articles over all countries whose recommendation gains most over holding today's price (only those
    that gain), largest first."""
    columns = [
        "country",
        "article_id",
        "current_discount",
        "recommended_discount",
        "expected_revenue",
        "hold_expected_revenue",
        "gain_over_hold",
    ]
    gaining = predictions.loc[predictions["gain_over_hold"] > 0, columns]
    ordered = gaining.sort_values(
        ["gain_over_hold", "country", "article_id"], ascending=[False, True, True], kind="stable"
    )
    frame = ordered.head(top).reset_index(drop=True)
    frame["gain_share"] = frame["gain_over_hold"] / frame["hold_expected_revenue"].where(
        frame["hold_expected_revenue"] > 0
    )
    return frame


def candidate_curves(candidates: pd.DataFrame, articles: pd.DataFrame) -> pd.DataFrame:
    """The candidates of the given (country, article_id) pairs, in their order, each curve by candidate discount."""
    order = articles[["country", "article_id"]].reset_index(drop=True).rename_axis("curve").reset_index()
    curves = candidates.merge(order, on=["country", "article_id"], how="inner")
    return curves.sort_values(["curve", "candidate_discount"], ignore_index=True)


# --- figures -------------------------------------------------------------------------------------------------------


def _figure(bars: int) -> tuple[Figure, Axes]:
    """A figure as wide as the page whose height grows with the number of bars."""
    figure = Figure(figsize=(_WIDTH_IN, max(2.6, 0.42 * bars + 1.4)), dpi=100, layout="constrained")
    axes = figure.subplots()
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _stacked_shares(axes: Axes, labels: list[str], parts: list[tuple[str, np.ndarray, Any]]) -> None:
    """Horizontal bars of shares stacked left to right, each part labelled where it is wide enough to read."""
    left = np.zeros(len(labels))
    for name, shares, color in parts:
        bars = axes.barh(labels, shares, left=left, color=color, edgecolor="white", label=name)
        red, green, blue = to_rgb(color)
        text_color = "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.55 else "black"
        texts = [f"{share:.0%}" if share >= 0.05 else "" for share in shares]
        axes.bar_label(bars, labels=texts, label_type="center", fontsize=9, color=text_color)
        left = left + shares
    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_xlim(0, 1)


def error_figure(errors: pd.DataFrame) -> Figure:
    """Grouped bars: model and best-baseline WAPE per country; countries without metrics are marked."""
    figure, axes = _figure(6)
    positions = np.arange(len(errors))
    width = 0.38
    series = (
        (-width / 2, "model_wape", "model", _MODEL_COLOR),
        (width / 2, "baseline_wape", "best baseline", _BASELINE_COLOR),
    )
    for offset, column, label, color in series:
        bars = axes.bar(positions + offset, errors[column].fillna(0), width, label=label, color=color)
        texts = ["" if pd.isna(value) else f"{value:.3f}" for value in errors[column]]
        axes.bar_label(bars, labels=texts, fontsize=9, padding=2)
    for position, status in zip(positions, errors["status"], strict=True):
        if status != "trained":
            axes.annotate(
                f"{status}: no metrics",
                (position, 0),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                color=_FAILED_COLOR,
                fontweight="bold",
            )
    axes.set_xticks(positions, errors["country"])
    axes.set_ylabel("holdout WAPE (lower is better)")
    highest = np.nanmax([*errors["model_wape"], *errors["baseline_wape"], 0.1])
    axes.set_ylim(0, float(highest) * 1.18)
    axes.legend(loc="upper right", frameon=False, ncols=2)
    return figure


def mix_figure(mix: pd.DataFrame) -> Figure:
    """Stacked horizontal bars: each country's articles split by recommended discount, deeper discounts redder."""
    figure, axes = _figure(len(mix))
    rows = mix.iloc[::-1]
    colormap = colormaps["YlOrRd"]
    steps = max(1, len(rows.columns) - 1)
    parts = [
        (f"{discount:.0%}", rows[discount].to_numpy(), colormap(0.12 + 0.88 * index / steps))
        for index, discount in enumerate(rows.columns)
    ]
    _stacked_shares(axes, list(rows.index), parts)
    axes.set_xlabel("share of the country's articles")
    axes.legend(title="discount", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return figure


def sell_through_figure(spread: pd.DataFrame) -> Figure:
    """Horizontal boxes of articles' expected sell-through per country, with the share of all stock as a diamond."""
    figure, axes = _figure(len(spread))
    rows = spread.iloc[::-1]
    positions = np.arange(1, len(rows) + 1)
    stats = [
        {
            "label": f"{country} ({row['articles']:.0f})",
            "whislo": row["p10"],
            "q1": row["p25"],
            "med": row["median"],
            "q3": row["p75"],
            "whishi": row["p90"],
            "fliers": [],
        }
        for country, row in rows.iterrows()
    ]
    line = {"color": "#3a6ea5"}
    axes.bxp(
        stats,
        positions,
        orientation="horizontal",
        widths=0.55,
        showfliers=False,
        patch_artist=True,
        boxprops={"facecolor": "#c6dbef", "edgecolor": "#3a6ea5"},
        medianprops={"color": "#08306b"},
        whiskerprops=line,
        capprops=line,
    )
    axes.scatter(rows["of_stock"], positions, marker="D", color=_UP_COLOR, zorder=3, label="share of all stock")
    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_xlim(-0.02, 1.02)
    axes.set_xlabel("expected sell-through by season end (articles in brackets)")
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return figure


def week_over_week_figure(changes: pd.DataFrame, previous_run_id: str) -> Figure:
    """Stacked horizontal bars: share of articles whose recommended discount went up, stayed, went down."""
    figure, axes = _figure(len(changes))
    rows = changes.iloc[::-1]
    parts = [
        ("deeper discount", rows["up"].to_numpy(), _UP_COLOR),
        ("same", rows["same"].to_numpy(), _SAME_COLOR),
        ("shallower discount", rows["down"].to_numpy(), _DOWN_COLOR),
    ]
    _stacked_shares(axes, [f"{country} ({articles:.0f})" for country, articles in rows["articles"].items()], parts)
    for position, change in enumerate(rows["mean_change"]):
        axes.text(
            1.01,
            position,
            f"mean {change * 100:+.1f} pp",
            va="center",
            fontsize=9,
            transform=axes.get_yaxis_transform(),
        )
    axes.set_xlabel(f"share of the articles recommended in both this run and run {previous_run_id}")
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, frameon=False)
    return figure


def rejected_figure(rejected: pd.DataFrame) -> Figure:
    """Horizontal bars: rejected rows per (dataset, reason), largest first."""
    figure, axes = _figure(len(rejected))
    rows = list(rejected.iloc[::-1].itertuples())
    bars = axes.barh([f"{row.dataset}: {row.reason}" for row in rows], [row.rows for row in rows], color=_FAILED_COLOR)
    texts = [f"{row.rows:,} ({_percent(row.share, 2)} of {row.dataset})" for row in rows]
    axes.bar_label(bars, labels=texts, padding=3, fontsize=9)
    axes.set_xlim(0, float(rejected["rows"].max()) * 1.35)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("rejected rows (quarantined)")
    return figure


def timings_figure(timings: pd.DataFrame) -> Figure:
    """A timeline: one bar per stage from its start to its end, red when it exited non-zero."""
    figure, axes = _figure(len(timings))
    colors = [_OK_COLOR if code == 0 else _FAILED_COLOR for code in timings["exit_code"]]
    bars = axes.barh(timings["stage"], timings["seconds"], left=timings["start_s"], color=colors)
    texts = [
        f"{seconds:.1f} s" + ("" if code == 0 else f", exit {code}")
        for seconds, code in zip(timings["seconds"], timings["exit_code"], strict=True)
    ]
    axes.bar_label(bars, labels=texts, padding=3, fontsize=9)
    axes.invert_yaxis()
    axes.set_xlim(0, max(1.0, float((timings["start_s"] + timings["seconds"]).max()) * 1.18))
    axes.set_xlabel("seconds since the first stage started")
    return figure


def candidate_curves_figure(curves: pd.DataFrame, gains: pd.DataFrame) -> Figure:
    """One panel per article: expected season revenue at each candidate discount; today's discount (the first
    candidate) and the recommended one marked, candidates a rule forbids hollow."""
    shown = gains.head(CURVES_SHOWN)
    figure = Figure(figsize=(_WIDTH_IN, 3.6), dpi=100, layout="constrained")
    panels = figure.subplots(1, max(1, len(shown)), squeeze=False)[0]
    for index, (panel, article) in enumerate(zip(panels, shown.itertuples(), strict=False)):
        curve = curves[curves["curve"] == index]
        panel.spines[["top", "right"]].set_visible(False)
        discounts, revenue = curve["candidate_discount"].to_numpy(), curve["expected_revenue"].to_numpy()
        allowed = curve["ruled_out_by"].isna().to_numpy()
        panel.plot(discounts, revenue, color=_MODEL_COLOR, linewidth=1.5, zorder=1)
        panel.scatter(discounts[allowed], revenue[allowed], color=_MODEL_COLOR, s=28, zorder=2, label="allowed")
        if (~allowed).any():
            panel.scatter(
                discounts[~allowed],
                revenue[~allowed],
                facecolors="white",
                edgecolors=_FAILED_COLOR,
                s=36,
                zorder=2,
                label="ruled out by a rule",
            )
        if len(curve):
            panel.scatter(
                discounts[:1], revenue[:1], marker="s", color=_BASELINE_COLOR, s=70, zorder=3, label="today's discount"
            )
        chosen = curve[curve["chosen"].astype(bool)]
        if len(chosen):
            best = chosen.iloc[0]
            panel.scatter(
                [best["candidate_discount"]],
                [best["expected_revenue"]],
                marker="*",
                color=_UP_COLOR,
                s=220,
                zorder=4,
                label="recommended",
            )
            panel.annotate(
                f"{best['candidate_discount']:.0%}: {best['expected_revenue']:,.0f} EUR",
                (best["candidate_discount"], best["expected_revenue"]),
                xytext=(0, 9),
                textcoords="offset points",
                ha="center",
                fontsize=9,
            )
        panel.set_title(f"{article.country} {article.article_id}: +{article.gain_over_hold:,.0f} EUR", fontsize=10)
        panel.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        panel.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        panel.set_xlabel("candidate discount")
        lowest, highest = (float(revenue.min()), float(revenue.max())) if len(revenue) else (0.0, 1.0)
        margin = max(1.0, (highest - lowest) * 0.2)
        panel.set_ylim(max(0.0, lowest - margin), highest + margin)
    panels[0].set_ylabel("expected season revenue (EUR)")
    handles, labels = {}, []
    for panel in panels:
        for handle, label in zip(*panel.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    figure.legend([handles[label] for label in labels], labels, loc="outside lower center", ncols=4, frameon=False)
    return figure


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes, drawn by Agg (no display needed)."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _percent(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.{digits}%}"


# --- the page ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """One heading of the page: a plot with what it shows, or why there is none."""

    title: str
    about: str
    alt: str
    png: bytes | None = None
    missing: str = ""
    # HTML shown above the plot (or its note), built by this module from escaped text.
    table: str = ""


@dataclass(frozen=True)
class RunOutputs:
    """The small outputs of one run that the report reads; None where the run has not produced one."""

    results: dict[str, dict[str, Any]] | None
    predictions: pd.DataFrame | None
    etl_record: dict[str, dict[str, Any]] | None
    stages: dict[str, dict[str, Any]]
    # The candidates of the articles with the largest gains; None when the run wrote no candidates.
    candidates: pd.DataFrame | None = None
    # What the ETL compared the input with; None for a run from before drift checks.
    drift: DriftCheck | None = None


def report_sections(outputs: RunOutputs, previous_run_id: str | None, changes: pd.DataFrame | None) -> list[Section]:
    """The page's plots in reading order (the money section with its tables), each a note where its data is missing."""
    predictions = outputs.predictions if outputs.predictions is not None and len(outputs.predictions) else None
    no_predictions = "This run has no predictions: it stopped before train-and-score finished, or no country trained."

    about = (
        "Rolling-origin backtest WAPE of each country's model against the better of two baselines (an "
        "article's recent average; its average at today's price). A country whose own model does not beat "
        "its baseline is scored by the pooled model, or by the baseline's level, each with the price response "
        "learned from every country's past markdowns."
    )
    error = Section(
        "Model error against the baseline",
        about,
        ERROR_ALT,
        png(error_figure(model_error(outputs.results))) if outputs.results else None,
        "This run has no train-and-score results (country_results.json).",
    )

    about = "How each country's articles split over the recommended discounts."
    mix = Section(
        "Recommended discount mix",
        about,
        MIX_ALT,
        None if predictions is None else png(mix_figure(discount_mix(predictions))),
        no_predictions,
    )

    about = (
        "Share of each article's current stock expected to sell by its season end at the recommended discount. "
        "Box: middle half of the articles, line: median, whiskers: 10th to 90th percentile; diamond: share of "
        "the country's whole stock."
    )
    spread = Section(
        "Expected sell-through",
        about,
        SELL_THROUGH_ALT,
        None if predictions is None else png(sell_through_figure(sell_through(predictions))),
        no_predictions,
    )

    money = money_section(predictions, outputs.candidates)

    about = (
        f"Articles recommended in both this run and the previous run {previous_run_id} (count in brackets): "
        "the share whose recommended discount went up, stayed or went down, and the mean change in "
        "percentage points."
    )
    if previous_run_id is None:
        missing = "There is no earlier run with predictions in this work folder, so there is nothing to compare with."
    else:
        missing = f"This run and run {previous_run_id} share no (country, article) to compare."
    comparable = previous_run_id is not None and changes is not None and not changes.empty
    week = Section(
        "Week-over-week change",
        about,
        WEEK_OVER_WEEK_ALT,
        png(week_over_week_figure(changes, previous_run_id)) if comparable else None,
        missing,
    )

    about = "Rows the ETL quarantined (under quarantine/ in the run folder), by dataset and reason."
    rejected = None if outputs.etl_record is None else rejected_rows(outputs.etl_record)
    rejections = Section(
        "Rejected rows",
        about,
        REJECTED_ALT,
        png(rejected_figure(rejected)) if rejected is not None and len(rejected) else None,
        "The ETL rejected no rows." if rejected is not None else "This run has no ETL record.",
    )

    about = (
        "When each stage ran and for how long, from the stage records. A stage skipped because its output "
        "already existed keeps the timing of the run that produced it."
    )
    timings = Section(
        "Stage timings",
        about,
        TIMINGS_ALT,
        png(timings_figure(stage_timings(outputs.stages))) if outputs.stages else None,
        "This run has no stage records.",
    )
    return [error, mix, spread, money, week, drift_section(outputs.drift), rejections, timings]


NO_DRIFT_CHECK = (
    "This run has no drift check (drift.json): it ran before input drift was checked, or its ETL stopped before the "
    "check."
)


def drift_section(check: DriftCheck | None) -> Section:
    """The input drift findings of the run as a table, or a note: nothing beyond the limits, nothing compared."""
    title = "Input drift"
    if check is None:
        return Section(title, "", "", missing=NO_DRIFT_CHECK)
    if check.previous_run_id is None:
        missing = "There is no previous run to compare with: no earlier run in this work folder has an input profile."
        return Section(title, "", "", missing=missing)
    against = f"run {check.previous_run_id} (run date {check.previous_run_date})"
    if not check.findings:
        return Section(title, "", "", missing=f"No drift beyond the limits against {against}.")
    about = (
        f"Each country's input of the week before the run date against {against}: the changes beyond the limits "
        "under [drift] in conf/. Units, articles and price level (median shelf price of the active articles) move "
        "relatively, the share of active articles on markdown in points. A change beyond a block limit blocks the "
        "country at publish: it keeps its ERP rows unless an operator overrides its gate."
    )
    return Section(title, about, "", table=drift_html(check.findings))


def drift_html(findings: Sequence[Finding]) -> str:
    """The drift findings as an HTML table, blocking ones first, each level in the order the check found them."""
    ordered = sorted(findings, key=lambda finding: finding.level != BLOCK)
    return _html_table(
        [
            ("Country", True),
            ("Measure", True),
            ("Previous run", False),
            ("This run", False),
            ("Change", False),
            ("Limit", False),
            ("Level", True),
        ],
        [
            [
                finding.country,
                MEASURE_NAMES[finding.measure],
                format_value(finding.measure, finding.previous),
                format_value(finding.measure, finding.current),
                format_change(finding),
                format_limit(finding.measure, finding.limit),
                finding.level,
            ]
            for finding in ordered
        ],
    )


def money_section(predictions: pd.DataFrame | None, candidates: pd.DataFrame | None) -> Section:
    """Revenue against holding today's prices per country, the largest gains and their candidate curves; a note
    for a run from before predictions said what holding would bring."""
    title = "Revenue against holding today's prices"
    if predictions is None:
        missing = "This run has no predictions: it stopped before train-and-score finished, or no country trained."
        return Section(title, "", CURVES_ALT, missing=missing)
    if not has_money(predictions):
        missing = (
            "This run's predictions do not say what holding today's prices would bring (no hold_expected_revenue): "
            "it ran before recommendations were explained."
        )
        return Section(title, "", CURVES_ALT, missing=missing)
    gains = largest_gains(predictions)
    about = (
        "Expected revenue over the rest of the season of the recommended discounts against holding today's "
        f"discounts, per country; the {TOP_GAINS} articles that gain most; and the candidate curves of the first "
        f"{CURVES_SHOWN} of them: expected season revenue at each candidate discount (star: recommended, square: "
        "today's, hollow: ruled out by a rule). The command markdown-pricing explain tells any article's story."
    )
    table = money_html(revenue_against_hold(predictions), gains)
    if gains.empty:
        return Section(title, about, CURVES_ALT, missing="No article gains over holding today's price.", table=table)
    curves = None if candidates is None else candidate_curves(candidates, gains.head(CURVES_SHOWN))
    if curves is None or curves.empty:
        missing = (
            "This run wrote no candidates for these articles (no candidates folder): it ran before candidate curves "
            "were recorded."
        )
        return Section(title, about, CURVES_ALT, missing=missing, table=table)
    return Section(title, about, CURVES_ALT, png(candidate_curves_figure(curves, gains)), table=table)


def _html_table(columns: list[tuple[str, bool]], rows: list[list[str]]) -> str:
    """A table of (header, is text) columns: text left-aligned, numbers right-aligned; every cell escaped."""
    classes = ["text" if is_text else "number" for _, is_text in columns]
    header = "".join(
        f'<th class="{cls}">{html.escape(name)}</th>' for cls, (name, _) in zip(classes, columns, strict=True)
    )
    lines = ["<table>", f"<thead><tr>{header}</tr></thead>", "<tbody>"]
    for cells in rows:
        tds = "".join(f'<td class="{cls}">{html.escape(cell)}</td>' for cls, cell in zip(classes, cells, strict=True))
        lines.append(f"<tr>{tds}</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)


def _euros(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:,.0f} EUR"


def _signed_euros(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:+,.0f} EUR"


def _signed_percent(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:+.1%}"


def money_html(revenue: pd.DataFrame, gains: pd.DataFrame) -> str:
    """The per-country revenue against holding and the articles with the largest gains, as HTML tables."""
    per_country = _html_table(
        [
            ("Country", True),
            ("Articles", False),
            ("Recommended", False),
            ("Holding today's prices", False),
            ("Gain", False),
            ("Gain %", False),
        ],
        [
            [
                str(country),
                f"{row['articles']:.0f}",
                _euros(row["expected_revenue"]),
                _euros(row["hold_expected_revenue"]),
                _signed_euros(row["gain"]),
                _signed_percent(row["gain_share"]),
            ]
            for country, row in revenue.iterrows()
        ],
    )
    if gains.empty:
        return per_country
    largest = _html_table(
        [
            ("Country", True),
            ("Article", True),
            ("Discount now → recommended", False),
            ("Recommended", False),
            ("Holding", False),
            ("Gain", False),
            ("Gain %", False),
        ],
        [
            [
                str(row["country"]),
                str(row["article_id"]),
                f"{_percent(row['current_discount'])} → {_percent(row['recommended_discount'])}",
                _euros(row["expected_revenue"]),
                _euros(row["hold_expected_revenue"]),
                _signed_euros(row["gain_over_hold"]),
                _signed_percent(row["gain_share"]),
            ]
            for _, row in gains.iterrows()
        ],
    )
    return f"{per_country}\n<h3>Largest gains over holding</h3>\n{largest}"


def _lift_error(error: float, events: float) -> str:
    """The markdown-event backtest's mean absolute log lift error and how many past markdowns it rests on."""
    return "n/a" if pd.isna(error) else f"{_number(error)} ({events:.0f})"


def overview_html(overview: pd.DataFrame) -> str:
    """The per-country table as HTML."""
    compare = "up" in overview.columns
    errors = bool(overview["error"].notna().any())
    # (header, is text): text columns are left-aligned, numbers right-aligned.
    columns = [
        ("Country", True),
        ("Training", True),
        ("Articles", False),
        ("Model WAPE", False),
        ("Naive WAPE", False),
        ("Bias", False),
        ("Markdown lift error (events)", False),
        ("Mean discount now → recommended", False),
        ("Stock sold by season end", False),
    ]
    if compare:
        columns.append(("Deeper / same / shallower", False))
    if errors:
        columns.append(("Error", True))
    classes = ["text" if is_text else "number" for _, is_text in columns]
    names = [name for name, _ in columns]
    header = "".join(f'<th class="{cls}">{html.escape(name)}</th>' for cls, name in zip(classes, names, strict=True))
    lines = ["<table>", f"<thead><tr>{header}</tr></thead>", "<tbody>"]
    for country, row in overview.iterrows():
        articles = row.get("articles")
        cells = [
            str(country),
            str(row["status"]),
            "0" if articles is None or pd.isna(articles) else f"{articles:.0f}",
            _number(row["model_wape"]),
            _number(row["baseline_wape"]),
            _number(row["model_bias"]),
            _lift_error(row.get("markdown_lift_error", np.nan), row.get("markdown_events", np.nan)),
            "n/a"
            if pd.isna(row.get("recommended_discount", np.nan))
            else f"{_percent(row['current_discount'], 1)} → {_percent(row['recommended_discount'], 1)}",
            _percent(row.get("sell_through")),
        ]
        if compare:
            shares = (row["up"], row["same"], row["down"])
            cells.append("n/a" if pd.isna(shares[0]) else " / ".join(_percent(share) for share in shares))
        if errors:
            cells.append("" if pd.isna(row["error"]) else str(row["error"]))
        row_classes = [*classes]
        row_classes[1] += " ok" if row["status"] == "trained" else " bad"
        tds = (f'<td class="{cls}">{html.escape(cell)}</td>' for cls, cell in zip(row_classes, cells, strict=True))
        lines.append(f"<tr>{''.join(tds)}</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)


_STYLE = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; color: #222; margin: 0 auto;
       max-width: 1140px; padding: 24px 32px 48px; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.3em; }
h2 { font-size: 1.2em; margin: 1.8em 0 0.3em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.meta { color: #555; margin-top: 0; }
p.missing { color: #8a6d3b; background: #fcf8e3; border: 1px solid #f0e1a1; padding: 10px 14px; border-radius: 4px; }
img { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { padding: 4px 12px; border-bottom: 1px solid #e4e4e4; vertical-align: top; }
th { background: #f4f4f4; }
.number { text-align: right; font-variant-numeric: tabular-nums; } .text { text-align: left; }
td.ok { color: #2e7d32; } td.bad { color: #c0392b; font-weight: bold; }
"""
# Nothing but inline styles and data: images may load, so the page can make no request even if edited.
_CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_page(run_id: str, meta: list[str], table: str, sections: list[Section]) -> str:
    """The whole self-contained page."""
    parts = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CONTENT_SECURITY_POLICY}">',
        f"<title>Markdown pricing run {html.escape(run_id)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>Markdown pricing run {html.escape(run_id)}</h1>",
        f'<p class="meta">{html.escape(" · ".join(meta))}</p>',
        "<h2>Countries</h2>",
        "<p>Training results of this run; whether each country was published or blocked is in the ERP ledger: "
        "<code>markdown-pricing status</code>.</p>",
        table,
    ]
    for section in sections:
        parts.append(f"<section>\n<h2>{html.escape(section.title)}</h2>")
        if section.png is not None or section.table:
            parts.append(f"<p>{html.escape(section.about)}</p>")
        if section.table:
            parts.append(section.table)
        if section.png is not None:
            encoded = base64.b64encode(section.png).decode("ascii")
            parts.append(f'<img alt="{html.escape(section.alt)}" src="data:image/png;base64,{encoded}">')
        elif section.missing:
            # A section that is a table alone has nothing missing to note.
            parts.append(f'<p class="missing">{html.escape(section.missing)}</p>')
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


# --- reading and writing (the edge) --------------------------------------------------------------------------------


def _layout(work: str, run_id: str) -> RunLayout:
    # The report never reads raw data, so its layout needs no raw root.
    return RunLayout(raw="", work=work, run_id=run_id)


def _read_json(uri: str) -> Any:
    fs = filesystem(uri)
    return json.loads(fs.read_text(uri)) if fs.exists(uri) else None


def read_predictions(uri: str) -> pd.DataFrame | None:
    """The columns of a run's predictions the report needs, or None when the predictions are incomplete."""
    fs = filesystem(uri)
    if not fs.exists(join(uri, SUCCESS_MARKER)):
        return None
    if isinstance(fs, LocalFileSystem):
        return _report_columns(local_path(uri))
    # On HDFS: a local copy of the folder, which Arrow reads as it reads a local one.
    with tempfile.TemporaryDirectory(prefix="markdown-report-") as scratch:
        fs.download(uri, Path(scratch) / "predictions")
        return _report_columns(Path(scratch) / "predictions")


def _report_columns(folder: Path) -> pd.DataFrame:
    # pyarrow skips Spark's _SUCCESS and .crc files, as it skips every name starting with "_" or ".".
    dataset = ds.dataset(folder, format="parquet", partitioning="hive")
    if not set(REPORT_COLUMNS) <= set(dataset.schema.names):
        # A run whose countries all failed writes only the marker.
        return pd.DataFrame(columns=list(REPORT_COLUMNS))
    # The money columns where the run wrote them: a run from before explanations lacks them.
    money = [column for column in MONEY_COLUMNS if column in dataset.schema.names]
    return dataset.to_table(columns=[*REPORT_COLUMNS, *money]).to_pandas()


def read_partitions(
    uri: str, countries: Iterable[str], *, articles: Collection[str] | None = None, columns: Sequence[str] | None = None
) -> pd.DataFrame | None:
    """The rows of the given countries of a complete Parquet folder partitioned by country (as the stages write
    them, local or on HDFS): only `articles` where given, the `columns` the files have (all by default), the country
    first. None when the folder is not complete (no _SUCCESS marker)."""
    fs = filesystem(uri)
    if not fs.exists(join(uri, SUCCESS_MARKER)):
        return None
    frames = []
    for country in dict.fromkeys(countries):
        part = join(uri, f"country={country}")
        if not fs.is_dir(part):
            continue
        if isinstance(fs, LocalFileSystem):
            frame = _read_part(local_path(part), articles, columns)
        else:
            # On HDFS: a local copy of this country's folder alone.
            with tempfile.TemporaryDirectory(prefix="markdown-report-") as scratch:
                fs.download(part, Path(scratch) / "part")
                frame = _read_part(Path(scratch) / "part", articles, columns)
        frames.append(frame.assign(country=country)[["country", *frame.columns]])
    if not frames:
        return pd.DataFrame(columns=["country", *(columns or [])])
    return pd.concat(frames, ignore_index=True)


def _read_part(folder: Path, articles: Collection[str] | None, columns: Sequence[str] | None) -> pd.DataFrame:
    dataset = ds.dataset(folder, format="parquet")
    names = [name for name in (columns or dataset.schema.names) if name in dataset.schema.names and name != "country"]
    keep = None if articles is None else ds.field("article_id").isin(list(articles))
    frame: pd.DataFrame = dataset.to_table(columns=names, filter=keep).to_pandas()
    return frame


def read_run(work: str, run_id: str) -> RunOutputs:
    """Everything the report shows about one run, from its folder."""
    layout = _layout(work, run_id)
    results_uri = layout.country_results
    stages_folder = join(layout.run_dir, "stages")
    stages = {
        name.removesuffix(".json"): _read_json(join(stages_folder, name))
        for name in filesystem(stages_folder).list(stages_folder)
        if name.endswith(".json")
    }
    predictions = read_predictions(layout.predictions)
    return RunOutputs(
        results=read_country_results(results_uri) if filesystem(results_uri).exists(results_uri) else None,
        predictions=predictions,
        etl_record=_read_json(layout.etl_record),
        stages=stages,
        candidates=read_curves(layout.candidates, predictions),
        drift=read_drift_check(layout.drift),
    )


def read_curves(uri: str, predictions: pd.DataFrame | None) -> pd.DataFrame | None:
    """The candidates of the articles whose curves the money section plots; None when there are none to read."""
    if not has_money(predictions) or predictions is None:
        return None
    shown = largest_gains(predictions).head(CURVES_SHOWN)
    if shown.empty:
        return None
    return read_partitions(
        uri, shown["country"].astype(str), articles=set(shown["article_id"].astype(str)), columns=CURVE_COLUMNS
    )


def run_folder(work: str, run_id: str, run_date: dt.date | None = None) -> RunFolder:
    """Where a run sorts: its run date (given, or from its id) and when it was trained."""
    layout = _layout(work, run_id)
    record = _read_json(layout.stage_record("train_score"))
    if record and record.get("finished_at"):
        trained_at = dt.datetime.fromisoformat(record["finished_at"])
        trained_at = trained_at if trained_at.tzinfo else trained_at.replace(tzinfo=dt.timezone.utc)
    else:
        results = layout.country_results
        fs = filesystem(results)
        stamp = fs.modified(results if fs.exists(results) else layout.run_dir)
        trained_at = dt.datetime.fromtimestamp(stamp, dt.timezone.utc)
    return RunFolder(run_id, run_date or run_date_of(run_id, trained_at), trained_at)


def _run_ids(work: str) -> list[str]:
    runs = join(work, "runs")
    fs = filesystem(runs)
    return [name for name in fs.list(runs) if fs.is_dir(join(runs, name))]


def latest_run_id(work: str) -> str:
    """The run whose country_results.json was written last (a folder's own time changes with each report in it)."""
    written = {}
    for run_id in _run_ids(work):
        results = _layout(work, run_id).country_results
        fs = filesystem(results)
        if fs.exists(results):
            written[run_id] = fs.modified(results)
    if not written:
        raise ReportError(f"no run under {join(work, 'runs')} has train-and-score results (country_results.json)")
    return max(written, key=lambda run_id: (written[run_id], run_id))


def write_report(
    work: str, run_id: str | None = None, *, run_date: dt.date | None = None, generated_at: dt.datetime | None = None
) -> str:
    """Writes <work>/runs/<run_id>/report.html (the latest run by default; local or on HDFS) and returns where."""
    run_id = run_id or latest_run_id(work)
    layout = _layout(work, run_id)
    if not filesystem(layout.run_dir).is_dir(layout.run_dir):
        raise ReportError(f"there is no run {run_id!r} under {join(work, 'runs')}")
    outputs = read_run(work, run_id)

    current = run_folder(work, run_id, run_date)
    with_predictions = [
        run_folder(work, other)
        for other in _run_ids(work)
        if other != run_id and filesystem(work).exists(join(_layout(work, other).predictions, SUCCESS_MARKER))
    ]
    previous = previous_run(with_predictions, current)
    previous_id = previous.run_id if previous else None
    previous_predictions = read_predictions(_layout(work, previous.run_id).predictions) if previous else None
    changes = None
    if outputs.predictions is not None and previous_predictions is not None:
        changes = week_over_week(outputs.predictions, previous_predictions)

    generated_at = (generated_at or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    meta = [
        f"run date {current.run_date.isoformat()}",
        f"work folder {work}",
        f"written {generated_at:%Y-%m-%d %H:%M} UTC",
        f"compared with run {previous_id}" if previous_id else "no earlier run to compare with",
    ]
    table = (
        overview_html(country_overview(outputs.results, outputs.predictions, changes))
        if outputs.results
        else '<p class="missing">No per-country results: the run stopped before train-and-score.</p>'
    )
    page = render_page(run_id, meta, table, report_sections(outputs, previous_id, changes))
    uri = join(layout.run_dir, REPORT_FILE)
    filesystem(uri).write_text(uri, page)
    return uri
