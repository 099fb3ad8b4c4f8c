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
request cancelled, the log stalled) kills its shards; a rebuilding process killed itself takes its
shards with it (the kernel's parent-death signal). Nothing a shard writes is read before all
of them have finished.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from maze.core.errors import Unavailable
from maze.core.host_limits import usable_cores
from maze.events import subjects
from maze.projections.folder import FINISHED_ROWS
from maze.projections.shard_main import Item, Job

MAX_SHARDS = 4
SHARD_BATCH = 2_000  # messages handed to a shard at a time
SHARD_BATCH_BYTES = 8 << 20  # or fewer, when they are large
JOIN_S = 5.0
STALL_S = 120.0  # a shard taking no batch (or not finishing) this long is stuck


_encode = msgspec.msgpack.Encoder().encode
_decode_answer = msgspec.msgpack.Decoder(dict[str, Any]).decode


def shard_count() -> int:
    """One shard per core this process may run on (its cgroup's quota too), up to MAX_SHARDS (the
    reading process takes a little of one)."""
    return max(1, min(MAX_SHARDS, usable_cores()))


def shard_of(stream: str, subject: str, shards: int) -> int | None:
    """The shard that folds a message; None: every shard (leadership). A run's messages are on
    `maze.run.<run_id>` and `maze.run.<run_id>.<node>`; crc32, not `hash`, so that every process
    agrees."""
    if stream != subjects.RUNS_STREAM:
        return 0
    run_id = subjects.run_of(subject) or ""
    if run_id == subjects.LEADER_RUN_ID:
        return None
    return zlib.crc32(run_id.encode()) % shards


class Shard(NamedTuple):
    """A shard's process and this process's end of its socket."""

    proc: subprocess.Popen[bytes]
    pipe: Connection

    def discard(self) -> None:
        """End it (one waiting for its job ends when its socket closes; kill is for certain)."""
        self.pipe.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def spawn() -> Shard:
    """A shard process, waiting for its job: a fresh interpreter (`python -m
    maze.projections.shard_main FD PID`, shard_main.py). This process has threads (DuckDB's, nats')
    to not fork with, and multiprocessing's spawn would run the caller's `__main__` again in it."""
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "maze.projections.shard_main", str(theirs.fileno()), str(os.getpid())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return Shard(proc, Connection(ours.detach()))


def _spawned(count: int, held: list[Shard]) -> list[Shard]:
    """`held` and `count` fresh shards; if a start fails, every one of them is ended first."""
    shards = list(held)
    try:
        for _ in range(count):
            shards.append(spawn())
    except BaseException:
        for shard in shards:
            shard.discard()
        raise
    return shards


class ShardPool:
    """Shard processes started ahead of the next rebuild. A shard's start (an interpreter, and the
    imports it folds with: ~0.25 s of CPU each) otherwise competes with the rebuild's reading and
    folding on every core; started ahead, a rebuild of 100,000 runs took ~0.1-0.2 s less
    (bench/history.py, a rebuild called again). The read models' process fills it after each
    rebuild, in the background (`refill`), never before the first: a head that is never asked
    for a rebuild starts none. `size` wait, ~25 MB of their own each."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: list[Shard] = []
        self._lock = threading.Lock()
        self._closed = False

    def take(self, count: int) -> list[Shard]:
        """`count` shards: the waiting ones still alive first, fresh ones for the rest."""
        with self._lock:
            waiting, self._idle = self._idle, []
        alive: list[Shard] = []
        for shard in waiting:
            if shard.proc.poll() is None and len(alive) < count:
                alive.append(shard)
            else:  # gone (killed), or one too many (the pool was made for more)
                shard.discard()
        return _spawned(count - len(alive), alive)

    def refill(self) -> None:
        """Start shards until `size` wait: outside the lock (a start is a fork and an exec), so a
        rebuild taking shards meanwhile does not wait for it. Called in a thread of its own that
        lives on (the default executor's): a shard dies with the thread that started it (the
        kernel's parent-death signal is a thread's), and so with this process."""
        with self._lock:
            missing = 0 if self._closed else self.size - len(self._idle)
        fresh = _spawned(missing, [])
        with self._lock:
            if not self._closed:
                self._idle += fresh
                return
        for shard in fresh:  # closed meanwhile
            shard.discard()

    @property
    def waiting(self) -> list[Shard]:
        with self._lock:
            return list(self._idle)

    def close(self) -> None:
        """End every waiting shard; none is started again."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for shard in idle:
            shard.discard()


class Shards:
    """The shard processes of one rebuild, and their files under `scratch`."""

    def __init__(self, scratch: Path, count: int, pool: ShardPool | None = None) -> None:
        self.count = count
        self.paths = [scratch / f"shard-{i}.duckdb" for i in range(count)]
        self.pending: list[list[Item]] = [[] for _ in range(count)]
        self.pending_bytes = [0] * count
        self._pool = pool
        self._procs: list[subprocess.Popen[bytes]] = []
        self._pipes: list[Connection] = []
        # one sending thread per shard: a batch goes whole (a socket holds a few hundred KiB)
        # without holding the event loop, and in order; one batch in flight per shard while it
        # folds the one before
        self._senders = [ThreadPoolExecutor(1, thread_name_prefix=f"shard-{i}") for i in range(count)]
        self._sending: list[asyncio.Future[None] | None] = [None] * count

    def start(self) -> None:
        """A shard process for each file (the pool's waiting ones first: spawn), each told its job:
        the file, and its share of the finished rows a fold keeps in memory (FINISHED_ROWS in
        all). A waiting shard that died since the pool looked is replaced by a fresh one."""
        rows = max(1, FINISHED_ROWS // self.count)
        taken = self._pool.take(self.count) if self._pool is not None else []
        try:
            for i, path in enumerate(self.paths):
                shard = taken.pop(0) if taken else spawn()
                self._procs.append(shard.proc)  # `close` ends it from here on
                self._pipes.append(shard.pipe)
                job = _encode(Job(str(path), rows))  # a few bytes: the socket takes them at once
                try:
                    shard.pipe.send_bytes(job)
                except OSError:  # a pool's shard, gone since it was taken: a fresh one instead
                    shard.discard()
                    fresh = spawn()
                    self._procs[i], self._pipes[i] = fresh.proc, fresh.pipe
                    self._write(i, job)  # a failure says why (`_ended`)
        except BaseException:
            for shard in taken:  # not used: a start that failed midway
                shard.discard()
            raise

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
        await self._hand(i, data)

    async def _hand(self, i: int, data: bytes) -> None:
        """Give shard `i` its next message (a batch, or b"": the end) once it took the one before."""
        await self._sent(i)
        self._sending[i] = asyncio.get_running_loop().run_in_executor(self._senders[i], self._write, i, data)

    async def _sent(self, i: int) -> None:
        """Wait for the batch in flight to shard `i` to be taken; a shard that takes none for
        STALL_S is stuck (a batch folds in well under a second), and fails the rebuild rather
        than hold the live read models paused for ever."""
        sending, self._sending[i] = self._sending[i], None
        if sending is not None:
            try:
                await asyncio.wait_for(asyncio.shield(sending), STALL_S)
            except TimeoutError as exc:
                raise Unavailable(f"a rebuild's fold process took no batch in {STALL_S:.0f} s") from exc

    def _write(self, i: int, data: bytes) -> None:
        try:
            self._pipes[i].send_bytes(data)
        except OSError as exc:  # it ended: the failure it answered first (or its exit code) says why
            raise self._ended(i) from exc

    def _ended(self, i: int) -> Exception:
        """Why shard `i` stopped reading: a shard that fails answers, then ends, while this process
        may still be handing it batches; its answer is then here to read."""
        why = self._why_ended(i)
        pipe = self._pipes[i]
        try:
            answer = _decode_answer(pipe.recv_bytes()) if pipe.poll(0) else None
        except (EOFError, OSError, msgspec.DecodeError):
            answer = None
        if answer is not None and not answer.get("ok"):
            return _failed(answer)
        return Unavailable(why)

    async def finish(self) -> None:
        """Hand over what is left, end each shard's fold and wait for every answer."""
        for i in range(self.count):
            if self.pending[i]:
                await self._send(i)
            await self._hand(i, b"")
        for i in range(self.count):
            await self._sent(i)
        answering = asyncio.gather(*(asyncio.to_thread(self._answer, i) for i in range(self.count)))
        try:
            answers = await asyncio.wait_for(asyncio.shield(answering), STALL_S)
        except TimeoutError as exc:
            raise Unavailable(f"a rebuild's fold process did not finish in {STALL_S:.0f} s") from exc
        for answer in answers:
            if not answer.get("ok"):
                raise _failed(answer)

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
        """End every shard (one still running belongs to a rebuild that ended early; one that
        answered has closed its file) and its thread, then the sockets: a thread still writing to
        one gets an error, never another file's descriptor."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for sender in self._senders:
            sender.shutdown(wait=True, cancel_futures=True)
        for pipe in self._pipes:
            pipe.close()


def _failed(answer: dict[str, Any]) -> RuntimeError:
    return RuntimeError(f"a rebuild's fold process failed: {answer.get('error')}\n{answer.get('traceback')}")
