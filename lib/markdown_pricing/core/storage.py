"""Where everything lives, and the few file operations needed outside Spark (markers, small files).

Paths are URIs: bare or file:// paths use the local filesystem, hdfs:// goes through WebHDFS (the `hdfs`
package). Spark reads and writes the same URIs itself.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from markdown_pricing.core.hadoop_conf import hadoop_properties, http_url

SUCCESS_MARKER = "_SUCCESS"


def join(base: str, *parts: str) -> str:
    """Joins URI or path segments with '/' without touching the scheme."""
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


class FileSystem:
    """The operations the pipeline needs outside Spark."""

    def exists(self, uri: str) -> bool:
        raise NotImplementedError

    def read_text(self, uri: str) -> str:
        raise NotImplementedError

    def write_text(self, uri: str, text: str) -> None:
        raise NotImplementedError

    def list(self, uri: str) -> list[str]:
        """The names in a folder; none when it does not exist."""
        raise NotImplementedError

    def modified(self, uri: str) -> float:
        """When a file or folder last changed, in seconds since the epoch."""
        raise NotImplementedError

    def is_dir(self, uri: str) -> bool:
        raise NotImplementedError

    def download(self, uri: str, local: Path) -> None:
        """Copies the file or folder at the URI to a local path."""
        raise NotImplementedError

    def make_dirs(self, uri: str) -> None:
        """Creates a folder and its parents where missing."""
        raise NotImplementedError

    def upload(self, uri: str, local: Path) -> None:
        """Copies a local file or folder to the URI, replacing what is there."""
        raise NotImplementedError

    def delete(self, uri: str) -> None:
        """Removes a file, or a folder with everything in it; nothing when it does not exist."""
        raise NotImplementedError

    def size(self, uri: str) -> int:
        """The bytes of a file, or of every file under a folder; 0 when it does not exist."""
        raise NotImplementedError


class LocalFileSystem(FileSystem):
    @staticmethod
    def _path(uri: str) -> Path:
        return Path(urlparse(uri).path if uri.startswith("file:") else uri)

    def exists(self, uri: str) -> bool:
        return self._path(uri).exists()

    def read_text(self, uri: str) -> str:
        return self._path(uri).read_text()

    def write_text(self, uri: str, text: str) -> None:
        path = self._path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)

    def list(self, uri: str) -> list[str]:
        path = self._path(uri)
        return sorted(child.name for child in path.iterdir()) if path.is_dir() else []

    def modified(self, uri: str) -> float:
        return self._path(uri).stat().st_mtime

    def is_dir(self, uri: str) -> bool:
        return self._path(uri).is_dir()

    def make_dirs(self, uri: str) -> None:
        self._path(uri).mkdir(parents=True, exist_ok=True)

    def upload(self, uri: str, local: Path) -> None:
        target = self._path(uri)
        if local.is_dir():
            shutil.copytree(local, target, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)

    def download(self, uri: str, local: Path) -> None:
        source = self._path(uri)
        if source.is_dir():
            shutil.copytree(source, local, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, local)

    def delete(self, uri: str) -> None:
        path = self._path(uri)
        # A link is removed itself, never what it points at.
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def size(self, uri: str) -> int:
        path = self._path(uri)
        if not os.path.lexists(path):
            return 0
        if path.is_symlink() or not path.is_dir():
            return path.lstat().st_size
        return sum((Path(folder) / name).lstat().st_size for folder, _, names in os.walk(path) for name in names)


def webhdfs_url(uri: str) -> str:
    """The WebHDFS endpoint for an hdfs:// URI: MARKDOWN_WEBHDFS_URL, else the namenode HTTP address that
    HADOOP_CONF_DIR gives for the default filesystem, else the namenode's default HTTP port."""
    if configured := os.environ.get("MARKDOWN_WEBHDFS_URL"):
        return configured
    parsed = urlparse(uri)
    properties = hadoop_properties()
    default_fs = urlparse(properties.get("fs.defaultFS", ""))
    http_address = properties.get("dfs.namenode.http-address")
    # hdfs:///path is the default filesystem: its namenode serves WebHDFS at the configured HTTP address.
    if http_address and default_fs.scheme == "hdfs" and parsed.netloc in ("", default_fs.netloc):
        return http_url(http_address)
    # An HA nameservice is no HTTP host: only the operator knows the endpoints then (several, separated by ';').
    if parsed.hostname is None:
        raise ValueError(
            f"{uri} names no namenode: set HADOOP_CONF_DIR to the cluster's client configuration, or "
            "MARKDOWN_WEBHDFS_URL to the WebHDFS endpoint"
        )
    return f"http://{parsed.hostname}:9870"


