"""Rebuild the read models from the event log and check them against the live ones."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import duckdb
import structlog
from nats.aio.client import Client as NATS

from maze.core.errors import Conflict
from maze.events import subjects
from maze.events.log_reader import LogReader
from maze.projections import db
from maze.projections.bulk import gc_paused
from maze.projections.folder import STREAMS
from maze.projections.projector import Projector
from maze.projections.schema import KEYS, TABLES, ddl
from maze.projections.shards import ShardPool, Shards, shard_count

log = structlog.get_logger(__name__)


@asynccontextmanager
async def replayed(
    nc: NATS, where: Path, upto: dict[str, int], pool: ShardPool | None = None
) -> AsyncIterator[list[Path]]:
    """Replay each stream from its start up to `upto[stream]` into fresh read-model files, one per
    shard (shards.py), in a scratch folder under `where` that is removed on leaving. This process
    reads the log (log_reader.py: a connection of its own, a batch at a time) and hands the
    messages over; the shards fold them. With a `pool`, its waiting shards fold, and it is filled
    again on leaving, in the background, for the next rebuild."""
    scratch = Path(tempfile.mkdtemp(prefix="bulk-shards-", dir=where))
    shards = Shards(scratch, shard_count(), pool)
    try:
        shards.start()
        # bulk.py: ~0.1 s of collections in a 100,000-run replay, none of use. Off for this whole
        # process meanwhile (the read models' own: its queries go on, and make no cycles to speak
        # of); one rebuild at a time (`_running`), so no other pause overlaps this one
        with gc_paused():
            await _replay(nc, shards, upto)
        await shards.finish()
        yield shards.paths
    finally:
        await asyncio.to_thread(shards.close)
        shutil.rmtree(scratch, ignore_errors=True)
        if pool is not None:
            refilling = asyncio.ensure_future(asyncio.to_thread(_refill, pool))
            _refilling.add(refilling)
            refilling.add_done_callback(_refilling.discard)


_refilling: set[asyncio.Future[None]] = set()  # kept until done (a task only weakly held may vanish)


def _refill(pool: ShardPool) -> None:
    try:
        pool.refill()
    except Exception:  # the next rebuild starts its shards itself, and says why if it cannot
        log.warning("rebuild.shard_pool_not_filled", exc_info=True)


async def _replay(nc: NATS, shards: Shards, upto: dict[str, int]) -> None:
    async with LogReader.open(nc) as log:
        for stream in STREAMS:
            last = upto.get(stream, 0)
            if last == 0:
                continue
            subject = subjects.RUN_SUBJECTS if stream == subjects.RUNS_STREAM else subjects.NODE_SUBJECTS
            async with aclosing(log.read(stream, subject, 1, last)) as batches:
                async for msgs in batches:
                    for seq, msg_subject, payload in msgs:
                        shards.add(stream, seq, msg_subject, payload)
                    await shards.send_full()


def _union(sources: Sequence[str], table: str, cols: str) -> str:
    """The rebuilt rows of `table`: every shard's, together (each run is in one shard only)."""
    return " UNION ALL ".join(f"SELECT {cols} FROM {source}.{table}" for source in sources)


def compare(live: duckdb.DuckDBPyConnection, sources: Sequence[str] = ("rebuilt",)) -> dict[str, Any]:
    """Every table of the live file against the rebuilt ones (attached as `sources`), in DuckDB:
    equal when both hold as many rows and the same rows, told by a fingerprint of each side: the
    sum of every row's 64-bit hash of all its columns (order-free, so the shards' union needs no
    sort). Two different sets of rows of one size agree only if their hashes' sums do (for hashes
    that behave as random, a chance of about 2^-64); one scan a side, where an `EXCEPT ALL` of the
    rows built a hash table of every row (0.4 s at 100,000 runs, against 0.06 s now,
    bench/history.py). The rows of each side are distinct: the live tables have primary keys, and
    a shard's file holds each of its rows once (bulk.py replacing by key)."""
    tables = {}
    for table in TABLES:
        cols = ", ".join(TABLES[table])
        rows, live_sum = live.execute(_fingerprint(f"SELECT {cols} FROM {table}", cols)).fetchone() or (0, 0)
        rebuilt_rows, rebuilt_sum = live.execute(
            _fingerprint(_union(sources, table, cols), cols)
        ).fetchone() or (0, 0)
        tables[table] = {
            "rows": rows,
            "rebuilt_rows": rebuilt_rows,
            "equal": rows == rebuilt_rows and live_sum == rebuilt_sum,
        }
    return {"equal": all(t["equal"] for t in tables.values()), "tables": tables}


