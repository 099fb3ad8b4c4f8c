"""Following a run's live event stream (SSE) from the head.

`workflow.run()` submits with `POST /runs?follow=true`: the head answers with the run's stream,
opened by an `accepted` event (the run id and its `seq`). `run()` reads only that event and keeps
the stream (`OpenedRun`) for `get_results()`, so a submit and its results are one request and no
second lookup. A stream nobody reads is closed after a few newer ones (`Http.opened`), and
`follow_events` then opens `GET /runs/{id}/stream` instead, as it does after a dropped connection
(resuming with Last-Event-ID, so nothing is missed or repeated)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
from httpx_sse import EventSource, ServerSentEvent, connect_sse

from maze.core.errors import MazeError, Unavailable
from maze.sdk.http import Http, raise_for_error

_STREAM_TIMEOUT = httpx.Timeout(30.0, read=None)


class OpenedRun:
    """A submit's answer and the run's stream that follows it on the same response."""

    def __init__(self, response: httpx.Response, events: Iterator[ServerSentEvent], accepted: dict[str, Any]):
        self.response = response
        self.events = events
        self.accepted = accepted

    def close(self) -> None:
        self.response.close()


def submit_and_follow(http: Http, body: bytes) -> OpenedRun:
    """POST /runs?follow=true: raises the head's structured error, or returns the accepted run
    with its stream open. Raises Unavailable when the head cannot be reached or answers 503."""
    request = http.client.build_request(
        "POST",
        "/runs",
        params={"follow": "true"},
        content=body,
        headers={"content-type": "application/msgpack"},
        timeout=_STREAM_TIMEOUT,
    )
    try:
        response = http.client.send(request, stream=True)
    except httpx.TransportError as exc:
        raise Unavailable(f"cannot reach the Maze server at {http.server_url}: {exc}") from exc
    try:
        if response.status_code >= 400:
            response.read()
            raise_for_error(response)
        events = EventSource(response).iter_sse()
        first = next(events, None)
        if first is None or first.event != "accepted":
            raise MazeError(f"the head answered the submit without accepting it: {first!r}")
        accepted: dict[str, Any] = msgspec.json.decode(first.data)
    except httpx.TransportError as exc:
        response.close()
        raise Unavailable(f"lost the connection to {http.server_url} during the submit: {exc}") from exc
    except BaseException:
        response.close()
        raise
    http.note_seen(int(accepted["seq"]))
    return OpenedRun(response, events, accepted)


def follow_events(http: Http, run_id: str) -> Iterator[dict[str, Any]]:
    """Yield the run's events from the start until it ends: from the stream its submit opened if
    this process holds it, else (and after a dropped connection) from `GET /runs/{id}/stream`,
    resuming with Last-Event-ID (the stream sequence), so nothing is missed or repeated."""
    last_id: str | None = None
    failures = 0
    opened = http.opened.take(run_id)
    if isinstance(opened, OpenedRun):
        try:
            for sse in opened.events:
                if sse.event == "end":
                    _finish(opened.events)
                    return
                last_id = _note(http, sse, last_id)
                yield from msgspec.json.decode(sse.data)
        except httpx.TransportError:
            failures += 1  # go on from where it broke off (a stream closed early does too)
        finally:
            opened.close()
    while True:
        hdrs = {"Last-Event-ID": last_id} if last_id else {}
        # what this process wrote or saw: the head can serve a run it follows from memory at once
        params = {"min_seq": http.session.seen_seq} if http.session.seen_seq else {}
        try:
            # the SDK's own pool: a new client costs ~20 ms of TLS set-up
            with connect_sse(
                http.client,
                "GET",
                f"/runs/{run_id}/stream",
                headers=hdrs,
                params=params,
                timeout=_STREAM_TIMEOUT,
            ) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    raise_for_error(source.response)
                events = source.iter_sse()
                for sse in events:
                    if sse.event == "end":
                        _finish(events)
                        return
                    last_id = _note(http, sse, last_id)
                    yield from msgspec.json.decode(sse.data)
                raise _CutShort("the stream closed before the run ended")
        except (
            httpx.TransportError,
            Unavailable,
            _CutShort,
        ) as exc:  # dropped connection, or a 503 from the head
            failures += 1
            if failures > 20:
                raise Unavailable(f"lost the event stream of run {run_id}: {exc}") from exc
            time.sleep(min(0.05 * 2**failures, 2.0))
        raise AssertionError("unreachable")


def _finish(events: Iterator[ServerSentEvent]) -> None:
    """Read the response to its end (the server closes the body right after `end`), so that its
    connection goes back to the pool: closing it unread would cost a new connection per run."""
    try:
        for _ in events:
            pass
    except httpx.HTTPError:
        pass  # the events are all in; the connection is dropped instead of reused


class _CutShort(Exception):
    """A stream that closed without its `end` (a head stopping, say): resumed like a drop."""


def _note(http: Http, sse: ServerSentEvent, last_id: str | None) -> str | None:
    if sse.id:
        http.note_seen(int(sse.id))
        return sse.id
    return last_id
