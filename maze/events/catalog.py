"""The whole event catalog as one tagged union."""

from __future__ import annotations

import msgspec

from maze.events.nodes import NodeJoined, NodeLeft, NodeLost
from maze.events.runs import LeaderElected, RunCancelRequested, RunCreated, RunFinished, TasksAdded
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
    | LeaderElected
    | RunCancelRequested
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
    if isinstance(event, LeaderElected):
        return f"leader/{event.epoch}"
    # a decision of another leadership is another message: never deduplicated against a deposed
    # leader's copy (which the folds refuse)
    epoch = getattr(event, "epoch", 0)
    suffix = f"/e{epoch}" if epoch else ""
    if isinstance(event, RunCreated | RunFinished | RunCancelRequested):
        return f"{event.run_id}/{tag}{suffix}"
    if isinstance(event, TasksAdded):
        return f"{event.run_id}/{tag}/{event.chunk}"
    if isinstance(event, RetryScheduled):
        return f"{event.run_id}/{event.task_id}/{event.next_attempt}/{tag}{suffix}"
    return f"{event.run_id}/{event.task_id}/{event.attempt}/{tag}{suffix}"


# Decisions a run controller makes (they carry its leadership epoch, and a fold refuses one whose
# epoch is older than the latest `leader.elected` it has folded)
DECISIONS = (AttemptPlaced, AttemptFailed, AttemptLost, RetryScheduled, RunFinished)


def stamp(events: list[Event], epoch: int) -> list[Event]:
    """The decisions among `events` stamped with the deciding controller's epoch."""
    if not epoch:
        return events
    return [msgspec.structs.replace(e, epoch=epoch) if isinstance(e, DECISIONS) else e for e in events]


def fenced(event: Event, epoch: int) -> bool:
    """Whether a fold at leadership `epoch` refuses this event: a decision of an older leadership
    (0: made before leases, or by a worker, is never refused)."""
    made = getattr(event, "epoch", 0)
    return bool(made) and made < epoch
