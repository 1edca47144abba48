"""What a YARN run ships and where from, the site's Spark settings, and the dev Hadoop's clear errors: no cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from markdown_pricing.core.config import ConfigError, load_config, site_spark_conf
from markdown_pricing.core.version import package_version, spark_version
from markdown_pricing.hadoop import minicluster
from markdown_pricing.orchestrate import cli, deploy
from markdown_pricing.orchestrate.deploy import DeployError, environment_outdated, missing_release, release_uris


def test_site_spark_conf_reads_spark_defaults_lines(tmp_path: Path) -> None:
    site = tmp_path / "spark-yarn.conf"
    site.write_text("# a comment\n\nspark.yarn.queue  analytics\nspark.driver.extraJavaOptions -Da=b -Dc=d\nx.y=z w\n")

    assert site_spark_conf(str(site)) == {
        "spark.yarn.queue": "analytics",
        "spark.driver.extraJavaOptions": "-Da=b -Dc=d",
        "x.y": "z w",
    }
    site.write_text("spark.yarn.queue\n")
    with pytest.raises(ConfigError, match=r"spark-yarn.conf:1: expected `key value`"):
        site_spark_conf(str(site))


def test_site_settings_and_deploy_mode_reach_the_yarn_profile_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "spark-yarn.conf"
    site.write_text("spark.yarn.queue default\nspark.executor.memory 1g\n")
    monkeypatch.setenv("MARKDOWN_YARN_SPARK_CONF", str(site))
    monkeypatch.setenv("MARKDOWN_DEPLOY_MODE", "cluster")

    yarn = load_config("yarn")

    assert (yarn.spark.conf["spark.yarn.queue"], yarn.spark.conf["spark.executor.memory"]) == ("default", "1g")
    assert yarn.spark.deploy_mode == "cluster"
    assert "spark.yarn.queue" not in load_config("local").spark.conf


def test_release_ships_the_wheel_the_environment_and_sparks_jars_from_hdfs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MARKDOWN_YARN_SPARK_CONF", raising=False)
    version = package_version()

    assert release_uris(load_config("yarn")) == {
        "spark.submit.pyFiles": f"hdfs:///apps/markdown-pricing/{version}/markdown_pricing-{version}-py3-none-any.whl",
        "spark.archives": f"hdfs:///apps/markdown-pricing/{version}/environment-{version}.tar.gz",
        "spark.yarn.archive": f"hdfs:///apps/markdown-pricing/spark-{spark_version()}/spark-jars.zip",
    }
    assert release_uris(load_config("local")) == {}
    assert missing_release(load_config("local")) == []


def test_a_release_in_the_image_is_sparks_jars_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MARKDOWN_YARN_SPARK_CONF", raising=False)
    monkeypatch.setenv("MARKDOWN_YARN_IMAGE", "registry.example.com/markdown-pricing:0.1.0")
    cfg = load_config("yarn")
    jars = f"hdfs:///apps/markdown-pricing/spark-{spark_version()}/spark-jars.zip"
    asked = []

    class NothingOnHdfs:
        def exists(self, uri: str) -> bool:
            asked.append(uri)
            return False

    monkeypatch.setattr(deploy, "filesystem", lambda uri: NothingOnHdfs())

    assert release_uris(cfg) == {"spark.yarn.archive": jars}
    assert missing_release(cfg) == [jars] and asked == [jars]


def test_a_release_check_without_a_cluster_configuration_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("HADOOP_CONF_DIR", "MARKDOWN_WEBHDFS_URL"):
        monkeypatch.delenv(variable, raising=False)

    with pytest.raises(DeployError, match="set HADOOP_CONF_DIR"):
        missing_release(load_config("yarn"))


def test_deploy_of_a_profile_without_a_release_on_hdfs_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["deploy", "--env", "local"]) == 1
    assert "deploy is for --env yarn" in capsys.readouterr().err


def test_dev_hadoop_runs_the_hadoop_of_the_pyspark_wheel() -> None:
    assert minicluster.hadoop_client_version() == "3.4.2"


def test_dev_hadoop_without_maven_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(minicluster.HadoopError, match="mvn not found.*apt-get install maven"):
        minicluster.fetch_jars("3.4.2", cache=tmp_path / "cache")


def test_dev_hadoop_stop_without_a_cluster_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["hadoop", "stop", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "not running"


def test_the_environment_archive_is_rebuilt_when_conf_changed_after_it(tmp_path: Path) -> None:
    conf, archive = tmp_path / "conf", tmp_path / "environment.tar.gz"
    (conf / "erp").mkdir(parents=True)
    (conf / "erp" / "role.sql").write_text("-- a")
    assert environment_outdated(archive, conf)
    archive.write_bytes(b"archive")
    os.utime(conf / "erp" / "role.sql", (1_000_000, 1_000_000))
    assert not environment_outdated(archive, conf)
    (conf / "base.toml").write_text("[run]")
    assert environment_outdated(archive, conf)
