"""Dry runs of the spark-submit commands for every profile: YARN shipping, deploy modes, GPUs and secrets."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from psycopg2.extensions import parse_dsn

from markdown_pricing.core.config import Config, ConfigError, YarnSettings, load_config, project_root
from markdown_pricing.core.context import RunContext
from markdown_pricing.core.version import package_version, spark_version
from markdown_pricing.orchestrate.submit import main as submit_main
from markdown_pricing.orchestrate.submit import spark_submit_command, submit_environment

ROOT = project_root()
RUN_DATE = "2026-11-23"
VERSION = package_version()
SECRET = "s3cret-Pa55"
ENV_PYTHON = "./environment/bin/python"

SPARK_VERSION = spark_version()


def dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    """The command `submit.sh <args> --dry-run` prints, split into its arguments."""
    assert submit_main([*args, "--dry-run", "--run-date", RUN_DATE]) == 0
    return shlex.split(capsys.readouterr().out)


def flag(command: list[str], name: str) -> str | None:
    """The value after a flag, or None when the command lacks it."""
    return command[command.index(name) + 1] if name in command else None


def confs(command: list[str]) -> dict[str, str]:
    """The --conf settings of a command."""
    pairs = [command[i + 1].split("=", 1) for i, part in enumerate(command) if part == "--conf"]
    return dict(pairs)


def with_gpu(cfg: Config, mode: str) -> Config:
    return replace(cfg, gpu=replace(cfg.gpu, mode=mode))


def cluster(cfg: Config) -> Config:
    return replace(cfg, spark=replace(cfg.spark, deploy_mode="cluster"))


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A submitting shell with the ERP password in PGPASSWORD, in the DSN and in a pgpass file."""
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"erp.internal:5432:erp:markdown:{SECRET}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSWORD", SECRET)
    monkeypatch.setenv("MARKDOWN_ERP_DSN", f"host=erp.internal dbname=erp user=markdown password={SECRET}")
    monkeypatch.setenv("PGHOST", "erp.internal")
    monkeypatch.setenv("MARKDOWN_PGPASSFILE", str(pgpass))
    monkeypatch.delenv("PGPASSFILE", raising=False)
    return pgpass


def test_dry_run_local_runs_in_process_and_ships_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    command = dry_run(capsys, "etl", "--env", "local")
    assert (flag(command, "--master"), flag(command, "--deploy-mode")) == ("local[2]", "client")
    assert not {"--archives", "--py-files", "--files"} & set(command)
    assert not any(key.startswith("spark.executor.resource.") for key in confs(command))
    ctx = RunContext.create(dt.date.fromisoformat(RUN_DATE))
    assert command[-len(ctx.to_args()) - 1 :] == [str(ROOT / "jobs" / "etl.py"), *ctx.to_args()]


def test_dry_run_standalone_uses_the_spark_master_and_its_executors(capsys: pytest.CaptureFixture[str]) -> None:
    command = dry_run(capsys, "train_score", "--env", "standalone")
    assert flag(command, "--master") == "spark://127.0.0.1:7077"
    assert confs(command)["spark.executor.memory"] == "2g"
    assert "--archives" not in command


