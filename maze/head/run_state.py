"""The run controller's view of active runs, folded from events. No I/O, no clock.

Every fold step touches only the task the event names and its direct neighbours, so the cost of an
event does not grow with the run: failures waiting for a decision are kept in a per-run set,
completion is a counter, and an upstream result is kept only while a downstream task may still
need it (as raw wire bytes: the head never decodes values).
"""

from __future__ import annotations

import msgspec
import structlog
from msgspec import Struct

from maze.core.task_machine import (
    FAILED,
    FAILED_NOW,
    PLACED,
    REQUEUED,
    RETRY,
    STARTED,
    SUCCEEDED,
    lost_error,
    transition,
)
from maze.events import gather
from maze.events.artifacts import (
    MAX_ARTIFACTS_PER_ATTEMPT,
    ArtifactRegistered,
    FileEntry,
    artifact_is_sound,
    overlay,
)
from maze.events.catalog import Event
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import InputGather, InputRef, InputValue, TaskError, TaskSpec, gathered_refs
from maze.events.tasks import AttemptLost, AttemptPlaced, AttemptRejected, AttemptSucceeded, RetryScheduled
from maze.events.values import decode_map_raw, missing_output
from maze.head.agent_state import AgentState

log = structlog.get_logger(__name__)


class TaskRuntime(Struct, gc=False):
    """One task of an active run. Made to be cheap by the hundred thousand: no container of its
    own until it needs one, and not tracked by the cyclic GC (it is never part of a cycle)."""

    spec: TaskSpec
    state: str = "pending"  # the task state machine's (maze/core/task_machine.py)
    attempt: int = 0  # current attempt number, 0 before the first placement
    failures: int = 0  # attempts that failed (what retry budgets count)
    node_id: str | None = None
    session: str = ""
    gpus: tuple[int, ...] = ()
    waiting: int = 0  # upstream tasks (data or ordering) that have not succeeded yet
    downstream: tuple[str, ...] = ()
    # Downstream tasks that read this task's outputs and have not succeeded yet: the result is
    # kept while this is above zero (a reader's retry needs its inputs again), then freed.
    readers: int = 0
    result: dict[str, bytes] | None = None  # output key -> wire value, while `readers` > 0
    error: TaskError | None = None
    retry_at_ms: int = 0
    next_attempt: int = 0
    # placements in a row that never started (rejected, or lost before the start), and why the
    # last one came back: what bounds a task that no node will start (maze/head/scheduler.py)
    requeues: int = 0
    requeue_reason: str = ""
    # the files its attempt `files_attempt` registered (a run with a workspace only); those of
    # the attempt that succeeded are what its downstream tasks see
    files: dict[str, FileEntry] = {}  # by path: a report costs O(1) (MAX_ARTIFACTS_PER_ATTEMPT)
    files_attempt: int = 0


class RunRuntime(Struct):
    run_id: str
    workflow_id: str
    functions: dict[str, bytes]  # code carried inline by runs recorded before the blob store
    tasks: dict[str, TaskRuntime]
    remaining: int
    state: str = "running"
    finished: bool = False
    cancel: str | None = None  # a cancel was requested (its reason): the run ends `cancelled`
    deadline_ms: int = 0  # the run ends `timed_out` at this time (0: no run-level timeout)
    timeout_s: float | None = None  # the run-level timeout it was created with
    # failed (or requeued too often) tasks with neither a retry nor the run's end recorded yet,
    # in that order
    undecided: dict[str, None] = {}
    workspace: str = ""  # its workspace manifest's sha256 ("": a run without files)
    # A dynamic run (maze/api/dynamic.py): it grows by `task.appended` up to `max_tasks` tasks,
    # stays open when all of them are done, keeps every result (a task appended later may read
    # it), and ends by finalize, cancel or its timeout. A task of it that fails for good does not
    # end it: its client sees the failure.
    dynamic: bool = False
    max_tasks: int = 0
    finalize: bytes | None = None  # a finalize was requested (its result): the run ends succeeded
    # a ReAct run (kind "react"): a dynamic run whose next tasks the controller appends itself
    # (maze/head/agent.py), its agent as folded from the log
    agent: AgentState | None = None


def data_upstream(spec: TaskSpec) -> set[str]:
    """The tasks whose outputs this task reads (ordering-only `after` edges excluded)."""
    ups = set()
    for given in spec.inputs.values():
        if isinstance(given, InputRef):
            ups.add(given.task_id)
        elif isinstance(given, InputGather):
            ups.update(ref.task_id for ref in gathered_refs(given))
    return ups


