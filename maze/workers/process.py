"""`maze start --worker --addr HEAD:PORT`: join a running head as a worker node."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket

import httpx
import structlog

from maze.core.errors import Unavailable
from maze.events.store import connect
from maze.workers.capacity import local_capacity, local_ip
from maze.workers.worker import Worker

log = structlog.get_logger(__name__)


def head_nats_urls(addr: str) -> list[str]:
    """Ask the head where its event store is."""
    url = addr if addr.startswith("http") else f"http://{addr}"
    try:
        resp = httpx.get(f"{url.rstrip('/')}/cluster/nats", timeout=10)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        raise Unavailable(f"cannot reach the head at {url}: {exc}") from exc
    urls: list[str] = resp.json()["nats_urls"]
    host = httpx.URL(url).host
    # A head on loopback advertises 127.0.0.1; from another machine use the address we reached it at.
    return [u.replace("127.0.0.1", host).replace("localhost", host) for u in urls]


async def run_worker(
    addr: str, node_id: str | None, cpus: float | None, memory_mb: int | None, gpus: str | None
) -> None:
    urls = await asyncio.to_thread(head_nats_urls, addr)
    capacity = local_capacity(cpus, memory_mb, gpus)
    nc = await connect(urls, "maze-worker")
    node = node_id or f"{socket.gethostname().split('.')[0]}-{local_ip().replace('.', '-')}"
    worker = Worker(nc, node, capacity, local_ip())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await worker.start()
    print(
        f"Maze worker {node} joined {addr} (NATS {', '.join(urls)}): {capacity.cpus:g} CPUs, "
        f"{capacity.memory_mb} MB, GPUs {[(g.index, g.name, g.total_mem_mb) for g in capacity.gpus]}",
        flush=True,
    )
    try:
        await stopping.wait()
    finally:
        await worker.stop()
        with contextlib.suppress(Exception):
            await nc.close()
