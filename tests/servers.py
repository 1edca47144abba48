"""Servers the tests start on 127.0.0.1 and stop by PID: free ports, and a real luigid with its API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
    """A real luigid on 127.0.0.1, ready to answer, recording its task history under `folder`; ended by its PID
    afterwards."""
    port = port or free_port()
    env = {**(os.environ if env is None else env), "LUIGID_STATE_DIR": str(folder)}
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
        env=env,
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


class Webhook:
    """What a webhook receiver was sent: every POSTed JSON body; it answers each with `status`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.bodies: list[dict[str, Any]] = []
        self.status = 200


@contextmanager
def receiving_webhooks(path: str) -> Iterator[Webhook]:
    """A real HTTP server on 127.0.0.1 that takes JSON POSTs (a chat tool's incoming webhook); shut down afterwards."""
    hook: Webhook

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook = Webhook(f"http://127.0.0.1:{server.server_address[1]}{path}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