def new_run(event: RunCreated, specs: list[TaskSpec] | None = None) -> RunRuntime:
    """The run of a RunCreated, with all of its tasks (`specs`, when they came in several chunks)."""
    all_specs = event.tasks if specs is None else specs
    tasks: dict[str, TaskRuntime] = {}
    downstream: dict[str, list[str]] = {}
    for spec in all_specs:
        ups = spec.upstream()
        tasks[spec.task_id] = TaskRuntime(spec=spec, waiting=len(ups))
        for up in ups:
            downstream.setdefault(up, []).append(spec.task_id)
    for up, downs in downstream.items():
        tasks[up].downstream = tuple(downs)
    for spec in all_specs:
        for up in data_upstream(spec):
            tasks[up].readers += 1
    timeout = event.timeout_seconds
    run = RunRuntime(
        run_id=event.run_id,
        workflow_id=event.workflow_id,
        functions=event.functions,
        tasks=tasks,
        remaining=len(tasks),
        deadline_ms=event.at_ms + int(timeout * 1000) if timeout else 0,
        timeout_s=timeout,
        workspace=event.workspace,
        dynamic=event.kind in ("dynamic", "react"),
        max_tasks=event.max_tasks,
        agent=AgentState(spec=event.agent) if event.agent is not None else None,
    )
    for spec in all_specs:
        if spec.carried is not None:  # succeeded in the run this one retries: it does not run again
            carried = tasks[spec.task_id]
            carried.state = "succeeded"
            _took_result(run, carried, spec.carried)
    return run


def appendable(run: RunRuntime, specs: list[TaskSpec]) -> str | None:
    """Why `task.appended` with `specs` cannot join the run (None: it can). Every fold (the
    controller's, the read models') and the head's check before recording apply this same rule."""
    if not run.dynamic:
        return f"run {run.run_id} is not a dynamic run: tasks cannot be appended to it"
    if run.finished:
        return f"run {run.run_id} has ended {run.state}"
    if len(run.tasks) + len(specs) > run.max_tasks:
        return (
            f"run {run.run_id} holds {len(run.tasks)} of its max_tasks={run.max_tasks} tasks: "
            f"{len(specs)} more do not fit"
        )
    new: set[str] = set()  # O(appended tasks and their edges), never a walk of the run
    for spec in specs:
        if spec.task_id in run.tasks or spec.task_id in new:
            return f"task id {spec.task_id!r} is taken in run {run.run_id}"
        unknown = sorted(up for up in spec.upstream() if up not in run.tasks and up not in new)
        if unknown:
            return f"task {spec.task_id!r} refers to unknown task(s) {unknown}"
        new.add(spec.task_id)
    return None


def append_tasks(run: RunRuntime, specs: list[TaskSpec]) -> list[str]:
    """Fold tasks appended to a dynamic run (`appendable` said yes): each waits for its upstream
    tasks that have not succeeded yet. Returns those ready now. O(appended tasks + their edges)."""
    ready = []
    for spec in specs:
        task = TaskRuntime(spec=spec)
        run.tasks[spec.task_id] = task
        run.remaining += 1
        for up in sorted(spec.upstream()):
            upstream = run.tasks[up]
            if upstream.state != "succeeded":
                task.waiting += 1
                upstream.downstream = (*upstream.downstream, spec.task_id)
        for up in data_upstream(spec):
            run.tasks[up].readers += 1
        if not task.waiting:
            ready.append(spec.task_id)
    return ready


def ready_tasks(run: RunRuntime) -> list[str]:
    """Tasks ready when the run starts (O(run), once per run)."""
    return [t.spec.task_id for t in run.tasks.values() if t.state == "pending" and not t.waiting]


def raw_result(wire: bytes) -> dict[str, bytes]:
    """A result map as {key: wire value}, each copied out of the message buffer. A malformed map
    (never written by a worker) reads as empty, so its readers fail with `invalid_input`."""
    try:
        return {key: bytes(value) for key, value in decode_map_raw(wire).items()}
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.error("controller.malformed_result", error=str(exc), size=len(wire))
        return {}


def apply_attempt_event(run: RunRuntime, event: Event) -> list[str]:
    """Fold one attempt event into the run through the task state machine. Returns task ids that
    became ready (placeable again, or whose last upstream succeeded).

    Idempotent: an event for an older attempt, or a second terminal event for the same attempt,
    changes nothing (first terminal event wins)."""
    task = run.tasks.get(event.task_id)  # type: ignore[union-attr]
    if task is None:
        return []  # a task this run never recorded
    step = transition(task.state, task.attempt, task.failures, event, task.node_id)
    if step is None:
        return []
    before = task.state
    task.state, task.attempt, task.failures = step.state, step.attempt, step.failures
    effect = step.effect
    if effect == RETRY:
        assert isinstance(event, RetryScheduled)
        run.undecided.pop(event.task_id, None)
        if before in FAILED:  # a retry after a failure (resource_unavailable too) starts afresh
            task.requeues = 0
        task.next_attempt = event.next_attempt
        task.retry_at_ms = event.at_ms + event.delay_ms
    elif effect == PLACED:
        assert isinstance(event, AttemptPlaced)
        task.node_id = event.node_id
        task.session = event.session
        task.gpus = tuple(event.gpus)
        run.undecided.pop(event.task_id, None)
    elif effect == REQUEUED:
        assert isinstance(event, AttemptRejected | AttemptLost)
        how = "rejected by" if isinstance(event, AttemptRejected) else "lost with"
        task.requeue_reason = f"attempt {event.attempt} {how} {event.node_id}: {event.reason}"
        if task.waiting:  # a follower (maze/head/followers.py): placed again with its upstream
            task.requeues = 0
            return []
        task.requeues += 1
        if task.requeues == 1:
            return [task.spec.task_id]  # placed again at once (elsewhere, as a rule)
        run.undecided[task.spec.task_id] = None  # the controller decides: a backoff, or give up
    elif effect == STARTED:
        task.requeues = 0
    elif effect == SUCCEEDED:
        assert isinstance(event, AttemptSucceeded)
        return _succeeded(run, task, event)
    elif effect == FAILED_NOW:
        task.error = lost_error(event) if isinstance(event, AttemptLost) else event.error  # type: ignore[union-attr]
        if not run.finished:
            run.undecided[task.spec.task_id] = None
    return []


