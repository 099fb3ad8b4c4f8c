"""Run operations: cancel a run, and retry one as a new run of the same definition.

Both are commands that record events. A cancel is `run.cancel_requested` on the run's head subject;
the deciding controller ends the run `cancelled` where it lands in the log (maze/head/scheduler.py
`_end_run`). A retry is a new `run.created` carrying the old run's task specs, `retry_of` naming the
old run; with `failed_only`, each task that succeeded there carries its recorded result and does
not run again.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, post
from msgspec import Meta, Struct

from maze.api.openapi import RunId, RunToCancel, answers, documented, success
from maze.api.run_writer import (
    chunk_events,
    encode_chunks,
    fit_specs,
    record_run,
    require_workspace,
    spec_sizes,
)
from maze.api.runs import require_run, salted
from maze.api.state import HeadState
from maze.api.submit import ID_RE, check_placeable
from maze.api.views import Cancelled, Retried
from maze.core.clock import new_id, now_ms
from maze.core.errors import Conflict, NotFound, Unavailable, ValidationError
from maze.core.task_machine import TERMINAL
from maze.events import subjects
from maze.events.artifacts import ArtifactRegistered, FileEntry, decode_manifest, encode_manifest, overlay
from maze.events.codec import decode_leniently
from maze.events.runs import RunCancelRequested, RunCreated, TasksAdded
from maze.events.specs import TaskSpec
from maze.events.store import subscribe_ordered
from maze.events.tasks import AttemptSucceeded
from maze.head.intake import PartialRun
from maze.head.run_state import apply_attempt_event, new_run, register_artifact

CANCEL_WAIT_S = 5.0  # how long a cancel waits for the run's end before answering 202
MAX_REASON_CHARS = 1000
MAX_BODY_BYTES = 64 * 1024  # a body here is a few fields: a reason of 1,000 characters at most


class CancelRequest(Struct, forbid_unknown_fields=True):
    reason: Annotated[
        str, Meta(max_length=MAX_REASON_CHARS, description="Why; it shows in the run's error.")
    ] = ""


class RetryRequest(Struct, forbid_unknown_fields=True):
    failed_only: Annotated[
        bool, Meta(description="Keep the results of the tasks that succeeded: only the others run.")
    ] = False
    workspace: Annotated[
        str,
        Meta(
            pattern=r"^([0-9a-f]{64})?$",
            description="The sha256 of a workspace manifest stored in the blob store (what "
            "`client.retry_run(workspace_dir=...)` uploads): the new run's workspace instead of the "
            "old run's. Empty or absent: the old run's.",
        ),
    ] = ""
    # the new run's id, chosen by the client so that a request sent again gets the same run
    run_id: Annotated[
        str,
        Meta(
            pattern=r"^(run_[A-Za-z0-9_-]{1,124})?$",
            description="The new run's id (`run_` then letters, digits, `_` or `-`), so that the request "
            "sent again gets the same run; empty or absent: the head makes one.",
        ),
    ] = ""


# why a field the body may not carry yet is refused
NOT_YET = {
    "workspace_dir": "workspace_dir is the SDK's argument (client.retry_run(workspace_dir=...) uploads the "
    "directory); over HTTP, give `workspace`: the sha256 of a workspace manifest stored in the blob store",
}


def _body(data: bytes, kind: type[Any]) -> Any:
    if not data.strip():
        return kind()
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError as exc:
        for field, why in NOT_YET.items():
            if str(exc).endswith(f"at `$.{field}`"):
                raise ValidationError(why, field=field) from exc
        raise ValidationError(f"invalid request body: {exc}") from exc


async def _ended_state(head: HeadState, run_id: str) -> str | None:
    """The run's final state as this head's controller folded it (None: not ended), else (a run
    ended long ago, beyond what the controller remembers) as the read models have it."""
    controller = head.controller
    if run_id in controller.runs or run_id in controller.core.intake:
        return None
    state = controller.done_runs.get(run_id)
    if state:
        return state
    run = await head.read("get_run", run_id)
    return str(run["state"]) if run["state"] in TERMINAL else None


@post(
    "/runs/{run_id:str}/cancel",
    status_code=200,
    request_max_body_size=MAX_BODY_BYTES,
    responses=answers(400, 404, 409, 413, 503, ok=Cancelled, description="The run has ended `cancelled`.")
    | success(202, Cancelled, "The cancel is recorded; the run has not ended yet (`cancelling`)."),
    operation_class=documented(body=CancelRequest, body_required=False),
)
async def cancel_run(
    request: Request[Any, Any, Any], run_id: RunToCancel, head: HeadState
) -> Response[Cancelled]:
    """Cancel a run: its queued attempts are withdrawn, its running attempts killed (their whole
    process trees), nothing of it starts later, and it ends `cancelled`. Answers 200 with the final
    state once the run has ended (within a few seconds as a rule), 202 if it has not yet (the
    cancel is recorded: the run ends once a controller decides), 409 if the run had already ended
    (or ended otherwise before the cancel took effect). Body (optional): `{"reason": "..."}`."""
    body: CancelRequest = _body(await request.body(), CancelRequest)
    await require_run(head, run_id)
    if not await head.controller_ready():
        raise Unavailable("the run controller is still replaying history; try again shortly")
    ended = await _ended_state(head, run_id)
    if ended is not None:
        raise Conflict(
            f"run {run_id} has already ended {ended}: nothing to cancel", run_id=run_id, state=ended
        )
    ack = await head.controller.store.publish(
        subjects.run_subject(run_id), [RunCancelRequested(run_id=run_id, at_ms=now_ms(), reason=body.reason)]
    )
    state = await head.controller.wait_ended(run_id, CANCEL_WAIT_S)
    if state is None:
        return Response(Cancelled(run_id, int(ack.seq), body.reason, "cancelling"), status_code=202)
    if state != "cancelled":
        raise Conflict(
            f"run {run_id} ended {state} before the cancel took effect", run_id=run_id, state=state
        )
    return Response(Cancelled(run_id, int(ack.seq), body.reason, "cancelled"), status_code=200)


async def _recorded(
    head: HeadState, run_id: str, last: int
) -> tuple[RunCreated, list[TaskSpec], dict[str, bytes], list[list[FileEntry]]]:
    """The run as the log records it: its `run.created`, every task spec (all chunks), and the
    result of each task that succeeded (folded as the controller folds it: the first terminal
    event per attempt, a node speaking for its own attempts only), and the files each of those
    made (its succeeded attempt's artifacts, as the controller registers them)."""
    created: RunCreated | None = None
    added: list[TasksAdded] = []
    reports: list[Any] = []
    sub = await subscribe_ordered(
        head.js, subjects.run_subject(run_id), 1, filters=subjects.run_filters(run_id)
    )
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            for event in decode_leniently(msg.data, msg.subject).events:
                if isinstance(event, RunCreated):
                    created = created or event
                elif isinstance(event, TasksAdded):
                    added.append(event)
                else:
                    reports.append(event)
            if msg.metadata.sequence.stream >= last:
                break
    except TimeoutError as exc:
        raise Unavailable(f"the log of run {run_id} could not be read in time") from exc
    finally:
        await sub.unsubscribe()
    if created is None:
        raise NotFound(f"run {run_id!r} not found", run_id=run_id)
    partial = PartialRun(created=created, chunks={0: list(created.tasks)})
    for chunk in added:
        partial.chunks.setdefault(chunk.chunk, list(chunk.tasks))
    if not partial.complete:
        raise Conflict(
            f"run {run_id} never had all of its tasks recorded: it cannot be retried", run_id=run_id
        )
    specs = partial.specs()
    run = new_run(created, specs)
    results: dict[str, bytes] = {}
    for event in reports:
        if not hasattr(event, "task_id"):
            continue
        task = run.tasks.get(event.task_id)
        before = task.state if task is not None else None
        if isinstance(event, ArtifactRegistered):
            register_artifact(run, event)  # as the controller folds it: the same files
            continue
        apply_attempt_event(run, event)
        if task is not None and isinstance(event, AttemptSucceeded) and before != task.state == "succeeded":
            results[event.task_id] = event.result
    kept = {t: r for t, r in results.items() if run.tasks[t].state == "succeeded"}
    # what each kept task made (its succeeded attempt's files), in submission order
    made = [
        list(task.files.values())
        for task in (run.tasks[s.task_id] for s in specs)
        if task.spec.task_id in kept and task.files and task.files_attempt == task.attempt
    ]
    return created, specs, kept, made


async def _with_files(head: Any, workspace: str, made: list[list[FileEntry]]) -> str:
    """A manifest of `workspace`'s files with `made` laid over them, stored: its sha256."""
    base = decode_manifest(await head.blobs.get(workspace))
    sha, _ = await head.blobs.put(encode_manifest(overlay([base, *made])))
    return str(sha)


@post(
    "/runs/{run_id:str}/retry",
    status_code=201,
    request_max_body_size=MAX_BODY_BYTES,
    responses=answers(400, 404, 409, 413, 422, 503, ok=Retried, ok_status=201),
    operation_class=documented(body=RetryRequest, body_required=False),
)
async def retry_run(request: Request[Any, Any, Any], run_id: RunId, head: HeadState) -> Response[Retried]:
    """Run an ended run again, as a new run of the same definition (the same task specs, code
    and inputs, kind and run timeout), linked both ways (`retry_of` on the new run, `retried_by` on
    this one). With `failed_only`, the tasks that succeeded keep their recorded results and do not
    run again: only the failed and cancelled ones (and those that never ran) do. Body (optional):
    `{"failed_only": false, "run_id": "<new run id>"}`. 409 while the run has not ended, or when
    the new run id is taken by another request. 422 when a task of it no node could hold now."""
    body: RetryRequest = _body(await request.body(), RetryRequest)
    new_run_id = body.run_id or new_id("run")
    # the field's pattern, but whole: a regular expression's `$` also matches before a final
    # newline, and the id becomes a NATS subject token
    if not ID_RE.fullmatch(new_run_id):
        raise ValidationError("run_id, when given, is 'run_' then letters, digits, '_' or '-' (128 at most)")
    last = await require_run(head, run_id)
    if not await head.controller_ready():
        raise Unavailable("the run controller is still replaying history; try again shortly")
    ended = await _ended_state(head, run_id)
    if ended is None:
        raise Conflict(f"run {run_id} has not ended: cancel it first, or wait for it", run_id=run_id)
    created, specs, results, made = await _recorded(head, run_id, last)
    if created.kind in ("dynamic", "react"):
        raise Conflict(
            f"run {run_id} is a {created.kind} run: its tasks were appended while it ran; create a new "
            f"{created.kind} run instead",
            run_id=run_id,
        )
    workspace = created.workspace
    if body.workspace:  # a new workspace (uploaded by the client): checked as at submit
        await require_workspace(head.blobs, body.workspace)
        workspace = body.workspace
    carried = 0
    if body.failed_only:
        for i, spec in enumerate(specs):
            if spec.task_id in results:
                specs[i] = msgspec.structs.replace(spec, carried=results[spec.task_id])
                carried += 1
        if made and workspace:
            # the kept tasks do not run again, so what they made travels in the new run's
            # workspace (laid over it in submission order): their downstream tasks see it
            workspace = await _with_files(head, workspace, made)
    else:
        specs = [msgspec.structs.replace(s, carried=None) for s in specs]
    check_placeable([s for s in specs if s.carried is None], head.controller.placer.never_fits)
    sizes = spec_sizes(specs)
    await fit_specs(specs, sizes, head.budget, head.blobs)
    events = chunk_events(new_run_id, created.workflow_id, specs, now_ms(), head.budget, sizes)
    first = events[0]
    assert isinstance(first, RunCreated)
    events[0] = msgspec.structs.replace(
        first,
        kind=created.kind,
        timeout_seconds=created.timeout_seconds,
        retry_of=run_id,
        workspace=workspace,
    )
    request_hash = hashlib.sha256(
        f"retry/{run_id}/{body.failed_only}/{new_run_id}/{body.workspace}".encode()
    ).hexdigest()[:32]
    seq, duplicate = await record_run(head.js, events, salted(request_hash, head), encode_chunks(events))
    return Response(
        Retried(
            run_id=new_run_id,
            retry_of=run_id,
            workflow_id=created.workflow_id,
            seq=seq,
            tasks=len(specs),
            carried=carried,
            duplicate=duplicate,
        ),
        status_code=201,
    )
