"""A single-node HDFS and YARN on 127.0.0.1 for development and tests: `markdown-pricing hadoop start|stop`.

Apache Hadoop's own MiniDFSCluster (a NameNode and a DataNode) and MiniYARNCluster (a ResourceManager and a
NodeManager whose containers are separate JVMs), from org.apache.hadoop:hadoop-client-minicluster at the version of
the pyspark wheel's Hadoop client, fetched with Maven into a cache outside the repository and run in the background
by MiniHadoop.java (a single-file Java program). The cluster writes a HADOOP_CONF_DIR; this module adds the Spark
settings that fit its small NodeManager (MARKDOWN_YARN_SPARK_CONF), so the yarn profile keeps production's sizes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from importlib.resources import files
from pathlib import Path

from markdown_pricing.core.version import pip_spark_home

# Where the jars go: one folder per Hadoop version, shared by every checkout.
CACHE_ENV = "MARKDOWN_CACHE"
DEFAULT_CACHE = Path("~/.cache/markdown-pricing")
# The JVM of the cluster: Hadoop reflects into java.lang on Java 17.
JAVA_OPTIONS = ("-Xmx1g", "-XX:+UseSerialGC", "--add-opens=java.base/java.lang=ALL-UNNAMED")
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 120.0
# What a run on the dev cluster asks of YARN: its one NodeManager has 8 GB and 4 vcores, and its only queue is
# `default`. A production cluster keeps the profile's sizes.
DEV_SPARK_CONF = {
    "spark.yarn.queue": "default",
    "spark.driver.memory": "512m",
    "spark.yarn.am.memory": "512m",
    "spark.executor.memory": "1g",
    "spark.executor.cores": "1",
    "spark.executor.pyspark.memory": "2g",
    "spark.dynamicAllocation.maxExecutors": "2",
    "spark.yarn.maxAppAttempts": "1",
    # This machine's name may resolve to an address the containers cannot serve on: everything stays on loopback.
    "spark.yarn.appMasterEnv.SPARK_LOCAL_IP": "127.0.0.1",
    "spark.executorEnv.SPARK_LOCAL_IP": "127.0.0.1",
}


class HadoopError(RuntimeError):
    """Raised when the dev cluster cannot be fetched, started or stopped; the message says what to do."""


def hadoop_client_version() -> str:
    """The Hadoop version of the pyspark wheel's client jars: the cluster runs the same."""
    home = pip_spark_home()
    jars = Path(home) / "jars" if home else None
    found = [re.fullmatch(r"hadoop-client-api-(.+)\.jar", jar.name) for jar in jars.glob("*.jar")] if jars else []
    versions = [match.group(1) for match in found if match]
    if not versions:
        raise HadoopError("cannot find the Hadoop client jars of the pyspark wheel")
    return versions[0]


def _require(program: str, what: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise HadoopError(f"{program} not found: {what}")
    return path


def fetch_jars(version: str, cache: Path | None = None) -> Path:
    """The folder of the cluster's jars, fetched from Maven Central unless a complete copy is cached."""
    folder = (cache or Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE))).expanduser() / f"hadoop-{version}"
    jars, complete = folder / "jars", folder / "complete"
    if complete.is_file():
        return jars
    mvn = _require("mvn", "the dev Hadoop fetches its jars with Maven; install it, e.g. `apt-get install maven`")
    folder.mkdir(parents=True, exist_ok=True)
    pom = folder / "pom.xml"
    pom.write_text(files("markdown_pricing.hadoop").joinpath("pom.xml").read_text())
    command = [mvn, "-q", "-B", "-f", str(pom), f"-Dhadoop.version={version}", "dependency:copy-dependencies",
               f"-DoutputDirectory={jars}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise HadoopError(
            f"Maven could not fetch Hadoop {version} from Maven Central ({' '.join(command)}): "
            f"{(result.stdout + result.stderr).strip()[-1500:]}"
        )
    complete.write_text(version)
    return jars


def _read_keys(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not a running cluster.
    status = Path(f"/proc/{pid}/stat")
    return not (status.is_file() and status.read_text().split(") ", 1)[-1].startswith("Z"))


def _cluster_pid(folder: Path) -> int | None:
    """The PID of the cluster this folder's pid file names, when that process is ours and alive."""
    pid_file = folder / "pid"
    if not pid_file.is_file():
        return None
    pid = int(pid_file.read_text().strip())
    cmdline = Path(f"/proc/{pid}/cmdline")
    ours = cmdline.is_file() and b"MiniHadoop.java" in cmdline.read_bytes()
    return pid if ours and _alive(pid) else None


def environment(folder: Path) -> dict[str, str]:
    """The KEY=VALUE lines `start` prints: upper-case keys are environment variables for runs against it."""
    keys = _read_keys(folder / "ready")
    return {
        "HADOOP_CONF_DIR": keys["HADOOP_CONF_DIR"],
        "MARKDOWN_YARN_SPARK_CONF": str(folder / "spark-yarn.conf"),
        # A cluster-mode driver runs in a container that has no HADOOP_CONF_DIR: this reaches it (see submit.py).
        "MARKDOWN_WEBHDFS_URL": f"http://{keys['WEBHDFS_ADDRESS']}",
        # A client-mode driver serves the containers from this machine: on loopback, as the cluster does.
        "SPARK_LOCAL_IP": "127.0.0.1",
        "fs.defaultFS": keys["FS_DEFAULTFS"],
        "webhdfs": f"http://{keys['WEBHDFS_ADDRESS']}",
        "resourcemanager": f"http://{keys['YARN_RM_WEB_ADDRESS']}",
    }


def start(folder: Path, *, timeout_s: float = START_TIMEOUT_S) -> dict[str, str]:
    """Starts the cluster in the background unless it already runs in `folder`; returns its environment."""
    folder = folder.expanduser().resolve()
    if _cluster_pid(folder) is not None and (folder / "ready").is_file():
        return environment(folder)
    java = _require("java", "the dev Hadoop needs Java 17 or newer (`apt-get install openjdk-17-jre-headless`)")
    jars = fetch_jars(hadoop_client_version())
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("ready", "pid"):
        (folder / stale).unlink(missing_ok=True)
    (folder / "spark-yarn.conf").write_text(
        "# The dev cluster's sizes, which MARKDOWN_YARN_SPARK_CONF adds to the yarn profile.\n"
        + "".join(f"{key} {value}\n" for key, value in DEV_SPARK_CONF.items())
    )
    launcher = files("markdown_pricing.hadoop").joinpath("MiniHadoop.java")
    with (folder / "stdout").open("w") as out, (folder / "stderr").open("w") as err:
        process = subprocess.Popen(
            [java, *JAVA_OPTIONS, "-cp", f"{jars}/*", str(launcher), str(folder)],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while not (folder / "ready").is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            raise HadoopError(
                f"the dev Hadoop did not start within {timeout_s:.0f} s; see {folder / 'stdout'}, "
                f"{folder / 'stderr'} and {folder / 'logs'}: {(folder / 'stdout').read_text()[-1000:]}"
            )
        time.sleep(0.2)
    return environment(folder)


def stop(folder: Path, *, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stops the cluster of `folder` (SIGTERM, then SIGKILL after the timeout); True when one was running."""
    folder = folder.expanduser().resolve()
    pid = _cluster_pid(folder)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    (folder / "ready").unlink(missing_ok=True)
    return True
