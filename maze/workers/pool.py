"""Warm task processes, forked from a clean forkserver (never from the asyncio process).

Each attempt runs in its own OS process; idle processes are reused for CPU tasks, recycled after
`recycle_after` attempts, and replaced when they die or are killed for a timeout. GPU attempts get
a fresh process (CUDA reads CUDA_VISIBLE_DEVICES once per process) that is discarded after.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import psutil
import structlog

from maze.workers.child import child_main
from maze.workers.request_wire import send_request

if TYPE_CHECKING:
    from maze.workers.capture import ProcessOutput

log = structlog.get_logger(__name__)
_encoder = msgspec.msgpack.Encoder()
# A reply holds the outputs (together at most the request's `blob_max_bytes`, maze/workers/child.py)
# and the error texts around them: anything larger is refused before it is held in memory.
REPLY_OVERHEAD_BYTES = 1024 * 1024
DEFAULT_BLOB_MAX_BYTES = 512 * 1024 * 1024
READ_CHUNK = 1024 * 1024


class ProcessHandle(Protocol):
    """What the pool uses of a task process: multiprocessing's Process, or a sandbox's bwrap
    process (maze/workers/sandbox.py)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def kill(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


def kill_group(proc: ProcessHandle) -> None:
    """SIGKILL to everything a task process started, then to it: its process group (a task's own
    children) and every descendant it has, those that made sessions or groups of their own
    included (the task process is a child subreaper, maze/workers/child.py: what its children
    leave behind, double-forked daemons included, is re-parented to it, so it is found here)."""
    pid = proc.pid
    if pid is None:
        return
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()
    if proc.is_alive():
        proc.kill()


def _time_out(reply: asyncio.Future[dict[str, Any]], timeout: float) -> None:
    if not reply.done():
        reply.set_exception(TimeoutError(f"no reply within {timeout:g}s"))


def reap(proc: ProcessHandle) -> None:
    """Wait for a killed task process to be gone, off the event loop when one runs (a process
    slow to die, a GPU's teardown, must not stall the worker's heartbeats)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        proc.join(timeout=5)
        return
    loop.run_in_executor(None, proc.join, 5)


class ReplyRefused(Exception):
    """The task process's reply broke the protocol: larger than a reply may be, or not a reply
    (task code holds the process's end of the connection and may write anything on it)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class ReplyReader:
    """A reply read as it arrives, never blocking: multiprocessing's framing (a 4-byte big-endian
    length, or -1 and an 8-byte one) accumulated from non-blocking reads in the loop's readable
    callback, its announced size checked against `limit` before anything more is read.

    The body goes into one buffer of exactly its announced size, each piece copied in once, and is
    handed back as a view of that buffer (msgspec decodes a memoryview): a reply of N bytes holds
    N bytes (and a read's piece), not a growing buffer and two copies of it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()  # the length prefix, until it is whole
        self.header = 4
        self.size: int | None = None
        self.body: bytearray | None = None
        self.filled = 0

    def feed(self, data: bytes) -> memoryview | None:
        """The whole reply (a view of this reader's buffer) once it is here, else None. Raises
        ReplyRefused."""
        if self.body is None:
            self.head += data
            size = self._announced()
            if size is None:
                return None
            self.size = size
            self.body = bytearray(size)
            data = bytes(self.head[self.header :])  # the start of the body that came with it
            self.head = bytearray()
        assert self.size is not None
        end = self.filled + len(data)
        if end > self.size:
            raise ReplyRefused(
                "protocol_error", "the task process wrote more than its reply on the connection"
            )
        memoryview(self.body)[self.filled : end] = data
        self.filled = end
        return memoryview(self.body) if end == self.size else None

    def _announced(self) -> int | None:
        """The reply's size once its length prefix is whole (checked), else None."""
        if len(self.head) < 4:
            return None
        (size,) = struct.unpack("!i", self.head[:4])
        if size == -1:
            self.header = 12
            if len(self.head) < 12:
                return None
            (size,) = struct.unpack("!Q", self.head[4:12])
        if size < 0:
            raise ReplyRefused("protocol_error", f"the task process sent a malformed reply (length {size})")
        if size > self.limit:
            raise ReplyRefused(
                "payload_too_large",
                f"the task process's reply is {size} bytes, above the limit of {self.limit} bytes "
                "(the outputs together may take the blob store's limit)",
            )
        return int(size)


class ProcessExited(Exception):
    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"task process exited with code {exitcode}")
        self.exitcode = exitcode


@dataclass(eq=False)
class TaskProcess:
    proc: ProcessHandle
    conn: multiprocessing.connection.Connection
    uses: int = 0
    reply: asyncio.Future[dict[str, Any]] | None = field(default=None)
    reader: ReplyReader | None = field(default=None)
    loaded: set[str] = field(default_factory=set)  # task code this process holds, by hash
    # the pipes of its fds 1 and 2, made at its first captured attempt and kept for its life
    output: ProcessOutput | None = field(default=None)

    @property
    def pid(self) -> int:
        return self.proc.pid or 0


class ProcessPool:
    single_use = False  # a process serves attempt after attempt

    def __init__(self, warm: int = 1, max_idle: int = 8, recycle_after: int = 1000) -> None:
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["maze.workers.child"])
        self.warm = warm
        self.max_idle = max_idle
        self.recycle_after = recycle_after
        self.idle: list[TaskProcess] = []
        self.busy: set[TaskProcess] = set()

    def start(self) -> None:
        for _ in range(self.warm):
            self.idle.append(self._spawn())

    def _spawn(self) -> TaskProcess:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=child_main, args=(child,), daemon=True)
        proc.start()
        child.close()
        return TaskProcess(proc=proc, conn=parent)

    def acquire(self, fresh: bool = False) -> TaskProcess:
        tp = None if fresh else (self.idle.pop() if self.idle else None)
        if tp is None:
            tp = self._spawn()
        self.busy.add(tp)
        return tp

    async def run(
        self,
        tp: TaskProcess,
        request: dict[str, Any],
        timeout: float | None,
        output_fds: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """Send one attempt to `tp` and wait for its answer. Raises ProcessExited or TimeoutError
        (the process is killed then). `output_fds`: what the attempt's fds 1 and 2 are to be while
        it runs (maze/workers/capture.py), passed to the process with it."""
        if output_fds is not None:
            request = {**request, "capture": True}
        loop = asyncio.get_running_loop()
        tp.reply = loop.create_future()
        tp.reader = ReplyReader(
            int(request.get("blob_max_bytes") or DEFAULT_BLOB_MAX_BYTES) + REPLY_OVERHEAD_BYTES
        )
        fd = tp.conn.fileno()
        try:
            send_request(fd, _encoder.encode(request), output_fds or ())  # whole, blocking
            # the reply is read without ever blocking: task code holds the other end, and may
            # announce a reply and never send it (the attempt's timeout ends that wait)
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._on_readable, tp)
            # the reply future itself is awaited, its timeout a timer that fails it: the answer
            # wakes this attempt in one turn of the loop (wait_for around a shield took three, each
            # behind whatever else the busy loop had ready)
            timer = loop.call_later(timeout, _time_out, tp.reply, timeout) if timeout is not None else None
            try:
                return await tp.reply
            finally:
                if timer is not None:
                    timer.cancel()
        except BaseException:
            self.kill(tp)
            raise
        finally:
            loop.remove_reader(fd)
            tp.reader = None
            tp.uses += 1

    def _on_readable(self, tp: TaskProcess) -> None:
        if tp.reply is None or tp.reply.done() or tp.reader is None:
            return
        try:
            data = os.read(tp.conn.fileno(), READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            tp.proc.join(timeout=0.1)  # closing its end: it is ending (bounded: on the loop)
            tp.reply.set_exception(ProcessExited(tp.proc.exitcode))
            return
        try:
            whole = tp.reader.feed(data)
            if whole is None:
                return
            reply = msgspec.msgpack.decode(whole)
            if not isinstance(reply, dict) or not {"ok", "payload", "duration_ms"} <= set(reply):
                raise ReplyRefused("protocol_error", "the task process's reply is not a reply")
        except ReplyRefused as exc:
            tp.reply.set_exception(exc)
            return
        except msgspec.DecodeError as exc:
            tp.reply.set_exception(
                ReplyRefused("protocol_error", f"the task process's reply is not a reply: {exc}")
            )
            return
        tp.reply.set_result(reply)

    def release(self, tp: TaskProcess, reuse: bool = True) -> None:
        self.busy.discard(tp)
        alive = tp.proc.is_alive()
        if reuse and alive and tp.uses < self.recycle_after and len(self.idle) < self.max_idle:
            self.idle.append(tp)
        else:
            self._close(tp)

    def kill(self, tp: TaskProcess) -> None:
        """Kill the task process and every process it started (its process group: a task's own
        children, unless they made groups of their own)."""
        kill_group(tp.proc)
        reap(tp.proc)

    def _close(self, tp: TaskProcess) -> None:
        try:
            tp.conn.close()
        except OSError:
            pass
        kill_group(tp.proc)
        reap(tp.proc)

    def shutdown(self) -> None:
        for tp in [*self.idle, *self.busy]:
            self._close(tp)
        self.idle.clear()
        self.busy.clear()
