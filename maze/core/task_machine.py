"""The one task state machine (STYLE.md habit 17). The run controller and the projections both call
`transition` for every attempt event, and differ only in what they do with the result: the
controller decides (readiness, retries, results it keeps), the projections write rows.

A task is (state, attempt, failures):
- `attempt` is the number of its current attempt (0 before the first placement). Every placement
  takes the next number, rejected and lost attempts included, so an attempt number names one
  placement for ever.
- `failures` counts the attempts that failed. Retry budgets and backoffs count failures only: a
  rejection (the node found it did not fit) or an attempt lost before it started is no failure.

An event about another attempt than the current one, or one that arrives after the attempt ended,
changes nothing (first terminal event per attempt wins, nats-server #4786): history stays exact
whatever a worker sent twice.
"""

from __future__ import annotations

from typing import NamedTuple

from maze.events.catalog import Event
from maze.events.specs import TaskError
from maze.events.tasks import (
    AttemptFailed,
    AttemptLost,
    AttemptPlaced,
    AttemptRejected,
    AttemptStarted,
    AttemptSucceeded,
    RetryScheduled,
)

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
FAILED = frozenset({"failed", "timed_out"})
PLACEABLE = frozenset({"pending", "retry_wait"})
ACTIVE = frozenset({"queued", "running"})  # placed on a node, not ended
TIMEOUT_ERRORS = frozenset({"timed_out", "timeout"})

# What a transition did, for the caller's own bookkeeping.
PLACED = "placed"
STARTED = "started"
SUCCEEDED = "succeeded"
FAILED_NOW = "failed"
REQUEUED = "requeued"  # back to pending, no failure counted (rejected, or lost before it started)
RETRY = "retry"


class Transition(NamedTuple):
    state: str
    attempt: int
    failures: int
    effect: str


def failure_state(error: TaskError) -> str:
    return "timed_out" if error.error_type in TIMEOUT_ERRORS else "failed"


def lost_error(event: AttemptLost) -> TaskError:
    """The error of a started attempt whose node went away (derived from the event alone, so that
    every fold records the same one)."""
    return TaskError(
        error_type="node_lost",
        message=f"node {event.node_id} (session {event.session}) went away during the attempt"
        + (f" ({event.reason})" if event.reason else ""),
        retryable=True,
        origin="controller",
        node_id=event.node_id,
        attempt=event.attempt,
    )


def transition(state: str, attempt: int, failures: int, event: Event) -> Transition | None:
    """The task after `event`, or None when the event changes nothing about it."""
    if isinstance(event, RetryScheduled):
        if (state in FAILED or state == "retry_wait") and event.next_attempt > attempt:
            return Transition("retry_wait", attempt, failures, RETRY)
        return None
    if isinstance(event, AttemptPlaced):
        if state in PLACEABLE and event.attempt > attempt:
            return Transition("queued", event.attempt, failures, PLACED)
        return None
    if not isinstance(
        event, AttemptStarted | AttemptSucceeded | AttemptFailed | AttemptRejected | AttemptLost
    ):
        return None
    number = event.attempt
    if (
        isinstance(event, AttemptFailed)
        and event.error.origin == "controller"
        and number == attempt + 1
        and state in PLACEABLE
    ):
        # failed before it could be placed (its inputs could not be resolved)
        return Transition(failure_state(event.error), number, failures + 1, FAILED_NOW)
    if number != attempt or state not in ACTIVE:
        return None
    if isinstance(event, AttemptStarted):
        return Transition("running", attempt, failures, STARTED) if state == "queued" else None
    if isinstance(event, AttemptSucceeded):
        return Transition("succeeded", attempt, failures, SUCCEEDED)
    if isinstance(event, AttemptFailed):
        return Transition(failure_state(event.error), attempt, failures + 1, FAILED_NOW)
    if isinstance(event, AttemptRejected):
        return Transition("pending", attempt, failures, REQUEUED) if state == "queued" else None
    # AttemptLost: where it falls in the log says what it means
    if state == "queued":
        return Transition("pending", attempt, failures, REQUEUED)
    return Transition("failed", attempt, failures + 1, FAILED_NOW)
