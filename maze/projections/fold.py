"""Pure folds: (model, event) -> model. No clock, no I/O, no random ids: replaying the same
events always gives the same rows.

A run's counters (tasks per state) move with each task's state change, so folding an event costs
what the event changes, never a recount of the run."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import msgspec
from msgspec import Struct, field

from maze.core.task_machine import (
    FAILED_NOW,
    PLACED,
    REQUEUED,
    STARTED,
    SUCCEEDED,
    TERMINAL,
    failure_state,
    foreign,
    lost_error,
    transition,
)
from maze.events.agents import AGENT_EVENTS
from maze.events.artifacts import ArtifactRegistered, artifact_is_sound
from maze.events.catalog import Event
from maze.events.codec import decode_value
from maze.events.nodes import NodeJoined, NodeLeft, NodeLost
from maze.events.runs import (
    RunCancelRequested,
    RunCreated,
    RunFinalizeRequested,
    RunFinished,
    TaskAppended,
    TasksAdded,
)
from maze.events.specs import Input, InputRef, InputValue, Resources, TaskError, TaskSpec
from maze.events.tasks import (
    AttemptEvent,
    AttemptFailed,
    AttemptLost,
    AttemptPlaced,
    AttemptRejected,
    AttemptStarted,
    AttemptSucceeded,
    RetryScheduled,
)
from maze.events.values import describe, describe_map
from maze.projections.json_text import dumps
from maze.projections.rows import ArtifactRow, AttemptRow, RunRow, TaskRow
from maze.projections.run_summary import add_names, result_summary, searchable

Row = dict[str, Any]
ATTEMPT_ENDED = frozenset({"succeeded", "failed", "timed_out", "rejected", "lost", "cancelled"})
_EMPTY_LIST = "[]"


_shared: dict[Any, str | None] = {}


def dumps_shared(value: Any, key: Any) -> str | None:
    """`dumps` for values most tasks share (resources, declared outputs, GPU lists): one string
    object per distinct value instead of one per row (a 100,000-task run's model is a third
    smaller). `key` is a hashable stand-in for the value."""
    found = _shared.get(key, _shared)
    if found is _shared:
        if len(_shared) > 10_000:
            _shared.clear()
        found = _shared[key] = dumps(value)
    return found  # type: ignore[return-value]


def resources_json(resources: Resources) -> str:
    """A task's resources as its row shows them: the sandbox flags only when set, so the rows of
    tasks that ask for none read as they always did."""
    found = _shared.get(resources)  # most tasks ask for the same: shown once
    return found if found is not None else dumps_shared(_shown_resources(resources), resources) or "{}"


def _shown_resources(resources: Resources) -> dict[str, Any]:
    shown = msgspec.structs.asdict(resources)
    for flag in ("sandbox", "network"):
        if not shown[flag]:
            del shown[flag]
    return shown


class RunModel(Struct):
    """One run's rows (the run, its tasks, its attempts) and its tasks counted per state."""

    run: RunRow
    tasks: dict[str, TaskRow] = field(default_factory=dict)
    attempts: dict[tuple[str, int], AttemptRow] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    dirty_tasks: set[str] = field(default_factory=set)
    dirty_attempts: set[tuple[str, int]] = field(default_factory=set)
    artifacts: dict[tuple[str, int, str], ArtifactRow] = field(default_factory=dict)
    dirty_artifacts: set[tuple[str, int, str]] = field(default_factory=set)

    @property
    def finished(self) -> bool:
        return self.run.state in TERMINAL

    @property
    def size(self) -> int:
        return len(self.tasks) + len(self.attempts)


def _set_state(model: RunModel, task: TaskRow, state: str) -> None:
    if task.state == state:
        return
    counts = model.counts
    counts[task.state] -= 1
    counts[state] = counts.get(state, 0) + 1
    task.state = state


