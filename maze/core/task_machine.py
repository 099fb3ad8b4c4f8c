"""The one task state machine (STYLE.md habit 17). The run controller and the projections both call
`transition` for every attempt event, and differ only in what they do with the result: the
controller decides (readiness, retries, results it keeps), the projections write rows.

A task is (state, attempt, failures):
- `attempt` is the number of its current attempt (0 before the first placement). Every placement
  takes the next number, rejected and lost attempts included, so an attempt number names one
  placement for ever.
- `failures` counts the attempts that failed. Retry budgets and backoffs count failures only: a
  rejection (the node found it did not fit) or an attempt lost before it started is no failure.
  Such a placement that never started is *requeued*; the controller bounds those too (a backoff,
  recorded as `retry.scheduled`, from the second in a row, and a `resource_unavailable` failure
  after MAX_REQUEUES: maze/head/scheduler.py), so a task no node will start cannot loop for ever.

An event about another attempt than the current one, or one that arrives after the attempt ended,
changes nothing (first terminal event per attempt wins, nats-server #4786): history stays exact
whatever a worker sent twice. Nor does a worker's report on an attempt placed on another node
(`foreign`): a node speaks for the attempts placed on it only, whatever its credentials let it
write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, cast

from maze.events.artifacts import ArtifactRegistered
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
# the end states of a run the controller ends itself, its attempts killed (a cancel, a run timeout)
ENDED_BY_CONTROLLER = frozenset({"cancelled", "timed_out"})
FAILED = frozenset({"failed", "timed_out"})
PLACEABLE = frozenset({"pending", "retry_wait"})
ACTIVE = frozenset({"queued", "running"})  # placed on a node, not ended
TIMEOUT_ERRORS = frozenset({"timed_out", "timeout"})
# Error types by the names the original Maze's docs use for them (`retry_on=["timeout"]`): the
# name this vocabulary records (DESIGN.md §5).
ERROR_TYPE_ALIASES = {"timeout": "timed_out"}
# The error types a task's `retry_on` may name (with their aliases): every type an attempt can
# fail with (the worker's, its task process's, the sandbox's and the controller's own), whether
# or not its origin marks it retryable (an error marked not retryable is never retried).
KNOWN_ERROR_TYPES = frozenset(
    {
        "user_code",
        "timeout",
        "timed_out",
        "node_lost",
        "resource_unavailable",
        "artifact_error",
        "serialization_error",
        "process_exited",
        "invalid_result",
        "invalid_input",
        "payload_too_large",
        "event_store_refused",
        "environment_error",  # a task's environment could not be made (an app's conda environment)
        "sandbox_error",  # bubblewrap or the sandbox's network could not be set up, or it failed
        "out_of_memory",  # a sandboxed attempt killed at its cpu_mem limit
        "process_limit",  # a sandboxed attempt's process count refused starts at its limit
        "protocol_error",  # the task process's reply broke the worker's protocol
        "worker_error",  # a fault of the worker's own while it ran the attempt
    }
)


def canonical_error_type(name: str) -> str:
    return ERROR_TYPE_ALIASES.get(name, name)


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
    if error.error_type == "cancelled":  # its run was cancelled or timed out while it was placed
        return "cancelled"
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


def foreign(event: Event, placed_on: str | None) -> bool:
    """Whether `event` is a worker's report on an attempt that was not placed on its node (the
    controller's own events, a failure it decided included, are never foreign)."""
    kind = type(event)  # every fold asks this of every event: type tests, not isinstance chains
    if kind is AttemptFailed:
        failed = cast(AttemptFailed, event)
        if failed.error.origin == "controller" or failed.epoch:  # decided by the controller
            return False
        return failed.node_id != placed_on
    if kind in _REPORTS:
        return cast(AttemptStarted, event).node_id != placed_on
    return False


_REPORTS = frozenset({AttemptStarted, AttemptSucceeded, AttemptRejected, ArtifactRegistered})


def transition(
    state: str, attempt: int, failures: int, event: Event, placed_on: str | None = None
) -> Transition | None:
    """The task after `event`, or None when the event changes nothing about it. `placed_on` is
    the node the current attempt was placed on (None before a placement)."""
    if foreign(event, placed_on):
        return None
    step = _STEPS.get(type(event))
    return step(state, attempt, failures, event) if step is not None else None


def _retry(state: str, attempt: int, failures: int, event: RetryScheduled) -> Transition | None:
    # after a failure; or, with no failure counted, after placements that never started
    # (rejected, or lost before the start) came back too often in a row: a backoff either way
    if (state in FAILED or state in PLACEABLE) and event.next_attempt > attempt:
        return Transition("retry_wait", attempt, failures, RETRY)
    return None


def _placed(state: str, attempt: int, failures: int, event: AttemptPlaced) -> Transition | None:
    if state in PLACEABLE and event.attempt > attempt:
        return Transition("queued", event.attempt, failures, PLACED)
    return None


def _started(state: str, attempt: int, failures: int, event: AttemptStarted) -> Transition | None:
    if event.attempt == attempt and state == "queued":
        return Transition("running", attempt, failures, STARTED)
    return None


def _succeeded(state: str, attempt: int, failures: int, event: AttemptSucceeded) -> Transition | None:
    if event.attempt == attempt and state in ACTIVE:
        return Transition("succeeded", attempt, failures, SUCCEEDED)
    return None


def _failed(state: str, attempt: int, failures: int, event: AttemptFailed) -> Transition | None:
    number = event.attempt
    if event.error.origin == "controller" and number == attempt + 1 and state in PLACEABLE:
        # failed before it could be placed (its inputs could not be resolved)
        return Transition(failure_state(event.error), number, failures + 1, FAILED_NOW)
    if number == attempt and state in ACTIVE:
        return Transition(failure_state(event.error), attempt, failures + 1, FAILED_NOW)
    return None


def _rejected(state: str, attempt: int, failures: int, event: AttemptRejected) -> Transition | None:
    if event.attempt == attempt and state == "queued":
        return Transition("pending", attempt, failures, REQUEUED)
    return None


def _lost(state: str, attempt: int, failures: int, event: AttemptLost) -> Transition | None:
    """Where it falls in the log says what it means: before the start, back to be placed (no
    failure); after it, a node_lost failure; after the end, nothing."""
    if event.attempt != attempt or state not in ACTIVE:
        return None
    if state == "queued":
        return Transition("pending", attempt, failures, REQUEUED)
    return Transition("failed", attempt, failures + 1, FAILED_NOW)


_STEPS: dict[type, Callable[[str, int, int, Any], Transition | None]] = {
    RetryScheduled: _retry,
    AttemptPlaced: _placed,
    AttemptStarted: _started,
    AttemptSucceeded: _succeeded,
    AttemptFailed: _failed,
    AttemptRejected: _rejected,
    AttemptLost: _lost,
}
