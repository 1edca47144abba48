"""docker/ without a Docker engine: the image's pins match setup.py, the dev cluster matches conf/yarn.toml."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from bench.train_scale import size_mb

from markdown_pricing.core.config import load_config, project_root, site_spark_conf
from markdown_pricing.orchestrate.cli import parser
from markdown_pricing.orchestrate.submit import IMAGE_HOME, IMAGE_PYTHON

ROOT = project_root()
DOCKER = ROOT / "docker"
YARN_SERVICES = ("namenode", "datanode", "resourcemanager", "nodemanager", "historyserver", "erp", "luigid")


def install_requires() -> set[str]:
    """setup.py's install_requires, read from its source."""
    for node in ast.walk(ast.parse((ROOT / "setup.py").read_text())):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return set(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no install_requires")


def image_requirements(dockerfile: str) -> set[str]:
    """The quoted requirements of the Dockerfile's dependency layer (the pip install before the package's)."""
    layer = re.search(
        r"^RUN [^\n]*pip install --no-cache-dir --no-index [^\n]*\\\n(.*?)\n\n", dockerfile, re.MULTILINE | re.DOTALL
    )
    assert layer, "no dependency layer in docker/Dockerfile"
    return set(re.findall(r'"([^"]+)"', layer.group(1)))


def hadoop_properties(name: str) -> dict[str, str]:
    """The properties of one of the dev cluster's Hadoop configuration files."""
    root = ET.parse(DOCKER / "hadoop" / name).getroot()
    return {prop.findtext("name", ""): prop.findtext("value", "") for prop in root.iter("property")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def test_image_installs_exactly_the_pins_of_setup_py() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert image_requirements(dockerfile) == install_requires()
    assert "pip install --no-cache-dir --no-deps --no-build-isolation ." in dockerfile


def test_image_has_java_17_and_leaves_the_entrypoint_to_yarn() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "openjdk-17-jre-headless" in dockerfile
    assert not re.search(r"^ENTRYPOINT", dockerfile, re.MULTILINE)
    assert re.search(r"^FROM runtime AS nodemanager$", dockerfile, re.MULTILINE)


def test_compose_names_the_services_the_yarn_profile_uses(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(YARN_SERVICES) <= set(services)
    assert services["nodemanager"]["build"]["target"] == "nodemanager"
    command = services["pipeline"]["command"]
    args = parser().parse_args(command[command.index("markdown-pricing") + 1 :])
    # Scheduled through the compose file's own luigid, whose task history lives in a volume.
    assert (args.command, args.env, args.scheduler_url) == ("run", "yarn", "http://luigid:8082/")
    assert services["luigid"]["environment"]["LUIGID_STATE_DIR"] == "/var/lib/luigid"


def test_compose_mounts_files_that_exist(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (DOCKER / source).is_file(), source


def test_dev_cluster_serves_the_paths_and_queue_of_the_yarn_profile(compose: dict[str, Any]) -> None:
    cfg = load_config("yarn")
    conf = cfg.spark.conf
    # The profile names no host: its paths are the default filesystem, which the cluster's core-site.xml names.
    for uri in (cfg.paths.raw, cfg.paths.work, conf["spark.eventLog.dir"], conf["spark.archives"]):
        assert uri.startswith("hdfs:///"), uri
    namenode = urlparse(hadoop_properties("core-site.xml")["fs.defaultFS"]).netloc
    assert hadoop_properties("hdfs-site.xml")["dfs.namenode.rpc-address"] == namenode == "namenode:8020"
    queues = hadoop_properties("capacity-scheduler.xml")["yarn.scheduler.capacity.root.queues"].split(",")
    assert conf["spark.yarn.queue"] in queues
    pipeline = compose["services"]["pipeline"]
    site_conf = pipeline["environment"]["MARKDOWN_YARN_SPARK_CONF"]
    mounted = {target: source for source, target, _ in (volume.split(":") for volume in pipeline["volumes"])}
    site = site_spark_conf(str(DOCKER / mounted[site_conf]))
    history_host, history_port = site["spark.yarn.historyServer.address"].split(":")
    history = compose["services"][history_host]
    assert f"127.0.0.1:{history_port}:{history_port}" in history["ports"]
    event_log = f"hdfs://{namenode}{urlparse(conf['spark.eventLog.dir']).path}"
    assert f"spark.history.fs.logDirectory={event_log}" in history["environment"]["SPARK_HISTORY_OPTS"]
    assert hadoop_properties("yarn-site.xml")["yarn.resourcemanager.hostname"] in compose["services"]


def test_dev_clusters_nodemanager_takes_the_executors_its_site_file_sizes(compose: dict[str, Any]) -> None:
    pipeline = compose["services"]["pipeline"]
    mounted = {target: source for source, target, _ in (volume.split(":") for volume in pipeline["volumes"])}
    site = site_spark_conf(str(DOCKER / mounted[pipeline["environment"]["MARKDOWN_YARN_SPARK_CONF"]]))
    conf = {**load_config("yarn").spark.conf, **site}
    heap = size_mb(conf["spark.executor.memory"])
    # What YARN is asked for per executor: heap, Spark's default overhead (10 %, at least 384 MB), the Python workers.
    container = heap + max(384, heap / 10) + size_mb(conf["spark.executor.pyspark.memory"])
    yarn = hadoop_properties("yarn-site.xml")
    assert container <= int(yarn["yarn.scheduler.maximum-allocation-mb"])
    assert 2 * container <= int(yarn["yarn.nodemanager.resource.memory-mb"])


def test_image_paths_are_those_the_yarn_image_mode_runs() -> None:
    # submit.py runs YARN containers in the image with its Python, its MARKDOWN_HOME and [yarn] container_java_home.
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert f"PYSPARK_PYTHON={IMAGE_PYTHON}" in dockerfile
    assert f"RUN python3 -m venv {IMAGE_PYTHON.removesuffix('/bin/python')}" in dockerfile
    assert f"MARKDOWN_HOME={IMAGE_HOME}" in dockerfile and f"WORKDIR {IMAGE_HOME}" in dockerfile
    assert f"JAVA_HOME={load_config('yarn').yarn.container_java_home}" in dockerfile
    assert "openjdk-17-jre-headless" in dockerfile
