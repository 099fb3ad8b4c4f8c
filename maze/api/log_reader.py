"""Reading what a run's tasks printed straight from the `MAZE_LOGS` stream, by direct gets.

Every read is a batched direct get (`$JS.API.DIRECT.GET`, `next_by_subj` with a subject filter and
a `batch`, NATS 2.11+): no consumer is made per reader, and what a reader holds at once is one
batch. A reply carries `Nats-Num-Pending`, the number of messages of the filter after it, so the
number of messages of a run (or of one task) from any sequence on is one small request. That is
what makes `tail` cheap: the first of the last k messages is found by bisecting the sequence range
with such counts (a few dozen requests at most), and only those k messages are read, k growing four
times over until they hold enough lines. Returning 200 lines of a run that printed gigabytes reads
a few of its batches, never the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from maze.api.event_reader import end_state
from maze.core.errors import Unavailable
from maze.core.task_machine import ENDED_BY_CONTROLLER
from maze.events import subjects
from maze.events.logs import shown_lines, split_cursor

DIRECT_GET = f"$JS.API.DIRECT.GET.{subjects.LOGS_STREAM}"
READ_BATCH = 256  # messages per direct get
READ_BATCH_BYTES = 4 * 1024 * 1024
REPLY_TIMEOUT_S = 10.0
FIRST_TAIL_MESSAGES = 4
FOLLOW_BATCH = 64  # messages, and bytes, per frame of a live stream: what a slow client holds
FOLLOW_BATCH_BYTES = 1024 * 1024
FOLLOW_IDLE_S = 1.0  # a follower with nothing new looks whether the run has ended this often
LATE_LINES_S = 1.5  # how long lines of attempts killed with their run are waited for after its end


@dataclass
class ReadStats:
    """What this process's log reads cost: direct-get requests and messages they brought."""

    requests: int = 0
    messages: int = 0


stats = ReadStats()


@dataclass(frozen=True)
class Stored:
    subject: str
    seq: int
    data: bytes


class LogReader:
    """Direct gets of one subject filter (a run's lines, or one task's), over one reply inbox."""

    def __init__(self, nc: NATS, filter_subject: str) -> None:
        self.nc = nc
        self.filter = filter_subject
        self._replies: asyncio.Queue[Msg] = asyncio.Queue()
        self._inbox = ""
        self._sub: Any = None

    async def __aenter__(self) -> LogReader:
        self._inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self._inbox, cb=self._replies.put)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    async def get(self, seq: int, batch: int, max_bytes: int = READ_BATCH_BYTES) -> tuple[list[Stored], int]:
        """Up to `batch` messages of the filter from stream sequence `seq` on, and how many more
        messages of the filter the stream held after the last of them (after `seq`, if none)."""
        request = {"seq": max(1, seq), "next_by_subj": self.filter, "batch": batch, "max_bytes": max_bytes}
        stats.requests += 1
        await self.nc.publish(DIRECT_GET, json.dumps(request).encode(), reply=self._inbox)
        found: list[Stored] = []
        pending = 0
        while True:
            try:
                msg = await asyncio.wait_for(self._replies.get(), REPLY_TIMEOUT_S)
            except TimeoutError as exc:
                raise Unavailable(f"the log stream did not answer a read of {self.filter}") from exc
            hdrs = msg.headers or {}
            status = hdrs.get("Status")
            if status == "404":  # nothing of the filter from there on
                return found, 0
            if status is not None and status != "204":
                raise Unavailable(
                    f"the log stream refused a read of {self.filter}: {status} {hdrs.get('Description', '')}"
                )
            if "Nats-Num-Pending" in hdrs:
                pending = int(hdrs["Nats-Num-Pending"])
            if status == "204":  # the end of the batch
                return found, pending
            stats.messages += 1
            found.append(Stored(hdrs.get("Nats-Subject", ""), int(hdrs["Nats-Sequence"]), msg.data or b""))

    async def last_seq(self) -> int:
        """The sequence of the filter's last message (0: none)."""
        stats.requests += 1
        await self.nc.publish(
            DIRECT_GET, json.dumps({"last_by_subj": self.filter}).encode(), reply=self._inbox
        )
        try:
            msg = await asyncio.wait_for(self._replies.get(), REPLY_TIMEOUT_S)
        except TimeoutError as exc:
            raise Unavailable(f"the log stream did not answer a read of {self.filter}") from exc
        hdrs = msg.headers or {}
        if hdrs.get("Status"):
            return 0
        return int(hdrs.get("Nats-Sequence", 0))

    async def count_from(self, seq: int) -> tuple[int, int]:
        """(the first message of the filter at or after `seq`, how many there are from it on);
        (0, 0) when there is none."""
        found, pending = await self.get(seq, 1, 1)
        if not found:
            return 0, 0
        return found[0].seq, pending + 1

    async def read(self, seq: int, before: int | None = None, limit: int | None = None) -> list[Stored]:
        """The filter's messages from `seq` on, below sequence `before`, at most `limit` of them."""
        out: list[Stored] = []
        while limit is None or len(out) < limit:
            want = READ_BATCH if limit is None else min(READ_BATCH, limit - len(out))
            found, pending = await self.get(seq, want)
            for stored in found:
                if before is not None and stored.seq >= before:
                    return out
                out.append(stored)
            if not found or not pending:
                return out
            seq = found[-1].seq + 1
        return out


def first_seq(after: int) -> int:
    """The stream sequence reading from cursor `after` on starts at. Sequences start at 1: a cursor
    below the first batch's (0 to 999,999) reads from the start, as no cursor does (-1)."""
    return max(split_cursor(after)[0], 1)


def lines_of(stored: list[Stored], after: int) -> list[dict[str, Any]]:
    return [line for s in stored for line in shown_lines(s.subject, s.seq, s.data, after)]


