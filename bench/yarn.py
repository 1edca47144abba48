"""`make bench-yarn`: what a stage costs on YARN before and after its Spark jobs, against local mode.

The weekly run of the tiny world goes through `markdown-pricing run` three times: in local mode; on a fresh dev
Hadoop (`markdown-pricing hadoop start`), "cold", where the NodeManager localizes Spark's jar archive and the
environment archive for the first time; and on the same cluster again, "warm", from its cache. Each stage's time is
split by its progress file (when the scheduler submitted it, when it ended), its stage record (when its session was
ready) and its event log (its jobs): startup before the first job, the jobs' span, and the exit after the last.
Writes bench/results/yarn-<date>.json, yarn-latest.json and yarn-latest.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import zstandard

from bench.measure import bench_erp, save_results
from markdown_pricing.core.storage import RunLayout, filesystem, join, read_json
from markdown_pricing.hadoop import minicluster
from markdown_pricing.observe.progress import progress_uri

RUN_DATE = dt.date(2026, 11, 23)
STAGES = ("etl", "train_score", "publish")
WORLD = ["--countries", "3", "--articles", "40", "--weeks", "30", "--seed", "5", "--tiny-country-weeks", "0"]
CLI = str(Path(sys.executable).parent / "markdown-pricing")


def _seconds(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def _lines(data: bytes, name: str) -> Iterator[dict[str, Any]]:
    if name.endswith(".zstd"):
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    for line in data.decode().splitlines():
        yield json.loads(line)


def event_log(folder: str, application_id: str) -> list[dict[str, Any]]:
    """The events of an application's log under `folder` (local or HDFS; plain or zstd; one file, or Spark's
    rolling log: a folder eventlog_v2_<id> of events_<n>_<id> files)."""
    fs = filesystem(folder)
    # <id>, <id>.zstd, <id>_<attempt> (YARN cluster mode), or the rolling log's folder eventlog_v2_<id>[_<attempt>].
    [name] = [
        name
        for name in fs.list(folder)
        if re.fullmatch(rf"(eventlog_v2_)?{re.escape(application_id)}(_\d+)?(\.\w+)?", name)
    ]
    uri = join(folder, name)
    parts = [uri]
    if fs.is_dir(uri):
        files = [part for part in fs.list(uri) if part.startswith("events_")]
        parts = [join(uri, part) for part in sorted(files, key=lambda part: int(part.split("_")[1]))]
    events: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for part in parts:
            local = Path(scratch) / part.rsplit("/", 1)[-1]
            fs.download(part, local)
            events += _lines(local.read_bytes(), local.name)
    return events


def job_spans(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(submitted, completed) of every job, in seconds since the epoch."""
    starts = {e["Job ID"]: e["Submission Time"] / 1e3 for e in events if e["Event"] == "SparkListenerJobStart"}
    ends = {e["Job ID"]: e["Completion Time"] / 1e3 for e in events if e["Event"] == "SparkListenerJobEnd"}
    return sorted((starts[job], ends[job]) for job in starts if job in ends)


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """How long at least one job ran: the union of the spans."""
    busy, reach = 0.0, float("-inf")
    for start, end in spans:
        if end > reach:
            busy += end - max(start, reach)
            reach = end
    return busy


def stage_profile(layout: RunLayout, stage: str, events_folder: str) -> dict[str, Any]:
    """One stage's time from submit to exit, split around its Spark jobs."""
    progress, record = read_json(progress_uri(layout, stage)), read_json(layout.stage_record(stage))
    submitted, ended = _seconds(progress["started_at"]), _seconds(progress["finished_at"])
    events = event_log(events_folder, record["application_id"])
    spans = job_spans(events)
    first_job, last_job = spans[0][0], max(end for _, end in spans)
    executors = [e["Timestamp"] / 1e3 for e in events if e["Event"] == "SparkListenerExecutorAdded"]
    return {
        "application_id": record["application_id"],
        "seconds": ended - submitted,
        "to_session_s": _seconds(record["started_at"]) - submitted,
        "to_first_executor_s": min(executors) - submitted if executors else None,
        "to_first_job_s": first_job - submitted,
        "jobs": len(spans),
        "jobs_span_s": last_job - first_job,
        "jobs_busy_s": busy_seconds(spans),
        "after_last_job_s": ended - last_job,
        "fixed_s": (first_job - submitted) + (ended - last_job),
    }


