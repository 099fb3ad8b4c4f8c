"""A run's live event stream as server-sent events, from the head's memory or from the log.

Frames are written here rather than through Litestar's `ServerSentEvent`, which hands each stream's
first step to a thread and writes one frame per `send`: on a one-task run that was a fifth of the
head's time. Every batch of messages that is there at once leaves as one write, and a run's end
travels in the same write as its last events.

Frame: `id: <stream seq>` / `event: events` / `data: <JSON list of events>`; the stream closes with
`event: end`. A client reconnects with `Last-Event-ID` (the last `id` it read) and misses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import HTTPResponseBodyEvent, Send

from maze.api.event_reader import ended_by, placements_before, run_events
from maze.api.limits import StreamSlots
from maze.api.state import HeadState
from maze.core import hops
from maze.head.feeds import Entry, FeedDropped

FEED_WAIT_S = 1.0  # how long a stream waits for the controller to reach a sequence its caller knows
SLOW_CLIENT_S = 60.0  # a stream whose client has not taken a write for this long is closed
_json = msgspec.json.Encoder()
log = structlog.get_logger(__name__)


def frame(event: str, data: str | bytes, event_id: int | None = None) -> bytes:
    """One SSE frame. `data` is single-line JSON (msgspec never writes a newline in it)."""
    text = data.decode() if isinstance(data, bytes) else data
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {text}\n\n".encode()


class Last(bytes):
    """A stream's last chunk: it leaves with the end of the body, in one write."""


END = Last(frame("end", "{}"))


class _LastAwareStreaming(ASGIStreamingResponse):
    __slots__ = ()

    async def _stream(self, send: Send) -> None:
        try:
            async for chunk in self.iterator:
                last = isinstance(chunk, Last)
                body = chunk if isinstance(chunk, bytes) else chunk.encode(self.encoding)
                message: HTTPResponseBodyEvent = {
                    "type": "http.response.body",
                    "body": bytes(body),
                    "more_body": not last,
                }
                try:
                    # a client that stops reading holds its stream, not the head: it is let go
                    await asyncio.wait_for(send(message), SLOW_CLIENT_S)
                except TimeoutError:
                    log.warning("sse.slow_client_dropped", after_s=SLOW_CLIENT_S)
                    return
                if last:
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(self.iterator, "aclose", None)
            if aclose is not None:  # its feed listener and its slot go now, not when collected
                await aclose()


async def counted(slots: StreamSlots, client: str, frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`frames`, holding one of `slots` (taken already) until the stream ends however it ends."""
    try:
        async for chunk in frames:
            yield chunk
    finally:
        slots.give_back(client)
        aclose = getattr(frames, "aclose", None)
        if aclose is not None:
            await aclose()


class SSEStream(Stream):
    """Litestar's Stream, but a `Last` chunk ends the body in the same write (the server's
    chunked-encoding terminator otherwise costs a write of its own, and the client a read)."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        response = super().to_asgi_response(*args, **kwargs)
        response.__class__ = _LastAwareStreaming
        return response


def sse_response(frames: AsyncIterator[bytes], status_code: int = 200) -> Stream:
    return SSEStream(
        frames,
        status_code=status_code,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def _frames(batch: list[Entry]) -> bytes:
    return b"".join(frame("events", entry.data(), entry.seq) for entry in batch)


async def run_frames(head: HeadState, run_id: str, after: int, wait_for: int = 0) -> AsyncIterator[bytes]:
    """The run's events after stream sequence `after` until it ends, then `end`. With `wait_for`
    (a sequence the caller knows is stored), the head's memory is used once the controller has
    folded that far (bounded); a run the head has no complete memory of is read from the log."""
    feeds = head.controller.feeds
    if wait_for:
        await feeds.reach(wait_for, FEED_WAIT_S)
    live = feeds.follow(run_id, after)
    sent = after
    if live is not None:
        try:
            async for batch in live:
                sent = batch[-1].seq
                if batch[-1].finished:
                    hops.mark("sse_sent", run_id)
                    yield Last(_frames(batch) + END)
                    return
                yield _frames(batch)
            yield END  # the run had ended at or before `after`
            return
        except FeedDropped:
            pass  # the feed outgrew its bounds: the rest comes from the log
    if sent and await ended_by(head.js, run_id, sent):
        yield END
        return
    placed = await placements_before(head.read, run_id, sent)
    async for seq, events, finished in run_events(head.js, run_id, sent, until=None, placed=placed):
        chunk = frame("events", _json.encode(events), seq)
        if finished:
            hops.mark("sse_sent", run_id)
            yield Last(chunk + END)
            return
        yield chunk
