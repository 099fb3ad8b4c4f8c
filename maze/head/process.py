"""`maze start --head`: embedded NATS (unless --nats), the run controller, the API and the local
worker in this asyncio process; the read models (projector and queries) in a child process of
their own. SIGINT/SIGTERM stop everything it started; a kill -9 takes the children with
it (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import msgspec
import structlog
import uvicorn
from nats.js.errors import ServiceUnavailableError

from maze.agents.task_writer import shown_url
from maze.api.app import create_app
from maze.api.auth import head_token
from maze.api.state import HeadState
from maze.core.auth import TOKEN_FILE, is_loopback
from maze.core.errors import Unavailable
from maze.core.settings import Settings, redact
from maze.core.tls import TLS_CA_ENV
from maze.events import subjects
from maze.events.store import (
    EventStore,
    cluster_salt,
    connect,
    default_replicas,
    describe_error,
    ensure_memory_streams,
    ensure_streams,
    ensure_work_consumer,
    is_transient,
    observe_publishes,
)
from maze.head.controller import RunController
from maze.head.nats_auth import JS_API_PREFIX
from maze.head.nats_server import EmbeddedNats
from maze.head.stream_keeper import StreamKeeper
from maze.projections.client import ReadModelProcess
from maze.workers.capacity import local_capacity, local_ip
from maze.workers.worker import Worker

log = structlog.get_logger(__name__)
T = TypeVar("T")
CATCH_UP_STALL_S = 60.0  # a controller replay that moves no further for this long fails the start


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the head handles signals itself
        yield


def ensure_port_free(host: str, port: int, flag: str, what: str = "the API") -> None:
    """Fail before starting anything if a port this head must listen on is taken: uvicorn would
    exit mid-start, and an embedded nats-server that cannot bind would leave the head talking to
    whatever server holds the port (another head's: `Authorization Violation`)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise Unavailable(
                f"{what} cannot listen on {host}:{port} ({exc.strerror}: another head or server holds "
                f"it); choose another {flag}"
            ) from exc


def hold_data_dir(data: Path) -> int:
    """An exclusive lock on the data dir for this head's life (released by the kernel when the
    process ends, kill -9 included), so two heads never share one JetStream store or read models."""
    path = data / "head.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise Unavailable(
            f"the data dir {data} is in use by another head (pid {holder}); choose another --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def head_id(data: Path) -> str:
    """This head's identity for the controller's lease: made once per data dir (which one head
    holds at a time), so a restarted head is known as the same one."""
    path = data / "head-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        made = f"{socket.gethostname().split('.')[0]}-{uuid.uuid4().hex[:8]}"
        path.write_text(made)
        return made


async def until_jetstream_ready(step: Callable[[], Awaitable[T]]) -> T:
    """Run `step` (the streams' set-up) until JetStream answers: a cluster still electing its meta
    leader (as `compose up` starts one) times out for a while; say what we wait for, and wait."""
    said = 0.0
    while True:
        try:
            return await step()
        except Exception as exc:
            if not is_transient(exc) and not isinstance(exc, ServiceUnavailableError | TimeoutError):
                raise
            now = time.monotonic()
            if now - said > 5:
                log.warning("head.waiting_for_jetstream", error=describe_error(exc))
                said = now
            await asyncio.sleep(0.5)