def count_states(tasks: dict[str, TaskRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in tasks.values():
        counts[task.state] = counts.get(task.state, 0) + 1
    return counts


def create_run(event: RunCreated, run_seq: int) -> RunModel:
    """A new run's rows; `run_seq` is the stream sequence of its run.created."""
    model = RunModel(
        run=RunRow(
            run_id=event.run_id,
            workflow_id=event.workflow_id,
            kind=event.kind,
            state="created",
            created_at_ms=event.at_ms,
            started_at_ms=None,
            finished_at_ms=None,
            task_count=event.total_tasks,
            tasks_succeeded=0,
            tasks_failed=0,
            error=None,
            failed_task_id=None,
            run_seq=run_seq,
            progress="{}",
            names=searchable(event.workflow_id),
            result_summary=None,
            retry_of=event.retry_of or None,
            timeout_seconds=event.timeout_seconds,
            max_tasks=event.max_tasks if event.kind in ("dynamic", "react") else None,
        )
    )
    add_tasks(model, event.tasks, 0)
    return model


def shown_input(given: Input) -> dict[str, Any]:
    """An input as a task row shows it: `{"ref": "<task>.output.<key>"}`, `{"value": ...}`, or
    `{"gather": [...] | {...}}` of those."""
    if isinstance(given, InputRef):
        return {"ref": f"{given.task_id}.output.{given.key}"}
    if isinstance(given, InputValue):
        return {"value": describe(decode_value(given.data))}
    items = [shown_input(item) for item in given.items]
    return {"gather": items if given.keys is None else dict(zip(given.keys, items, strict=True))}


def add_tasks(model: RunModel, specs: list[TaskSpec], offset: int) -> None:
    """Task rows for one chunk of the run's tasks (a chunk seen before changes nothing)."""
    run = model.run
    add_names(run, specs)
    for i, spec in enumerate(specs):
        if spec.task_id in model.tasks:
            continue
        inputs = {name: shown_input(given) for name, given in spec.inputs.items()}
        model.tasks[spec.task_id] = TaskRow(
            run_id=run.run_id,
            task_id=spec.task_id,
            name=spec.name,
            func_name=spec.func_name,
            task_type=spec.task_type,
            state="pending",
            attempt=0,
            failures=0,
            node_id=None,
            node_ip=None,
            gpus=_EMPTY_LIST,
            resources=resources_json(spec.resources),
            inputs=dumps(inputs) or "{}",
            upstream=_upstream_json(spec),
            outputs=dumps_shared(spec.outputs, ("outputs", *(spec.outputs or ())))
            if spec.outputs is not None
            else None,
            result=None,
            error=None,
            placement_reason=None,
            queued_at_ms=None,
            started_at_ms=None,
            finished_at_ms=None,
            run_seq=run.run_seq,
            task_index=offset + i,
        )
        state = "pending"
        if spec.carried is not None:  # succeeded in the run this one retries: it does not run again
            state = "succeeded"
            row = model.tasks[spec.task_id]
            row.state, row.result = state, dumps(describe_map(spec.carried)[0])
            row.placement_reason = f"carried over from run {run.retry_of}" if run.retry_of else "carried over"
        model.counts[state] = model.counts.get(state, 0) + 1
        model.dirty_tasks.add(spec.task_id)


def _upstream_json(spec: TaskSpec) -> str:
    if not (spec.after or spec.inputs):
        return _EMPTY_LIST
    upstream = spec.upstream()
    return (dumps(sorted(upstream)) or _EMPTY_LIST) if upstream else _EMPTY_LIST


def _finish(model: RunModel, event: RunFinished) -> None:
    run = model.run
    if run.state in TERMINAL:
        return
    run.state = event.state
    run.finished_at_ms = event.at_ms
    run.error = dumps(event.error)
    run.failed_task_id = event.failed_task_id
    reason = None  # made once, if a task needs it (most runs end with every task done)
    for task in model.tasks.values():  # once per run
        if task.state in ("pending", "retry_wait"):
            if reason is None:
                reason = dumps(
                    TaskError(
                        error_type="cancelled",
                        message=f"not run: the run ended {event.state}"
                        + (f" (task {event.failed_task_id} failed)" if event.failed_task_id else ""),
                        origin="controller",
                    )
                )
            _set_state(model, task, "cancelled")
            task.error = reason
            model.dirty_tasks.add(task.task_id)
    summary = result_summary(model.tasks)
    if event.result is not None:  # a dynamic run's finalize: the result its client gave
        summary = {"result": describe(decode_value(event.result)), **summary}
    run.result_summary = dumps(summary)


def appended_refused(model: RunModel, specs: list[TaskSpec]) -> bool:
    """Whether a `task.appended` is refused: the rule of maze/head/run_state.py `appendable`, as the
    controller applies it, on the rows."""
    run = model.run
    if run.max_tasks is None or run.state in TERMINAL or len(model.tasks) + len(specs) > run.max_tasks:
        return True
    new: set[str] = set()
    for spec in specs:
        if spec.task_id in model.tasks or spec.task_id in new:
            return True
        if any(up not in model.tasks and up not in new for up in spec.upstream()):
            return True
        new.add(spec.task_id)
    return False


def _attempt_row(model: RunModel, task: TaskRow, attempt_no: int) -> AttemptRow:
    key = (task.task_id, attempt_no)
    attempt = model.attempts.get(key)
    if attempt is None:
        attempt = AttemptRow(
            run_id=task.run_id,
            task_id=task.task_id,
            attempt=attempt_no,
            node_id=None,
            node_ip=None,
            pid=None,
            state="queued",
            gpus=_EMPTY_LIST,
            reason=None,
            error=None,
            placed_at_ms=None,
            started_at_ms=None,
            finished_at_ms=None,
            duration_ms=None,
            run_seq=task.run_seq,
        )
        model.attempts[key] = attempt
    model.dirty_attempts.add(key)
    model.dirty_tasks.add(task.task_id)
    return attempt


def fold_run_event(model: RunModel, event: Event) -> RunModel:
    """Apply one run-stream event (other than RunCreated) to a run's rows. The task's state moves
    through the one task state machine (maze/core/task_machine.py), as in the run controller; the
    attempt's own row records what happened to that attempt whatever the task's state. Events are
    told apart by their type (final classes): ~10 isinstance tests an event were a tenth of a
    rebuild's fold."""
    kind = type(event)
    whole_run = _RUN_EVENTS.get(kind)
    if whole_run is not None:
        whole_run(model, event)
        return model
    if kind in _NOT_SHOWN:
        return model
    on_task = cast(AttemptEvent, event)
    task = model.tasks.get(on_task.task_id)
    if task is None:
        return model  # a task this run never recorded: nothing to show it on
    number: int | None = getattr(event, "attempt", None)
    row = model.attempts.get((task.task_id, number)) if number is not None else None
    if foreign(event, row.node_id if row is not None else None):
        return model  # a node's report on an attempt placed elsewhere: it speaks for its own only
    if kind is ArtifactRegistered:
        _register_artifact(model, row, cast(ArtifactRegistered, event))
        return model
    step = transition(task.state, task.attempt, task.failures, event, task.node_id)
    if kind is RetryScheduled:
        if step is not None:
            _set_state(model, task, step.state)
            model.dirty_tasks.add(task.task_id)
        return model
    attempt = _attempt_row(model, task, cast(int, number))
    _fold_attempt_row(attempt, event)
    if step is None:
        return model
    _set_state(model, task, step.state)
    task.attempt, task.failures = step.attempt, step.failures
    effect = step.effect
    if effect == PLACED:
        placed = cast(AttemptPlaced, event)
        task.node_id, task.gpus = placed.node_id, attempt.gpus
        task.placement_reason, task.queued_at_ms, task.error = placed.reason, placed.at_ms, None
        task.node_ip = task.started_at_ms = task.finished_at_ms = None
        run = model.run
        if run.state == "created":
            run.state, run.started_at_ms = "running", placed.at_ms
    elif effect == STARTED:
        started = cast(AttemptStarted, event)
        task.node_id, task.node_ip, task.started_at_ms = started.node_id, started.node_ip, started.at_ms
    elif effect == SUCCEEDED:
        succeeded = cast(AttemptSucceeded, event)
        task.result = dumps(describe_map(succeeded.result)[0])
        task.finished_at_ms, task.error = succeeded.at_ms, None
    elif effect == FAILED_NOW:
        task.error, task.finished_at_ms = attempt.error, on_task.at_ms
    elif effect == REQUEUED:
        back = cast(AttemptRejected | AttemptLost, event)
        how = "rejected by" if kind is AttemptRejected else "lost with"
        task.placement_reason = f"{how} {back.node_id}: {back.reason}"
    return model


def _appended(model: RunModel, event: TaskAppended) -> None:
    if not appended_refused(model, event.tasks):
        add_tasks(model, event.tasks, len(model.tasks))
        model.run.task_count = len(model.tasks)


# events on the whole run, each by its type
_RUN_EVENTS: dict[type, Callable[[RunModel, Any], None]] = {
    RunFinished: _finish,
    TasksAdded: lambda model, event: add_tasks(model, event.tasks, event.offset),
    TaskAppended: _appended,
}
# a command (the controller's decisions that follow it say what it did), or a ReAct run's trace
# (read from its log: maze/projections/agent_trace.py)
_NOT_SHOWN = frozenset({RunCancelRequested, RunFinalizeRequested, *AGENT_EVENTS})


def _register_artifact(model: RunModel, attempt: AttemptRow | None, event: ArtifactRegistered) -> None:
    """A file of an attempt placed on the reporting node and not ended yet (what the controller
    folds too: maze/head/run_state.py `register_artifact`)."""
    if attempt is None or attempt.state not in ("queued", "running") or not artifact_is_sound(event):
        return
    key = (event.task_id, event.attempt, event.path)
    model.artifacts[key] = ArtifactRow(
        run_id=event.run_id,
        task_id=event.task_id,
        attempt=event.attempt,
        path=event.path,
        sha256=event.sha256,
        size=event.size,
        node_id=event.node_id,
        at_ms=event.at_ms,
        run_seq=model.run.run_seq,
    )
    model.dirty_artifacts.add(key)


def _fold_attempt_row(attempt: AttemptRow, event: Event) -> None:
    """One attempt's own row: where it was placed, when it started and how it ended (its first
    terminal event wins)."""
    kind = type(event)
    if kind is AttemptPlaced:
        placed = cast(AttemptPlaced, event)
        gpus = dumps_shared(placed.gpus, ("gpus", *placed.gpus)) or _EMPTY_LIST
        attempt.node_id, attempt.gpus, attempt.reason = placed.node_id, gpus, placed.reason
        attempt.placed_at_ms = placed.at_ms
        return
    if kind is AttemptStarted:
        started = cast(AttemptStarted, event)
        if attempt.state == "queued":
            attempt.state = "running"
        attempt.node_id, attempt.node_ip, attempt.pid = started.node_id, started.node_ip, started.pid
        attempt.started_at_ms = started.at_ms
        return
    if attempt.state in ATTEMPT_ENDED:
        return
    if kind is AttemptSucceeded:
        succeeded = cast(AttemptSucceeded, event)
        attempt.state, attempt.finished_at_ms = "succeeded", succeeded.at_ms
        attempt.duration_ms, attempt.node_id = succeeded.duration_ms, succeeded.node_id
    elif kind is AttemptRejected:
        if attempt.state == "running":  # its start came first (maze/head/scheduler.py _started_before)
            return
        rejected = cast(AttemptRejected, event)
        attempt.state, attempt.reason, attempt.finished_at_ms = "rejected", rejected.reason, rejected.at_ms
    elif kind is AttemptLost:
        lost = cast(AttemptLost, event)
        if attempt.state == "running":  # it had started: a failure, like the task's
            attempt.state, attempt.error = "failed", dumps(lost_error(lost))
        else:
            attempt.state, attempt.reason = "lost", f"node {lost.node_id} went away before it started"
        attempt.finished_at_ms = lost.at_ms
    elif kind is AttemptFailed:
        failed = cast(AttemptFailed, event)
        attempt.state, attempt.finished_at_ms = failure_state(failed.error), failed.at_ms
        attempt.error = dumps(failed.error)
        if failed.node_id and attempt.node_id is None:
            attempt.node_id = failed.node_id


def summarize(model: RunModel) -> None:
    """The run row's counters from the per-state counts; once per batch, O(states)."""
    counts = model.counts
    model.run.tasks_succeeded = counts.get("succeeded", 0)
    model.run.tasks_failed = counts.get("failed", 0) + counts.get("timed_out", 0)
    key = tuple(sorted(counts.items()))
    progress = _progress.get(key)
    if progress is None:  # most runs are in one of a few states of their counts: each shown once
        if len(_progress) > 10_000:
            _progress.clear()
        progress = _progress[key] = json.dumps({s: n for s, n in key if n})
    model.run.progress = progress


_progress: dict[tuple[tuple[str, int], ...], str] = {}


def fold_node_event(node: Row | None, event: NodeJoined | NodeLeft | NodeLost) -> Row | None:
    if isinstance(event, NodeJoined):
        return {
            "node_id": event.node_id,
            "session": event.session,
            "hostname": event.hostname,
            "ip": event.ip,
            "state": "alive",
            "cpus": event.capacity.cpus,
            "memory_mb": event.capacity.memory_mb,
            "gpus": dumps(event.capacity.gpus),
            "joined_at_ms": event.at_ms,
            "left_at_ms": None,
        }
    if node is not None and node["session"] == event.session:
        node = dict(node)
        node.update(state="lost" if isinstance(event, NodeLost) else "left", left_at_ms=event.at_ms)
    return node
