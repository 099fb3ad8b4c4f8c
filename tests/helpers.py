"""Test helpers: real nats-server and real head processes on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from maze.core.errors import Unavailable
from maze.head.nats_server import nats_server_binary, server_config
from maze.sdk.local_head import wait_for_nodes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port_free(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            # as servers do: TIME_WAIT leftovers of closed client connections do not block a listener
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.1)
    raise TimeoutError(f"port {port} still in use")


class NatsServer:
    def __init__(self, store: Path, token: str | None = None) -> None:
        self.store = store
        self.token = token
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        conf = self.store / "nats.conf"
        # nats-server's default 1 MB max_payload, as an operator's own cluster has it
        conf.write_text(server_config("127.0.0.1", self.port, self.store / "js", "always", 1, self.token))
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: _accepts(self.port), timeout=15)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class _MazeProcess:
    """A `maze start ...` process writing to `log_path`: spawn, read its log, kill -9, Ctrl-C."""

    proc: subprocess.Popen[bytes] | None
    log_path: Path

    env: dict[str, str] = {}  # extra environment for the next start

    def _spawn(self, cmd: list[str]) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """Ctrl-C and wait; a process that does not stop within 30 s is killed and fails the test."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


class HeadProcess(_MazeProcess):
    """`maze start --head` as a real process. With `nats_url` it uses that server; without, it
    starts its embedded one (on `nats_port`)."""

    def __init__(self, data_dir: Path, nats_url: str | None = None, extra: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.nats_url = nats_url
        self.port = free_port()
        self.nats_port = free_port()
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "head.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "maze",
            "start",
            "--head",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            "info",
            *self.extra,
        ]
        cmd += ["--nats", self.nats_url] if self.nats_url else ["--nats-port", str(self.nats_port)]
        self._spawn(cmd)
        try:
            wait_for_nodes(self.url, 0, timeout, self.proc, self.data_dir)
        except Unavailable as exc:
            raise RuntimeError(f"{exc.message}:\n{self.log()}") from exc


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not reached")


class WorkerProcess(_MazeProcess):
    """`maze start --worker --addr ...` as a real process."""

    def __init__(self, head: HeadProcess, node_id: str, args: list[str], log_dir: Path) -> None:
        self.head = head
        self.node_id = node_id
        self.args = args
        self.log_path = log_dir / f"worker-{node_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> None:
        cmd = [
            sys.executable,
            "-m",
            "maze",
            "start",
            "--worker",
            "--addr",
            f"127.0.0.1:{self.head.port}",
            "--node-id",
            self.node_id,
            "--log-level",
            "info",
            *self.args,
        ]
        self._spawn(cmd)
        if wait:
            wait_until(lambda: self.alive_session() is not None, timeout=30)

    def alive_session(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.node_id} exited:\n{self.log()}")
        try:
            nodes = httpx.get(f"{self.head.url}/cluster/resources", timeout=5).json()["nodes"]
        except httpx.HTTPError:
            return None
        for node in nodes:
            if node["node_id"] == self.node_id and node["state"] == "alive":
                return str(node["session"])
        return None


class NatsCluster:
    """A 3-node JetStream cluster on loopback (routes between the nodes), fsync always."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        self.ports = [free_port() for _ in range(size)]
        self.cluster_ports = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.ports]

    def start(self) -> None:
        routes = ", ".join(f"nats://127.0.0.1:{p}" for p in self.cluster_ports)
        for i, (port, cport) in enumerate(zip(self.ports, self.cluster_ports, strict=True)):
            store = self.root / f"n{i}"
            store.mkdir(parents=True, exist_ok=True)
            conf = store / "nats.conf"
            conf.write_text(
                f'server_name: n{i}\nlisten: "127.0.0.1:{port}"\nmax_payload: 1MB\n'
                f'jetstream {{\n  store_dir: "{store}/js"\n  sync_interval: always\n}}\n'
                f'cluster {{\n  name: maze\n  listen: "127.0.0.1:{cport}"\n  routes: [{routes}]\n}}\n'
            )
            self.procs.append(
                subprocess.Popen(
                    [nats_server_binary(), "-c", str(conf)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            wait_until(lambda p=port: _accepts(p), timeout=15)  # type: ignore[misc]

    def kill(self, index: int) -> None:
        self.procs[index].send_signal(signal.SIGKILL)
        self.procs[index].wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def head_with_two_workers(nats_url: str, root: Path) -> Iterator[HeadProcess]:
    """A head without a local worker and two worker processes with separate work directories (no
    shared path): "up" is the only node with a GPU, "down" the only one with 3 GB, so a task asking
    for either has one home."""
    hb = ["--heartbeat-interval", "0.5"]
    head = HeadProcess(root / "head", nats_url=nats_url, extra=["--no-local-worker", *hb])
    head.start()
    shapes = {
        "up": ["--cpus", "1", "--memory-mb", "1000", "--gpus", "8GB"],
        "down": ["--cpus", "1", "--memory-mb", "4000", "--gpus", "none"],
    }
    workers = [
        WorkerProcess(head, name, [*shape, *hb, "--work-dir", str(root / f"work-{name}")], root)
        for name, shape in shapes.items()
    ]
    try:
        for worker in workers:
            worker.start()
        yield head
    finally:
        for worker in workers:
            worker.stop()
        head.stop()