def test_dry_run_yarn_client_ships_wheel_and_environment(capsys: pytest.CaptureFixture[str]) -> None:
    command = dry_run(capsys, "train_score", "--env", "yarn")
    conf = confs(command)
    release = f"hdfs:///apps/markdown-pricing/{VERSION}"
    assert (flag(command, "--master"), flag(command, "--deploy-mode")) == ("yarn", "client")
    assert flag(command, "--archives") == f"{release}/environment-{VERSION}.tar.gz#environment"
    assert flag(command, "--py-files") == f"{release}/markdown_pricing-{VERSION}-py3-none-any.whl"
    assert conf["spark.pyspark.python"] == ENV_PYTHON
    assert conf["spark.executorEnv.PYSPARK_PYTHON"] == ENV_PYTHON
    assert conf["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] == ENV_PYTHON
    # The client-mode driver runs here, with this Python.
    assert conf["spark.pyspark.driver.python"] == sys.executable
    assert conf["spark.yarn.queue"] == "markdown"
    assert conf["spark.dynamicAllocation.enabled"] == "true"
    assert conf["spark.dynamicAllocation.shuffleTracking.enabled"] == "true"
    assert conf["spark.eventLog.dir"] == "hdfs:///spark-history"
    assert conf["spark.yarn.archive"] == f"hdfs:///apps/markdown-pricing/spark-{SPARK_VERSION}/spark-jars.zip"
    assert conf["spark.driver.extraJavaOptions"] == f"-Dlog4j2.configurationFile=file:{ROOT}/conf/log4j2.properties"
    assert "{version}" not in " ".join(command) and "{spark_version}" not in " ".join(command)


def test_dry_run_yarn_cluster_sets_no_driver_python_and_ships_pgpass_as_a_file(
    capsys: pytest.CaptureFixture[str], secrets: Path
) -> None:
    command = dry_run(capsys, "publish", "--env", "yarn", "--deploy-mode", "cluster")
    conf = confs(command)
    assert flag(command, "--deploy-mode") == "cluster"
    assert str(flag(command, "--archives")).endswith("#environment")
    assert "spark.pyspark.driver.python" not in conf
    assert "PYSPARK_DRIVER_PYTHON" not in " ".join(command)
    assert conf["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] == ENV_PYTHON
    assert conf["spark.yarn.appMasterEnv.MARKDOWN_HOME"] == "./environment/share/markdown-pricing"
    assert conf["spark.driver.extraJavaOptions"] == (
        "-Dlog4j2.configurationFile=./environment/share/markdown-pricing/conf/log4j2.properties"
    )
    assert flag(command, "--files") == f"{secrets}#pgpass"
    assert conf["spark.yarn.appMasterEnv.PGPASSFILE"] == "pgpass"
    assert conf["spark.yarn.appMasterEnv.PGHOST"] == "erp.internal"
    # The DSN reaches the remote driver without its password.
    dsn = parse_dsn(conf["spark.yarn.appMasterEnv.MARKDOWN_ERP_DSN"])
    assert dsn == {"host": "erp.internal", "dbname": "erp", "user": "markdown"}
    assert SECRET not in " ".join(command)


@pytest.mark.parametrize("deploy_mode", ["client", "cluster"])
def test_spark_submit_command_never_carries_the_password(secrets: Path, deploy_mode: str) -> None:
    cfg = replace(load_config("yarn"), spark=replace(load_config("yarn").spark, deploy_mode=deploy_mode))
    for job in ("etl", "train_score", "publish"):
        command = spark_submit_command(cfg, job, ["--run-date", RUN_DATE], RUN_DATE)
        assert not any(SECRET in part for part in command)


def test_yarn_cluster_refuses_a_password_it_could_only_pass_as_an_argument(
    capsys: pytest.CaptureFixture[str], secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MARKDOWN_PGPASSFILE")
    code = submit_main(["publish", "--env", "yarn", "--deploy-mode", "cluster", "--dry-run", "--run-date", RUN_DATE])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert "set MARKDOWN_PGPASSFILE" in captured.err and SECRET not in captured.err


def test_yarn_cluster_names_a_missing_pgpass_file(tmp_path: Path) -> None:
    environ = {"MARKDOWN_PGPASSFILE": str(tmp_path / "absent")}
    with pytest.raises(ValueError, match="pgpass file .*absent.* does not exist"):
        spark_submit_command(cluster(load_config("yarn")), "publish", [], RUN_DATE, environ)


def test_cluster_deploy_mode_is_refused_off_yarn(capsys: pytest.CaptureFixture[str]) -> None:
    code = submit_main(["etl", "--env", "standalone", "--deploy-mode", "cluster", "--dry-run", "--run-date", RUN_DATE])
    assert code == 2 and "YARN only" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["auto", "required"])
@pytest.mark.parametrize("deploy_mode", ["client", "cluster"])
def test_yarn_gpu_mode_requests_gpus_and_ships_the_discovery_script(mode: str, deploy_mode: str) -> None:
    cfg = with_gpu(load_config("yarn"), mode)
    cfg = cluster(cfg) if deploy_mode == "cluster" else cfg
    command = spark_submit_command(cfg, "train_score", ["--run-date", RUN_DATE], RUN_DATE, environ={})
    conf = confs(command)
    assert conf["spark.executor.resource.gpu.amount"] == "1"
    assert conf["spark.task.resource.gpu.amount"] == "0.25"
    assert conf["spark.executor.resource.gpu.discoveryScript"] == "./getGpusResources.sh"
    assert flag(command, "--files") == str(ROOT / "spark-submit" / "getGpusResources.sh")


def test_gpu_mode_off_or_local_spark_requests_no_gpus() -> None:
    for cfg in (with_gpu(load_config("yarn"), "off"), with_gpu(load_config("local"), "required")):
        command = spark_submit_command(cfg, "train_score", ["--run-date", RUN_DATE], RUN_DATE, environ={})
        assert not any("resource.gpu" in key for key in confs(command))
        assert "--files" not in command


def test_gpu_conf_written_in_conf_wins_over_the_gpu_table() -> None:
    cfg = with_gpu(load_config("yarn"), "auto")
    conf = {**cfg.spark.conf, "spark.task.resource.gpu.amount": "0.5"}
    cfg = replace(cfg, spark=replace(cfg.spark, conf=conf))
    command = spark_submit_command(cfg, "train_score", [], RUN_DATE, environ={})
    assert confs(command)["spark.task.resource.gpu.amount"] == "0.5"


def test_yarn_gpu_and_pgpass_share_one_files_list(secrets: Path) -> None:
    cfg = cluster(with_gpu(load_config("yarn"), "required"))
    command = spark_submit_command(cfg, "train_score", [], RUN_DATE)
    assert command.count("--files") == 1
    assert flag(command, "--files") == f"{ROOT / 'spark-submit' / 'getGpusResources.sh'},{secrets}#pgpass"


def test_unknown_gpu_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="gpu mode 'maybe'"):
        spark_submit_command(with_gpu(load_config("yarn"), "maybe"), "etl", [], RUN_DATE, environ={})


def test_discovery_script_prints_the_gpus_nvidia_smi_lists(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    fake.chmod(0o755)
    result = subprocess.run(
        [str(ROOT / "spark-submit" / "getGpusResources.sh")],
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == {"name": "gpu", "addresses": ["0", "1"]}


def test_submit_environment_keeps_local_pythons_from_a_cluster_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSPARK_PYTHON", "/home/me/.venv/bin/python")
    monkeypatch.setenv("PYSPARK_DRIVER_PYTHON", "/home/me/.venv/bin/python")
    env = submit_environment(cluster(load_config("yarn")))
    assert "PYSPARK_PYTHON" not in env and "PYSPARK_DRIVER_PYTHON" not in env
    assert submit_environment(load_config("yarn"))["PYSPARK_PYTHON"] == "/home/me/.venv/bin/python"


def test_submit_script_prints_the_yarn_cluster_command() -> None:
    result = subprocess.run(
        [
            str(ROOT / "spark-submit" / "submit.sh"),
            "etl",
            "--env",
            "yarn",
            "--deploy-mode",
            "cluster",
            "--dry-run",
            "--run-date",
            RUN_DATE,
        ],
        env={key: value for key, value in os.environ.items() if not key.startswith("PG")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--master yarn --deploy-mode cluster" in result.stdout
    assert "#environment" in result.stdout


def test_make_package_builds_the_files_the_yarn_profile_ships() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^package:", makefile, re.MULTILINE)
    assert "pip wheel --quiet --no-deps -w dist ." in makefile and "venv-pack" in makefile
    variables = dict(re.findall(r"^(WHEEL|ENV_ARCHIVE) := (\S+)$", makefile, re.MULTILINE))
    conf = load_config("yarn").spark.conf
    shipped = {
        "WHEEL": conf["spark.submit.pyFiles"],
        "ENV_ARCHIVE": conf["spark.archives"].removesuffix("#environment"),
    }
    for name, uri in shipped.items():
        built = variables[name].replace("$(VERSION)", "{version}")
        assert uri.rsplit("/", 1)[1] == built.rsplit("/", 1)[1], name


IMAGE = "registry.example.com/markdown-pricing:0.1.0-abc1234"
IMAGE_PYTHON = "/opt/venv/bin/python"
MOUNTS = "/etc/passwd:/etc/passwd:ro,/etc/group:/etc/group:ro,/etc/hadoop/conf:/etc/hadoop/conf:ro"
IMAGE_JAVA = "/usr/lib/jvm/java-17-openjdk-amd64"


def without_confs_and_shipping(command: list[str]) -> list[str]:
    """A command less its --conf settings and what it ships: the part a container image leaves as it is."""
    dropped = {"--conf", "--archives", "--py-files"}
    return [part for i, part in enumerate(command) if part not in dropped and command[i - 1] not in dropped]


@pytest.mark.parametrize("deploy_mode", ["client", "cluster"])
def test_yarn_image_runs_the_containers_in_it_and_ships_no_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, deploy_mode: str
) -> None:
    for variable in ("MARKDOWN_YARN_IMAGE", "MARKDOWN_ERP_DSN", "PGPASSWORD", "MARKDOWN_PGPASSFILE", "PGPASSFILE"):
        monkeypatch.delenv(variable, raising=False)
    archive = dry_run(capsys, "train_score", "--env", "yarn", "--deploy-mode", deploy_mode)
    monkeypatch.setenv("MARKDOWN_YARN_IMAGE", IMAGE)
    image = dry_run(capsys, "train_score", "--env", "yarn", "--deploy-mode", deploy_mode)

    before, after = confs(archive), confs(image)
    docker = {
        "YARN_CONTAINER_RUNTIME_TYPE": "docker",
        "YARN_CONTAINER_RUNTIME_DOCKER_IMAGE": IMAGE,
        "YARN_CONTAINER_RUNTIME_DOCKER_MOUNTS": MOUNTS,
        "JAVA_HOME": IMAGE_JAVA,
        "PYSPARK_PYTHON": IMAGE_PYTHON,
    }
    expected = {
        **{f"spark.executorEnv.{name}": value for name, value in docker.items()},
        **{f"spark.yarn.appMasterEnv.{name}": value for name, value in docker.items()},
        "spark.yarn.appMasterEnv.MARKDOWN_HOME": "/opt/markdown-pricing",
        "spark.pyspark.python": IMAGE_PYTHON,
    }
    if deploy_mode == "cluster":
        # The remote driver logs with the image's conf/.
        expected["spark.driver.extraJavaOptions"] = (
            "-Dlog4j2.configurationFile=/opt/markdown-pricing/conf/log4j2.properties"
        )
    assert {key: value for key, value in after.items() if before.get(key) != value} == expected
    assert set(before) - set(after) == set()
    assert "--archives" in archive and "--py-files" in archive
    assert not {"--archives", "--py-files"} & set(image)
    # Spark's jars still come from HDFS; everything else on the command line stays as it was.
    assert after["spark.yarn.archive"] == before["spark.yarn.archive"]
    assert without_confs_and_shipping(image) == without_confs_and_shipping(archive)
    if deploy_mode == "client":
        assert after["spark.pyspark.driver.python"] == sys.executable
    else:
        assert "spark.pyspark.driver.python" not in after


def test_yarn_image_from_conf_takes_its_mounts_and_java_and_leaves_other_masters_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MARKDOWN_YARN_IMAGE", raising=False)
    yarn = load_config("yarn")
    own = replace(yarn.yarn, container_image=IMAGE, container_mounts=(), container_java_home="/opt/java")
    conf = confs(spark_submit_command(replace(yarn, yarn=own), "etl", [], RUN_DATE, environ={}))
    assert conf["spark.executorEnv.JAVA_HOME"] == conf["spark.yarn.appMasterEnv.JAVA_HOME"] == "/opt/java"
    # No mounts asked for: no empty mount list either.
    assert not any(key.endswith("YARN_CONTAINER_RUNTIME_DOCKER_MOUNTS") for key in conf)
    for env in ("local", "standalone"):
        cfg = load_config(env)
        command = spark_submit_command(replace(cfg, yarn=own), "etl", [], RUN_DATE, environ={})
        assert "YARN_CONTAINER_RUNTIME" not in " ".join(command)


@pytest.mark.parametrize(
    "image",
    [
        "registry.example.com/markdown-pricing:0.1.0 --privileged",
        "markdown-pricing:0.1.0;rm -rf /",
        "markdown-pricing:$(id)",
        "markdown-pricing:`id`",
        "markdown-pricing:0.1.0,other:1",
        "Markdown-Pricing:0.1.0",
        "markdown-pricing:0.1.0 ",
    ],
)
def test_yarn_image_that_is_no_image_reference_is_refused_at_load(monkeypatch: pytest.MonkeyPatch, image: str) -> None:
    monkeypatch.setenv("MARKDOWN_YARN_IMAGE", image)
    with pytest.raises(ConfigError, match=r"MARKDOWN_YARN_IMAGE\) .* is not a Docker image reference"):
        load_config("yarn")


def test_yarn_image_references_of_registries_tags_and_digests_load(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    for image in (
        "localhost/markdown-pricing:0.1.0-abc1234",
        "registry.example.com:5000/team/markdown-pricing:0.1.0",
        f"registry.example.com/markdown-pricing@{digest}",
        "markdown_pricing",
    ):
        monkeypatch.setenv("MARKDOWN_YARN_IMAGE", image)
        assert load_config("yarn").yarn.container_image == image
    monkeypatch.setenv("MARKDOWN_YARN_IMAGE", "")
    assert load_config("yarn").yarn.container_image == ""


def test_yarn_container_mounts_and_java_home_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match=r"container_mounts '/etc/passwd:/etc/passwd:ro /x:/x'"):
        YarnSettings(container_mounts=("/etc/passwd:/etc/passwd:ro /x:/x",))
    with pytest.raises(ConfigError, match="container_mounts 'etc/group:/etc/group:ro'"):
        YarnSettings(container_mounts=("etc/group:/etc/group:ro",))
    with pytest.raises(ConfigError, match="container_java_home 'java' is not an absolute path"):
        YarnSettings(container_java_home="java")
    assert YarnSettings(container_mounts=("/var/lib/sss/pipes:/var/lib/sss/pipes:rw+rshared",)).container_mounts
