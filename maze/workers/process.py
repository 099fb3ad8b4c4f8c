"""`maze start --worker --addr HEAD:PORT [--agent]`: join a running head as a worker node.

With `--agent` the worker also watches its own registration: if the head no longer knows its
session as alive (the head or NATS restarted with other state, or it was declared lost), it asks the
head again for the NATS URLs, reconnects if they changed, and registers a new session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import msgspec
import structlog
from nats.aio.client import Client as NATS

from maze.core.auth import resolve_token
from maze.core.errors import Unavailable
from maze.core.settings import ValueLimits, redact
from maze.core.tasks import cancel_and_wait
from maze.core.tls import TLS_CA_ENV, client_context
from maze.events import subjects
from maze.events.store import connect
from maze.workers.capacity import local_capacity, local_ip
from maze.workers.identity import stable_node_id
from maze.workers.worker import Worker

log = structlog.get_logger(__name__)


def head_url(addr: str) -> str:
    """`--addr` as a URL: as given with a scheme; else https when a CA to trust the head with is
    set (--tls-ca, MAZE_TLS_CA), http otherwise."""
    if addr.startswith(("http://", "https://")):
        return addr.rstrip("/")
    scheme = "https" if os.environ.get(TLS_CA_ENV) else "http"
    return f"{scheme}://{addr}".rstrip("/")


def _verify() -> ssl.SSLContext | bool:
    """A head on https: verified against $MAZE_TLS_CA when set, else the usual trust store."""
    return client_context() if os.environ.get(TLS_CA_ENV) else True


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class JoinInfo(NamedTuple):
    urls: list[str]  # where the event store is, with this node's credentials
    limits: ValueLimits  # what results must respect
    head_makes_consumer: bool  # this node's work consumer is the head's to make
    js_api_prefix: str | None  # where this node's account has the JetStream API (None: $JS.API)


def head_join_info(addr: str, token: str | None = None, node_id: str = "") -> JoinInfo:
    """Ask the head where its event store is, and the value limits results must respect. On the
    embedded server the answer also means this node's work consumer exists: the head made it."""
    url = head_url(addr)
    try:
        resp = httpx.get(
            f"{url}/cluster/nats",
            params={"node_id": node_id},
            timeout=10,
            headers=_auth(token),
            verify=_verify(),
        )
    except httpx.HTTPError as exc:
        raise Unavailable(f"cannot reach the head at {url}: {exc}") from exc
    if resp.status_code >= 400:
        raise Unavailable(
            f"the head at {url} refused to say where to join (HTTP {resp.status_code}): {resp.text[:300]}",
            status=resp.status_code,
        )
    body = resp.json()
    urls: list[str] = body["nats_urls"]
    limits = msgspec.convert(body.get("limits") or {}, ValueLimits)
    host = httpx.URL(url).host
    # A head on loopback advertises 127.0.0.1; from another machine use the address we reached it at.
    return JoinInfo(
        [u.replace("127.0.0.1", host).replace("localhost", host) for u in urls],
        limits,
        bool(body.get("head_makes_consumer", False)),
        body.get("js_api_prefix"),
    )


async def until_head_answers(addr: str, token: str | None, node_id: str) -> JoinInfo:
    """`head_join_info`, waiting (and saying so every few seconds) while the head cannot be reached
    (it may be starting): a failure that heals by itself does not end the worker. An answer that
    refuses it (a 4xx) does."""
    said = 0.0
    while True:
        try:
            return await asyncio.to_thread(head_join_info, addr, token, node_id)
        except Unavailable as exc:
            if "status" in exc.details and int(exc.details["status"]) < 500:
                raise
            now = time.monotonic()
            if now - said > 5:
                said = now
                log.warning("worker.waiting_for_head", head=head_url(addr), error=exc.message)
            await asyncio.sleep(1.0)


def registered_alive(addr: str, node_id: str, session: str, token: str | None = None) -> bool | None:
    """Whether the head sees this node session alive; None if the head cannot be asked now."""
    try:
        resp = httpx.get(
            f"{head_url(addr)}/cluster/resources", timeout=5, headers=_auth(token), verify=_verify()
        )
        resp.raise_for_status()
    except httpx.HTTPError:
        return None
    for node in resp.json()["nodes"]:
        if node["node_id"] == node_id:
            return bool(node["session"] == session and node["state"] == "alive")
    return False


