"""The benchmark's Markdown table and PNG plots, from its JSON document."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

# Headline ratio -> (target, whether a value at or below the target meets it), as the issue states them.
RATIOS = {
    "train_score_vs_ideal_makespan": (1.15, True),
    "end_to_end_vs_joblib": (1.2, True),
    "publish_vs_raw_copy": (0.8, False),
    "publish_vs_spark_jdbc": (10.0, False),
}
STAGES = ("etl", "train_score", "joblib", "publish")


# Per Python worker (spark.executor.pyspark.memory / executor cores), the limits the memory table answers for.
WORKER_LIMITS_MB = (1024, 2048, 4096, 8192)


def memory_model(document: dict[str, Any]) -> dict[str, float]:
    """Peak memory of one country's training as a line in its weekly rows, fitted over every size's probes.

    `virtual` is what spark.executor.pyspark.memory limits (the worker's address space); `resident` is what a
    container's memoryOverhead must hold per concurrent Python worker.
    """
    cases = [case for size in document["sizes"].values() for case in size["probes"]["cases"] if case["threads"] == 1]
    rows = np.array([case["rows"] for case in cases], dtype=float)
    fitted = {}
    for kind, key in (("virtual", "peak_virtual_mb"), ("resident", "peak_mb")):
        slope, base = np.polyfit(rows, [case[key] for case in cases], 1) if len(set(rows)) > 1 else (0.0, 0.0)
        fitted[f"{kind}_base_mb"], fitted[f"{kind}_mb_per_million_rows"] = float(base), float(slope) * 1e6
    return fitted


def largest_country_rows(model: dict[str, float], kind: str, limit_mb: float) -> float:
    """Weekly rows of the largest country whose training fits under limit_mb (0 when not even the base fits)."""
    per_row = model[f"{kind}_mb_per_million_rows"] / 1e6
    return max(0.0, (limit_mb - model[f"{kind}_base_mb"]) / per_row) if per_row > 0 else float("inf")


def met(value: float, target: float, at_most: bool) -> bool:
    return value <= target if at_most else value >= target


def size_line(name: str, size: dict[str, Any]) -> str:
    """One progress line per size as the bench goes."""
    ratios = " ".join(f"{key}={size[key]:.2f}" for key in RATIOS)
    return f"{name}: {size['world']['raw_rows']:,} raw rows; {ratios}"


def _mark(value: float, target: float, at_most: bool) -> str:
    return f"{value:.2f} {'met' if met(value, target, at_most) else 'missed'}"


def table(document: dict[str, Any]) -> str:
    """The Markdown tables: ratios against targets, then each stage's figures."""
    sizes = document["sizes"]
    names = list(sizes)
    lines = [
        f"Run {document['date']} on {document['machine']['cpus']} CPUs, {document['machine']['memory_gb']} GiB.",
        "",
        "| ratio | target | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for key, (target, at_most) in RATIOS.items():
        cells = " | ".join(_mark(sizes[n][key], target, at_most) for n in names)
        lines.append(f"| `{key}` | {'≤' if at_most else '≥'} {target} | {cells} |")
    extra = (
        "train_score_vs_ideal_makespan_functions",
        "train_score_vs_ideal_makespan_tasks",
        "largest_first_vs_name_order",
        "publish_write_vs_raw_copy",
    )
    for key in extra:
        # A document from before a ratio was measured has none.
        lines.append(
            f"| `{key}` | | " + " | ".join(f"{sizes[n][key]:.2f}" if key in sizes[n] else "" for n in names) + " |"
        )
    scaling = _mark(document["etl_per_row_scaling"], 0.9, False)
    lines.append(f"| `etl_per_row_scaling` ({' vs '.join(document['etl_scaling_sizes'])}) | ≥ 0.9 | {scaling} |")
    lines += [
        "",
        "| size | stage | rows | seconds | rows/s | peak driver MB | peak Python workers MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        for stage in STAGES:
            s = sizes[name][stage]
            lines.append(
                f"| {name} | {stage} | {s['rows']:,} | {s['seconds']:.1f} | {s['rows_per_s']:,.0f} "
                f"| {s['peak_driver_mb']:,.0f} | {s['peak_workers_mb']:,.0f} |"
            )
        for peer in ("raw_copy", "spark_jdbc"):
            s = sizes[name]["publish"][peer]
            figures = f"{s['rows']:,} | {s['seconds']:.2f} | {s['rows_per_s']:,.0f}"
            lines.append(f"| {name} | publish: {peer} | {figures} | | |")
    model = memory_model(document)
    lines += [
        "",
        f"Memory of one country's training: address space {model['virtual_base_mb']:,.0f} MB + "
        f"{model['virtual_mb_per_million_rows']:,.0f} MB per million weekly rows, resident "
        f"{model['resident_base_mb']:,.0f} MB + {model['resident_mb_per_million_rows']:,.0f} MB per million rows.",
        "",
        "| memory per Python worker | largest country (weekly rows) under spark.executor.pyspark.memory "
        "| under memoryOverhead (resident) |",
        "|---|---|---|",
    ]
    for limit in WORKER_LIMITS_MB:
        virtual, resident = (largest_country_rows(model, kind, limit) for kind in ("virtual", "resident"))
        lines.append(f"| {limit:,} MB | {virtual:,.0f} | {resident:,.0f} |")
    return "\n".join(lines) + "\n"


def _stage_plot(document: dict[str, Any], path: Path) -> None:
    sizes = document["sizes"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(STAGES)
    for i, stage in enumerate(STAGES):
        values = [sizes[n][stage]["seconds"] for n in sizes]
        ax.bar([x + i * width for x in range(len(sizes))], values, width, label=stage)
    ax.set_xticks([x + width * (len(STAGES) - 1) / 2 for x in range(len(sizes))], list(sizes))
    ax.set_yscale("log")
    ax.set_ylabel("wall seconds (log)")
    ax.set_title("Stage wall time per world size (joblib: the train+score peer)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _task_plot(document: dict[str, Any], path: Path) -> None:
    """The train stage's tasks over time at the largest size: alphabetical start against largest first."""
    name = list(document["sizes"])[-1]
    size = document["sizes"][name]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    runs = (("train_score_name_order", "alphabetical"), ("train_score", "largest first"))
    for ax, (key, title) in zip(axes, runs, strict=True):
        tasks = size[key]["tasks"]
        start = min(t["launch"] for t in tasks)
        for row, t in enumerate(sorted(tasks, key=lambda t: t["launch"])):
            ax.barh(row, t["finish"] - t["launch"], left=t["launch"] - start)
            ax.text(t["finish"] - start, row, f" {t['country']}", va="center", fontsize=7)
        ax.axvline(size[key]["ideal_makespan_tasks_s"], color="black", linestyle="--", linewidth=1)
        ax.set_title(f"{name}: {title}, stage {size[key]['seconds']:.0f} s (dashed: ideal)")
        ax.set_xlabel("seconds since the first task")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(document: dict[str, Any], folder: Path, stem: str) -> None:
    """<stem>.md and latest.md, with the two plots next to them."""
    text = table(document)
    plots = {"stages": _stage_plot, "train_tasks": _task_plot}
    for prefix in (stem, "latest"):
        for plot, draw in plots.items():
            draw(document, folder / f"{prefix}-{plot}.png")
        images = "\n".join(f"![{plot}]({prefix}-{plot}.png)" for plot in plots)
        (folder / f"{prefix}.md").write_text(f"{text}\n{images}\n")


if __name__ == "__main__":
    # Renders a saved document again: python -m bench.report bench/results/<date>.json
    source = Path(sys.argv[1])
    write(json.loads(source.read_text()), source.parent, source.stem)
