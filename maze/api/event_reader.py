"""Reading one run's events straight from its JetStream subject (the log is the record)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from maze.events import subjects
from maze.events.codec import decode_leniently, shown_events
from maze.events.runs import RunFinished
from maze.events.store import subscribe_ordered


async def ended_by(js: JetStreamContext, run_id: str, seq: int) -> bool:
    """Whether the run's last message is at or before `seq` and ends it: a stream resumed after
    its end has nothing more to wait for."""
    try:
        msg = await js.get_last_msg(subjects.RUNS_STREAM, subjects.run_subject(run_id))
    except NotFoundError:
        return False
    if int(msg.seq or 0) > seq:
        return False
    return any(isinstance(e, RunFinished) for e in decode_leniently(msg.data or b"").events)


async def run_events(
    js: JetStreamContext, run_id: str, after: int, until: int | None
) -> AsyncIterator[tuple[int, list[dict[str, Any]], bool]]:
    """Yield (seq, events, finished) for messages of the run after `after`: up to stream sequence
    `until`, or, with `until=None`, following the run live until its final event."""
    follow = until is None
    if until is not None and until <= after:
        return
    sub = await subscribe_ordered(
        js, subjects.run_subject(run_id), after + 1, filters=subjects.run_filters(run_id)
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=None if follow else 10)
            except TimeoutError:
                return
            seq = msg.metadata.sequence.stream
            decoded = decode_leniently(msg.data, msg.subject)
            finished = any(isinstance(e, RunFinished) for e in decoded.events)
            yield seq, shown_events(decoded, seq), finished
            if (follow and finished) or (until is not None and seq >= until):
                return
    finally:
        try:
            await sub.unsubscribe()
        except Exception:
            pass
