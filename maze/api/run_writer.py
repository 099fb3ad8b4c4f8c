"""Recording an accepted run: its blobs first, then `run.created` and as many `tasks.added` chunks
as the run needs, each within the event store's message limit.

A run is one client request however many events it takes. `run.created` is written with
`Nats-Expected-Last-Subject-Sequence: 0` and a message id that carries the body's hash, so the
same request retried gets the same run back (missing chunks are written then, e.g. after a head
crash mid-submit) and another body under the same run id gets a 409. The controller starts a run
only when its last chunk is in.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from maze.core.clock import now_ms
from maze.core.errors import BlobMissing, Conflict, NotFound, PayloadTooLarge, Unavailable
from maze.events import headers, subjects, values
from maze.events.agents import AgentSpec
from maze.events.artifacts import decode_manifest
from maze.events.blobs import BlobStore
from maze.events.catalog import Event, event_key, event_tag
from maze.events.runs import RunCreated, TasksAdded
from maze.events.specs import InputValue, TaskSpec
from maze.events.store import pack_by_bytes, publish_durably

log = structlog.get_logger(__name__)
_encoder = msgspec.msgpack.Encoder()
ENVELOPE_BYTES = 2048  # run.created / tasks.added fields around the task list
SPEC_MARGIN = 64
WRONG_LAST_SEQUENCE = 10071


async def store_blobs(blobs: BlobStore, to_store: dict[str, bytes], must_exist: set[str]) -> None:
    """Put what the submission carried; refuse (400 blob_missing) what it only referenced and the
    store does not have. Nothing of the run is recorded before this succeeds."""
    missing = await blobs.missing(sorted(must_exist))
    if missing:
        raise BlobMissing(
            f"{len(missing)} referenced blob(s) are not in the blob store (upload them with "
            f"PUT /artifacts/sha256/<hex>): {', '.join(m[:12] + '…' for m in missing[:5])}",
            missing=missing,
        )
    if not to_store:
        return
    limit = asyncio.Semaphore(8)

    async def put(sha: str, content: bytes) -> None:
        async with limit:
            await blobs.put(content, sha)

    await asyncio.gather(*(put(sha, content) for sha, content in to_store.items()))


async def require_workspace(blobs: BlobStore, manifest_sha: str) -> None:
    """A run's workspace manifest given by sha256: stored (else 404) and sound (`check_workspace`)."""
    if await blobs.missing([manifest_sha]):
        raise NotFound(
            f"workspace manifest {manifest_sha} is not in the blob store (upload it first)",
            workspace=manifest_sha,
        )
    await check_workspace(blobs, manifest_sha)


async def check_workspace(blobs: BlobStore, manifest_sha: str) -> None:
    """A workspace manifest (stored already) that decodes, names only clean relative paths, and
    whose every file is stored: else a 400, nothing recorded."""
    entries = decode_manifest(await blobs.get(manifest_sha))
    missing = await blobs.missing(sorted({e.sha256 for e in entries}))
    if missing:
        raise BlobMissing(
            f"{len(missing)} workspace file(s) are not in the blob store (upload them with "
            f"PUT /artifacts/sha256/<hex>): {', '.join(m[:12] + '…' for m in missing[:5])}",
            missing=missing,
        )


def spec_sizes(specs: list[TaskSpec]) -> list[int]:
    """Each spec's encoded size (CPU work: done off the event loop for a wide run)."""
    return [len(_encoder.encode(s)) for s in specs]


def spec_limit(budget: int) -> int:
    return budget - ENVELOPE_BYTES - SPEC_MARGIN


async def fit_specs(specs: list[TaskSpec], sizes: list[int], budget: int, blobs: BlobStore) -> None:
    """Each spec within one message: a task whose inline inputs together are too large for one
    event gets its largest ones moved to the blob store (`specs` and `sizes` are updated)."""
    limit = spec_limit(budget)
    for i, spec in enumerate(specs):
        if sizes[i] <= limit:
            continue
        inline = {
            k: len(v.data)
            for k, v in spec.inputs.items()
            if isinstance(v, InputValue) and values.ext_code(v.data) not in values.REFERENCES
        }
        inputs = dict(spec.inputs)
        for key in values.keys_to_spill(inline, sizes[i] - limit):
            given = inputs[key]
            assert isinstance(given, InputValue)
            codec, content, kind = values.content_of(given.data)
            ref = values.blob_ref_for(codec, content, kind)
            await blobs.put(content, ref.sha256)
            inputs[key] = InputValue(data=values.wire_blob(ref))
        specs[i] = msgspec.structs.replace(spec, inputs=inputs)
        sizes[i] = len(_encoder.encode(specs[i]))
        if sizes[i] > limit:
            raise PayloadTooLarge(
                f"task {spec.task_id!r} is {sizes[i]} bytes encoded even with its values in the blob "
                f"store (too many inputs or edges), above the event limit of {limit} bytes",
                task_id=spec.task_id,
                size=sizes[i],
                limit=limit,
            )


RunEvents = list[RunCreated | TasksAdded]


