"""A rebuild's fold split over processes: runs never read one another's rows, so each process folds
the runs whose id hashes to it, into a read-model file of its own; the rebuild compares and swaps
in the union of the files' tables (rebuild.py), never a merged copy.

The fold is pure Python, ~10 µs an event, most of a rebuild (reading the log ~2 µs): one process
did not go past ~60,000 events/s (bench/history.py). The rebuilding process reads the log once and
hands each shard its messages, undecoded (a shard decodes only its own), in batches over a socket;
each shard is a `BulkFolder` (bulk.py) on a fresh file whose tables have no primary keys (only
appended to, then read whole: maintaining the keys' indexes was a third of a shard's work). What
every shard must see goes to all of them: leadership (`leader.elected` fences a deposed leader's
late decisions in each). The nodes stream is few messages: the first shard folds all of it.

A shard that fails or dies fails the rebuild with what it said; a rebuild that ends early (its
request cancelled, the log stalled) kills its shards. A rebuilding process killed itself leaves
its shards a closed socket: they end at their next read. Nothing a shard writes is read before all
of them have finished.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

from maze.core.errors import Unavailable
from maze.events import subjects
from maze.events.codec import decode_events
from maze.projections import db
from maze.projections.bulk import BulkFolder, gc_paused

MAX_SHARDS = 4
SHARD_BATCH = 2_000  # messages handed to a shard at a time
SHARD_BATCH_BYTES = 8 << 20  # or fewer, when they are large
JOIN_S = 5.0

Item = tuple[str, int, str, bytes]  # stream, sequence, subject, payload: a message as a shard gets it
_encode = msgspec.msgpack.Encoder().encode
_decode_items = msgspec.msgpack.Decoder(list[Item]).decode
_decode_answer = msgspec.msgpack.Decoder(dict[str, Any]).decode


def shard_count() -> int:
    """One shard per core this process may run on, up to MAX_SHARDS (the reading process takes a
    little of one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_SHARDS, cores or 1))


def shard_of(stream: str, subject: str, shards: int) -> int | None:
    """The shard that folds a message; None: every shard (leadership). A run's messages are on
    `maze.run.<run_id>` and `maze.run.<run_id>.<node>`; crc32, not `hash`, so that every process
    agrees."""
    if stream != subjects.RUNS_STREAM:
        return 0
    run_id = subject.split(".", 3)[2]
    if run_id == subjects.LEADER_RUN_ID:
        return None
    return zlib.crc32(run_id.encode()) % shards


def shard_main(pipe: Connection, path: str) -> None:
    """A shard's process: fold each batch it is handed into the file at `path`; an empty message
    ends the fold (the file is then complete). Answers once: `{"ok": true}` or the error."""
    try:
        conn = db.open_db(path, keys=False)  # appended to, then read whole by the compare and the swap
        conn.execute("SET threads = 1")  # one shard a core: DuckDB's own threads only contend
        folder = BulkFolder(conn)
        try:
            with gc_paused():  # bulk.py: the fold makes no cycles
                while data := pipe.recv_bytes():
                    batch = [
                        (stream, seq, decode_events(payload, stream=stream, seq=seq, subject=subject))
                        for stream, seq, subject, payload in _decode_items(data)
                    ]
                    folder.commit(*folder.fold(batch))
                folder.finish()
        finally:
            folder.close()
            conn.close()
        answer: dict[str, Any] = {"ok": True}
    except BaseException as exc:  # said to the rebuild, which fails with it
        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    pipe.send_bytes(_encode(answer))
    os._exit(0)  # nothing left to do: freeing millions of rows one by one only delays the rebuild


