"""Start a head as a child process and wait until it answers: used by `maze demo` and bench/."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from maze.core.auth import local_token
from maze.core.errors import Unavailable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalHead:
    """`maze start --head` on free ports with its own data dir; stop() sends Ctrl-C."""

    def __init__(
        self,
        data_dir: Path,
        extra: list[str] | None = None,
        port: int | None = None,
        nats_port: int | None = None,
        quiet: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.nats_port = nats_port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra = extra or []
        self.quiet = quiet
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0, min_nodes: int = 0) -> LocalHead:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = (self.data_dir / "head.log").open("ab") if self.quiet else None
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "maze",
                "start",
                "--head",
                "--port",
                str(self.port),
                "--nats-port",
                str(self.nats_port),
                "--data-dir",
                str(self.data_dir),
                *self.extra,
            ],
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_for_nodes(self.url, min_nodes, timeout, self.proc, self.data_dir)
        return self

    @property
    def nats_url(self) -> str:
        """Its embedded server's URL with the head's own credentials (from its data dir): for a
        tool on this machine that reads or writes the streams as the head does (benchmarks)."""
        users = json.loads((self.data_dir / "nats-users.json").read_text())
        return f"nats://maze-head:{users['head']}@127.0.0.1:{self.nats_port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=60)


def wait_for_nodes(
    url: str,
    min_nodes: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    data_dir: Path | None = None,
) -> None:
    """Wait until the head answers and at least `min_nodes` nodes are alive. With `data_dir`, the
    token a head made there at start (a head bound beyond loopback) is sent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Unavailable(f"the head exited with code {proc.returncode}")
        token = (local_token(data_dir) if data_dir is not None else None) or os.environ.get("MAZE_TOKEN")
        try:
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            resp = httpx.get(f"{url}/cluster/resources", timeout=2, headers=auth)
            if (
                resp.status_code == 200
                and sum(n["state"] == "alive" for n in resp.json()["nodes"]) >= min_nodes
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise Unavailable(f"the head at {url} was not ready within {timeout:g}s")