def chunk_events(
    run_id: str,
    workflow_id: str,
    specs: list[TaskSpec],
    at_ms: int,
    budget: int,
    sizes: list[int] | None = None,
) -> RunEvents:
    """run.created with the first chunk of tasks, then tasks.added chunks, each within `budget`."""
    parts = pack_by_bytes(spec_sizes(specs) if sizes is None else sizes, budget - ENVELOPE_BYTES)
    first = RunCreated(
        run_id=run_id,
        workflow_id=workflow_id,
        at_ms=at_ms,
        tasks=[specs[i] for i in parts[0]],
        task_count=len(specs),
        chunks=len(parts),
    )
    rest: RunEvents = [
        TasksAdded(run_id=run_id, chunk=n, at_ms=at_ms, tasks=[specs[i] for i in part], offset=part.start)
        for n, part in enumerate(parts[1:], start=1)
    ]
    return [first, *rest]


def encode_chunks(events: RunEvents) -> list[bytes]:
    """Each event as its own message."""
    return [_encoder.encode([e]) for e in events]


def _headers(event: Event, body_hash: str, first: bool, tags: str | None = None) -> dict[str, str]:
    hdrs = {
        headers.MSG_ID: f"{event_key(event)}/{body_hash}",
        headers.EVENT_TYPES: tags or event_tag(event),
        headers.SCHEMA_VERSION: headers.SCHEMA,
    }
    if first:
        hdrs[headers.EXPECTED_LAST_SUBJECT_SEQ] = "0"
    return hdrs


def with_placements(events: RunEvents, encoded: list[bytes], placed: list[Event], budget: int) -> str | None:
    """Put the placements decided at submit in the message of `run.created` (`encoded[0]` is
    replaced), if it still fits `budget`; returns that message's event types, or None (no room)."""
    data = _encoder.encode([events[0], *placed])
    if len(data) > budget:
        return None
    encoded[0] = data
    return ",".join(sorted({event_tag(e) for e in [events[0], *placed]}))


def open_run_created(
    run_id: str,
    workflow_id: str,
    kind: str,
    timeout_seconds: float | None,
    workspace: str,
    max_tasks: int,
    agent: AgentSpec | None = None,
) -> RunCreated:
    """The `run.created` of a run that starts with no task and grows by appends (a dynamic run, a
    ReAct run): one message, recorded with `record_run`."""
    return RunCreated(
        run_id=run_id,
        workflow_id=workflow_id,
        at_ms=now_ms(),
        tasks=[],
        kind=kind,
        task_count=0,
        chunks=1,
        timeout_seconds=timeout_seconds,
        workspace=workspace,
        max_tasks=max_tasks,
        agent=agent,
    )


async def record_run(
    js: JetStreamContext,
    events: RunEvents,
    body_hash: str,
    encoded: list[bytes] | None = None,
    first_tags: str | None = None,
) -> tuple[int, bool]:
    """Write the run's events (`encoded`: their messages, if already made; `first_tags`: the event
    types of the first when it carries more than `run.created`); returns (stream sequence of its
    last chunk, duplicate)."""
    first = events[0]
    assert isinstance(first, RunCreated)
    subject = subjects.run_subject(first.run_id)
    encoded = encode_chunks(events) if encoded is None else encoded
    try:
        ack = await publish_durably(js, subject, encoded[0], _headers(first, body_hash, True, first_tags))
    except APIError as exc:
        if exc.err_code != WRONG_LAST_SEQUENCE:
            raise Unavailable(f"event store rejected the run: {exc}") from exc
        return await _resume(js, events, encoded, body_hash), True
    last = int(ack.seq)
    if len(events) > 1:
        acks = await asyncio.gather(
            *(
                publish_durably(js, subject, data, _headers(e, body_hash, first=False))
                for e, data in zip(events[1:], encoded[1:], strict=True)
            )
        )
        last = max(int(a.seq) for a in acks)
    return last, bool(ack.duplicate)


async def _resume(js: JetStreamContext, events: RunEvents, encoded: list[bytes], body_hash: str) -> int:
    """The run id is taken. The same request again (same body hash) gets its run, with any chunk
    a crash left out written now; another request under that id is a conflict."""
    first = events[0]
    subject = subjects.run_subject(first.run_id)
    ids = [_headers(e, body_hash, first=False)[headers.MSG_ID] for e in events]
    wanted = set(ids)
    present: dict[str, int] = {}  # message id -> sequence
    finished = False
    seq = 1
    while not wanted.issubset(present):
        try:
            msg = await js.get_msg(subjects.RUNS_STREAM, seq=seq, subject=subject, next=True)
        except NotFoundError:
            break
        hdrs: dict[str, Any] = msg.headers or {}
        present[str(hdrs.get(headers.MSG_ID, ""))] = int(msg.seq or 0)
        finished = finished or "run.finished" in str(hdrs.get(headers.EVENT_TYPES, ""))
        seq = int(msg.seq or 0) + 1
    if ids[0] not in present:
        raise Conflict(f"run {first.run_id!r} already exists", run_id=first.run_id)
    todo = [i for i, msg_id in enumerate(ids) if msg_id not in present]
    if todo and finished:
        raise Conflict(
            f"run {first.run_id!r} ended before all of its tasks were recorded; submit it again "
            "under a new run id",
            run_id=first.run_id,
        )
    last = max(present[i] for i in ids if i in present)
    if todo:
        log.warning("submit.resuming_chunks", run_id=first.run_id, missing=len(todo), chunks=len(events))
        acks = await asyncio.gather(
            *(publish_durably(js, subject, encoded[i], _headers(events[i], body_hash, False)) for i in todo)
        )
        last = max([last, *(int(a.seq) for a in acks)])
    return last
