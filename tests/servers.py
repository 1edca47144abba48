"""Servers the tests start on 127.0.0.1 and stop by PID: free ports, and a real luigid with its API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[Any]) -> None:
    """Ends a server this test started, by its PID: SIGTERM, then SIGKILL if it has not gone within 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def luigid_api(port: int, method: str, **data: str) -> dict[str, Any]:
    """One call of luigid's JSON API."""
    query = urllib.parse.quote(json.dumps(data))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{method}?data={query}", timeout=5) as response:
        return dict(json.load(response)["response"])


@contextmanager
def running_luigid(folder: Path, port: int | None = None, env: Mapping[str, str] | None = None) -> Iterator[int]:
    """A real luigid on 127.0.0.1, ready to answer; ended by its PID afterwards."""
    port = port or free_port()
    server = subprocess.Popen(
        [
            str(BIN / "luigid"),
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
            "--state-path",
            str(folder / "luigid-state.pickle"),
            "--logdir",
            str(folder),
        ],
        env=dict(env) if env is not None else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                luigid_api(port, "task_list", status="DONE")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield port
    finally:
        stop(server)
