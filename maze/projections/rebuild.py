"""Rebuild the read models from the event log and check them against the live ones."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import duckdb
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from maze.core.errors import Conflict, Unavailable
from maze.events import subjects
from maze.events.catalog import Event
from maze.events.codec import decode_events
from maze.events.store import subscribe_ordered
from maze.projections import db
from maze.projections.bulk import BulkFolder, gc_paused
from maze.projections.projector import STREAMS, Projector
from maze.projections.schema import TABLES, ddl

REBUILD_BATCH = 2_000  # messages folded and written per transaction (DuckDB wants few, large ones)
STALL_S = 10.0


async def fold_streams_into(nc: NATS, conn: duckdb.DuckDBPyConnection, upto: dict[str, int]) -> None:
    """Replay each stream from its start up to `upto[stream]` into a fresh database. Messages
    arrive by callback into a list (awaiting each with `next_msg` cost ~100 µs a message, more
    than folding it) while the batch before is folded in a thread; rows are written in bulk
    (bulk.py)."""
    folder = BulkFolder(conn)
    try:
        with gc_paused():
            await _replay(nc, folder, upto)
            await asyncio.to_thread(folder.finish)
    finally:
        folder.close()


async def _replay(nc: NATS, folder: BulkFolder, upto: dict[str, int]) -> None:
    js = nc.jetstream()
    for stream in STREAMS:
        last = upto.get(stream, 0)
        if last == 0:
            continue
        subject = subjects.RUN_SUBJECTS if stream == subjects.RUNS_STREAM else subjects.NODE_SUBJECTS
        arrived: list[Msg] = []
        more = asyncio.Event()

        async def take(msg: Msg, arrived: list[Msg] = arrived, more: asyncio.Event = more) -> None:
            arrived.append(msg)
            more.set()

        sub = await subscribe_ordered(js, subject, 1, cb=take)
        try:
            done = False
            while not done:
                try:
                    await asyncio.wait_for(more.wait(), STALL_S)
                except TimeoutError as exc:
                    raise Unavailable(f"the {stream} stream stopped answering during the rebuild") from exc
                more.clear()
                if len(arrived) < REBUILD_BATCH and arrived[-1].metadata.sequence.stream < last:
                    continue  # gather a large batch
                msgs = arrived[:]
                arrived.clear()
                batch = []
                for msg in msgs:
                    seq = msg.metadata.sequence.stream
                    if seq > last:
                        done = True
                        break
                    batch.append(
                        (stream, seq, decode_events(msg.data, stream=stream, seq=seq, subject=msg.subject))
                    )
                    if seq == last:
                        done = True
                        break
                if batch:  # in a thread: the loop goes on reading the log and answering queries
                    await asyncio.to_thread(_fold_and_commit, folder, batch)
        finally:
            await sub.unsubscribe()


def _fold_and_commit(folder: BulkFolder, batch: list[tuple[str, int, list[Event]]]) -> None:
    folder.commit(*folder.fold(batch))


def compare(live: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Every table of the live file against the rebuilt one (attached as `rebuilt`), in DuckDB: equal
    when both hold as many rows and no live row is missing from the rebuilt table (the rows of
    each are distinct: each table has a primary key)."""
    tables = {}
    for table in TABLES:
        cols = ", ".join(TABLES[table])
        rows, rebuilt_rows, missing = live.execute(
            f"SELECT (SELECT count(*) FROM {table}), (SELECT count(*) FROM rebuilt.{table}), "
            f"(SELECT count(*) FROM (SELECT {cols} FROM {table} EXCEPT ALL SELECT {cols} FROM rebuilt.{table}))"
        ).fetchone() or (0, 0, 0)
        tables[table] = {
            "rows": rows,
            "rebuilt_rows": rebuilt_rows,
            "equal": rows == rebuilt_rows and not missing,
        }
    return {"equal": all(t["equal"] for t in tables.values()), "tables": tables}


def swap(live: duckdb.DuckDBPyConnection) -> None:
    """Replace the live tables with the rebuilt ones in one transaction: each dropped, made again
    and filled (deleting every row and inserting again under the primary-key indexes took ~10 s
    for 100,000 runs, this ~1 s; bench/history.py)."""
    tables = {**{t: list(cols) for t, cols in TABLES.items()}, "projection_position": ["stream", "seq"]}
    live.execute("BEGIN")
    try:
        for table in tables:
            live.execute(f"DROP TABLE {table}")
        for stmt in ddl():
            live.execute(stmt)
        for table, cols in tables.items():
            names = ", ".join(cols)
            live.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM rebuilt.{table}")
        live.execute("COMMIT")
    except Exception:
        live.execute("ROLLBACK")
        raise


def _compare_and_swap(live: duckdb.DuckDBPyConnection, path: Path, replace: bool) -> dict[str, Any]:
    source = str(path).replace("'", "''")
    live.execute(f"ATTACH '{source}' AS rebuilt (READ_ONLY)")
    try:
        report = compare(live)
        if replace:
            swap(live)
        return report
    finally:
        live.execute("DETACH rebuilt")


async def rebuild(nc: NATS, projector: Projector, replace: bool = True) -> dict[str, Any]:
    """Pause the live projector, replay the log into a new file up to the live position, compare
    every table, and (if asked) replace the live tables with the rebuilt ones."""
    if _running.locked():
        raise Conflict("a rebuild of the read models is running already: wait for its report")
    async with _running:
        return await _rebuild(nc, projector, replace)


# one rebuild at a time: a second one would wait on the projector's thread lock on the event loop,
# and with it every query and the live projector
_running = asyncio.Lock()


async def _rebuild(nc: NATS, projector: Projector, replace: bool) -> dict[str, Any]:
    path = Path(str(projector.path) + ".rebuild")
    path.unlink(missing_ok=True)
    for scratch in path.parent.glob("bulk-*"):  # left by a rebuild that was killed
        if scratch.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
    # taken off the event loop: the live projector's thread may hold it for a batch meanwhile.
    # Were this request cancelled while it waits, the lock is released as soon as it is taken.
    acquiring = asyncio.ensure_future(asyncio.to_thread(projector.lock.acquire))
    try:
        await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        acquiring.add_done_callback(lambda _: projector.lock.release())
        raise
    try:
        upto = projector.positions
        rebuilt = db.open_db(path)
        try:
            await fold_streams_into(nc, rebuilt, upto)
            rebuilt.close()
            report = await asyncio.to_thread(_compare_and_swap, projector.cursor(), path, replace)
            report["positions"] = upto
            if replace:
                projector.folder.forget()  # GET /runs/{id} answers from the new tables
                report["replaced"] = True
        finally:
            try:
                rebuilt.close()
            except Exception:
                pass
            path.unlink(missing_ok=True)
            Path(str(path) + ".wal").unlink(missing_ok=True)
    finally:
        projector.lock.release()
    return report