def _fingerprint(rows: str, cols: str) -> str:
    """How many `rows` there are, and the sum of their hashes (0 for none). DuckDB mixes each
    column's hash into the ones before it but XORs the last one in as it is: a constant after the
    columns makes every real one mixed (two rows trading their last column's values then change
    the sum as any other change does)."""
    return f"SELECT count(*), coalesce(sum(hash({cols}, 0)::HUGEINT), 0) FROM ({rows})"


def swap(live: duckdb.DuckDBPyConnection, sources: Sequence[str] = ("rebuilt",)) -> None:
    """Replace the live tables with the rebuilt ones in one transaction: each dropped, made again
    without its primary key, filled, and given its key (the index built once over every row:
    ~20% faster than filling a table that has it; deleting every row and inserting again under the
    keys' indexes took ~10 s for 100,000 runs, this ~0.7 s; bench/history.py). A rebuilt table
    whose keys were not unique fails the `ADD PRIMARY KEY`, and the swap with it. Each stream's
    position is the furthest any shard folded (every shard folds the leaderships; each its own
    runs)."""
    live.execute("BEGIN")
    try:
        for table in [*TABLES, "projection_position"]:
            live.execute(f"DROP TABLE {table}")
        for stmt in ddl(keys=False):
            live.execute(stmt)
        for table, cols in TABLES.items():
            names = ", ".join(cols)
            live.execute(f"INSERT INTO {table} ({names}) {_union(sources, table, names)}")
            live.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({', '.join(KEYS[table])})")
        positions = _union(sources, "projection_position", "stream, seq")
        live.execute(
            f"INSERT INTO projection_position SELECT stream, max(seq) FROM ({positions}) GROUP BY stream"
        )
        live.execute("COMMIT")  # where the keys are checked: a repeated one fails it, and ends it
    except Exception:
        db.roll_back(live)
        raise


def _compare_and_swap(live: duckdb.DuckDBPyConnection, paths: list[Path], replace: bool) -> dict[str, Any]:
    sources = [f"rebuilt{i}" for i in range(len(paths))]
    attached = []
    began = time.perf_counter()  # the attaches count as the compare's (each replays its file's log)
    try:
        for source, path in zip(sources, paths, strict=True):
            live.execute(f"ATTACH {db.sql_text(path)} AS {source} (READ_ONLY)")
            attached.append(source)
        report = compare(live, sources)
        compared = time.perf_counter()
        if replace:
            swap(live, sources)
        report["seconds"] = {
            "compare": round(compared - began, 3),
            "swap": round(time.perf_counter() - compared, 3),
        }
        return report
    finally:
        for source in attached:
            live.execute(f"DETACH {source}")


async def rebuild(
    nc: NATS, projector: Projector, replace: bool = True, pool: ShardPool | None = None
) -> dict[str, Any]:
    """Pause the live projector, replay the log into a new file up to the live position, compare
    every table, and (if asked) replace the live tables with the rebuilt ones. `pool`: shard
    processes started ahead (shards.py `ShardPool`)."""
    if _running.locked():
        raise Conflict("a rebuild of the read models is running already: wait for its report")
    async with _running:
        return await _rebuild(nc, projector, replace, pool)


# one rebuild at a time: a second one would wait on the projector's thread lock on the event loop,
# and with it every query and the live projector
_running = asyncio.Lock()


async def _rebuild(nc: NATS, projector: Projector, replace: bool, pool: ShardPool | None) -> dict[str, Any]:
    where = Path(projector.path).parent
    for scratch in where.glob("bulk-*"):  # left by a rebuild that was killed
        if scratch.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
    for old in (".rebuild", ".rebuild.wal"):  # the one file an earlier version rebuilt into
        Path(str(projector.path) + old).unlink(missing_ok=True)
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
        began = time.perf_counter()
        async with replayed(nc, where, upto, pool) as paths:
            replay_s = time.perf_counter() - began
            report = await asyncio.to_thread(_compare_and_swap, projector.cursor(), paths, replace)
        report["seconds"]["replay"] = round(replay_s, 3)
        report["positions"] = upto
        if replace:
            projector.folder.forget()  # GET /runs/{id} answers from the new tables
            report["replaced"] = True
    finally:
        projector.lock.release()
    return report
