"""Live streams the Playground follows besides a run's own (`GET /runs/{id}/stream`): which runs
changed (the Runs console's list) and the cluster's state (its Cluster view). Both are SSE with a
bounded life (`hold_s`, then `event: end`): the client reconnects, with `Last-Event-ID` for the
changes, so that nothing changed in between is missed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.params import Parameter
from litestar.response import Stream

from maze.api.cluster import resources_view
from maze.api.openapi import LastEventId, answers, documented, sse_changes_schema, sse_cluster_schema
from maze.api.sse import END, counted, frame, sse_response
from maze.api.state import HeadState
from maze.head import views
from maze.head.run_changes import ChangeWatcher

COALESCE_S = 0.25  # changes within this much of each other leave as one event
KEEPALIVE_S = 15.0  # a comment line this often: a client gone is noticed, proxies keep the stream
CLUSTER_EVERY_S = 1.0
_json = msgspec.json.Encoder()

HoldS = Annotated[
    int,
    Parameter(ge=1, le=300, description="How many seconds the stream stays open (then `end`)."),
]


@get(
    "/runs/changes",
    media_type="text/event-stream",
    responses=answers(400, 429),
    operation_class=documented(content=(200, {"text/event-stream": sse_changes_schema()})),
)
async def stream_run_changes(
    request: Request[Any, Any, Any],
    head: HeadState,
    hold_s: HoldS = 60,
    last_event_id: LastEventId = None,
) -> Stream:
    """Live SSE of which runs changed (created, a task moved, ended): what the Runs console reads
    to refresh its page without polling. Events name run ids, not their rows: read them with
    `GET /runs` (pass the event's `seq` as `min_seq` to see the change)."""
    feeds = head.controller.feeds
    client = request.client.host if request.client else "?"
    head.streams.take(client)
    watcher = ChangeWatcher()
    feeds.watchers.add(watcher)

    def changes(runs: dict[str, int], overflow: bool, seq: int) -> bytes:
        return frame("changes", _json.encode({"seq": seq, "runs": runs, "overflow": overflow}), seq)

    async def frames() -> AsyncIterator[bytes]:
        try:
            position = feeds.position
            missed = last_event_id is not None and position > last_event_id
            yield changes({}, missed, position)
            deadline = time.monotonic() + hold_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(watcher.changed.wait(), min(left, KEEPALIVE_S))
                except TimeoutError:
                    if deadline - time.monotonic() > 0:
                        yield b": keepalive\n\n"
                    continue
                await asyncio.sleep(COALESCE_S)
                yield changes(*watcher.take())
            yield END
        finally:
            feeds.watchers.discard(watcher)

    return sse_response(counted(head.streams, client, frames()))


@get(
    "/cluster/stream",
    media_type="text/event-stream",
    responses=answers(400, 429, 503),
    operation_class=documented(content=(200, {"text/event-stream": sse_cluster_schema()})),
)
async def stream_cluster(request: Request[Any, Any, Any], head: HeadState, hold_s: HoldS = 60) -> Stream:
    """Live SSE of the cluster: nodes and their resources, queues, pending reasons and retry
    waits (`GET /cluster/resources` and `GET /cluster/queues` in one event), at once and then
    whenever they changed, checked every second."""
    client = request.client.host if request.client else "?"
    first = await _snapshot(head)  # a read-model failure is a 503 before the stream opens
    head.streams.take(client)

    async def frames() -> AsyncIterator[bytes]:
        sent = b""
        deadline = time.monotonic() + hold_s
        snapshot: bytes | None = first
        while True:
            if snapshot is not None and snapshot != sent:
                yield frame("cluster", snapshot)
                sent = snapshot
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(left, CLUSTER_EVERY_S))
            try:
                snapshot = await _snapshot(head)
            except Exception:  # the read models did not answer this time: the next check may
                snapshot = None
        yield END

    return sse_response(counted(head.streams, client, frames()))


async def _snapshot(head: HeadState) -> bytes:
    resources = await resources_view(head)
    return _json.encode({"resources": resources, "queues": views.queues(head.controller)})
