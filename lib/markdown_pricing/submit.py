"""Builds spark-submit command lines from conf/: the one source for submit.sh and the Luigi tasks."""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from markdown_pricing.config import ENVIRONMENTS, Config, load_config, with_paths
from markdown_pricing.spark import app_name, event_log_conf

JOBS = ("etl", "train_score", "publish")


def spark_submit_binary() -> str:
    """spark-submit from SPARK_HOME, else the one pip's pyspark put next to this Python."""
    if home := os.environ.get("SPARK_HOME"):
        return str(Path(home) / "bin" / "spark-submit")
    beside_python = Path(sys.executable).parent / "spark-submit"
    return str(beside_python) if beside_python.exists() else shutil.which("spark-submit") or "spark-submit"


def job_script(cfg: Config, job: str) -> Path:
    """The entry point file of a job."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}: expected one of {', '.join(JOBS)}")
    return cfg.project_root / "jobs" / f"{job}.py"


def spark_submit_command(cfg: Config, job: str, job_args: Sequence[str], run_date: str | None = None) -> list[str]:
    """The exact spark-submit command for a job; secrets are never part of it.

    `cfg` carries the job's paths: the event log goes to its work folder unless conf/ names one.
    """
    command = [
        spark_submit_binary(),
        "--master",
        cfg.spark.master,
        "--deploy-mode",
        cfg.spark.deploy_mode,
        "--name",
        app_name(cfg, job.replace("_", "-"), run_date),
    ]
    log4j = cfg.project_root / "conf" / "log4j2.properties"
    conf = {**cfg.spark.conf, **event_log_conf(cfg)}
    if log4j.exists():
        conf.setdefault("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j}")
    for key, value in sorted(conf.items()):
        command += ["--conf", f"{key}={value}"]
    return [*command, str(job_script(cfg, job)), *job_args]


def submit_environment(cfg: Config) -> dict[str, str]:
    """Environment for the spark-submit process: this Python for driver and local executors."""
    env = dict(os.environ)
    if cfg.spark.master.startswith("local"):
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """`submit.sh <job> --env ENV [--dry-run] [job options]`: prints or runs the spark-submit command."""
    parser = argparse.ArgumentParser(prog="spark-submit/submit.sh")
    parser.add_argument("job", choices=JOBS)
    parser.add_argument("--env", choices=ENVIRONMENTS, default="local")
    parser.add_argument("--dry-run", action="store_true", help="print the command and exit")
    args, job_args = parser.parse_known_args(argv)
    # Read, not consumed: the job gets them too, and the command needs the work folder and run date.
    paths = argparse.ArgumentParser(add_help=False)
    for option in ("--run-date", "--raw", "--work"):
        paths.add_argument(option)
    known = paths.parse_known_args(job_args)[0]
    cfg = with_paths(load_config(args.env), raw=known.raw, work=known.work)
    command = spark_submit_command(cfg, args.job, [*job_args, "--env", args.env], known.run_date)
    if args.dry_run:
        print(shlex.join(command))
        return 0
    os.execvpe(command[0], command, submit_environment(cfg))


if __name__ == "__main__":
    raise SystemExit(main())