class Head:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedNats | None = None
        self.stopping = asyncio.Event()
        self.serving = False
        self.lock: int | None = None

    async def run(self) -> None:
        began = time.monotonic()
        phases: dict[str, float] = {}

        def phase(name: str) -> None:
            phases[name] = round(time.monotonic() - began, 3)

        settings = self.settings
        data = settings.data_path
        # Ctrl-C / SIGTERM stop the head in every state: during start-up by cancelling it (each
        # step below is cleaned up by the `finally`), once it serves by a graceful stop
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        signalled = False

        def on_signal() -> None:
            nonlocal signalled
            signalled = True
            if self.serving:
                self.stopping.set()
            elif main_task is not None:
                main_task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        nc = worker_nc = None
        controller = None
        keeper: StreamKeeper | None = None
        stop_timing_publishes = None
        worker: Worker | None = None
        readmodels: ReadModelProcess | None = None
        server_task = None
        server: _Server | None = None
        try:
            data.mkdir(parents=True, exist_ok=True)
            self.lock = hold_data_dir(data)
            if settings.tls_ca:  # what this process and its children trust (maze/core/tls.py)
                os.environ[TLS_CA_ENV] = settings.tls_ca
            # read into the settings already: the local worker's tasks do not inherit the API token
            os.environ.pop("MAZE_TOKEN", None)
            settings = self.settings = msgspec.structs.replace(
                settings, head_id=settings.head_id or head_id(data)
            )
            ensure_port_free(settings.host, settings.port, "--port")
            urls = list(settings.nats_urls)
            if not urls:
                ensure_port_free(settings.nats_host, settings.nats_port, "--nats-port", what="NATS")
                self.embedded = EmbeddedNats(
                    data,
                    settings.nats_host,
                    settings.nats_port,
                    settings.fsync,
                    settings.max_payload_mb,
                    tls=(settings.tls_cert, settings.tls_key, settings.tls_ca) if settings.tls_cert else None,
                )
                # In this thread on purpose: the server's die-with-parent signal is tied to the
                # thread that started it, and a pool thread may exit before the head does.
                self.embedded.spawn()
                await self.embedded.wait_ready()
                urls = [self.embedded.url]
                phase("nats_s")
            keepers: list[StreamKeeper] = []  # (told when the connection comes back)

            async def reconnected() -> None:
                for each in keepers:
                    each.connection_back()

            nc = await connect(urls, "maze-head", reconnected_cb=reconnected)
            # JetStream answering means a cluster has formed (its meta leader is elected): only
            # then does the server know its peers, and so how many copies the streams can have
            await until_jetstream_ready(lambda: nc.jetstream().account_info())
            replicas = settings.stream_replicas or await default_replicas(urls)
            log.info(
                "head.stream_replicas",
                replicas=replicas,
                source="--replicas" if settings.stream_replicas else "min(3, servers in the NATS cluster)",
            )
            explicit = bool(settings.stream_replicas)
            await until_jetstream_ready(
                lambda: ensure_streams(
                    nc.jetstream(),
                    replicas,
                    lower=explicit,
                    logs_max_bytes=settings.logs_max_mb * 1024 * 1024,
                    logs_max_age_s=settings.logs_max_age_h * 3600,
                )
            )
            salt = await until_jetstream_ready(lambda: cluster_salt(nc.jetstream()))
            controller = RunController(nc, EventStore(nc, salt=salt), settings)
            keeper = StreamKeeper(
                nc.jetstream(),
                lambda: ensure_memory_streams(nc.jetstream(), replicas, lower=explicit),
                controller.memory_streams_made,
            )
            keepers.append(keeper)
            keeper.start()
            stop_timing_publishes = observe_publishes(controller.metrics.observe_publish)
            controller.start()
            # the projector and its queries in a process of their own: no thread of theirs takes
            # the GIL from the loop the controller and the API share
            readmodels = ReadModelProcess(data, urls, settings.log_level)
            models = await readmodels.start()
            phase("read_models_s")
            await wait_caught_up(controller)
            phase("controller_s")
            if settings.local_worker:
                # on this process's loop: measured against a child process of its own (one more
                # process on the task's path, on 2 cores), it gave the lower latency and throughput
                # the port tells two heads on one machine apart
                node_id = settings.node_id or f"{socket.gethostname().split('.')[0]}-head-{settings.port}"
                # a worker's credentials, as any worker's: it may do only what a worker does
                worker_urls = [await self.embedded.worker_url(node_id)] if self.embedded is not None else urls
                head_js = nc.jetstream(timeout=10)

                async def make_local_consumer() -> None:
                    # the worker account just made reloads the embedded server, during which its
                    # JetStream API briefly answers nothing: waited for, not a failed start
                    delay = 0.1
                    for tries in range(1, 60):
                        try:
                            await ensure_work_consumer(head_js, node_id)
                            return
                        except Exception as exc:
                            if not is_transient(exc) or tries == 59:
                                raise
                            log.info("head.local_consumer_waiting", error=describe_error(exc), tries=tries)
                            await asyncio.sleep(delay)
                            delay = min(delay * 2, 1.0)

                await make_local_consumer()
                worker_nc = await connect(
                    worker_urls,
                    "maze-local-worker",
                    js_api_prefix=JS_API_PREFIX if self.embedded is not None else None,
                    inbox_prefix=subjects.worker_inbox(node_id),
                )
                capacity = local_capacity(
                    settings.worker_cpus, settings.worker_memory_mb, settings.worker_gpus
                )
                worker = Worker(
                    worker_nc,
                    node_id,
                    capacity,
                    local_ip(),
                    heartbeat_interval=settings.heartbeat_interval,
                    limits=settings.limits,
                    make_consumer=make_local_consumer,
                    work_dir=data / "work",
                    sandbox_hidden=[settings.data_path],
                )
                await worker.start()
                # its work is handed over in process, not sent on its work subject (one publish, one
                # delivery and one decode less on every attempt's way here)
                controller.local_node = worker
                while (
                    node_id not in controller.placer.nodes
                    or controller.placer.nodes[node_id].session != worker.session
                ):
                    await asyncio.sleep(0.01)
            token, made = head_token(data, settings.api_token, settings.host, settings.insecure)
            embedded = self.embedded

            async def worker_nats(node: str) -> list[str]:
                """Node `node`'s credentials (its NATS account's user)."""
                assert embedded is not None
                return [await embedded.worker_url(node)]

            state = HeadState(
                nc.jetstream(),
                nc,
                controller,
                models,
                settings,
                urls,
                token,
                worker_nats if embedded is not None else None,
            )
            await state.blobs.follow_removals()  # submits check the code they name from memory
            # what start-up made (modules, the app, replayed state) stays; leave it out of the
            # cyclic GC's full collections, whose cost stalls the event loop everyone shares
            gc.freeze()
            config = uvicorn.Config(
                create_app(state, playground=settings.playground),
                host=settings.host,
                port=settings.port,
                log_level="warning",
                http="auto",  # httptools (a dependency) when installed
                timeout_graceful_shutdown=2,
                lifespan="on",
                ssl_certfile=settings.tls_cert or None,
                ssl_keyfile=settings.tls_key or None,
                ssl_ca_certs=settings.tls_ca or None,
            )
            scheme = "https" if settings.tls_cert else "http"
            server = _Server(config)
            server_task = asyncio.create_task(server.serve())
            while not server.started:
                if server_task.done():
                    await server_task
                    raise Unavailable(f"API could not listen on {settings.host}:{settings.port}")
                await asyncio.sleep(0.01)
            phase("api_s")
            log.info(
                "head.ready",
                **phases,
                api=f"{scheme}://{settings.host}:{settings.port}",
                nats=[redact(u) for u in urls],
                data_dir=str(data),
                # the Playground's LLM endpoint for tasks from a prompt (no credentials, no key)
                llm=f"{settings.llm_model} at {shown_url(settings.llm_base_url)}"
                if settings.llm_base_url
                else None,
            )
            print(
                f"Maze head ready: {scheme}://{settings.host}:{settings.port}  (NATS {', '.join(redact(u) for u in urls)}, "
                f"data {data})",
                flush=True,
            )
            if settings.playground:
                print(f"Playground: {scheme}://{settings.host}:{settings.port}/playground/", flush=True)
            announce_token(settings, data, token, made)
            self.serving = True
            if signalled:  # a signal came as it got ready
                self.stopping.set()
            stop_wait = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({server_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
        except asyncio.CancelledError:
            if not signalled:
                raise
            log.info("head.stopped_during_start")
        finally:
            log.info("head.stopping")
            if server is not None:
                server.should_exit = True
            if server_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server_task, 5)
            if worker is not None:
                if controller is not None:
                    controller.local_node = None
                await worker.stop()
            if keeper is not None:
                await keeper.stop()
            if controller is not None:
                await controller.stop()
            if stop_timing_publishes is not None:
                stop_timing_publishes()
            if readmodels is not None:
                await readmodels.stop()
            for conn in (worker_nc, nc):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            if self.embedded is not None:
                await asyncio.to_thread(self.embedded.stop)
            log.info("head.stopped")


async def wait_caught_up(controller: RunController, stall_s: float = CATCH_UP_STALL_S) -> None:
    """Until the controller has replayed the log up to where it stood at start. However long
    history is, that takes what it takes (with a progress line every few seconds); a replay that
    stops moving for `stall_s` is an error, with the controller's last one."""
    best, moved_at = -1, time.monotonic()
    while True:
        try:
            await asyncio.wait_for(controller.caught_up.wait(), 5)
            return
        except TimeoutError:
            pass
        reached = sum(controller.positions.values())
        if reached > best:
            best, moved_at = reached, time.monotonic()
            log.info("head.controller_catching_up", positions=dict(controller.positions))
        elif time.monotonic() - moved_at > stall_s:
            raise Unavailable(
                f"the run controller made no progress replaying the log for {stall_s:.0f} s "
                f"(at {dict(controller.positions)}; last error: {controller.last_error})"
            )


def announce_token(settings: Settings, data: Path, token: str | None, made: bool) -> None:
    """Say once how callers authenticate: the token made at this first start (and the join command
    that carries it), or that this head is open, and why."""
    if token is None and settings.insecure and not is_loopback(settings.host):
        log.warning("head.insecure_api", host=settings.host)
        print(
            f"WARNING: --insecure: the API on {settings.host}:{settings.port} takes calls without a token; "
            "anyone who reaches it can run code on every worker",
            flush=True,
        )
    elif made:
        print(
            f"API token (made now, kept in {data / TOKEN_FILE}, mode 0600; callers pass it as --token or "
            f"MAZE_TOKEN):\n  {token}\nJoin a worker: MAZE_TOKEN={token} maze start --worker "
            f"--addr <this-host>:{settings.port} --agent",
            flush=True,
        )
