"""Task attempt events, on subject `maze.run.<run_id>` (ordered with the run's other events).

An attempt is identified by (run_id, task_id, attempt). Consumers accept the first terminal
event per attempt and ignore later ones (a redelivered ack can race, nats-server #4786).
"""

from __future__ import annotations

from msgspec import Struct

from maze.events.specs import TaskError


class AttemptPlaced(Struct, frozen=True, tag="attempt.placed"):
    """The placer chose a node (and GPUs) for an attempt, and why."""

    run_id: str
    task_id: str
    attempt: int
    node_id: str
    at_ms: int
    gpus: list[int] = []
    reason: str = ""
    session: str = ""  # the node session it was placed on; a new session means this one is lost
    epoch: int = 0  # the deciding controller's leadership epoch (maze/head/lease.py); 0: before leases


class AttemptStarted(Struct, frozen=True, tag="attempt.started"):
    run_id: str
    task_id: str
    attempt: int
    node_id: str
    at_ms: int
    node_ip: str = ""
    pid: int = 0


class AttemptSucceeded(Struct, frozen=True, tag="attempt.succeeded"):
    run_id: str
    task_id: str
    attempt: int
    node_id: str
    at_ms: int
    result: bytes  # msgpack-encoded dict
    duration_ms: float = 0.0


class AttemptFailed(Struct, frozen=True, tag="attempt.failed"):
    run_id: str
    task_id: str
    attempt: int
    at_ms: int
    error: TaskError
    node_id: str | None = None
    epoch: int = 0  # set when the controller decided it (a failure before placement); 0 from workers


class RetryScheduled(Struct, frozen=True, tag="retry.scheduled"):
    """A failed attempt will be followed by attempt `next_attempt` after `delay_ms`."""

    run_id: str
    task_id: str
    next_attempt: int
    at_ms: int
    delay_ms: int = 0
    reason: str = ""
    epoch: int = 0  # the deciding controller's leadership epoch


class AttemptRejected(Struct, frozen=True, tag="attempt.rejected"):
    """The node re-checked the fit when the attempt was about to start and it did not fit (e.g. the
    GPU memory pynvml reports free is less than asked). The task goes back to be placed again; a
    rejection is not a failure and uses no retry."""

    run_id: str
    task_id: str
    attempt: int
    node_id: str
    at_ms: int
    reason: str
    # the leadership whose placement it answers (WorkItem.epoch): a node's rejection of the log's
    # placement is not deduplicated against its rejection of a deposed leader's of the same number
    placed_epoch: int = 0


class AttemptLost(Struct, frozen=True, tag="attempt.lost"):
    """The controller gave up on an attempt because the node session it was placed on went away
    (it was lost, it left, or a new session of the node joined).

    What it means is fixed by where it falls in the log, so that every fold agrees however it
    raced the worker's own reports: an attempt that had not started by then goes back to be placed
    elsewhere and counts as no failure; one that had started fails with `node_lost`; one that had
    already ended is left as it was (first terminal event wins)."""

    run_id: str
    task_id: str
    attempt: int
    node_id: str
    at_ms: int
    session: str = ""
    reason: str = ""
    epoch: int = 0  # the deciding controller's leadership epoch


# every event on one task's attempts (what the controller's and the read models' folds look up a
# task by)
AttemptEvent = (
    AttemptPlaced
    | AttemptStarted
    | AttemptSucceeded
    | AttemptFailed
    | AttemptRejected
    | AttemptLost
    | RetryScheduled
)
