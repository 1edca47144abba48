"""What the Hadoop client configuration in HADOOP_CONF_DIR says: the cluster's addresses, for the few places that
talk to HDFS and YARN over HTTP (WebHDFS, the ResourceManager's REST API) rather than through Spark."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

SITE_FILES = ("core-site.xml", "hdfs-site.xml", "yarn-site.xml")


def hadoop_conf_dir() -> Path | None:
    """The client configuration folder, when HADOOP_CONF_DIR names one."""
    folder = os.environ.get("HADOOP_CONF_DIR")
    return Path(folder) if folder and Path(folder).is_dir() else None


def hadoop_properties(folder: Path | None = None) -> dict[str, str]:
    """Every property of the site files in the folder (HADOOP_CONF_DIR by default); empty without one."""
    folder = folder or hadoop_conf_dir()
    properties: dict[str, str] = {}
    if folder is None:
        return properties
    for name in SITE_FILES:
        path = folder / name
        if not path.is_file():
            continue
        for prop in ET.parse(path).getroot().iter("property"):
            key, value = prop.findtext("name"), prop.findtext("value")
            if key and value is not None:
                properties[key.strip()] = value.strip()
    return properties


def http_url(address: str) -> str:
    """A host:port address of a Hadoop web server as an http:// URL; 0.0.0.0 means this machine."""
    host, _, port = address.rpartition(":")
    return f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"
