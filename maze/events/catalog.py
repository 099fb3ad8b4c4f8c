"""The whole event catalog as one tagged union."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from maze.events.agents import (
    AGENT_EVENTS,
    AgentCompacted,
    AgentDecided,
    AgentFinal,
    AgentObserved,
    AgentRepair,
    AgentToolCall,
)
from maze.events.artifacts import ArtifactRegistered, path_key
from maze.events.nodes import NodeJoined, NodeLeft, NodeLost
from maze.events.runs import (
    LeaderElected,
    RunCancelRequested,
    RunCreated,
    RunFinalizeRequested,
    RunFinished,
    TaskAppended,
    TasksAdded,
)
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
    | ArtifactRegistered
    | TaskAppended
    | RunFinalizeRequested
    | AgentDecided
    | AgentToolCall
    | AgentRepair
    | AgentObserved
    | AgentCompacted
    | AgentFinal
)

E = TypeVar("E", bound=Event)

TAG_FIELD = "type"
ATTEMPT_TERMINAL = (AttemptSucceeded, AttemptFailed, AttemptRejected, AttemptLost)


def event_tag(event: Event) -> str:
    return type(event).__struct_config__.tag  # type: ignore[return-value]


def event_key(event: Event) -> str:
    """A deterministic identity for an event: the same decision always gets the same key."""
    tag = event_tag(event)
    if isinstance(event, NodeLost) and event.epoch:
        # a new leader's declaration is not deduplicated against a deposed one's (which is refused)
        return f"node/{event.node_id}/{event.session}/{tag}/e{event.epoch}"
    if isinstance(event, NodeJoined | NodeLeft | NodeLost):
        return f"node/{event.node_id}/{event.session}/{tag}"
    if isinstance(event, LeaderElected):
        return f"leader/{event.epoch}"
    # a decision of another leadership is another message: never deduplicated against a deposed
    # leader's copy (which the folds refuse)
    epoch = getattr(event, "epoch", 0)
    suffix = f"/e{epoch}" if epoch else ""
    if isinstance(event, RunCreated | RunFinished | RunCancelRequested | RunFinalizeRequested):
        return f"{event.run_id}/{tag}{suffix}"
    if isinstance(event, TaskAppended):  # task ids are the client's: the same append, the same key
        return f"{event.run_id}/{tag}/{event.tasks[0].task_id if event.tasks else ''}{suffix}"
    if isinstance(event, AgentToolCall):
        return f"{event.run_id}/{tag}/{event.step}/{event.call}{suffix}"
    if isinstance(event, AgentCompacted):
        return f"{event.run_id}/{tag}/{event.step}/{event.task_id}{suffix}"
    if isinstance(event, AGENT_EVENTS):
        return f"{event.run_id}/{tag}/{event.step}{suffix}"
    if isinstance(event, TasksAdded):
        return f"{event.run_id}/{tag}/{event.chunk}"
    if isinstance(event, ArtifactRegistered):
        return f"{event.run_id}/{event.task_id}/{event.attempt}/{tag}/{path_key(event.path)}"
    if isinstance(event, AttemptRejected) and event.placed_epoch:
        return f"{event.run_id}/{event.task_id}/{event.attempt}/{tag}/p{event.placed_epoch}"
    if isinstance(event, RetryScheduled):
        return f"{event.run_id}/{event.task_id}/{event.next_attempt}/{tag}{suffix}"
    return f"{event.run_id}/{event.task_id}/{event.attempt}/{tag}{suffix}"


# Decisions a run controller makes (they carry its leadership epoch, and a fold refuses one whose
# epoch is older than the latest `leader.elected` it has folded from the same stream: the runs
# stream for these, the nodes stream for NODE_DECISIONS, so every fold refuses the same ones)
# (a `task.appended` is one when the controller appends for a ReAct run; the API's carry epoch 0)
RUN_DECISIONS = (
    AttemptPlaced,
    AttemptFailed,
    AttemptLost,
    RetryScheduled,
    RunFinished,
    TaskAppended,
    *AGENT_EVENTS,
)
NODE_DECISIONS = (NodeLost,)
DECISIONS = (*RUN_DECISIONS, *NODE_DECISIONS)


def stamp(events: list[E], epoch: int) -> list[E]:
    """The decisions among `events` stamped with the deciding controller's epoch."""
    if not epoch:
        return events
    return [msgspec.structs.replace(e, epoch=epoch) if isinstance(e, DECISIONS) else e for e in events]


def fenced(event: Event, epoch: int) -> bool:
    """Whether a fold at leadership `epoch` refuses this event: a decision of an older leadership
    (0: made before leases, or by a worker, is never refused). `epoch` is the latest leadership
    recorded in the event's own stream (a node decision is never judged by the runs stream's)."""
    made = getattr(event, "epoch", 0)
    return bool(made) and made < epoch


def fenced_in_runs(event: Event, epoch: int) -> bool:
    """`fenced` for a fold of the runs stream at leadership `epoch` (node events are judged by
    the nodes stream's leadership: see `fenced_in_nodes`)."""
    return not isinstance(event, NODE_DECISIONS) and fenced(event, epoch)


def fenced_in_nodes(event: Event, epoch: int) -> bool:
    """`fenced` for a node decision, at the latest leadership recorded in the nodes stream."""
    return isinstance(event, NODE_DECISIONS) and fenced(event, epoch)
