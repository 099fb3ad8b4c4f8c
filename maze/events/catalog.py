"""The whole event catalog as one tagged union."""

from __future__ import annotations

from maze.events.nodes import NodeJoined, NodeLeft
from maze.events.runs import RunCreated, RunFinished
from maze.events.tasks import (
    AttemptFailed,
    AttemptPlaced,
    AttemptStarted,
    AttemptSucceeded,
    RetryScheduled,
)

Event = (
    RunCreated
    | RunFinished
    | AttemptPlaced
    | AttemptStarted
    | AttemptSucceeded
    | AttemptFailed
    | RetryScheduled
    | NodeJoined
    | NodeLeft
)

TAG_FIELD = "type"
ATTEMPT_TERMINAL = (AttemptSucceeded, AttemptFailed)


def event_tag(event: Event) -> str:
    return type(event).__struct_config__.tag  # type: ignore[return-value]


def event_key(event: Event) -> str:
    """A deterministic identity for an event: the same decision always gets the same key."""
    tag = event_tag(event)
    if isinstance(event, NodeJoined | NodeLeft):
        return f"node/{event.node_id}/{event.session}/{tag}"
    if isinstance(event, RunCreated | RunFinished):
        return f"{event.run_id}/{tag}"
    if isinstance(event, RetryScheduled):
        return f"{event.run_id}/{event.task_id}/{event.next_attempt}/{tag}"
    return f"{event.run_id}/{event.task_id}/{event.attempt}/{tag}"
