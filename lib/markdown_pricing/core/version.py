"""Where the running code comes from: the package version and the commit."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

# A packaged release has no git checkout: its build sets the commit in the environment.
GIT_COMMIT_ENV = "MARKDOWN_GIT_COMMIT"


def package_version() -> str:
    """The version of this package: the release folder its wheel and environment archive are uploaded to."""
    return files("markdown_pricing").joinpath("VERSION").read_text().strip()


def git_commit(root: Path) -> str:
    """The commit the code came from: MARKDOWN_GIT_COMMIT, else the checkout's HEAD, else "unknown"."""
    if commit := os.environ.get(GIT_COMMIT_ENV):
        return commit
    try:
        found = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except OSError:
        return "unknown"
    return found.stdout.strip() if found.returncode == 0 else "unknown"


def spark_version() -> str:
    """The version of the pip pyspark (its jars are what `deploy` uploads for spark.yarn.archive)."""
    return version("pyspark")


def pip_spark_home() -> str | None:
    """The folder of the pip pyspark (its bin/ and jars/), found without importing it."""
    spec = importlib.util.find_spec("pyspark")
    return str(Path(spec.origin).parent) if spec and spec.origin else None