class Agent:
    def __init__(self, addr: str, worker: Worker, urls: list[str], token: str | None = None) -> None:
        self.token = token
        self.addr = addr
        self.worker = worker
        self.urls = urls
        self.lock = asyncio.Lock()

    async def watch(self) -> None:
        interval = max(0.5, self.worker.heartbeat_interval)
        while True:
            await asyncio.sleep(interval * 2)
            session = self.worker.session
            alive = await asyncio.to_thread(
                registered_alive, self.addr, self.worker.node_id, session, self.token
            )
            if alive is False:
                await self.recover(lost=session)

    async def recover(self, lost: str | None = None) -> None:
        """Register again (`lost`: the session found not alive; None: whatever is current)."""
        lost = self.worker.session if lost is None else lost
        async with self.lock:
            while True:
                try:
                    urls, limits, _, prefix = await asyncio.to_thread(
                        head_join_info, self.addr, self.token, self.worker.node_id
                    )
                    self.worker.limits = limits
                    nc: NATS | None = None
                    if urls != self.urls or not self.worker.nc.is_connected:
                        nc = await connect(
                            urls,
                            "maze-worker",
                            js_api_prefix=prefix,
                            inbox_prefix=subjects.worker_inbox(self.worker.node_id),
                        )
                        old = self.worker.nc
                        self.urls = urls
                    await self.worker.rejoin(nc, lost=lost)
                    if nc is not None:
                        with contextlib.suppress(Exception):
                            await old.close()
                    log.info("agent.reregistered", node_id=self.worker.node_id, session=self.worker.session)
                    print(
                        f"Maze worker {self.worker.node_id} re-registered (session {self.worker.session})",
                        flush=True,
                    )
                    return
                except Exception as exc:
                    log.warning("agent.reregister_failed", error=str(exc))
                    await asyncio.sleep(max(0.5, self.worker.heartbeat_interval))


async def run_worker(
    addr: str,
    node_id: str | None,
    cpus: float | None,
    memory_mb: int | None,
    gpus: str | None,
    agent: bool = False,
    heartbeat_interval: float = 2.0,
    token: str | None = None,
    work_dir: Path | None = None,
    sandboxing: bool = True,
    sandbox_hidden: list[Path] | None = None,
) -> None:
    # the head's API token: given, or $MAZE_TOKEN, or (a head on this machine) its data dir's
    token = resolve_token(head_url(addr), token)
    os.environ.pop("MAZE_TOKEN", None)  # kept here, not handed down to the tasks' processes
    node = node_id or stable_node_id()  # the same on each restart here: one node, not many
    # Ctrl-C / SIGTERM stop the worker in every state: while it starts, by cancelling the start
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    started = False

    def on_signal() -> None:
        # remembered as well as cancelling the start: a cancel swallowed on the way (asyncio's
        # wait_for on 3.11, maze/core/tasks.py) must not leave the worker running on
        stopping.set()
        if not started and main_task is not None:
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        urls, limits, head_makes_consumer, prefix = await until_head_answers(addr, token, node)
    except asyncio.CancelledError:
        return

    async def ask_head_for_consumer() -> None:
        await until_head_answers(addr, token, node)  # the head makes it before it answers

    capacity = local_capacity(cpus, memory_mb, gpus)
    try:
        nc = await connect(
            urls, "maze-worker", js_api_prefix=prefix, inbox_prefix=subjects.worker_inbox(node)
        )
    except asyncio.CancelledError:
        return
    worker = Worker(
        nc,
        node,
        capacity,
        local_ip(),
        heartbeat_interval=heartbeat_interval,
        limits=limits,
        make_consumer=ask_head_for_consumer if head_makes_consumer else None,
        work_dir=work_dir,
        sandboxing=sandboxing,
        sandbox_hidden=sandbox_hidden,
    )
    watcher = None
    if agent:
        agent_obj = Agent(addr, worker, urls, token)
        worker.on_registration_lost = agent_obj.recover
    try:
        await worker.start()
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await worker.stop("stopped while starting")
            await nc.close()
        return
    started = True
    if agent:
        watcher = asyncio.create_task(agent_obj.watch())
    print(
        f"Maze worker {node} joined {addr} (NATS {', '.join(redact(u) for u in urls)}): {capacity.cpus:g} CPUs, "
        f"{capacity.memory_mb} MB, GPUs {[(g.index, g.name, g.total_mem_mb) for g in capacity.gpus]}, "
        f"sandbox {worker.capacity.sandbox_limits if worker.capacity.sandbox else 'none: ' + worker.capacity.sandbox_limits}"
        f"{' [agent]' if agent else ''}",
        flush=True,
    )
    try:
        await stopping.wait()  # at once if a signal came while it started
    finally:
        await cancel_and_wait([watcher], timeout=10)
        await worker.stop()
        with contextlib.suppress(Exception):
            await worker.nc.close()
