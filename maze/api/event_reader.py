"""Reading one run's events straight from its JetStream subject (the log is the record)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from maze.events import subjects
from maze.events.codec import Decoded, Malformed, decode_message, event_to_builtins
from maze.events.runs import RunFinished
from maze.events.store import subscribe_ordered


async def last_run_seq(js: JetStreamContext, run_id: str) -> int:
    try:
        msg = await js.get_last_msg(subjects.RUNS_STREAM, subjects.run_subject(run_id))
    except NotFoundError:
        return 0
    return int(msg.seq or 0)


async def run_events(
    js: JetStreamContext, run_id: str, after: int, until: int | None
) -> AsyncIterator[tuple[int, list[dict[str, Any]], bool]]:
    """Yield (seq, events, finished) for messages of the run after `after`: up to stream sequence
    `until`, or, with `until=None`, following the run live until its final event."""
    follow = until is None
    if until is not None and until <= after:
        return
    sub = await subscribe_ordered(js, subjects.run_subject(run_id), after + 1)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=None if follow else 10)
            except TimeoutError:
                return
            seq = msg.metadata.sequence.stream
            try:
                decoded = decode_message(msg.data)
            except msgspec.DecodeError as exc:
                decoded = Decoded([], [], [Malformed("?", f"the message is not a list of events: {exc}")])
            events = decoded.events
            finished = any(isinstance(e, RunFinished) for e in events)
            shown = [event_to_builtins(e, seq) for e in events]
            # what this version cannot read is shown as such, never left out in silence
            shown += [{"type": tag, "seq": seq, "unknown_type": True} for tag in decoded.unknown]
            shown += [{"type": m.tag, "seq": seq, "malformed": m.error} for m in decoded.malformed]
            yield seq, shown, finished
            if (follow and finished) or (until is not None and seq >= until):
                return
    finally:
        try:
            await sub.unsubscribe()
        except Exception:
            pass
