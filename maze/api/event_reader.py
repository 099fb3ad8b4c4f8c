"""Reading one run's events straight from its JetStream subject (the log is the record).

What is shown is what every fold makes of the log: a worker's event it may not write, and a
decision of a deposed leader (older than the latest `leader.elected` before it in the stream), are
shown as refused, never as history."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from maze.events import subjects
from maze.events.codec import decode_leniently, shown_events, with_fence, without_foreign
from maze.events.runs import LeaderElected, RunFinished
from maze.events.store import subscribe_ordered
from maze.events.tasks import AttemptPlaced


class Elections:
    """Every `leader.elected` of the runs stream as (seq, epoch in force from there), read once and
    then only what was elected since (a handful: one per failover or head start)."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.elected: list[int] = []  # the epoch elected at seqs[i]
        self.epochs: list[int] = []  # the highest epoch elected up to seqs[i]
        self.read_to = 0  # every election up to here is known (only `refresh` moves it)
        self.lock = asyncio.Lock()

    def note(self, seq: int, epoch: int) -> None:
        """An election seen at `seq`, by `refresh` or by a reader of the stream in passing. A
        reader may see one past elections not read yet: it is kept, in its place, and does not
        mark those before it as known (`refresh` still reads them)."""
        at = bisect.bisect_left(self.seqs, seq)
        if at < len(self.seqs) and self.seqs[at] == seq:
            return
        self.seqs.insert(at, seq)
        self.elected.insert(at, epoch)
        self.epochs[at:] = []
        for i in range(at, len(self.seqs)):
            self.epochs.append(max(self.elected[i], self.epochs[i - 1] if i else 0))

    def before(self, seq: int) -> int:
        """The leadership epoch in force at stream sequence `seq` (0: none elected before it)."""
        at = bisect.bisect_left(self.seqs, seq)
        return self.epochs[at - 1] if at else 0

    async def refresh(self, js: JetStreamContext) -> None:
        async with self.lock:
            try:
                last = int((await js.get_last_msg(subjects.RUNS_STREAM, subjects.LEADER_SUBJECT)).seq or 0)
            except NotFoundError:
                return
            if last <= self.read_to:
                return
            sub = await subscribe_ordered(js, subjects.LEADER_SUBJECT, self.read_to + 1)
            try:
                while self.read_to < last:
                    msg = await sub.next_msg(timeout=10)
                    seq = msg.metadata.sequence.stream
                    for event in decode_leniently(msg.data, msg.subject).events:
                        if isinstance(event, LeaderElected):
                            self.note(seq, event.epoch)
                    self.read_to = max(self.read_to, seq)
            finally:
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass


elections = Elections()  # one runs stream per head process


async def end_state(js: JetStreamContext, run_id: str) -> str | None:
    """The run's final state when its last message ends it, else None."""
    try:
        msg = await js.get_last_msg(subjects.RUNS_STREAM, subjects.run_subject(run_id))
    except NotFoundError:
        return None
    await elections.refresh(js)
    last = int(msg.seq or 0)
    decoded = with_fence(decode_leniently(msg.data or b"", msg.subject), elections.before(last))
    ends = [e for e in decoded.events if isinstance(e, RunFinished)]
    return ends[-1].state if ends else None


async def ended_by(js: JetStreamContext, run_id: str, seq: int) -> bool:
    """Whether the run's last message is at or before `seq` and ends it: a stream resumed after
    its end has nothing more to wait for."""
    try:
        msg = await js.get_last_msg(subjects.RUNS_STREAM, subjects.run_subject(run_id))
    except NotFoundError:
        return False
    last = int(msg.seq or 0)
    if last > seq:
        return False
    await elections.refresh(js)
    decoded = with_fence(decode_leniently(msg.data or b"", msg.subject), elections.before(last))
    return any(isinstance(e, RunFinished) for e in decoded.events)


async def run_events(
    js: JetStreamContext,
    run_id: str,
    after: int,
    until: int | None,
    placed: dict[tuple[str, int], str] | None = None,
) -> AsyncIterator[tuple[int, list[dict[str, Any]], bool]]:
    """Yield (seq, events, finished) for messages of the run after `after`: up to stream sequence
    `until`, or, with `until=None`, following the run live until its final event. The elections
    are read with them, in stream order, so that each message is fenced as the folds fence it; and
    the placements, so that a node's report on an attempt placed elsewhere is shown refused
    (`placed`: (task, attempt) -> node of the placements before `after`, as far as known)."""
    placements: dict[tuple[str, int], str] = dict(placed or {})

    def placed_on(_: str, task_id: str, attempt: int) -> str | None:
        return placements.get((task_id, attempt))

    follow = until is None
    if until is not None and until <= after:
        return
    await elections.refresh(js)
    epoch = elections.before(after + 1)
    sub = await subscribe_ordered(
        js,
        subjects.run_subject(run_id),
        after + 1,
        filters=[*subjects.run_filters(run_id), subjects.LEADER_SUBJECT],
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=None if follow else 10)
            except TimeoutError:
                return
            seq = msg.metadata.sequence.stream
            decoded = decode_leniently(msg.data, msg.subject)
            if msg.subject == subjects.LEADER_SUBJECT:
                for event in decoded.events:
                    if isinstance(event, LeaderElected):
                        epoch = max(epoch, event.epoch)
                        elections.note(seq, event.epoch)
            else:
                decoded = without_foreign(with_fence(decoded, epoch), msg.subject, placed_on)
                for event in decoded.events:
                    if isinstance(event, AttemptPlaced):
                        placements[(event.task_id, event.attempt)] = event.node_id
                finished = any(isinstance(e, RunFinished) for e in decoded.events)
                yield seq, shown_events(decoded, seq), finished
                if follow and finished:
                    return
            if until is not None and seq >= until:
                return
    finally:
        try:
            await sub.unsubscribe()
        except Exception:
            pass


async def placements_before(read: Any, run_id: str, after: int) -> dict[tuple[str, int], str]:
    """The run's placements as the read models know them, for a reader starting at `after` (the
    placements after it come with the events read)."""
    if not after:
        return {}
    try:
        found = await read("placements", run_id)
    except Exception:  # not in the read models yet: judged from what is read
        return {}
    return {(str(t), int(a)): str(n) for t, a, n in found}
