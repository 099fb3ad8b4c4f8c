"""The run controller's view of active runs, folded from events. No I/O, no clock."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from maze.events.catalog import Event
from maze.events.codec import decode_value
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import InputRef, TaskError, TaskSpec
from maze.events.tasks import (
    AttemptFailed,
    AttemptPlaced,
    AttemptRejected,
    AttemptStarted,
    AttemptSucceeded,
    RetryScheduled,
)

TERMINAL_TASK = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


class TaskRuntime(Struct):
    spec: TaskSpec
    state: str = "pending"  # pending | queued | running | retry_wait | succeeded | failed
    attempt: int = 0  # current attempt number, 0 before the first placement
    node_id: str | None = None
    session: str = ""
    gpus: list[int] = []
    waiting_on: set[str] = set()
    downstream: list[str] = []
    result: dict[str, Any] | None = None
    error: TaskError | None = None
    undecided_failure: bool = False  # failed, and neither a retry nor the run's end recorded yet
    retry_at_ms: int = 0
    next_attempt: int = 0


class RunRuntime(Struct):
    run_id: str
    workflow_id: str
    functions: dict[str, bytes]
    tasks: dict[str, TaskRuntime]
    remaining: int
    state: str = "running"
    finished: bool = False


def new_run(event: RunCreated) -> RunRuntime:
    tasks = {spec.task_id: TaskRuntime(spec=spec, waiting_on=spec.upstream()) for spec in event.tasks}
    for spec in event.tasks:
        for up in spec.upstream():
            tasks[up].downstream.append(spec.task_id)
    return RunRuntime(
        run_id=event.run_id,
        workflow_id=event.workflow_id,
        functions=event.functions,
        tasks=tasks,
        remaining=len(tasks),
    )


def ready_tasks(run: RunRuntime) -> list[str]:
    return [t.spec.task_id for t in run.tasks.values() if t.state == "pending" and not t.waiting_on]


def apply_attempt_event(run: RunRuntime, event: Event) -> list[str]:
    """Fold one attempt event into the run. Returns task ids that became ready.

    Idempotent: an event for an older attempt, or a second terminal event for the same attempt,
    changes nothing (first terminal event wins)."""
    if isinstance(event, RetryScheduled):
        task = run.tasks[event.task_id]
        if event.next_attempt > task.attempt and task.state in ("failed", "retry_wait"):
            task.state = "retry_wait"
            task.undecided_failure = False
            task.next_attempt = event.next_attempt
            task.retry_at_ms = event.at_ms + event.delay_ms
        return []
    task = run.tasks[event.task_id]  # type: ignore[union-attr]
    attempt = event.attempt  # type: ignore[union-attr]
    if isinstance(event, AttemptPlaced):
        if attempt > task.attempt:
            task.attempt = attempt
            task.state = "queued"
            task.node_id = event.node_id
            task.session = event.session
            task.gpus = list(event.gpus)
            task.undecided_failure = False
        return []
    if (
        isinstance(event, AttemptFailed)
        and event.error.origin == "controller"
        and attempt == task.attempt + 1
        and task.state in ("pending", "retry_wait")
    ):
        task.attempt = attempt  # failed before it could be placed (its inputs could not be resolved)
    if attempt != task.attempt or task.state in TERMINAL_TASK:
        return []
    if isinstance(event, AttemptStarted):
        if task.state == "queued":
            task.state = "running"
        return []
    if isinstance(event, AttemptRejected):
        if task.state == "queued":
            task.state = "pending"  # placed again, as the next attempt
            return [task.spec.task_id]
        return []
    if isinstance(event, AttemptSucceeded):
        task.state = "succeeded"
        task.result = decode_value(event.result)
        run.remaining -= 1
        became_ready = []
        for down in task.downstream:
            child = run.tasks[down]
            child.waiting_on.discard(task.spec.task_id)
            if not child.waiting_on and child.state == "pending":
                became_ready.append(down)
        return became_ready
    if isinstance(event, AttemptFailed):
        task.state = "failed"
        task.error = event.error
        task.undecided_failure = not run.finished
        return []
    return []


def resolve_inputs(run: RunRuntime, spec: TaskSpec) -> dict[str, Any] | TaskError:
    """The literal values of a task's inputs, from the submitted values and upstream results."""
    values: dict[str, Any] = {}
    for name, given in spec.inputs.items():
        if isinstance(given, InputRef):
            result = run.tasks[given.task_id].result or {}
            if given.key not in result:
                return TaskError(
                    error_type="invalid_input",
                    message=(
                        f"input {name!r} refers to output {given.key!r} of task {given.task_id}, "
                        f"which returned only {sorted(result)}"
                    ),
                    origin="controller",
                )
            values[name] = result[given.key]
        else:
            values[name] = msgspec.Raw(given.data)  # already msgpack: embedded as is
    return values


def finish(run: RunRuntime, event: RunFinished) -> None:
    run.finished = True
    run.state = event.state
    for task in run.tasks.values():
        task.undecided_failure = False