class Shards:
    """The shard processes of one rebuild, and their files under `scratch`."""

    def __init__(self, scratch: Path, count: int) -> None:
        self.scratch = scratch
        self.count = count
        self.paths = [scratch / f"shard-{i}.duckdb" for i in range(count)]
        self.pending: list[list[Item]] = [[] for _ in range(count)]
        self.pending_bytes = [0] * count
        self._procs: list[subprocess.Popen[bytes]] = []
        self._pipes: list[Connection] = []
        # one sending thread per shard: a batch goes whole (a pipe holds 64 KiB) without holding
        # the event loop, and in order; one batch in flight per shard while it folds the one before
        self._senders = [ThreadPoolExecutor(1, thread_name_prefix=f"shard-{i}") for i in range(count)]
        self._sending: list[asyncio.Future[None] | None] = [None] * count

    def start(self) -> None:
        """Each shard a fresh interpreter (`python -m maze.projections.shards FD PATH`): this
        process has threads (DuckDB's, nats') to not fork with, and multiprocessing's spawn would
        run the caller's `__main__` again in it."""
        for path in self.paths:
            ours, theirs = socket.socketpair()
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "maze.projections.shards", str(theirs.fileno()), str(path)],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                )
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            self._procs.append(proc)
            self._pipes.append(Connection(ours.detach()))

    def add(self, stream: str, seq: int, subject: str, payload: bytes) -> None:
        shard = shard_of(stream, subject, self.count)
        for i in range(self.count) if shard is None else (shard,):
            self.pending[i].append((stream, seq, subject, payload))
            self.pending_bytes[i] += len(payload)

    async def send_full(self) -> None:
        """Hand each shard its messages once a batch of them has gathered."""
        for i, items in enumerate(self.pending):
            if len(items) >= SHARD_BATCH or self.pending_bytes[i] >= SHARD_BATCH_BYTES:
                await self._send(i)

    async def _send(self, i: int) -> None:
        data, self.pending[i], self.pending_bytes[i] = _encode(self.pending[i]), [], 0
        await self._sent(i)
        self._sending[i] = asyncio.get_running_loop().run_in_executor(self._senders[i], self._write, i, data)

    async def _sent(self, i: int) -> None:
        sending, self._sending[i] = self._sending[i], None
        if sending is not None:
            await sending

    def _write(self, i: int, data: bytes) -> None:
        try:
            self._pipes[i].send_bytes(data)
        except OSError as exc:  # it ended: its answer (or its exit code) says why
            raise Unavailable(self._why_ended(i)) from exc

    async def finish(self) -> None:
        """Hand over what is left, end each shard's fold and wait for every answer."""
        for i in range(self.count):
            if self.pending[i]:
                await self._send(i)
            await self._sent(i)
            self._sending[i] = asyncio.get_running_loop().run_in_executor(
                self._senders[i], self._write, i, b""
            )
        for i in range(self.count):
            await self._sent(i)
        answers = await asyncio.gather(*(asyncio.to_thread(self._answer, i) for i in range(self.count)))
        for answer in answers:
            if not answer.get("ok"):
                raise RuntimeError(
                    f"a rebuild's fold process failed: {answer.get('error')}\n{answer.get('traceback')}"
                )
        for proc in self._procs:
            await asyncio.to_thread(proc.wait, JOIN_S)

    def _answer(self, i: int) -> dict[str, Any]:
        try:
            return _decode_answer(self._pipes[i].recv_bytes())
        except (EOFError, OSError) as exc:
            raise Unavailable(self._why_ended(i)) from exc

    def _why_ended(self, i: int) -> str:
        proc = self._procs[i]
        try:
            proc.wait(JOIN_S)
        except subprocess.TimeoutExpired:
            return "a rebuild's fold process stopped answering"
        return f"a rebuild's fold process ended before its answer (exit code {proc.returncode})"

    def close(self) -> None:
        """Stop every shard still running (a rebuild that ended early) and its threads."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            proc.wait()
        for pipe in self._pipes:
            pipe.close()
        for sender in self._senders:
            sender.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    shard_main(Connection(int(sys.argv[1])), sys.argv[2])