class WebHdfsFileSystem(FileSystem):
    """hdfs://namenode:8020/path through WebHDFS; MARKDOWN_WEBHDFS_URL names the HTTP endpoint."""

    def __init__(self, uri: str) -> None:
        from hdfs import InsecureClient

        self.url = webhdfs_url(uri)
        if os.environ.get("MARKDOWN_WEBHDFS_KERBEROS") == "1":
            from hdfs.ext.kerberos import KerberosClient

            self._client = KerberosClient(self.url)
        else:
            self._client = InsecureClient(self.url, user=os.environ.get("HADOOP_USER_NAME"))

    @staticmethod
    def path(uri: str) -> str:
        """The absolute HDFS path of a URI; WebHDFS takes paths, the namenode is in the endpoint."""
        parsed = urlparse(uri)
        if parsed.scheme != "hdfs":
            raise ValueError(f"{uri} is not an hdfs:// URI")
        return parsed.path or "/"

    def exists(self, uri: str) -> bool:
        return self._client.status(self.path(uri), strict=False) is not None

    def read_text(self, uri: str) -> str:
        with self._client.read(self.path(uri), encoding="utf-8") as reader:
            return str(reader.read())

    def write_text(self, uri: str, text: str) -> None:
        self._client.write(self.path(uri), data=text, encoding="utf-8", overwrite=True)

    def upload(self, uri: str, local: Path) -> None:
        self._client.upload(self.path(uri), str(local), overwrite=True, n_threads=1)

    def download(self, uri: str, local: Path) -> None:
        self._client.download(self.path(uri), str(local), overwrite=True, n_threads=1)

    def list(self, uri: str) -> list[str]:
        return sorted(self._client.list(self.path(uri))) if self.is_dir(uri) else []

    def modified(self, uri: str) -> float:
        return float(self._client.status(self.path(uri))["modificationTime"]) / 1000

    def is_dir(self, uri: str) -> bool:
        status = self._client.status(self.path(uri), strict=False)
        return status is not None and status["type"] == "DIRECTORY"

    def make_dirs(self, uri: str) -> None:
        self._client.makedirs(self.path(uri))

    def delete(self, uri: str) -> None:
        self._client.delete(self.path(uri), recursive=True)

    def size(self, uri: str) -> int:
        # The namenode's content summary: one call however many files the folder holds.
        summary = self._client.content(self.path(uri), strict=False)
        return int(summary["length"]) if summary else 0


def filesystem(uri: str) -> FileSystem:
    """The filesystem that serves a URI."""
    scheme = urlparse(uri).scheme
    if scheme in ("", "file"):
        return LocalFileSystem()
    if scheme == "hdfs":
        return WebHdfsFileSystem(uri)
    raise ValueError(f"unsupported URI scheme {scheme!r} in {uri}")


def local_path(uri: str) -> Path:
    """The local path behind a bare or file:// URI; other schemes are refused with a clear message."""
    if urlparse(uri).scheme not in ("", "file"):
        raise ValueError(f"{uri} is not on the local filesystem")
    return LocalFileSystem._path(uri)


def read_json(uri: str) -> Any:
    """Reads a small JSON document."""
    return json.loads(filesystem(uri).read_text(uri))


def write_json(uri: str, document: Any) -> None:
    """Writes a small JSON document, replacing any previous one."""
    filesystem(uri).write_text(uri, json.dumps(document, indent=2, default=str))


def embedded_erp_data(work: str) -> str:
    """Where the embedded PostgreSQL keeps its data under a work folder."""
    return join(work, "erp", "pgdata")


def has_success_marker(uri: str) -> bool:
    """True when a dataset folder is complete."""
    return filesystem(uri).exists(join(uri, SUCCESS_MARKER))


@dataclass(frozen=True)
class RunLayout:
    """Every path of one run under the raw root and the work folder."""

    raw: str
    work: str
    run_id: str

    def raw_dataset(self, name: str) -> str:
        return join(self.raw, name)

    @property
    def run_dir(self) -> str:
        return join(self.work, "runs", self.run_id)

    @property
    def run_record(self) -> str:
        """Which run date the run id belongs to."""
        return join(self.run_dir, "run.json")

    @property
    def weekly(self) -> str:
        return join(self.run_dir, "curated", "weekly")

    @property
    def article_states(self) -> str:
        return join(self.run_dir, "curated", "article_states")

    @property
    def quarantine(self) -> str:
        return join(self.run_dir, "quarantine")

    @property
    def etl_record(self) -> str:
        return join(self.run_dir, "etl_record.json")

    @property
    def input_profile(self) -> str:
        """Each country's input measures, which the next run's drift check compares with (core.drift)."""
        return join(self.run_dir, "input_profile.json")

    @property
    def drift(self) -> str:
        """What the run's input was compared with and what moved beyond the [drift] limits (core.drift)."""
        return join(self.run_dir, "drift.json")

    @property
    def train_score_output(self) -> str:
        return join(self.run_dir, "train_score_output")

    @property
    def pooled_output(self) -> str:
        return join(self.run_dir, "train_score_pooled_output")

    @property
    def country_results(self) -> str:
        return join(self.run_dir, "country_results.json")

    @property
    def predictions(self) -> str:
        return join(self.run_dir, "predictions")

    @property
    def candidates(self) -> str:
        return join(self.run_dir, "candidates")

    def stage_record(self, stage: str) -> str:
        return join(self.run_dir, "stages", f"{stage}.json")

    def model_dir(self, country: str, run_id: str | None = None) -> str:
        """models/<run_id>/<country>/: a country's LightGBM model and its card (`run_id`: another run's)."""
        return join(self.work, "models", run_id or self.run_id, country)

    def model_file(self, country: str, run_id: str | None = None) -> str:
        return join(self.model_dir(country, run_id), "model.txt")

    def model_card(self, country: str, run_id: str | None = None) -> str:
        return join(self.model_dir(country, run_id), "card.json")
