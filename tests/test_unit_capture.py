"""A task process's output pipes (maze/workers/capture.py): one pair for the process's life, read
between an attempt's start and its end as that attempt's lines; what comes while no attempt runs is
stray (the worker's, never a task's); a killed process's attempt keeps what comes until the pipes
close; past the cap an attempt's output is cut with a marker, and the next attempt starts clean.
Real pipes and a real event loop; this test writes what a task process would."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from maze.events.logs import LogLine
from maze.workers.capture import AttemptCapture, ProcessOutput


class Shipper:
    """Keeps what a LogShipper would queue: (task id, stream, text) in order."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str]] = []

    def add(self, run_id: str, task_id: str, line: LogLine, size: int, force: bool = False) -> bool:
        self.lines.append((task_id, line.stream, line.text))
        return True

    def of(self, task_id: str) -> list[tuple[str, str]]:
        return [(stream, text) for task, stream, text in self.lines if task == task_id]


def _run(
    scenario: Callable[[Shipper, ProcessOutput, list[int], list[tuple[str, bytes]]], Awaitable[Any]],
) -> None:
    async def main() -> None:
        shipper = Shipper()
        strays: list[tuple[str, bytes]] = []
        out = ProcessOutput(lambda stream, data: strays.append((stream, data)))
        mine = [os.dup(fd) for fd in out.take_fds()]  # the task process's ends: written here
        try:
            await scenario(shipper, out, mine, strays)
        finally:
            for fd in mine:
                try:
                    os.close(fd)
                except OSError:
                    pass
            out.close()

    asyncio.run(main())


def _attempt(shipper: Shipper, task_id: str, cap: int = 1 << 20) -> AttemptCapture:
    return AttemptCapture(shipper, "run", task_id, 1, cap)  # type: ignore[arg-type]


def test_each_attempt_gets_its_own_lines_and_what_comes_between_them_is_stray() -> None:
    async def scenario(shipper: Shipper, out: ProcessOutput, mine: list[int], strays: list) -> None:
        out.begin(_attempt(shipper, "first"))
        os.write(mine[0], b"one\nunfinished")
        os.write(mine[1], b"err\n")
        out.end()  # the answer came: the pipes are read empty, the unfinished line ended
        assert out.fds == []  # the worker let go of its copies of the write ends
        os.write(mine[0], b"from a thread\n")
        await asyncio.sleep(0.05)  # read from the loop while no attempt runs
        assert strays == [("stdout", b"from a thread\n")]
        os.write(mine[0], b"just before the next\n")  # not read yet when the next begins
        out.begin(_attempt(shipper, "second"))
        os.write(mine[0], b"two\n")
        out.end()
        assert shipper.of("first") == [("stdout", "one"), ("stderr", "err"), ("stdout", "unfinished")]
        assert shipper.of("second") == [("stdout", "two")]
        assert strays[1] == ("stdout", b"just before the next\n")
        assert not out.closed

    _run(scenario)


def test_a_killed_process_s_attempt_keeps_what_comes_until_the_pipes_close() -> None:
    async def scenario(shipper: Shipper, out: ProcessOutput, mine: list[int], strays: list) -> None:
        capture = _attempt(shipper, "killed")
        out.begin(capture)
        os.write(mine[0], b"before\n")
        out.end(linger=True)
        assert not capture.closed
        os.write(mine[0], b"after, from what it left\n")
        for fd in mine:
            os.close(fd)
        mine.clear()
        for _ in range(100):
            if out.closed:
                break
            await asyncio.sleep(0.01)
        assert out.closed and capture.closed
        assert shipper.of("killed") == [("stdout", "before"), ("stdout", "after, from what it left")]
        assert strays == []

    _run(scenario)


def test_past_the_cap_an_attempt_is_cut_with_a_marker_and_the_next_starts_clean() -> None:
    async def scenario(shipper: Shipper, out: ProcessOutput, mine: list[int], strays: list) -> None:
        out.begin(_attempt(shipper, "loud", cap=10))
        os.write(mine[0], b"12345\n" + b"y" * 99 + b"\n" + b"z" * 50 + b"\n")
        out.end()
        lines = shipper.of("loud")
        assert lines[0] == ("stdout", "12345")
        assert len(lines) == 2 and lines[1][0] == "maze" and "bytes of output past the cap" in lines[1][1]
        out.begin(_attempt(shipper, "quiet"))
        os.write(mine[0], b"ok\n")
        out.end()
        assert shipper.of("quiet") == [("stdout", "ok")]

    _run(scenario)
