"""Dynamic runs: a run created empty that its client grows while it runs (`POST /runs/{id}/tasks`,
each append one `task.appended` event), and ends with a result (`POST /runs/{id}/finalize`), a
cancel, or its timeout. It never ends by itself when its tasks are done, and a task of it that
fails for good does not end it: its client sees the failure and decides what comes next.

Every append is checked against the run as this head's controller has folded it (its tasks,
`max_tasks`, whether it has ended) before anything is recorded: a reference to a task the run does
not hold, or an `after` naming one, is a 400; a run that has ended, or that would hold more than
`max_tasks` tasks, is a 409; a task no node could hold is a 422. Appends to one run are recorded
one at a time by this head, each answered once the controller has folded it, so the check and the
fold agree. Task ids are the client's: an append sent again (a lost answer) finds its tasks and is
answered `duplicate`, recording nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, post
from msgspec import Meta, Struct
from nats.js.api import PubAck
from nats.js.errors import APIError

from maze.api.openapi import RunId, answers, documented, success
from maze.api.operations import MAX_BODY_BYTES, _body, _ended_state
from maze.api.run_writer import (
    WRONG_LAST_SEQUENCE,
    fit_specs,
    open_run_created,
    record_run,
    require_workspace,
    spec_sizes,
    store_blobs,
)
from maze.api.runs import MAX_RUN_TIMEOUT_S, MAX_SUBMISSION_BYTES, require_run, salted
from maze.api.state import HeadState
from maze.api.submit import (
    ID_RE,
    SubmitRun,
    TaskSubmission,
    _Literals,
    accept_submission,
    check_placeable,
)
from maze.api.views import Appended, DynamicCreated, Finalized
from maze.core.clock import new_id, now_ms
from maze.core.errors import Conflict, PayloadTooLarge, Unavailable, ValidationError
from maze.events import subjects
from maze.events.catalog import event_key
from maze.events.runs import RunFinalizeRequested, TaskAppended
from maze.events.specs import TaskSpec
from maze.head.run_state import RunRuntime, appendable

MAX_TASKS_LIMIT = 100_000  # a dynamic run's `max_tasks` at most (it keeps every result in memory)
FOLD_WAIT_S = 10.0  # how long an append waits for the controller to fold it
FINALIZE_WAIT_S = 5.0  # how long a finalize waits for the run's end before answering 202


class CreateDynamicRun(Struct, forbid_unknown_fields=True):
    max_tasks: Annotated[
        int, Meta(ge=1, le=MAX_TASKS_LIMIT, description="The most tasks the run may ever hold.")
    ]
    timeout_seconds: (
        Annotated[
            float,
            Meta(
                gt=0,
                le=MAX_RUN_TIMEOUT_S,
                description="The run ends `timed_out` this long after it is created unless it was "
                "finalized or cancelled before. Null: no timeout (it stays open until finalized or "
                "cancelled).",
            ),
        ]
        | None
    ) = None
    workflow_id: Annotated[str, Meta(max_length=128)] = ""
    run_id: Annotated[
        str,
        Meta(
            pattern=r"^(run_[A-Za-z0-9_-]{1,124})?$",
            description="The run's id, chosen by the client so that the request sent again gets the "
            "same run; empty: the head makes one.",
        ),
    ] = ""
    workspace: Annotated[
        str,
        Meta(
            pattern=r"^([0-9a-f]{64})?$",
            description="The sha256 of a workspace manifest stored in the blob store (optional).",
        ),
    ] = ""


class AppendTasks(Struct, forbid_unknown_fields=True):
    """Tasks to append, in the form `POST /runs` takes them. A reference names a task the run holds
    already or one before it in `tasks`."""

    tasks: Annotated[list[TaskSubmission], Meta(min_length=1)]
    functions: dict[str, bytes] = {}


class FinalizeRun(Struct, forbid_unknown_fields=True):
    result: Annotated[Any, Meta(description="The run's result: plain JSON data.")] = None
    # a wire value from the SDK (maze/events/values.py), base64 in JSON: instead of `result`
    encoded: (
        Annotated[
            str,
            Meta(
                pattern=r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
                description="The result as an SDK wire value, base64 (instead of `result`).",
            ),
        ]
        | None
    ) = None


class _Specs(Mapping[str, TaskSpec]):
    """A run's task specs by id, read through its folded tasks (no copy)."""

    def __init__(self, run: RunRuntime, leave_out: frozenset[str] = frozenset()) -> None:
        self.run = run
        self.leave_out = leave_out

    def __getitem__(self, task_id: str) -> TaskSpec:
        if task_id in self.leave_out:
            raise KeyError(task_id)
        return self.run.tasks[task_id].spec

    def __iter__(self) -> Iterator[str]:
        return (t for t in self.run.tasks if t not in self.leave_out)

    def __len__(self) -> int:
        return len(self.run.tasks) - len(self.leave_out & self.run.tasks.keys())

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.run.tasks and task_id not in self.leave_out