def checked(command: list[str], env: dict[str, str]) -> str:
    """A command's output; its own output's tail in the error when it fails."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:2])} failed: {done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout


def run_week(env: dict[str, str], profile: str, raw: str, work: str, run_id: str, events: str) -> dict[str, Any]:
    """The weekly run through the command line, and each stage's profile."""
    started = time.monotonic()
    checked(
        [CLI, "run", "--run-date", RUN_DATE.isoformat(), "--run-id", run_id, "--wait-for-inputs", "0"]
        + ["--env", profile, "--raw", raw, "--work", work],
        env,
    )
    layout = RunLayout(raw=raw, work=work, run_id=run_id)
    stages = {stage: stage_profile(layout, stage, events) for stage in STAGES}
    return {"seconds": time.monotonic() - started, "stages": stages}


def measure(work: Path) -> dict[str, Any]:
    """Local, cold and warm weeks of the tiny world, each stage profiled."""
    hadoop_folder = work / "hadoop"
    minicluster.stop(hadoop_folder)
    with bench_erp(work / "erp" / "pgdata") as server:
        env = {
            **os.environ,
            "MARKDOWN_ERP_DSN": server.dsn,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        local_raw, local_work = work / "local" / "raw", work / "local" / "work"
        checked([CLI, "generate-sample", "--out", str(local_raw), "--run-date", RUN_DATE.isoformat(), *WORLD], env)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%H%M%S")
        runs = {
            "local": run_week(
                env, "local", str(local_raw), str(local_work), f"local-{stamp}", join(str(local_work), "spark-events")
            )
        }
        started = time.monotonic()
        cluster = minicluster.start(hadoop_folder)
        start_s = time.monotonic() - started
        try:
            # Uncompressed on HDFS, as bench/results' figures were measured (event_log reads either).
            site = Path(cluster["MARKDOWN_YARN_SPARK_CONF"])
            site.write_text(site.read_text() + "spark.eventLog.compress false\n")
            yarn_env = {**env, **{key: value for key, value in cluster.items() if key.isupper()}}
            os.environ.update({key: cluster[key] for key in ("HADOOP_CONF_DIR", "MARKDOWN_WEBHDFS_URL")})
            started = time.monotonic()
            deployed = checked([CLI, "deploy", "--env", "yarn"], yarn_env)
            deploy_s = time.monotonic() - started
            raw = "hdfs:///bench/raw"
            checked([CLI, "generate-sample", "--out", raw, "--run-date", RUN_DATE.isoformat(), *WORLD], yarn_env)
            for name in ("cold", "warm"):
                runs[name] = run_week(
                    yarn_env, "yarn", raw, f"hdfs:///bench/work-{name}", name, "hdfs:///spark-history"
                )
        finally:
            minicluster.stop(hadoop_folder)
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
        "hadoop_start_s": start_s,
        "deploy_s": deploy_s,
        "deployed": deployed.strip().splitlines(),
        "runs": runs,
        "ratios": {
            f"{name}_fixed_vs_local": sum(s["fixed_s"] for s in runs[name]["stages"].values())
            / sum(s["fixed_s"] for s in runs["local"]["stages"].values())
            for name in ("cold", "warm")
        },
    }


def table(document: dict[str, Any]) -> str:
    """The Markdown of a measurement: one row per run and stage."""
    lines = [
        f"Run {document['date']} on {document['machine']['cpus']} CPUs, {document['machine']['memory_gb']} GiB: "
        f"the tiny world (3 countries), `make bench-yarn`.",
        "",
        "| run | stage | seconds | to session | to first executor | to first job | jobs | jobs' span | after last job "
        "| fixed (before + after the jobs) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in document["runs"].items():
        for stage, s in run["stages"].items():
            executor = "" if s["to_first_executor_s"] is None else f"{s['to_first_executor_s']:.1f}"
            lines.append(
                f"| {name} | {stage} | {s['seconds']:.1f} | {s['to_session_s']:.1f} | {executor} "
                f"| {s['to_first_job_s']:.1f} | {s['jobs']} | {s['jobs_span_s']:.1f} | {s['after_last_job_s']:.1f} "
                f"| {s['fixed_s']:.1f} ({s['fixed_s'] / s['seconds']:.0%}) |"
            )
    lines += [
        "",
        *(f"- `{key}`: {value:.2f}" for key, value in document["ratios"].items()),
        f"- dev Hadoop start: {document['hadoop_start_s']:.0f} s; `deploy --env yarn`: {document['deploy_s']:.0f} s",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.yarn", description=__doc__)
    parser.add_argument("--work", type=Path, required=True, help="where the dev Hadoop, the worlds and the ERP live")
    parser.add_argument("--results", type=Path, required=True, help="where the JSON and the table go")
    args = parser.parse_args(argv)
    document = measure(args.work.resolve())
    save_results(args.results, "yarn-", document, document["date"][:10])
    (args.results / "yarn-latest.md").write_text(table(document))
    print(table(document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
