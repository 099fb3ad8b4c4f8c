"""The read models' own process: the projector and every read-model query, beside the head.

The head's event loop runs the run controller, the API and its live streams; a projector folding
and writing DuckDB in a thread of that process took the GIL from them for milliseconds at a time
(a p99 and median killer for every task, DESIGN.md §8). So the projector lives here, in a process
the head starts and that dies with it, and the head's API asks it for read models over a Unix
socket in the data dir (DuckDB lets one process open the file, so queries must come here too).

    python -m maze.projections.service --db PATH --socket PATH   (NATS URLs in MAZE_READMODELS_NATS)

Protocol: each frame is a 4-byte big-endian length and a msgpack map. A request is
`{"op", "args", "min_seq"}`; the answer `{"ok": value}` or `{"error": {"type", "message",
"details"}}`, the head re-raising the same MazeError. `min_seq` is read-your-writes: the answer
waits (bounded) until the read models include the runs stream up to it, else `unavailable`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import struct
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import structlog

from maze.core import hops
from maze.core.errors import Conflict, MazeError, NotFound, Unavailable
from maze.core.logs import configure_logging
from maze.core.procs import die_with
from maze.core.settings import env_settings
from maze.core.task_machine import TERMINAL
from maze.events import subjects
from maze.events.store import connect, last_run_seq
from maze.projections import queries
from maze.projections.projector import Projector
from maze.projections.rebuild import rebuild
from maze.projections.run_search import RunQuery
from maze.projections.shards import ShardPool, shard_count

log = structlog.get_logger(__name__)
READ_BARRIER_S = 10.0
FRAME = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
NATS_ENV = "MAZE_READMODELS_NATS"
PARENT_ENV = "MAZE_PARENT_PID"  # the head's pid: this process dies with it


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    return _decoder.decode(await reader.readexactly(size))


def frame(value: Any) -> bytes:
    data = _encoder.encode(value)
    return FRAME.pack(len(data)) + data


class ReadModelServer:
    """Answers the head's read-model queries from the projector it runs."""

    def __init__(self, projector: Projector) -> None:
        self.projector = projector
        self.js = projector.js
        # shard processes kept started for the next rebuild, once one was asked for (shards.py)
        self.shard_pool = ShardPool(shard_count())
        self.ops: dict[str, Callable[..., Awaitable[Any]]] = {
            "list_runs": self.list_runs,
            "match_run_ids": self.match_run_ids,
            "search_runs": self.search_runs,
            "get_run": self.get_run,
            "get_tasks": self.get_tasks,
            "get_task": self.get_task,
            "get_artifacts": self.get_artifacts,
            "placements": self.placements,
            "list_nodes": self.list_nodes,
            "status": self.status,
            "rebuild": self.rebuild,
        }

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await read_frame(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                writer.write(frame(await self.answer(request)))
                await writer.drain()
        finally:
            writer.close()

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        op = self.ops.get(str(request.get("op")))
        try:
            if op is None:
                raise MazeError(f"unknown read-model query {request.get('op')!r}")
            if request.get("min_seq"):
                await self.reach(int(request["min_seq"]))
            return {"ok": await op(*request.get("args", []))}
        except MazeError as exc:
            return {"error": {"type": exc.error_type, "message": exc.message, "details": exc.details}}
        except Exception as exc:
            log.exception("readmodels.query_failed", op=request.get("op"))
            return {
                "error": {
                    "type": "internal_error",
                    "message": f"read-model query failed: {exc!r}",
                    "details": {},
                }
            }

    async def reach(self, target: int) -> None:
        if self.projector.folder.positions.get(subjects.RUNS_STREAM, 0) < target:
            # a sequence past the log's end is no write of the caller's: waiting cannot help
            last = int((await self.js.stream_info(subjects.RUNS_STREAM)).state.last_seq)
            if target > last:
                raise Conflict(
                    f"min_seq {target} is past the end of the event log (its last sequence is {last}): "
                    "pass the `seq` a submit returned, or one you have read",
                    min_seq=target,
                    last_seq=last,
                )
        if not await self.projector.wait_for({subjects.RUNS_STREAM: target}, timeout=READ_BARRIER_S):
            at = self.projector.positions.get(subjects.RUNS_STREAM, 0)
            # never answer from read models that miss what was already accepted
            raise Unavailable(
                f"read models are catching up with the event log (at event {at} of {target}); retry shortly",
                at=at,
                target=target,
            )

    async def _query(self, query: Callable[..., Any], *args: Any) -> Any:
        """`query(cursor, *args)` in a thread, on that thread's own cursor (Projector.thread_cursor)."""
        return await asyncio.to_thread(self._in_thread, query, *args)

    def _in_thread(self, query: Callable[..., Any], *args: Any) -> Any:
        return query(self.projector.thread_cursor(), *args)

    async def query_run(self, query: Callable[..., Any], run_id: str, *args: Any) -> Any:
        """A per-run query. A run the log has must not read as missing: if the read models do not
        know it yet, wait for them to reach its last event and ask again (404 only when the log
        has no such run)."""
        try:
            return await self._query(query, run_id, *args)
        except NotFound as exc:
            if "task_id" in exc.details:
                raise  # the run is there, the task is not
            last = await last_run_seq(self.js, run_id)
            if not last:
                raise
            await self.reach(last)
            return await self._query(query, run_id, *args)

    # ---- the queries ----------------------------------------------------------------------------
    async def list_runs(self, limit: int, offset: int, state: str | None) -> Any:
        return await self._query(queries.list_runs, limit, offset, state)

    async def match_run_ids(self, prefix: str, limit: int) -> Any:
        return await self._query(queries.match_run_ids, prefix, limit)

    async def search_runs(self, query: dict[str, Any]) -> Any:
        """A page of run history: `query` is a RunQuery (run_search.py) the head validated."""
        parsed = msgspec.convert(query, RunQuery)
        runs, next_cursor = await self._query(queries.search, parsed)
        return {"runs": runs, "next_cursor": next_cursor}

    async def get_run(self, run_id: str) -> Any:
        row = self.projector.run_row(run_id)
        if row is not None:  # an active or recent run: from memory, no DuckDB read
            run = queries.run_from_row(row)
        else:
            run = await self.query_run(queries.get_run, run_id)
        # only an ended run is retried (POST /runs/{id}/retry): only its retries are looked up
        run["retried_by"] = (
            await self.query_run(queries.retried_by, run_id) if run["state"] in TERMINAL else []
        )
        return run

    async def get_tasks(self, run_id: str, limit: int, offset: int) -> Any:
        return await self.query_run(queries.get_tasks, run_id, limit, offset)

    async def placements(self, run_id: str) -> Any:
        return await self.query_run(queries.placements, run_id)

    async def get_task(self, run_id: str, task_id: str) -> Any:
        return await self.query_run(queries.get_task, run_id, task_id)

    async def get_artifacts(self, run_id: str) -> Any:
        return await self.query_run(queries.get_artifacts, run_id)

    async def list_nodes(self) -> Any:
        return await self._query(queries.list_nodes)

    async def status(self) -> Any:
        return {**self.projector.snapshot(), "pid": os.getpid()}

    async def rebuild(self) -> Any:
        return await rebuild(self.projector.nc, self.projector, pool=self.shard_pool)


async def main(db_path: Path, socket_path: Path, urls: list[str]) -> None:
    nc = await connect(urls, "maze-readmodels")
    try:
        projector = Projector(nc, db_path)
    except duckdb.IOException as exc:
        raise Unavailable(f"read models at {db_path} are in use by another head: {exc}") from exc
    server = ReadModelServer(projector)
    socket_path.unlink(missing_ok=True)
    listener = await asyncio.start_unix_server(server.serve, path=str(socket_path))
    os.chmod(socket_path, 0o600)
    projector.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    log.info("readmodels.ready", db=str(db_path), socket=str(socket_path))
    try:
        await stopping.wait()
    finally:
        listener.close()
        await asyncio.to_thread(server.shard_pool.close)
        await projector.stop()
        with contextlib.suppress(Exception):
            await nc.close()
        socket_path.unlink(missing_ok=True)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m maze.projections.service")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    die_with(int(os.environ.get(PARENT_ENV) or 0) or None)
    configure_logging(args.log_level)
    hops.configure(env_settings().trace_hops)
    urls = [u for u in os.environ.get(NATS_ENV, "").split(",") if u]
    try:
        from maze.core.loop import run_loop

        run_loop(main(args.db, args.socket, urls))
    except MazeError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    cli()
