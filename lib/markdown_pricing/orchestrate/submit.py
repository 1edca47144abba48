"""Builds spark-submit command lines from conf/: the one source for submit.sh and the Luigi tasks."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from psycopg2 import ProgrammingError
from psycopg2.extensions import make_dsn, parse_dsn

from markdown_pricing.core.application import app_name, event_log_conf
from markdown_pricing.core.config import Config
from markdown_pricing.core.context import RunContext, load_run_config
from markdown_pricing.core.version import package_version, pip_spark_home, spark_version

JOBS = ("etl", "train_score", "publish")
DEPLOY_MODES = ("client", "cluster")
# What spark-submit ships has flags of its own; conf/ names them by their Spark keys so that one table holds every
# setting, and the command shows them as flags (one --files list: a --files flag would replace spark.files).
SHIPPING_FLAGS = {"spark.archives": "--archives", "spark.submit.pyFiles": "--py-files", "spark.files": "--files"}
# Replaced in conf values by the package's and pyspark's versions, so one conf/yarn.toml serves every release.
VERSION_PLACEHOLDER, SPARK_VERSION_PLACEHOLDER = "{version}", "{spark_version}"
# A YARN cluster-mode driver runs on a NodeManager and sees none of the submitting shell's environment. These are
# what it reads from there (libpq's target, the path overrides, WebHDFS), none of them secret.
DRIVER_ENVIRONMENT = (
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGSSLMODE",
    "PGCONNECT_TIMEOUT",
    "MARKDOWN_RAW",
    "MARKDOWN_WORK",
    "MARKDOWN_WEBHDFS_URL",
    "MARKDOWN_WEBHDFS_KERBEROS",
    "HADOOP_USER_NAME",
)
# The pgpass file that carries the ERP password to a cluster-mode driver, and its name in the driver's folder.
PGPASSFILE_ENV = "MARKDOWN_PGPASSFILE"
PGPASS_NAME = "pgpass"
# Where docker/Dockerfile puts the pinned environment's Python and the project (conf/, jobs/) in the image.
IMAGE_PYTHON, IMAGE_HOME = "/opt/venv/bin/python", "/opt/markdown-pricing"
# What the image holds already, so that a run in it ships neither: the environment archive and the wheel.
SHIPPED_IN_THE_IMAGE = ("spark.archives", "spark.submit.pyFiles")


class SubmitError(ValueError):
    """Raised when a job cannot be submitted as configured."""


def with_release(value: str) -> str:
    """A conf value with the release placeholders filled in."""
    return value.replace(VERSION_PLACEHOLDER, package_version()).replace(SPARK_VERSION_PLACEHOLDER, spark_version())


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


def is_yarn_cluster(cfg: Config) -> bool:
    """Whether the driver runs on the cluster (YARN cluster deploy mode) rather than where spark-submit runs."""
    return cfg.spark.deploy_mode == "cluster"


def container_image(cfg: Config) -> str:
    """The image YARN runs the containers in, or "" when they unpack the shipped environment archive instead."""
    return cfg.yarn.container_image if cfg.spark.master == "yarn" else ""


def image_conf(cfg: Config, image: str) -> dict[str, str]:
    """The settings that run the application master, the executors and a cluster-mode driver in the image, on
    YARN's Docker runtime, with the image's Java and Python and its conf/."""
    environment = {
        "YARN_CONTAINER_RUNTIME_TYPE": "docker",
        "YARN_CONTAINER_RUNTIME_DOCKER_IMAGE": image,
        "YARN_CONTAINER_RUNTIME_DOCKER_MOUNTS": ",".join(cfg.yarn.container_mounts),
        "JAVA_HOME": cfg.yarn.container_java_home,
        "PYSPARK_PYTHON": IMAGE_PYTHON,
    }
    conf = {
        f"{prefix}.{name}": value
        for prefix in ("spark.executorEnv", "spark.yarn.appMasterEnv")
        for name, value in environment.items()
        if value
    }
    return {**conf, "spark.pyspark.python": IMAGE_PYTHON, "spark.yarn.appMasterEnv.MARKDOWN_HOME": IMAGE_HOME}


def profile_conf(cfg: Config) -> dict[str, str]:
    """The profile's Spark settings, switched to the image when one is named: what a submit sets, and what ships."""
    conf = dict(cfg.spark.conf)
    if not (image := container_image(cfg)):
        return conf
    for key in SHIPPED_IN_THE_IMAGE:
        conf.pop(key, None)
    return {**conf, **image_conf(cfg, image)}


