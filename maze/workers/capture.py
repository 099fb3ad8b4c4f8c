"""What an attempt prints: its task process's file descriptors 1 and 2, read line by line.

Each task process gets two pipes for its whole life (`ProcessOutput`). Their write ends go to the
(warm) task process with its first attempt (maze/workers/pool.py, SCM_RIGHTS), which keeps them and
puts them on fds 1 and 2 again at every attempt's start (maze/workers/child.py): `print`, C code
writing to fd 1, and every process the task starts (which inherit those fds) write into them. An
attempt's lines are what the pipes bring between its start and its reply: before it replies, its
task process flushes what it buffered and kills every process the attempt left running
(maze/core/procs.py end_leftovers), so when the reply is read everything the attempt wrote is in
the pipes already, and nothing of it can come later. The worker reads them empty then
(`ProcessOutput.end`), and the next attempt's lines are its own, however a warm process is reused.
A sandbox's process serves one attempt and is killed whole after it: what its pipes bring until
they close is still that attempt's (`end(linger=True)`), as it is for a process killed or dead.

The worker always keeps reading (a task printing without end must neither block on a full pipe nor
fill the worker's memory). Up to the cap (`log_cap_bytes`, 8 MiB by default) each line goes to the
log shipper; past it the rest is read and thrown away (spliced to /dev/null where the kernel can,
without copying it), and one line of stream `maze` says how many bytes were cut.

Pipes made once per process, not per attempt: making, watching and closing two pipes for every
attempt cost the head ~50 µs of CPU a task in a no-op fan-out (434-451 → 379-409 µs a task).
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
    __slots__ = ("fd", "stream")

    def __init__(self, fd: int, stream: Stream) -> None:
        self.fd = fd
        self.stream: Stream = stream


class AttemptCapture:
    """The lines of one attempt: kept up to the cap, cut past it, and said where cut or lost."""

    def __init__(
        self,
        shipper: LogShipper,
        run_id: str,
        task_id: str,
        attempt: int,
        cap_bytes: int,
    ) -> None:
        self.shipper = shipper
        self.run_id = run_id
        self.task_id = task_id
        self.attempt = attempt
        self.cap_bytes = cap_bytes
        self.kept = 0  # bytes kept (shipped)
        self.cut = 0  # bytes past the cap, thrown away
        self.lost = 0  # bytes dropped because the shipper's buffer was full
        self.reported = (0, 0)  # (cut, lost) said by a marker line already
        self.lines = 0
        self.closed = False
        self._rest: dict[Stream, bytes] = {}  # per stream: a line begun and not ended yet

    def feed(self, stream: Stream, data: bytes) -> None:
        at = now_ms()
        rest = self._rest.get(stream)
        buf = rest + data if rest else data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            self._keep(stream, buf[start:end], at, 1)
            start = end + 1
            if self.cut:
                self.cut += len(buf) - start
                self._rest.pop(stream, None)
                return
        rest = buf[start:]
        while len(rest) >= MAX_LINE_BYTES:  # a line without end: kept in pieces
            self._keep(stream, rest[:MAX_LINE_BYTES], at, 0)
            rest = rest[MAX_LINE_BYTES:]
            if self.cut:
                self.cut += len(rest)
                rest = b""
        if rest:
            self._rest[stream] = rest
        else:
            self._rest.pop(stream, None)

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

    def end_line(self, stream: Stream) -> None:
        rest = self._rest.pop(stream, None)
        if rest:
            if self.cut:
                self.cut += len(rest)
            else:
                self._keep(stream, rest, now_ms(), 0)

    def end_lines(self) -> None:
        for stream in list(self._rest):
            self.end_line(stream)

    def mark(self) -> None:
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

    def finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.end_lines()
        self.mark()


class ProcessOutput:
    """The two pipes of one task process's fds 1 and 2, read for its whole life. `fds` go to the
    process with its first attempt; `begin` and `end` bracket each attempt; what comes while no
    attempt is running is handed to `on_stray`. The pipes close themselves when every process
    holding their write ends is gone (the task process ended, and what it started)."""

    def __init__(self, on_stray: Callable[[Stream, bytes], None]) -> None:
        self.on_stray = on_stray
        self.on_close: Callable[[ProcessOutput], None] | None = None
        # the attempt whose lines the pipes bring; after a lingering end, still it until they close
        self.capture: AttemptCapture | None = None
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._pipes: dict[int, _Pipe] = {}
        self.fds: list[int] = []  # the write ends, until the task process has them
        try:
            for stream in ("stdout", "stderr"):
                read_fd, write_fd = os.pipe()  # neither inherited by processes this one starts
                self._pipes[read_fd] = _Pipe(read_fd, stream)
                self.fds.append(write_fd)
                os.set_blocking(read_fd, False)  # the task's end blocks, as on a terminal
        except BaseException:
            self.close()
            raise
        for fd in self._pipes:
            self._loop.add_reader(fd, self._on_readable, fd)

    def take_fds(self) -> list[int]:
        """The write ends to send with this attempt: both the first time, none after."""
        return list(self.fds)

    def sent(self) -> None:
        """The task process holds the write ends now (or never will): this process lets go of its
        copies, so the pipes end when the task's processes are done with them."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []

    # ---- an attempt ---------------------------------------------------------------------------
    def begin(self, capture: AttemptCapture) -> None:
        if self.capture is not None:  # one lingering still (never so for a process used again)
            self.capture.finish()
            self.capture = None
        self._drain()  # what came while no attempt ran is not this one's
        self.capture = capture

    def _drain(self) -> None:
        for fd in list(self._pipes):
            # what its process wrote is at most a pipe's worth now; the bound is for processes
            # that write on without pause (read as usual, from the loop, after this)
            for _ in range(_DRAIN_READS):
                if not self._on_readable(fd):
                    break

    def end(self, linger: bool = False) -> None:
        """The attempt is over (its process answered, or died, or was killed): read what its
        process left in the pipes, and end its unfinished lines, so that everything it printed is
        queued before its result is recorded. `linger`: the process serves no other attempt, so
        what comes until the pipes close is still this attempt's."""
        self.sent()
        capture = self.capture
        self._drain()
        if capture is None or capture is not self.capture:
            return
        capture.end_lines()
        capture.mark()
        if self.closed or not linger:
            self.capture = None
            capture.finish()

    def close(self) -> None:
        """Stop reading now (the worker is stopping, or the pipes ended)."""
        self.sent()
        for pipe in list(self._pipes.values()):
            self._close_pipe(pipe)
        capture, self.capture = self.capture, None
        if capture is not None:
            capture.finish()
        if not self.closed:
            self.closed = True
            if self.on_close is not None:
                self.on_close(self)

    # ---- reading ------------------------------------------------------------------------------
    def _on_readable(self, fd: int) -> bool:
        """Read once from `fd`; whether there may be more to read now."""
        pipe = self._pipes.get(fd)
        if pipe is None:
            return False
        capture = self.capture
        if capture is not None and capture.cut:
            return self._discard(pipe, capture)
        try:
            data = os.read(fd, READ_BYTES)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._eof(pipe)
            return False
        if capture is not None:
            capture.feed(pipe.stream, data)
        else:
            self.on_stray(pipe.stream, data)
        return True

    def _discard(self, pipe: _Pipe, capture: AttemptCapture) -> bool:
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
        capture.cut += moved
        return True

    def _eof(self, pipe: _Pipe) -> None:
        if self.capture is not None:
            self.capture.end_line(pipe.stream)
        self._close_pipe(pipe)
        if not self._pipes:
            self.close()

    def _close_pipe(self, pipe: _Pipe) -> None:
        if self._pipes.pop(pipe.fd, None) is None:
            return
        with contextlib.suppress(Exception):
            self._loop.remove_reader(pipe.fd)
        with contextlib.suppress(OSError):
            os.close(pipe.fd)
