"""The head's local worker, in a process of its own.

The head used to run its worker on its own event loop: every attempt's receiving, dispatch and
report then took turns with the controller, the API and its streams. As a child process (started by
the head, dying with it, restarted by it if it exits) the worker runs beside them on another core.

    python -m maze.workers.local --node-id ID --session S [--cpus N --memory-mb M --gpus G ...]
    (NATS URLs in MAZE_LOCAL_WORKER_NATS)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from maze.core import hops
from maze.core.errors import MazeError
from maze.core.logs import configure_logging
from maze.core.procs import die_with
from maze.core.settings import ValueLimits, env_settings
from maze.events.store import connect
from maze.workers.capacity import local_capacity, local_ip
from maze.workers.worker import Worker

NATS_ENV = "MAZE_LOCAL_WORKER_NATS"
PARENT_ENV = "MAZE_PARENT_PID"  # the head's pid: this process dies with it


async def main(args: argparse.Namespace, urls: list[str]) -> None:
    capacity = local_capacity(args.cpus, args.memory_mb, args.gpus)
    nc = await connect(urls, "maze-local-worker")
    worker = Worker(
        nc,
        args.node_id,
        capacity,
        local_ip(),
        heartbeat_interval=args.heartbeat_interval,
        limits=ValueLimits(inline_bytes=args.inline_bytes, blob_max_bytes=args.blob_max_bytes),
    )
    worker.first_session = args.session
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await worker.start()
    try:
        await stopping.wait()
    finally:
        await worker.stop()
        with contextlib.suppress(Exception):
            await worker.nc.close()


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m maze.workers.local")
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--session", required=True)
    parser.add_argument("--cpus", type=float, default=None)
    parser.add_argument("--memory-mb", type=int, default=None)
    parser.add_argument("--gpus", default=None)
    parser.add_argument("--heartbeat-interval", type=float, default=2.0)
    parser.add_argument("--inline-bytes", type=int, default=ValueLimits().inline_bytes)
    parser.add_argument("--blob-max-bytes", type=int, default=ValueLimits().blob_max_bytes)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    die_with(int(os.environ.get(PARENT_ENV) or 0) or None)
    configure_logging(args.log_level)
    hops.configure(env_settings().trace_hops)
    urls = [u for u in os.environ.get(NATS_ENV, "").split(",") if u]
    try:
        from maze.core.loop import run_loop

        run_loop(main(args, urls))
    except MazeError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    cli()
