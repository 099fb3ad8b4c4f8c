"""The whole event catalog as one tagged union."""

from __future__ import annotations

from maze.events.nodes import NodeJoined, NodeLeft, NodeLost
from maze.events.runs import RunCreated, RunFinished, TasksAdded
from maze.events.tasks import (
    AttemptFailed,
    AttemptLost,
    AttemptPlaced,
    AttemptRejected,
    AttemptStarted,
    AttemptSucceeded,
    RetryScheduled,
)

Event = (
    RunCreated
    | TasksAdded
    | RunFinished
    | AttemptPlaced
    | AttemptStarted
    | AttemptSucceeded
    | AttemptFailed
    | AttemptRejected
    | AttemptLost
    | RetryScheduled
    | NodeJoined
    | NodeLeft
    | NodeLost
)

TAG_FIELD = "type"
ATTEMPT_TERMINAL = (AttemptSucceeded, AttemptFailed, AttemptRejected, AttemptLost)


def event_tag(event: Event) -> str:
    return type(event).__struct_config__.tag  # type: ignore[return-value]


def event_key(event: Event) -> str:
    """A deterministic identity for an event: the same decision always gets the same key."""
    tag = event_tag(event)
    if isinstance(event, NodeJoined | NodeLeft | NodeLost):
        return f"node/{event.node_id}/{event.session}/{tag}"
    if isinstance(event, RunCreated | RunFinished):
        return f"{event.run_id}/{tag}"
    if isinstance(event, TasksAdded):
        return f"{event.run_id}/{tag}/{event.chunk}"
    if isinstance(event, RetryScheduled):
        return f"{event.run_id}/{event.task_id}/{event.next_attempt}/{tag}"
    return f"{event.run_id}/{event.task_id}/{event.attempt}/{tag}"
