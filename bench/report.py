"""The benchmark's Markdown table and PNG plots, from its JSON document."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

# Headline ratio -> (target, whether a value at or below the target meets it), as the issue states them.
RATIOS = {
    "train_score_vs_ideal_makespan": (1.10, True),
    "end_to_end_vs_joblib": (1.3, True),
    "publish_vs_raw_copy": (0.8, False),
    "publish_vs_spark_jdbc": (10.0, False),
}
STAGES = ("etl", "train_score", "joblib", "publish")


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
    extra = ("train_score_vs_ideal_makespan_tasks", "largest_first_vs_name_order", "publish_write_vs_raw_copy")
    for key in extra:
        lines.append(f"| `{key}` | | " + " | ".join(f"{sizes[n][key]:.2f}" for n in names) + " |")
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
