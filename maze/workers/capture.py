"""What one attempt prints: its task process's file descriptors 1 and 2, read line by line.

Each attempt gets two fresh pipes. Their write ends are passed to the (warm) task process with the
attempt (maze/workers/pool.py, SCM_RIGHTS), which puts them on fds 1 and 2 while the attempt runs
(maze/workers/child.py): `print`, C code writing to fd 1, and every process the task starts (which
inherit those fds) write into them. When the attempt ends, the task process puts its own fds
back, so what comes later through these pipes can only be from processes that attempt started:
every line is its attempt's, never the next one's, however a warm process is reused.

The worker always keeps reading (a task printing without end must neither block on a full pipe nor
fill the worker's memory). Up to the cap (`log_cap_bytes`, 8 MiB by default) each line goes to the
log shipper; past it the rest is read and thrown away (spliced to /dev/null where the kernel can,
without copying it), and one line of stream `maze` says how many bytes were cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Callable

from maze.core.clock import now_ms
from maze.events.logs import LogLine, Stream
from maze.workers.log_shipper import LogShipper

READ_BYTES = 256 * 1024
MAX_LINE_BYTES = 16 * 1024  # a longer line is kept as pieces of this size
_CUT_READ_BYTES = 1024 * 1024
_DRAIN_READS = 64
_DEVNULL: int | None = None
_SPLICE = getattr(os, "splice", None)  # Linux: moves pipe data to /dev/null without copying it here


def _devnull() -> int:
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    return _DEVNULL


class _Pipe:
    __slots__ = ("fd", "rest", "stream")

    def __init__(self, fd: int, stream: Stream) -> None:
        self.fd = fd
        self.stream: Stream = stream
        self.rest = b""  # a line begun and not ended yet


class AttemptCapture:
    """The pipes of one attempt. `fds` go to the task process; `ended()` when the attempt is over
    (its process answered or died): what its process wrote is read then; what processes it left
    running write later is read until they close the pipes (still this attempt's)."""

    def __init__(
        self,
        shipper: LogShipper,
        run_id: str,
        task_id: str,
        attempt: int,
        cap_bytes: int,
        on_closed: Callable[[AttemptCapture], None] | None = None,
    ) -> None:
        self.shipper = shipper
        self.run_id = run_id
        self.task_id = task_id
        self.attempt = attempt
        self.cap_bytes = cap_bytes
        self.on_closed = on_closed
        self.kept = 0  # bytes kept (shipped)
        self.cut = 0  # bytes past the cap, thrown away
        self.lost = 0  # bytes dropped because the shipper's buffer was full
        self.reported = (0, 0)  # (cut, lost) said by a marker line already
        self.lines = 0
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._pipes: dict[int, _Pipe] = {}
        self.fds: list[int] = []
        try:
            for stream in ("stdout", "stderr"):
                read_fd, write_fd = os.pipe()  # neither inherited by processes this one starts
                self._pipes[read_fd] = _Pipe(read_fd, stream)
                self.fds.append(write_fd)
                os.set_blocking(read_fd, False)  # the task's end blocks, as on a terminal
        except BaseException:
            self._close_all()
            raise
        for fd in self._pipes:
            self._loop.add_reader(fd, self._on_readable, fd)

    # ---- the attempt's life -------------------------------------------------------------------
    def sent(self) -> None:
        """The task process holds the write ends now (or never will): this process lets go of its
        copies, so the pipes end when the task's processes are done with them."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []

    def ended(self) -> None:
        """The attempt is over: read what its process left in the pipes, and end its unfinished
        lines, so that everything it printed is queued before its result is recorded."""
        self.sent()
        for fd in list(self._pipes):
            # what its process wrote is at most a pipe's worth now; the bound is for processes it
            # left running that write on without pause (read as usual, from the loop, after this)
            for _ in range(_DRAIN_READS):
                if not self._on_readable(fd):
                    break
        for pipe in self._pipes.values():
            self._end_line(pipe)
        self._mark()

    def close(self) -> None:
        """Stop reading now (the worker is stopping)."""
        for pipe in list(self._pipes.values()):
            self._end_line(pipe)
        self._close_all()
        self._finish()

    # ---- reading ------------------------------------------------------------------------------
    def _on_readable(self, fd: int) -> bool:
        """Read once from `fd`; whether there may be more to read now."""
        pipe = self._pipes.get(fd)
        if pipe is None:
            return False
        if self.cut:
            return self._discard(pipe)
        try:
            data = os.read(fd, READ_BYTES)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._eof(pipe)
            return False
        self._feed(pipe, data)
        return True

    def _feed(self, pipe: _Pipe, data: bytes) -> None:
        at = now_ms()
        buf = pipe.rest + data if pipe.rest else data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            self._keep(pipe.stream, buf[start:end], at, 1)
            start = end + 1
            if self.cut:
                self.cut += len(buf) - start
                pipe.rest = b""
                return
        rest = buf[start:]
        while len(rest) >= MAX_LINE_BYTES:  # a line without end: kept in pieces
            self._keep(pipe.stream, rest[:MAX_LINE_BYTES], at, 0)
            rest = rest[MAX_LINE_BYTES:]
            if self.cut:
                self.cut += len(rest)
                rest = b""
        pipe.rest = rest

    def _keep(self, stream: Stream, raw: bytes, at: int, ending: int) -> None:
        """Keep one line (`ending`: the bytes of its line break, counted but not kept)."""
        size = len(raw) + ending
        if self.kept + size > self.cap_bytes:
            self.cut += size
            return
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        # pieces of a long line: a multi-byte character cut in two shows as U+FFFD
        line = LogLine(attempt=self.attempt, stream=stream, at_ms=at, text=raw.decode("utf-8", "replace"))
        if self.shipper.add(self.run_id, self.task_id, line, len(raw) + 24):
            self.kept += size
            self.lines += 1
        else:
            self.lost += size

    def _end_line(self, pipe: _Pipe) -> None:
        if pipe.rest:
            rest, pipe.rest = pipe.rest, b""
            if self.cut:
                self.cut += len(rest)
            else:
                self._keep(pipe.stream, rest, now_ms(), 0)

    def _discard(self, pipe: _Pipe) -> bool:
        """Past the cap: the pipe is emptied without keeping anything."""
        global _SPLICE
        try:
            if _SPLICE is not None:
                moved = _SPLICE(pipe.fd, _devnull(), _CUT_READ_BYTES)
            else:
                moved = len(os.read(pipe.fd, _CUT_READ_BYTES))
        except BlockingIOError:
            return False
        except OSError as exc:
            if _SPLICE is not None and exc.errno in (errno.EINVAL, errno.ENOSYS):
                _SPLICE = None  # not here: read and drop from now on
                return True
            moved = 0
        if not moved:
            self._eof(pipe)
            return False
        self.cut += moved
        return True

    def _eof(self, pipe: _Pipe) -> None:
        self._end_line(pipe)
        self._close_pipe(pipe)
        if not self._pipes:
            self._finish()

    # ---- the end ------------------------------------------------------------------------------
    def _mark(self) -> None:
        """One line of stream `maze` for what was cut or lost and not said yet."""
        cut, lost = self.cut - self.reported[0], self.lost - self.reported[1]
        if not (cut or lost):
            return
        parts = []
        if cut:
            parts.append(
                f"{cut:,} bytes of output past the cap of {self.cap_bytes:,} bytes per attempt were cut"
            )
        if lost:
            parts.append(f"{lost:,} bytes were dropped while the log store did not take them")
        later = " (after the attempt ended)" if self.reported != (0, 0) else ""
        text = f"[maze] {'; '.join(parts)}{later}"
        line = LogLine(attempt=self.attempt, stream="maze", at_ms=now_ms(), text=text)
        self.shipper.add(self.run_id, self.task_id, line, len(text) + 24, force=True)
        self.reported = (self.cut, self.lost)

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._mark()
        if self.on_closed is not None:
            self.on_closed(self)

    def _close_pipe(self, pipe: _Pipe) -> None:
        if self._pipes.pop(pipe.fd, None) is None:
            return
        with contextlib.suppress(Exception):
            self._loop.remove_reader(pipe.fd)
        with contextlib.suppress(OSError):
            os.close(pipe.fd)

    def _close_all(self) -> None:
        self.sent()
        for pipe in list(self._pipes.values()):
            self._close_pipe(pipe)
