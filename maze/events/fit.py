"""Events that cannot fit one message are replaced by ones that can, never retried without end.

Every publisher of events it did not size itself (the worker's outbox, the run controller) passes
what it is about to publish through `make_fit`: an error text too long is clipped, a success whose
result does not fit becomes a `payload_too_large` failure, a run's end keeps its error clipped.
"""

from __future__ import annotations

import msgspec
import structlog

from maze.events.catalog import Event
from maze.events.runs import RunFinished
from maze.events.specs import TaskError
from maze.events.tasks import AttemptFailed, AttemptSucceeded

log = structlog.get_logger(__name__)
_encoder = msgspec.msgpack.Encoder()

SLACK_BYTES = 1024  # left in the message for the list envelope and the other events
CLIPPED_MESSAGE_CHARS = 4000
CLIPPED_TRACEBACK_CHARS = 8000


def clip_error(error: TaskError) -> TaskError:
    """The error with its message and traceback cut to a size that always fits (the end of a
    traceback, where the exception is, is kept)."""
    message = error.message
    if len(message) > CLIPPED_MESSAGE_CHARS:
        message = (
            message[:CLIPPED_MESSAGE_CHARS] + f"… ({len(message) - CLIPPED_MESSAGE_CHARS} more characters)"
        )
    traceback = error.traceback
    if traceback is not None and len(traceback) > CLIPPED_TRACEBACK_CHARS:
        traceback = "… " + traceback[-CLIPPED_TRACEBACK_CHARS:]
    return msgspec.structs.replace(error, message=message, traceback=traceback)


def failed_instead(event: AttemptSucceeded, error_type: str, message: str, retryable: bool) -> AttemptFailed:
    """The failure recorded in place of a success that cannot be stored."""
    return AttemptFailed(
        run_id=event.run_id,
        task_id=event.task_id,
        attempt=event.attempt,
        at_ms=event.at_ms,
        node_id=event.node_id,
        error=TaskError(
            error_type=error_type,
            message=message,
            retryable=retryable,
            origin="worker",
            node_id=event.node_id,
            attempt=event.attempt,
        ),
    )


def make_fit(events: list[Event], budget: int) -> list[Event]:
    """The events with every one that cannot fit one message replaced by one that can."""
    out: list[Event] = []
    for event in events:
        size = len(_encoder.encode(event))
        if size <= budget - SLACK_BYTES:
            out.append(event)
        elif isinstance(event, AttemptSucceeded):
            log.error("event.result_too_large", run_id=event.run_id, task_id=event.task_id, size=size)
            message = f"the result event is {size} bytes, above the message limit of {budget} bytes"
            out.append(failed_instead(event, "payload_too_large", message, retryable=False))
        elif isinstance(event, AttemptFailed | RunFinished) and event.error is not None:
            out.append(msgspec.structs.replace(event, error=clip_error(event.error)))
        else:
            log.error("event.dropped_too_large", kind=type(event).__name__, size=size, limit=budget)
    return out
