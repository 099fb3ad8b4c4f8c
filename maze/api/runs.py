"""Run routes: submit, list, inspect, events and the live SSE stream."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.params import Parameter
from litestar.response import Stream

from maze.api.early import Early
from maze.api.event_reader import placements_before, run_events
from maze.api.openapi import (
    SEQ_MAX,
    After,
    LastEventId,
    Offset,
    RunId,
    TaskId,
    answers,
    documented,
    sse_event_schema,
)
from maze.api.run_writer import (
    check_workspace,
    chunk_events,
    encode_chunks,
    fit_specs,
    record_run,
    spec_sizes,
    store_blobs,
    with_placements,
)
from maze.api.sse import FEED_WAIT_S, Last, counted, frame, run_frames, sse_response
from maze.api.state import HeadState, MinSeq
from maze.api.submit import ID_RE, SubmitRun, accept_submission, check_placeable, decode_submission
from maze.api.views import EventsPage, ListedRun, RunView, Submitted, TaskDetail, TaskView
from maze.core import hops
from maze.core.clock import new_id, now_ms
from maze.core.errors import NotFound, Unavailable, ValidationError
from maze.events.runs import RunCreated
from maze.events.store import last_run_seq
from maze.projections.queries import MAX_TASKS_PAGE
from maze.projections.run_search import (
    ISO_PATTERN,
    KIND_PATTERN,
    MAX_LIMIT,
    MAX_LIST_ITEMS,
    MAX_SEARCH_CHARS,
    MAX_TIME_MS,
    ORDERS,
    RUN_STATES,
    SORTS,
    STATE_PATTERN,
    RunQuery,
)

MAX_EVENTS_PAGE = 10_000
MAX_RUN_TIMEOUT_S = 366 * 24 * 3600.0
MAX_SUBMISSION_BYTES = 512 * 1024 * 1024  # a 100,000-task run is ~40 MB; big values go as blobs
BIG_BODY_BYTES = 1024 * 1024
T = TypeVar("T")


def salted(request_hash: str, head: HeadState) -> str:
    """A request's hash as its run's message ids carry it: with the heads' secret salt, so that no
    worker can store the ids of a submission it has seen first (JetStream dedupes them stream-wide:
    the run would then be answered `duplicate` and never recorded)."""
    salt = head.controller.store.salt
    return f"{request_hash}/{salt}" if salt else request_hash


async def require_run(head: HeadState, run_id: str) -> int:
    """The stream sequence of the run's last event; 404 unless it has one. Asks the log itself,
    so a stream opened right after the submit does not wait for the projections."""
    last = await last_run_seq(head.js, run_id)
    if last == 0:
        raise NotFound(f"run {run_id!r} not found", run_id=run_id)
    return last


@post(
    "/runs",
    status_code=201,
    request_max_body_size=MAX_SUBMISSION_BYTES,
    responses=answers(400, 409, 413, 422, 429, 503, ok=Submitted, ok_status=201),
    operation_class=documented(
        body=SubmitRun,
        body_media_types=("application/json", "application/msgpack"),
        body_description='The workflow: its tasks (inputs as `{"ref": "<task_id>.output.<key>"}`, '
        '`{"value": ...}` or `{"encoded": <wire bytes>}`) and their code by sha256, sent along in '
        "`functions` or stored already (`PUT /artifacts/sha256/{sha}`). 512 MB at most.",
        also=(201, {"text/event-stream": sse_event_schema(accepted=Submitted)}),
    ),
)
async def submit_run(request: Request[Any, Any, Any], head: HeadState, follow: bool = False) -> Response[Any]:
    """Submit a static workflow run (msgpack or JSON body). Returns the run id and the stream
    sequence of its last event (`seq`: pass it as `min_seq` to read your own write).

    With `follow=true` the answer is the run's live SSE stream instead (as
    `GET /runs/{id}/stream`), opened by an `accepted` event carrying that same JSON: submit and
    follow in one request (it counts as one of the client's live streams from the start: a
    stream refused for that records nothing)."""
    # counted before the body is read: what many large submits at once hold of the head's memory
    length = request.headers.get("content-length")
    # (a body above MAX_SUBMISSION_BYTES is refused as it is read: it never holds more than that)
    size = min(int(length), MAX_SUBMISSION_BYTES) if length and length.isdigit() else MAX_SUBMISSION_BYTES
    head.submits.take(size)
    try:
        if not follow:
            return await _submit(request, head, None)
        client = request.client.host if request.client else "?"
        head.streams.take(client)
        try:
            return await _submit(request, head, client)
        except BaseException:
            head.streams.give_back(client)
            raise
    finally:
        head.submits.give_back(size)


async def _submit(request: Request[Any, Any, Any], head: HeadState, client: str | None) -> Response[Any]:
    follow = client is not None
    body = await request.body()
    received_us = time.time_ns() // 1000
    # decoding, validating and encoding a wide run is seconds of CPU: off the event loop, which
    # the controller, the local worker and every other request share
    big = len(body) > BIG_BODY_BYTES

    async def work(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args) if big else fn(*args)

    submission = await work(decode_submission, body, request.headers.get("content-type", ""))
    run_id = submission.run_id or new_id("run")
    hops.mark("request_received", run_id, received_us)
    if not (run_id.startswith("run_") and ID_RE.fullmatch(run_id)):
        # it becomes a NATS subject token: no '.', '*', '>' or spaces
        raise ValidationError("run_id, when given, is 'run_' then letters, digits, '_' or '-' (128 at most)")
    if len(submission.workflow_id) > 128:
        raise ValidationError("workflow_id is 128 characters at most")
    timeout = submission.timeout_seconds
    if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= MAX_RUN_TIMEOUT_S):
        raise ValidationError(
            f"timeout_seconds must be a positive number of seconds (at most {MAX_RUN_TIMEOUT_S})"
        )
    answer = await record_submission(head, submission, run_id, hashlib.sha256(body).hexdigest()[:32], work)
    seq = answer.seq
    if not follow:
        return Response(answer, status_code=201)

    async def frames() -> AsyncIterator[bytes]:
        accepted = frame("accepted", msgspec.json.encode(answer))
        if head.controller.feeds.position < seq:  # not folded yet: the caller is not kept waiting
            yield accepted
            accepted = b""
        async for chunk in run_frames(head, run_id, 0, wait_for=seq):
            if accepted:  # with the run's first events, in one write
                chunk = Last(accepted + chunk) if isinstance(chunk, Last) else accepted + chunk
                accepted = b""
            yield chunk

    assert client is not None
    return sse_response(counted(head.streams, client, frames()), status_code=201)


async def record_submission(
    head: HeadState,
    submission: SubmitRun,
    run_id: str,
    request_hash: str,
    work: Callable[..., Any] | None = None,
) -> Submitted:
    """Validate an accepted-shape submission once and record it as a run (POST /runs, and the
    workflow builder's runs, maze/api/builder.py): its blobs, then its events. `request_hash`: the
    request's, for the run's message ids (the same request retried gets the same run back).
    `work`: how to run CPU-heavy steps (off the event loop for a big body)."""

    async def inline(fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    work = work or inline
    timeout = submission.timeout_seconds
    if not await head.controller_ready():
        raise Unavailable("the run controller is still replaying history; try again shortly")
    accepted = await work(accept_submission, submission, head.settings.limits)
    check_placeable(accepted.specs, head.controller.placer.never_fits)
    await store_blobs(head.blobs, accepted.to_store, accepted.must_exist)
    if submission.workspace:
        await check_workspace(head.blobs, submission.workspace)
    specs = accepted.specs
    sizes = await work(spec_sizes, specs)
    await fit_specs(specs, sizes, head.budget, head.blobs)
    workflow_id = submission.workflow_id or run_id
    events = await work(chunk_events, run_id, workflow_id, specs, now_ms(), head.budget, sizes)
    if timeout is not None:
        events[0] = msgspec.structs.replace(events[0], timeout_seconds=timeout)
    if submission.workspace:
        events[0] = msgspec.structs.replace(events[0], workspace=submission.workspace)
    if submission.kind != "static":
        events[0] = msgspec.structs.replace(events[0], kind=submission.kind)
    encoded = await work(encode_chunks, events)
    async with head.controller.submit_turn(run_id):
        seq, duplicate = await _record_placed(
            head, events, encoded, salted(request_hash, head), submission.kind == "static", work
        )
    return Submitted(
        duplicate=duplicate,
        run_id=run_id,
        workflow_id=workflow_id,
        seq=seq,
        tasks=len(specs),
        events=len(events),
    )


async def _record_placed(
    head: HeadState,
    events: list[Any],
    encoded: list[bytes],
    body_hash: str,
    static: bool,
    work: Callable[..., Any],
) -> tuple[int, bool]:
    """Record the run's events, its first tasks' placements in the message of its `run.created`
    when the controller can make them now, and what the attempts this head's own worker started
    with it reported meanwhile (maze/api/early.py). Returns (sequence, duplicate)."""
    created = events[0]
    assert isinstance(created, RunCreated)
    run_id = created.run_id
    placing = head.controller.place_new_run(created) if len(events) == 1 else None
    early: Early | None = None
    publishing = False
    try:
        tags = (
            await work(with_placements, events, encoded, placing[0].events, head.budget) if placing else None
        )
        if placing and tags is None:  # no room in the message: the controller places it as usual
            head.controller.submit_abandoned(placing[0])
            placing = None
        hops.mark("validated", run_id)
        if placing is not None:
            early = Early.start(head.controller, placing[0], static)
            if early is not None:
                tags = await early.gather(created, placing[0].events, encoded, head.budget) or tags
        publishing = True
        seq, duplicate = await record_run(head.js, events, body_hash, encoded, first_tags=tags)
    except BaseException:
        if early is not None:
            early.settle(False)
        if placing and publishing:  # it may be stored: settled once the log is folded past it
            head.controller.submit_failed(placing[0])
        elif placing:  # (a request that ended before its publish)
            head.controller.submit_abandoned(placing[0])
        raise
    hops.mark("appended", run_id)
    opened = early.settle(not duplicate) if early is not None else False
    if placing:
        handed = early.handed if early is not None and opened else None
        await head.controller.submitted(*placing, stored=not duplicate, handed=handed)
    return seq, duplicate


# `GET /runs` checks its filters itself (RunQuery.parse: messages that name the value and the
# choices), so their schemas are `schema_extra`, which Litestar only shows: run_search.py's
# patterns, which are what the parser accepts.
# `created_after` / `created_before`: a time, as milliseconds since the epoch (a query string
# carries the number as text) or as ISO 8601; empty: no bound
_A_TIME = {
    "type": None,
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": MAX_TIME_MS},
        {"type": "string", "pattern": ISO_PATTERN},
        {"const": ""},
    ],
}
_TIME_FORMS = (
    "milliseconds since the epoch, or an ISO 8601 date or date-time (UTC unless it names its offset)"
)
CreatedAfter = Annotated[
    str, Parameter(schema_extra=_A_TIME, description=f"Only runs created at or after this: {_TIME_FORMS}.")
]
CreatedBefore = Annotated[
    str,
    Parameter(
        schema_extra=_A_TIME,
        description=f"Only runs created before this (and after `created_after`): {_TIME_FORMS}.",
    ),
]


@get(
    "/runs",
    responses=answers(400, 409, 503, ok=list[ListedRun]),
    operation_class=documented(
        headers=(
            200,
            {
                "x-next-cursor": "While there are more runs: the cursor of the next page (pass it as "
                "`cursor`).",
                "link": 'The next page, `<url>; rel="next"`, while there are more runs.',
            },
        )
    ),
)
async def list_runs(
    request: Request[Any, Any, Any],
    head: HeadState,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT, description="At most this many runs.")] = 50,
    offset: Offset = 0,
    run_state: Annotated[
        str,
        Parameter(
            query="state",
            schema_extra={"pattern": STATE_PATTERN},
            description=f"Only runs in this state, or in one of these (comma separated, "
            f"{MAX_LIST_ITEMS} at most): {', '.join(RUN_STATES)}.",
        ),
    ] = "",
    kind: Annotated[
        str,
        Parameter(
            schema_extra={"pattern": KIND_PATTERN},
            description=f"Only runs of this kind, or of one of these (comma separated, {MAX_LIST_ITEMS} "
            "at most): letters, digits, `_`, `.` or `-`.",
        ),
    ] = "",
    created_after: CreatedAfter = "",
    created_before: CreatedBefore = "",
    search: Annotated[
        str,
        Parameter(
            schema_extra={"maxLength": MAX_SEARCH_CHARS},
            description="Text found, case-insensitively, in the run's workflow id or the name of one "
            "of its tasks or their functions.",
        ),
    ] = "",
    sort: Annotated[
        str,
        Parameter(
            schema_extra={"enum": [*SORTS, ""]},
            description="`created` (the default, also when empty) or `finished`.",
        ),
    ] = "",
    order: Annotated[
        str,
        Parameter(
            schema_extra={"enum": [*ORDERS, ""]},
            description="`desc` (the default, also when empty) or `asc`.",
        ),
    ] = "",
    cursor: Annotated[
        str,
        Parameter(
            schema_extra={"pattern": "^[A-Za-z0-9_-]*$"},
            description="The `X-Next-Cursor` of the page before, with the same filters, sort and "
            "order (not with `offset`).",
        ),
    ] = "",
    min_seq: MinSeq = None,
) -> Response[list[dict[str, Any]]]:
    """Run history, newest first: a page of at most `limit` (1..1000) runs.

    Filters (all optional, combined with AND): `state` and `kind` (one value or several, comma
    separated), `created_after` (inclusive) and `created_before` (exclusive, after
    `created_after`) as milliseconds since the epoch or ISO 8601 (UTC unless an offset is given),
    `search`: text found, case-insensitively, in the run's workflow id or in the name of one of its
    tasks or their functions. `sort`: `created` (default) or `finished` (runs not finished come
    first newest-first); `order`: `desc` (default) or `asc`. While there are more runs, the
    `X-Next-Cursor` header holds an opaque cursor and `Link: <…>; rel="next"` the next page's URL:
    pass it as `cursor` with the same filters, sort and order (`offset` is the older way to page
    and costs more the deeper it goes)."""
    query = RunQuery.parse(
        limit, offset, run_state, kind, created_after, created_before, search, sort, order, cursor
    )
    page = await head.read("search_runs", msgspec.structs.asdict(query), min_seq=min_seq)
    headers = {}
    if page["next_cursor"]:
        headers["x-next-cursor"] = page["next_cursor"]
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "offset")]
        nxt = request.url.with_replacements(query=urlencode([*params, ("cursor", page["next_cursor"])]))
        headers["link"] = f'<{nxt}>; rel="next"'
    return Response(page["runs"], headers=headers)


@get("/runs/{run_id:str}", responses=answers(400, 404, 409, 503, ok=RunView))
async def get_run(run_id: RunId, head: HeadState, min_seq: MinSeq = None) -> dict[str, Any]:
    """A run's snapshot: state, timing, counters, `progress` (tasks per state) and, once it has
    finished, `result_summary`: its final tasks' outputs, briefly (maze/projections/run_summary.py)."""
    run: dict[str, Any] = await head.read("get_run", run_id, min_seq=min_seq)
    return run


@get(
    "/runs/{run_id:str}/tasks",
    responses=answers(400, 404, 409, 503, ok=list[TaskView]),
    operation_class=documented(
        headers=(
            200,
            {
                "x-total-count": "How many tasks the run has.",
                "link": 'The next page, `<url>; rel="next"`, while there may be one.',
            },
        )
    ),
)
async def get_run_tasks(
    request: Request[Any, Any, Any],
    run_id: RunId,
    head: HeadState,
    limit: Annotated[int, Parameter(ge=1, le=MAX_TASKS_PAGE, description="At most this many tasks.")] = 1000,
    offset: Annotated[int, Parameter(ge=0, le=SEQ_MAX, description="From this task index.")] = 0,
    min_seq: MinSeq = None,
) -> Response[list[dict[str, Any]]]:
    """A page of the run's tasks in submission order: `limit` (at most 10,000) from task index
    `offset`. `X-Total-Count` says how many tasks the run has, and a `Link: <…>; rel="next"` header
    gives the next page while there is one."""
    tasks, total = await head.read("get_tasks", run_id, limit, offset, min_seq=min_seq)
    for task in tasks:
        task["pending_reason"] = head.controller.pending_reason(run_id, task["task_id"])
    headers = {"x-total-count": str(total)}
    if len(tasks) == limit:  # a full page: there may be more (a run missing chunks has gaps)
        nxt = request.url.with_replacements(query=f"limit={limit}&offset={tasks[-1]['task_index'] + 1}")
        headers["link"] = f'<{nxt}>; rel="next"'
    return Response(tasks, headers=headers)


@get("/runs/{run_id:str}/tasks/{task_id:str}", responses=answers(400, 404, 409, 503, ok=TaskDetail))
async def get_run_task(
    run_id: RunId, task_id: TaskId, head: HeadState, min_seq: MinSeq = None
) -> dict[str, Any]:
    """A task with its attempts."""
    task: dict[str, Any] = await head.read("get_task", run_id, task_id, min_seq=min_seq)
    task["pending_reason"] = head.controller.pending_reason(run_id, task_id)
    return task


@get("/runs/{run_id:str}/events", responses=answers(400, 404, 503))
async def get_run_events(run_id: RunId, head: HeadState, after: After = 0) -> EventsPage:
    """The run's events from the log, after stream sequence `after`: a page of about 10,000 events
    (whole messages). `more` says whether the log held more when it was read: ask again with
    `after` = `last_seq`."""
    await require_run(head, run_id)
    until = await last_run_seq(head.js, run_id, reports=True)
    events: list[dict[str, Any]] = []
    last = after
    placed = await placements_before(head.read, run_id, after)
    async for seq, batch, _ in run_events(head.js, run_id, after, until=until, placed=placed):
        events.extend(batch)
        last = seq
        if len(events) >= MAX_EVENTS_PAGE:
            break
    return EventsPage(run_id=run_id, events=events, last_seq=last, more=last < until)


@get(
    "/runs/{run_id:str}/stream",
    media_type="text/event-stream",
    responses=answers(400, 404, 429, 503),
    operation_class=documented(content=(200, {"text/event-stream": sse_event_schema()})),
)
async def stream_run_events(
    request: Request[Any, Any, Any],
    run_id: RunId,
    head: HeadState,
    after: After = 0,
    min_seq: MinSeq = None,
    last_event_id: LastEventId = None,
) -> Stream:
    """Live SSE: one message per stored event batch, `id` = stream sequence, until the run ends.
    Reconnect with `Last-Event-ID` (or `after`) to resume without gaps. `min_seq` (the `seq` your
    submit returned) lets the head serve a run it is following from memory at once."""
    if last_event_id is not None:
        after = last_event_id
    if min_seq:
        await head.controller.feeds.reach(min_seq, FEED_WAIT_S)
    if not head.controller.feeds.knows(run_id):
        await require_run(head, run_id)
    client = request.client.host if request.client else "?"
    head.streams.take(client)
    return sse_response(counted(head.streams, client, run_frames(head, run_id, after)))