def _succeeded(run: RunRuntime, task: TaskRuntime, event: AttemptSucceeded) -> list[str]:
    return _took_result(run, task, event.result)


def _took_result(run: RunRuntime, task: TaskRuntime, wire: bytes) -> list[str]:
    """The task succeeded with result map `wire`: its readers may go once their other inputs are in."""
    run.remaining -= 1
    if task.readers > 0 or run.dynamic:  # a dynamic run's next task may read any result
        task.result = raw_result(wire)
    for up in data_upstream(task.spec):  # this reader needs its inputs no more
        upstream = run.tasks[up]
        upstream.readers -= 1
        if upstream.readers <= 0 and not run.dynamic:
            upstream.result = None
    became_ready = []
    for down in task.downstream:
        child = run.tasks[down]
        child.waiting -= 1  # once per edge: a task succeeds once (first terminal event wins)
        if child.waiting == 0 and child.state == "pending":
            became_ready.append(down)
    return became_ready


def resolve_inputs(run: RunRuntime, spec: TaskSpec) -> dict[str, msgspec.Raw] | TaskError:
    """A task's inputs as wire values, from the submitted values and upstream results (never
    decoded: each is embedded as is). A gathered input's items come as slots of their own
    (maze/events/gather.py: its template travels in the work item)."""
    values: dict[str, msgspec.Raw] = {}
    for name, given in spec.inputs.items():
        if isinstance(given, InputGather):
            for slot, leaf in gather.flatten(name, given)[1]:
                wire = _leaf_wire(run, gather.shown_name(slot), leaf)
                if isinstance(wire, TaskError):
                    return wire
                values[slot] = wire
            continue
        resolved = _leaf_wire(run, name, given)
        if isinstance(resolved, TaskError):
            return resolved
        values[name] = resolved
    return values


def _leaf_wire(run: RunRuntime, name: str, given: InputRef | InputValue) -> msgspec.Raw | TaskError:
    if isinstance(given, InputValue):
        return msgspec.Raw(given.data)  # already msgpack: embedded as is
    result = run.tasks[given.task_id].result or {}
    wire = result.get(given.key)
    if wire is None:
        return TaskError(
            error_type="invalid_input",
            message=missing_output(name, given.key, given.task_id, sorted(result)),
            origin="controller",
        )
    return msgspec.Raw(wire)


def register_artifact(run: RunRuntime, event: ArtifactRegistered) -> None:
    """A file the task's current attempt made, reported by the node it was placed on while the
    attempt had not ended (a late or foreign report changes nothing)."""
    task = run.tasks.get(event.task_id)
    if (
        not run.workspace
        or task is None
        or task.attempt != event.attempt
        or task.state not in ("queued", "running")
        or task.node_id != event.node_id
        or not artifact_is_sound(event)
    ):
        return
    if task.files_attempt != event.attempt:
        task.files, task.files_attempt = {}, event.attempt
    if len(task.files) >= MAX_ARTIFACTS_PER_ATTEMPT and event.path not in task.files:
        return  # past the cap (its worker fails such an attempt): the same ones are dropped on every replay
    task.files[event.path] = FileEntry(event.path, event.sha256, event.size)


def file_view(run: RunRuntime, task: TaskRuntime) -> list[FileEntry]:
    """The artifacts a task's attempt sees over the workspace: those of the succeeded attempts of
    all its upstream tasks, transitively, each laid over its own upstream's (a depth-first
    post-order from the task, upstream ids sorted: the same log always gives the same view).
    O(upstream tasks), for runs with a workspace only."""
    order: list[TaskRuntime] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(up, False) for up in sorted(task.spec.upstream(), reverse=True)]
    while stack:
        task_id, expanded = stack.pop()
        if expanded:
            order.append(run.tasks[task_id])
            continue
        if task_id in seen:
            continue
        seen.add(task_id)
        stack.append((task_id, True))
        stack.extend((up, False) for up in sorted(run.tasks[task_id].spec.upstream(), reverse=True))
    layers = [
        list(t.files.values())
        for t in order
        if t.files and t.state == "succeeded" and t.files_attempt == t.attempt
    ]
    return overlay(layers) if layers else []


def finish(run: RunRuntime, event: RunFinished) -> None:
    run.finished = True
    run.state = event.state
    run.undecided.clear()