def gpu_conf(cfg: Config) -> dict[str, str]:
    """Spark's GPU scheduling settings for the [gpu] table: none when off, or on local Spark, which has no GPU slots."""
    if cfg.gpu.mode == "off" or cfg.spark.master.startswith("local"):
        return {}
    conf = {
        "spark.executor.resource.gpu.amount": str(cfg.gpu.executor_amount),
        # A fraction: 1/amount tasks, one country each, share a GPU when the executor has that many task slots.
        "spark.task.resource.gpu.amount": str(cfg.gpu.task_amount),
    }
    if cfg.spark.master == "yarn":
        # YARN gives a container its GPUs without telling Spark which: the executor runs this script (shipped with
        # --files into its working folder) to find out. Standalone workers run their own script.
        conf["spark.executor.resource.gpu.discoveryScript"] = f"./{Path(cfg.gpu.discovery_script).name}"
    return conf


def erp_driver_conf(environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The ERP connection for a cluster-mode driver: its environment conf and the files to ship, never a password.

    The password travels only inside a pgpass file (MARKDOWN_PGPASSFILE, else PGPASSFILE) shipped with --files.
    """
    conf = {f"spark.yarn.appMasterEnv.{name}": environ[name] for name in DRIVER_ENVIRONMENT if environ.get(name)}
    has_password = bool(environ.get("PGPASSWORD"))
    if dsn := environ.get("MARKDOWN_ERP_DSN"):
        try:
            parts = parse_dsn(dsn)
        except ProgrammingError as err:
            raise SubmitError("MARKDOWN_ERP_DSN is not a valid libpq connection string") from err
        has_password = parts.pop("password", None) is not None or has_password
        conf["spark.yarn.appMasterEnv.MARKDOWN_ERP_DSN"] = make_dsn(**parts)
    pgpass = environ.get(PGPASSFILE_ENV) or environ.get("PGPASSFILE")
    if not pgpass:
        if has_password:
            raise SubmitError(
                "in YARN cluster mode the driver runs on the cluster and cannot see PGPASSWORD or a password in "
                f"MARKDOWN_ERP_DSN; put it in a pgpass file and set {PGPASSFILE_ENV} to its path"
            )
        return conf, []
    if not Path(pgpass).is_file():
        raise SubmitError(f"pgpass file {pgpass} (from {PGPASSFILE_ENV} or PGPASSFILE) does not exist")
    conf["spark.yarn.appMasterEnv.PGPASSFILE"] = PGPASS_NAME
    return conf, [f"{Path(pgpass).resolve()}#{PGPASS_NAME}"]


def spark_submit_command(
    cfg: Config,
    job: str,
    job_args: Sequence[str],
    run_date: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """The exact spark-submit command for a job; secrets are never part of it.

    `cfg` carries the job's paths: the event log goes to its work folder unless conf/ names one. `environ` (default:
    this process's) supplies what a YARN cluster-mode driver needs from the submitting shell.
    """
    if cfg.spark.deploy_mode not in DEPLOY_MODES:
        raise SubmitError(f"unknown deploy mode {cfg.spark.deploy_mode!r}: expected one of {', '.join(DEPLOY_MODES)}")
    if is_yarn_cluster(cfg) and cfg.spark.master != "yarn":
        raise SubmitError("cluster deploy mode runs Python drivers on YARN only; use --deploy-mode client")
    command = [
        spark_submit_binary(),
        "--master",
        cfg.spark.master,
        "--deploy-mode",
        cfg.spark.deploy_mode,
        "--name",
        app_name(cfg, job.replace("_", "-"), run_date),
    ]
    gpu = gpu_conf(cfg)
    # Settings written in conf/ win over the ones derived from the [gpu] table.
    conf = {**gpu, **profile_conf(cfg), **event_log_conf(cfg)}
    conf = {key: with_release(value) for key, value in conf.items()}
    shipped = {flag: conf.pop(key).split(",") for key, flag in SHIPPING_FLAGS.items() if key in conf}
    if "spark.executor.resource.gpu.discoveryScript" in gpu:
        shipped.setdefault("--files", []).append(str(cfg.project_root / cfg.gpu.discovery_script))
    if is_yarn_cluster(cfg):
        erp_conf, erp_files = erp_driver_conf(os.environ if environ is None else environ)
        conf.update(erp_conf)
        shipped.setdefault("--files", []).extend(erp_files)
        # The driver's home (conf/) comes with the environment archive or the image, so does its log4j2 configuration.
        if home := conf.get("spark.yarn.appMasterEnv.MARKDOWN_HOME"):
            log4j_option = f"-Dlog4j2.configurationFile={home}/conf/log4j2.properties"
            conf.setdefault("spark.driver.extraJavaOptions", log4j_option)
    else:
        log4j = cfg.project_root / "conf" / "log4j2.properties"
        if log4j.exists():
            conf.setdefault("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j}")
        if "spark.pyspark.python" in conf:
            # The executors' Python lives in the shipped environment; the local driver runs this one.
            conf.setdefault("spark.pyspark.driver.python", sys.executable)
    for flag, paths in shipped.items():
        if paths:
            command += [flag, ",".join(paths)]
    for key, value in sorted(conf.items()):
        command += ["--conf", f"{key}={value}"]
    return [*command, str(job_script(cfg, job)), *job_args]


def submit_environment(cfg: Config) -> dict[str, str]:
    """Environment for the spark-submit process: this Python for driver and local executors, and none of the
    alerts' secrets, which only the command that sends the alert reads."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in (cfg.alerts.smtp_password_env, cfg.alerts.webhook_url_env)
    }
    # spark-submit finds its home through whatever `python3` is on PATH unless told: the pip pyspark's is this one.
    if home := pip_spark_home():
        env.setdefault("SPARK_HOME", home)
    if cfg.spark.master.startswith("local"):
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if is_yarn_cluster(cfg):
        # YARN's client copies these to the remote driver, where local interpreter paths mean nothing.
        env.pop("PYSPARK_PYTHON", None)
        env.pop("PYSPARK_DRIVER_PYTHON", None)
    return env