def _decode(data: bytes, content_type: str, kind: type[Any]) -> Any:
    try:
        if "msgpack" in content_type:
            return msgspec.msgpack.decode(data, type=kind)
        # JSON Schema's integers may be written 10.0: such a number is read as the integer
        return msgspec.convert(_integral(msgspec.json.decode(data)), type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValidationError(f"invalid request body: {exc}") from exc


def _integral(value: Any) -> Any:
    """`value` with every float that is a whole number made an int (a float field takes an int)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


async def _live_run(head: HeadState, run_id: str, refresh: bool = False) -> RunRuntime:
    """The run as this head's controller folds it: 404 for an unknown run, 409 for one that has
    ended or is not dynamic. A run folded already is taken as folded (`refresh`: the log is asked
    for the run's last event and folded up to it first, as for a run not folded yet)."""
    run = head.controller.runs.get(run_id) if head.controller.caught_up.is_set() and not refresh else None
    if run is None:  # not folded (yet): ask the log whether it exists, and fold up to its last event
        last = await require_run(head, run_id)
        if not await head.controller_ready():
            raise Unavailable("the run controller is still replaying history; try again shortly")
        await head.controller.feeds.reach(last, FOLD_WAIT_S)  # a run created just now is folded first
        run = head.controller.runs.get(run_id)
    if run is None:
        ended = await _ended_state(head, run_id)
        if ended is not None:
            raise Conflict(f"run {run_id} has ended {ended}", run_id=run_id, state=ended)
        raise Unavailable(f"run {run_id} is not folded by the controller yet; try again shortly")
    if not run.dynamic:
        raise Conflict(
            f"run {run_id} is not a dynamic run: tasks cannot be appended to it, nor can it be finalized",
            run_id=run_id,
        )
    if run.agent is not None:
        raise Conflict(
            f"run {run_id} is a ReAct run: its run controller appends its tasks and ends it (cancel it "
            "to stop it)",
            run_id=run_id,
        )
    return run


_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # run id -> its appends' lock, and users


@contextlib.asynccontextmanager
async def _one_at_a_time(run_id: str) -> AsyncIterator[None]:
    """This head records a run's appends one at a time, each folded before the next is checked."""
    lock, users = _locks.setdefault(run_id, (asyncio.Lock(), [0]))
    users[0] += 1
    try:
        async with lock:
            yield
    finally:
        users[0] -= 1
        if not users[0]:
            _locks.pop(run_id, None)


def _refuse_if_ending(run: RunRuntime) -> None:
    if run.finalize is not None or run.cancel is not None:
        how = "finalized" if run.finalize is not None else "cancelled"
        raise Conflict(f"run {run.run_id} was {how}: it takes no more tasks", run_id=run.run_id, state=how)


@post(
    "/runs/dynamic",
    status_code=201,
    request_max_body_size=MAX_BODY_BYTES,
    responses=answers(400, 404, 409, 413, 503, ok=DynamicCreated, ok_status=201),
    operation_class=documented(body=CreateDynamicRun),
)
async def create_dynamic_run(request: Request[Any, Any, Any], head: HeadState) -> Response[DynamicCreated]:
    """Create a dynamic run: empty, kind `dynamic`, it takes up to `max_tasks` tasks appended while it
    runs (`POST /runs/{id}/tasks`) and ends by `POST /runs/{id}/finalize`, a cancel or its
    `timeout_seconds` (never by itself when its tasks are done). Body:
    `{"max_tasks": 10, "timeout_seconds": 600}`. The same request sent again (same `run_id` and
    body) gets the same run (`duplicate`); another body under a taken run id is a 409."""
    body_bytes = await request.body()
    body: CreateDynamicRun = _decode(body_bytes, request.headers.get("content-type", ""), CreateDynamicRun)
    run_id = body.run_id or new_id("run")
    if not ID_RE.fullmatch(run_id):
        raise ValidationError("run_id, when given, is 'run_' then letters, digits, '_' or '-' (128 at most)")
    timeout = body.timeout_seconds
    if timeout is not None and not math.isfinite(timeout):
        raise ValidationError("timeout_seconds must be a finite number of seconds")
    if not await head.controller_ready():
        raise Unavailable("the run controller is still replaying history; try again shortly")
    if body.workspace:
        await require_workspace(head.blobs, body.workspace)
    workflow_id = body.workflow_id or run_id
    created = open_run_created(run_id, workflow_id, "dynamic", timeout, body.workspace, body.max_tasks)
    request_hash = hashlib.sha256(body_bytes).hexdigest()[:32]
    seq, duplicate = await record_run(head.js, [created], salted(request_hash, head))
    answer = DynamicCreated(
        run_id=run_id,
        workflow_id=workflow_id,
        seq=seq,
        max_tasks=body.max_tasks,
        timeout_seconds=timeout,
        duplicate=duplicate,
    )
    return Response(answer, status_code=201)


@post(
    "/runs/{run_id:str}/tasks",
    status_code=201,
    request_max_body_size=MAX_SUBMISSION_BYTES,
    responses=answers(400, 404, 409, 413, 422, 503, ok=Appended, ok_status=201)
    | success(200, Appended, "These tasks were appended before (the same request again): nothing new."),
    operation_class=documented(
        body=AppendTasks,
        body_media_types=("application/json", "application/msgpack"),
        body_description="Tasks in the form `POST /runs` takes (code by sha256, sent along in "
        '`functions` or stored already). A reference (`{"ref": "<task_id>.output.<key>"}`) or '
        "an `after` names a task the run holds already, or one before it in `tasks`.",
    ),
)
async def append_tasks(request: Request[Any, Any, Any], run_id: RunId, head: HeadState) -> Response[Appended]:
    """Append tasks to a dynamic run: recorded as one `task.appended`, and placed as soon as the
    controller has folded it (a task whose references are all done is ready at once). 400 for a
    reference or `after` naming a task the run does not hold (or a later one of the same request),
    409 when the run has ended (finalized, cancelled, timed out) or would hold more than its
    `max_tasks`, 422 when no node could hold a task: nothing is recorded then. The same tasks sent
    again (their ids taken by equal tasks) are answered 200 `duplicate`, recording nothing."""
    body: AppendTasks = _decode(await request.body(), request.headers.get("content-type", ""), AppendTasks)
    if not body.tasks:
        raise ValidationError("an append needs at least one task")
    try:
        return await _append(head, run_id, body, fast=True)
    except _Stale:  # the fold this head holds is behind the log: fold up to the run's last event
        return await _append(head, run_id, body, fast=False)


class _Stale(Exception):
    """The run has moved on in the log past this head's fold (see `_append`)."""


async def _append(head: HeadState, run_id: str, body: AppendTasks, fast: bool) -> Response[Appended]:
    """Check and record an append. `fast`: against the run as this controller has folded it, the
    message stored only if nothing was written on the run's own subject since (a conditional
    publish) — so the tasks ready now can be placed in the same message. Raises _Stale when the
    fold proves behind the log (a reference it does not know, or a newer message on the run's
    subject: another head's append, a cancel, the run's end); the caller then checks again
    against the run folded up to its last event, as every append did before (the slow path)."""
    run = await _live_run(head, run_id, refresh=not fast)
    new_ids = frozenset(t.task_id for t in body.tasks)
    taken = new_ids & run.tasks.keys()
    req = SubmitRun(tasks=body.tasks, functions=body.functions)
    try:
        accepted = accept_submission(req, head.settings.limits, _Specs(run, frozenset(taken)))
    except ValidationError:
        if fast:  # perhaps a task appended through another head, not folded here yet
            raise _Stale() from None
        raise
    specs = accepted.specs
    await store_blobs(head.blobs, accepted.to_store, accepted.must_exist)
    sizes = spec_sizes(specs)
    await fit_specs(specs, sizes, head.budget, head.blobs)
    if taken:
        if taken == new_ids and all(run.tasks[s.task_id].spec == s for s in specs):
            return Response(_appended(run, specs, 0, duplicate=True), status_code=200)
        raise Conflict(
            f"task id(s) {sorted(taken)} are taken in run {run_id} by other tasks",
            run_id=run_id,
            task_ids=sorted(taken),
        )
    check_placeable(specs, head.controller.placer.never_fits)
    async with _one_at_a_time(run_id):
        if run.finished:
            raise _Stale() if fast else Conflict(f"run {run_id} has ended {run.state}", run_id=run_id)
        _refuse_if_ending(run)
        taken_now = new_ids & run.tasks.keys()  # the same append sent again while the first ran
        if taken_now:
            if taken_now == new_ids and all(run.tasks[s.task_id].spec == s for s in specs):
                return Response(_appended(run, specs, 0, duplicate=True), status_code=200)
            raise Conflict(
                f"task id(s) {sorted(taken_now)} are taken in run {run_id} by other tasks",
                run_id=run_id,
                task_ids=sorted(taken_now),
            )
        why = appendable(run, specs)
        if why is not None:
            raise Conflict(why, run_id=run_id, max_tasks=run.max_tasks, tasks=len(run.tasks))
        after_seq = head.controller.head_seq(run_id) if fast else None
        if fast and after_seq is None:  # folded from a snapshot: where its subject stands is unknown
            raise _Stale()
        ack = await _record(head, run_id, specs, after_seq)
        seq = int(ack.seq)
        await head.controller.feeds.reach(seq, FOLD_WAIT_S)
    folded = head.controller.runs.get(run_id)
    if folded is None or any(folded.tasks.get(s.task_id) is None for s in specs):
        if head.controller.feeds.position < seq:
            raise Unavailable(
                f"the append to run {run_id} is recorded (seq {seq}) but not folded yet: send it again "
                "to learn whether it was taken",
                run_id=run_id,
                seq=seq,
            )
        state = head.controller.done_runs.get(run_id, "")
        raise Conflict(
            f"run {run_id} ended {state or 'or changed'} before the append was folded: its tasks were "
            "not taken",
            run_id=run_id,
            seq=seq,
        )
    return Response(_appended(folded, specs, seq, duplicate=bool(ack.duplicate)), status_code=201)


async def _record(head: HeadState, run_id: str, specs: list[TaskSpec], after_seq: int | None) -> PubAck:
    """Store the `task.appended`. With `after_seq` (the last message on the run's own subject this
    head has folded) it is stored only if that is still the last one, and the tasks ready now ride
    in the same message, placed (one write and no controller round trip before they start, as
    `POST /runs` does with a new run's first tasks): the placements then fold exactly as decided,
    since nothing else happened to the run in between. Raises _Stale when something did."""
    appended = TaskAppended(run_id=run_id, at_ms=now_ms(), tasks=specs)
    subject, key = subjects.run_subject(run_id), event_key(appended)
    store, controller = head.controller.store, head.controller
    placing = controller.place_appended(run_id, specs) if after_seq is not None else None
    try:
        ack = await store.publish(
            subject, [appended, *(placing[0].events if placing else ())], key=key, after_seq=after_seq
        )
    except PayloadTooLarge:
        if not placing:
            raise
        controller.submit_abandoned(placing[0])  # no room: recorded alone, placed once it is folded
        raise _Stale() from None
    except APIError as exc:
        if exc.err_code != WRONG_LAST_SEQUENCE:
            if placing:
                controller.submit_failed(placing[0])
            raise
        if placing:  # refused: not stored
            controller.submit_abandoned(placing[0])
        raise _Stale() from None
    except BaseException:
        if placing:
            controller.submit_failed(placing[0])
        raise
    if placing:
        await controller.submitted(*placing, stored=not ack.duplicate)
    return ack


def _appended(run: RunRuntime, specs: list[TaskSpec], seq: int, duplicate: bool) -> Appended:
    return Appended(
        run_id=run.run_id,
        task_ids=[s.task_id for s in specs],
        seq=seq,
        task_count=len(run.tasks),
        max_tasks=run.max_tasks,
        duplicate=duplicate,
    )


@post(
    "/runs/{run_id:str}/finalize",
    status_code=200,
    request_max_body_size=MAX_BODY_BYTES,
    responses=answers(400, 404, 409, 413, 503, ok=Finalized, description="The run has ended `succeeded`.")
    | success(202, Finalized, "The finalize is recorded; the run has not ended yet (`finalizing`)."),
    operation_class=documented(body=FinalizeRun, body_required=False),
)
async def finalize_run(
    request: Request[Any, Any, Any], run_id: RunId, head: HeadState
) -> Response[Finalized]:
    """End a dynamic run `succeeded` with `result` (plain JSON; its result summary shows it): its
    attempts still queued or running end `cancelled`, and it takes no more tasks. 200 once it has
    ended, 202 if it has not yet (the finalize is recorded), 409 if it had ended already (or was
    cancelled) or is not a dynamic run. Body: `{"result": ...}`."""
    body: FinalizeRun = _body(await request.body(), FinalizeRun)
    run = await _live_run(head, run_id)
    _refuse_if_ending(run)
    literals = _Literals(head.settings.limits)
    if body.encoded is not None:
        wire = literals.encoded(body.encoded, "result")
    else:
        wire = literals.plain(body.result, "result")
    await store_blobs(head.blobs, literals.to_store, literals.must_exist)
    ack = await head.controller.store.publish(
        subjects.run_subject(run_id), [RunFinalizeRequested(run_id=run_id, at_ms=now_ms(), result=wire)]
    )
    state = await head.controller.wait_ended(run_id, FINALIZE_WAIT_S)
    if state is None:
        return Response(Finalized(run_id, int(ack.seq), "finalizing"), status_code=202)
    if state != "succeeded":
        raise Conflict(
            f"run {run_id} ended {state} before the finalize took effect", run_id=run_id, state=state
        )
    return Response(Finalized(run_id, int(ack.seq), state), status_code=200)
