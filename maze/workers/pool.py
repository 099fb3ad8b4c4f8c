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
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.reduction import sendfds
from typing import Any, Protocol

import msgspec
import psutil
import structlog

from maze.workers.child import child_main

log = structlog.get_logger(__name__)
_encoder = msgspec.msgpack.Encoder()


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


def reap(proc: ProcessHandle) -> None:
    """Wait for a killed task process to be gone, off the event loop when one runs (a process
    slow to die, a GPU's teardown, must not stall the worker's heartbeats)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        proc.join(timeout=5)
        return
    loop.run_in_executor(None, proc.join, 5)


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
    loaded: set[str] = field(default_factory=set)  # task code this process holds, by hash

    @property
    def pid(self) -> int:
        return self.proc.pid or 0


class ProcessPool:
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
        fd = tp.conn.fileno()
        loop.add_reader(fd, self._on_readable, tp)
        try:
            # uvloop makes a watched fd non-blocking, and a message larger than the pipe's buffer
            # (task code, big inputs) would then fail half-written: send it whole (the task
            # process is waiting to read it)
            os.set_blocking(fd, True)
            tp.conn.send_bytes(_encoder.encode(request))
            if output_fds is not None:  # after the request, which says they follow
                with socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sendfds(sock, list(output_fds))
            return await asyncio.wait_for(asyncio.shield(tp.reply), timeout)
        except BaseException:
            self.kill(tp)
            raise
        finally:
            loop.remove_reader(fd)
            tp.uses += 1

    def _on_readable(self, tp: TaskProcess) -> None:
        if tp.reply is None or tp.reply.done():
            return
        try:
            os.set_blocking(tp.conn.fileno(), True)  # a reply larger than the pipe's buffer: read it whole
            data = tp.conn.recv_bytes()
        except (EOFError, OSError):
            tp.proc.join(timeout=1)
            tp.reply.set_exception(ProcessExited(tp.proc.exitcode))
            return
        tp.reply.set_result(msgspec.msgpack.decode(data))

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