def job_command(cfg: Config, job: str, ctx: RunContext, environ: Mapping[str, str] | None = None) -> list[str]:
    """The spark-submit command of one job of a run: what the Luigi tasks and submit.sh run."""
    return spark_submit_command(cfg, job, ctx.to_args(), ctx.run_date.isoformat(), environ)


def main(argv: Sequence[str] | None = None) -> int:
    """`submit.sh <job> [--deploy-mode MODE] [--dry-run] <run arguments>`: prints or runs the job's command."""
    parser = argparse.ArgumentParser(prog="spark-submit/submit.sh")
    parser.add_argument("job", choices=JOBS)
    parser.add_argument("--deploy-mode", choices=DEPLOY_MODES, help="default: [spark] deploy_mode of the environment")
    parser.add_argument("--dry-run", action="store_true", help="print the command and exit")
    args, run_args = parser.parse_known_args(argv)
    ctx = RunContext.from_args(run_args)
    cfg = load_run_config(ctx)
    if args.deploy_mode:
        cfg = replace(cfg, spark=replace(cfg.spark, deploy_mode=args.deploy_mode))
    try:
        command = job_command(cfg, args.job, ctx)
    except SubmitError as err:
        print(f"spark-submit/submit.sh: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(shlex.join(command))
        return 0
    os.execvpe(command[0], command, submit_environment(cfg))


if __name__ == "__main__":
    raise SystemExit(main())
