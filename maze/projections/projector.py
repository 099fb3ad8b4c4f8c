"""The projector: applies run and node events to the DuckDB read models in batches.

Its position in each stream is stored in the same transaction as the rows, and it resumes from
there with an ordered consumer, so a crash replays at most the uncommitted batch and never
double-applies. One writer; queries use their own cursors.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import duckdb
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from maze.core import hops
from maze.core.tasks import cancel_and_wait
from maze.events import subjects
from maze.events.catalog import Event
from maze.events.codec import decode_events
from maze.events.store import subscribe_ordered
from maze.projections import db
from maze.projections.folder import Folder
from maze.projections.rows import RunRow

log = structlog.get_logger(__name__)

BATCH = 2000
BATCH_WINDOW_S = 1.0
HURRY_CHECK_S = 0.02  # how often a gathering batch looks for waiting readers
QUIET_S = 0.01
QUICK_MSGS = 20


class Projector:
    def __init__(self, nc: NATS, path: Path) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.path = path
        self.conn = db.open_db(path)
        self.folder = Folder(self.conn)
        self.lock = threading.Lock()  # held while a batch is written or a rebuild compares
        self._cursors = threading.local()  # each query thread's cursor (`thread_cursor`)
        self.advanced = asyncio.Condition()
        self.readers_waiting = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def positions(self) -> dict[str, int]:
        return dict(self.folder.positions)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor (a rebuild's: its transaction and attached files are its own)."""
        return db.cursor(self.conn)

    def thread_cursor(self) -> duckdb.DuckDBPyConnection:
        """The calling thread's cursor for queries, made once a thread: a DuckDB cursor is a
        connection of its own, and one made to `USE` the read models costs ~0.1 ms (db.cursor),
        beside ~0.4 ms for a short query. Never handed to another thread: a cursor is not for two
        at once."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._cursors, "cursor", None)
        if cur is None:
            cur = self._cursors.cursor = db.cursor(self.conn)
        return cur

    def run_row(self, run_id: str) -> RunRow | None:
        """The committed row of a run the projector holds in memory (None: ask DuckDB)."""
        return self.folder.run_rows.get(run_id)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="projector")

    async def stop(self) -> None:
        await cancel_and_wait([self._task], timeout=10)
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self.lock:  # a batch may still be committing in its thread
            self.conn.close()  # and with it every cursor made of it (the query threads' too)

    async def wait_for(self, targets: dict[str, int], timeout: float = 5.0) -> bool:
        """Wait until every stream position reaches its target (read-your-writes, no sleeps)."""

        def reached() -> bool:
            return all(self.folder.positions.get(s, 0) >= q for s, q in targets.items())

        if reached():
            return True
        self.readers_waiting += 1  # the batch being gathered is written as soon as it can be
        try:
            async with self.advanced:
                try:
                    await asyncio.wait_for(self.advanced.wait_for(reached), timeout)
                except TimeoutError:
                    return False
            return True
        finally:
            self.readers_waiting -= 1

    async def _run_forever(self) -> None:
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("projector.crashed_resuming")
                await asyncio.sleep(0.5)

    async def _consume(self) -> None:
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def enqueue(msg: Msg) -> None:
            queue.put_nowait(msg)

        subs = []
        try:
            for stream, subject in (
                (subjects.RUNS_STREAM, subjects.RUN_SUBJECTS),
                (subjects.NODES_STREAM, subjects.NODE_SUBJECTS),
            ):
                start = self.folder.positions.get(stream, 0) + 1
                subs.append(await subscribe_ordered(self.js, subject, start, cb=enqueue))
            loop = asyncio.get_running_loop()
            while True:
                msgs = [await queue.get()]
                # DuckDB wants few, large transactions: a write costs ~10-20 ms of CPU whatever its
                # size (bench/projector.py), CPU taken from the tasks' path on a small machine. A
                # small batch ends when the stream has been quiet for QUIET_S (a lone run is visible
                # within ~20 ms); a batch that has grown past QUICK_MSGS (steady load) gathers for
                # up to BATCH_WINDOW_S, so the fixed cost is paid about once a second, not per
                # event; but a reader waiting for a position (read-your-writes) has what is there
                # written at once.
                deadline = loop.time() + BATCH_WINDOW_S
                while len(msgs) < BATCH and not self.readers_waiting:
                    if queue.empty():
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            break
                        wait = min(QUIET_S if len(msgs) < QUICK_MSGS else HURRY_CHECK_S, remaining)
                        try:
                            msgs.append(await asyncio.wait_for(queue.get(), wait))
                        except TimeoutError:
                            if len(msgs) < QUICK_MSGS:
                                break  # quiet: a small batch is done
                            # a big one gathers on until its window ends or a reader waits
                    else:
                        msgs.append(queue.get_nowait())
                batch = [
                    (
                        m.metadata.stream,
                        m.metadata.sequence.stream,
                        decode_events(
                            m.data,
                            stream=m.metadata.stream,
                            seq=m.metadata.sequence.stream,
                            subject=m.subject,
                        ),
                    )
                    for m in msgs
                ]
                await asyncio.to_thread(self._apply, batch)
                async with self.advanced:
                    self.advanced.notify_all()
        finally:
            for sub in subs:
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass

    def _apply(self, batch: list[tuple[str, int, list[Event]]]) -> None:
        with self.lock:
            models, nodes, new_positions = self.folder.fold(batch)
            if new_positions:
                self.folder.commit(models, nodes, new_positions)
        if hops.enabled():
            for model in models:
                if model.finished:
                    hops.mark("projected_finished", model.run.run_id)

    def snapshot(self) -> dict[str, Any]:
        return {"positions": self.positions, "path": str(self.path)}
