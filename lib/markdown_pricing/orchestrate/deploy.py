"""`markdown-pricing deploy --env yarn`: the release a YARN run ships, built where missing and uploaded to HDFS.

What a release is comes from the profile: the URIs of `spark.submit.pyFiles` (the wheel), `spark.archives` (the
venv-pack environment) and `spark.yarn.archive` (Spark's own jars, once per Spark version, so that no submit
uploads 460 MB of jars again). Containers that run in the project's image ([yarn] container_image) take code and
environment from it: their release is Spark's jars alone.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from hdfs.util import HdfsError

from markdown_pricing.core.config import Config
from markdown_pricing.core.storage import WebHdfsFileSystem, filesystem
from markdown_pricing.core.version import pip_spark_home, spark_version
from markdown_pricing.orchestrate.submit import container_image, profile_conf, with_release

log = logging.getLogger(__name__)

CODE_KEY, ENVIRONMENT_KEY, SPARK_JARS_KEY = "spark.submit.pyFiles", "spark.archives", "spark.yarn.archive"
RELEASE_KEYS = (CODE_KEY, ENVIRONMENT_KEY, SPARK_JARS_KEY)


class DeployError(RuntimeError):
    """Raised when a release cannot be built or uploaded."""


def release_uris(cfg: Config) -> dict[str, str]:
    """Setting -> the HDFS URI it ships from, for each release setting of the profile that ships from HDFS."""
    conf = profile_conf(cfg)
    uris = {key: with_release(conf[key]).split("#", 1)[0] for key in RELEASE_KEYS if key in conf}
    return {key: uri for key, uri in uris.items() if urlparse(uri).scheme == "hdfs"}


def missing_release(cfg: Config) -> list[str]:
    """The release URIs a run needs that are not on HDFS yet; DeployError when HDFS cannot be asked."""
    try:
        return [uri for uri in release_uris(cfg).values() if not filesystem(uri).exists(uri)]
    except (ValueError, OSError, HdfsError) as err:
        raise DeployError(f"cannot check the release on HDFS: {err}") from err


def spark_jars() -> Path:
    """The jars of the pip pyspark this package runs with."""
    home = pip_spark_home()
    if home is None:
        raise DeployError("pyspark is not installed")
    return Path(home) / "jars"


def _build_spark_jars_archive(target: Path) -> None:
    """Spark's jars, flat in one zip as spark.yarn.archive wants them; stored, not compressed (jars are)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
        for jar in sorted(spark_jars().glob("*.jar")):
            archive.write(jar, jar.name)
    partial.replace(target)


def environment_outdated(archive: Path, conf: Path) -> bool:
    """Whether the environment archive is missing or older than a file of conf/, which it carries to the cluster."""
    if not archive.is_file():
        return True
    built = archive.stat().st_mtime
    return any(path.stat().st_mtime > built for path in conf.rglob("*") if path.is_file())


def _build(cfg: Config, dist: Path, code: str, environment: str) -> None:
    """The wheel, always (the code changes without a new version); the environment archive when it is missing or
    conf/ changed since it was built (its settings change without a new version too)."""
    if environment_outdated(dist / environment, cfg.project_root / "conf"):
        log.warning("building %s with `make package` (a clean venv with the pinned dependencies)", environment)
        command = ["make", "-C", str(cfg.project_root), "package", f"PYTHON={sys.executable}"]
    else:
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(cfg.project_root)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not (dist / code).is_file():
        raise DeployError(f"building the release failed ({' '.join(command)}): {result.stderr.strip()[-2000:]}")


def deploy(cfg: Config) -> dict[str, str]:
    """Builds what is missing and uploads the release; returns URI -> what was done."""
    uris = release_uris(cfg)
    # Containers in the image take code and environment from it: nothing to build, Spark's jars to upload.
    builds = not container_image(cfg)
    if not uris or (builds and (CODE_KEY not in uris or ENVIRONMENT_KEY not in uris)):
        raise DeployError(f"the {cfg.env} profile ships no release from HDFS: deploy is for --env yarn")
    dist = cfg.project_root / "dist"
    name = {key: uri.rsplit("/", 1)[1] for key, uri in uris.items()}
    if builds:
        _build(cfg, dist, name[CODE_KEY], name[ENVIRONMENT_KEY])
    done = {}
    # Spark refuses to start when its event log folder is missing.
    if (events := cfg.spark.conf.get("spark.eventLog.dir")) and urlparse(events).scheme == "hdfs":
        filesystem(events).make_dirs(events)
        done[events] = "event log folder present"
    for key, uri in uris.items():
        hdfs = filesystem(uri)
        assert isinstance(hdfs, WebHdfsFileSystem)
        if key == SPARK_JARS_KEY:
            # One per Spark version, never replaced: running applications may be reading it.
            if hdfs.exists(uri):
                done[uri] = "already there"
                continue
            local = dist / f"spark-{spark_version()}-jars.zip"
            if not local.is_file():
                _build_spark_jars_archive(local)
        else:
            local = dist / name[key]
        hdfs.upload(uri, local)
        done[uri] = f"uploaded {local.stat().st_size / 2**20:.0f} MiB from {local}"
    return done