async def read_page(
    nc: NATS, filter_subject: str, after: int, max_lines: int, max_bytes: int
) -> tuple[list[dict[str, Any]], bool]:
    """The lines after cursor `after`, in order: at most `max_lines`, and about `max_bytes` of text
    (at least one line); and whether more were there."""
    seq = first_seq(after)
    out: list[dict[str, Any]] = []
    size = 0
    async with LogReader(nc, filter_subject) as reader:
        while True:
            found, pending = await reader.get(seq, READ_BATCH)
            for stored in found:
                for line in shown_lines(stored.subject, stored.seq, stored.data, after):
                    if len(out) >= max_lines or (out and size + len(line["line"]) > max_bytes):
                        return out, True
                    out.append(line)
                    size += len(line["line"])
            if not found or not pending:
                return out, False
            seq = found[-1].seq + 1


async def read_tail(
    nc: NATS, filter_subject: str, tail: int, after: int = -1, max_bytes: int | None = None
) -> list[dict[str, Any]]:
    """The last `tail` lines with a cursor above `after` (and within about `max_bytes` of text,
    at least one line), in order, reading only the last messages that hold them."""
    if tail <= 0:
        return []
    start = first_seq(after)
    groups: list[list[dict[str, Any]]] = []  # what was read, the latest group last
    have_lines = have_bytes = 0
    async with LogReader(nc, filter_subject) as reader:
        first, total = await reader.count_from(start)
        if not total:
            return []
        # everything from this sequence on is read: at first, what is stored now, so that a task
        # printing on while this reads is not chased
        read_from = await reader.last_seq() + 1
        more = FIRST_TAIL_MESSAGES
        while True:
            begin = await _first_of_last(reader, first, read_from, more)
            stored = await reader.read(begin, before=read_from)
            lines = lines_of(stored, after)
            groups.insert(0, lines)
            have_lines += len(lines)
            have_bytes += sum(len(line["line"]) for line in lines)
            if stored:
                read_from = stored[0].seq
            if begin <= first or have_lines >= tail or (max_bytes is not None and have_bytes >= max_bytes):
                break
            more *= 4
    out = [line for group in groups for line in group][-tail:]
    if max_bytes is not None:
        size = 0
        for i in range(len(out) - 1, -1, -1):
            size += len(out[i]["line"])
            if size > max_bytes and i < len(out) - 1:
                return out[i + 1 :]
    return out


async def _first_of_last(reader: LogReader, lo: int, before: int | None, k: int) -> int:
    """The sequence of the first of the last `k` messages of the filter from `lo` and below
    `before` (the end of the stream: None), or `lo` when there are no more than `k`: bisection on
    counts. Messages stored meanwhile can only make a read stop short of `k` (the caller asks for
    more); reads stop at `before`, so nothing is read twice."""
    hi = before if before is not None else await reader.last_seq() + 1
    _, above = await reader.count_from(hi)  # at `hi` and after it: not wanted here
    found, total = await reader.count_from(lo)
    if not found or found >= hi or total - above <= k:
        return lo
    low, high = found, hi  # at least k messages from `low` (below hi), fewer than k from `high`
    # galloping down from `hi` first: a tail of a recent run is found near the end of the stream,
    # in a few probes whatever the stream's length (each probe brings one message)
    step = k
    while hi - step > low:
        found, count = await reader.count_from(hi - step)
        if found and found < high and count - above >= k:
            low = found
            break
        high = hi - step
        step *= 2
    while high - low > 1:
        mid = (low + high) // 2
        found, count = await reader.count_from(mid)
        if found and found < high and count - above >= k:
            low = found
        else:
            high = mid
    return low


async def last_seq(js: JetStreamContext, filter_subject: str) -> int:
    """The stream sequence of the filter's last message now, asked of the stream's leader."""
    try:
        msg = await js.get_last_msg(subjects.LOGS_STREAM, filter_subject)
    except NotFoundError:
        return 0
    return int(msg.seq or 0)


async def follow(
    nc: NATS, js: JetStreamContext, run_id: str, filter_subject: str, after: int
) -> AsyncIterator[list[dict[str, Any]]]:
    """The filter's lines after cursor `after`, as they are stored, until the run has ended and
    every line stored before its end was given. A worker stores an attempt's lines before its
    outcome (maze/workers/logs.py), so that is all of them, but for what a process the task left
    running prints after its run ended (still there to read with `GET /runs/{id}/logs`)."""
    wake = asyncio.Event()

    async def on_line(_: Msg) -> None:
        wake.set()

    seq = first_seq(after)
    cursor = after
    sub = await nc.subscribe(filter_subject, cb=on_line)  # a nudge when a worker writes, no data kept
    try:
        async with LogReader(nc, filter_subject) as reader:
            ended_at: int | None = None
            quiet_until = 0.0
            while True:
                wake.clear()
                found, _ = await reader.get(seq, FOLLOW_BATCH, FOLLOW_BATCH_BYTES)
                if found:
                    seq = found[-1].seq + 1
                    lines = lines_of(found, cursor)
                    if lines:
                        cursor = lines[-1]["cursor"]
                        yield lines
                    continue
                if ended_at is None:
                    state = await end_state(js, run_id)
                    if state is not None:
                        ended_at = await last_seq(js, filter_subject)
                        # a run ended by a cancel or its timeout had its attempts killed: their
                        # last lines are shipped after its end, so they are waited for a moment
                        quiet_until = time.monotonic() + (
                            LATE_LINES_S if state in ENDED_BY_CONTROLLER else 0.0
                        )
                if ended_at is not None and seq > ended_at and time.monotonic() >= quiet_until:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), FOLLOW_IDLE_S if ended_at is None else 0.05)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
