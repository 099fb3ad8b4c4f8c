"""Following a run's live event stream (SSE) from the head.

`workflow.run()` submits with `POST /runs?follow=true`: the head answers with the run's stream,
opened by an `accepted` event (the run id and its `seq`). `run()` reads only that event and keeps
the stream (`OpenedRun`) for `get_results()`, so a submit and its results are one request and no
second lookup. A stream nobody reads is closed after a few newer ones (`Http.opened`), and
`follow_events` then opens `GET /runs/{id}/stream` instead, as it does after a dropped connection
(resuming with Last-Event-ID, so nothing is missed or repeated). Both requests go over the SDK's
own keep-alive connections (maze/sdk/sse_client.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgspec

from maze.core.errors import MazeError, TooManyRequests, Unavailable, Unreachable, WaitTimeout
from maze.core.identity import HEAD_HEADER
from maze.sdk.http import Http, not_a_maze_head, raise_for_error
from maze.sdk.sse_client import TRANSPORT_ERRORS, EventStream, Frame


class OpenedRun:
    """A submit's answer and the run's stream that follows it on the same response."""

    def __init__(self, stream: EventStream, frames: Iterator[Frame], accepted: dict[str, Any]):
        self.stream = stream
        self.frames = frames
        self.accepted = accepted

    def close(self) -> None:
        self.stream.close()


def submit_and_follow(http: Http, body: bytes) -> OpenedRun:
    """POST /runs?follow=true: raises the head's structured error, or returns the accepted run
    with its stream open. Raises Unavailable when the head cannot be reached or answers 503."""
    try:
        stream = http.streams.open(
            "POST",
            "/runs?follow=true",
            headers={"Content-Type": "application/msgpack"},
            body=body,
        )
    except TRANSPORT_ERRORS as exc:
        raise http.cannot_connect(exc) from exc
    http.session.reached = True
    maze_head = stream.response.getheader(HEAD_HEADER) is not None
    try:
        if stream.status >= 400:
            raise_for_error(stream.status, stream.read_body(), maze_head, f"POST {http.server_url}/runs")
        frames = iter(stream)
        first = next(frames, None)
        if first is None or first.event != "accepted":
            if not maze_head:
                raise not_a_maze_head(f"POST {http.server_url}/runs", stream.status, repr(first))
            raise MazeError(f"the head answered the submit without accepting it: {first!r}")
        accepted: dict[str, Any] = msgspec.json.decode(first.data)
    except TRANSPORT_ERRORS as exc:
        stream.close()
        raise Unavailable(f"lost the connection to {http.server_url} during the submit: {exc}") from exc
    except BaseException:
        stream.close()
        raise
    http.note_seen(int(accepted["seq"]))
    return OpenedRun(stream, frames, accepted)


class _CutShort(Exception):
    """A stream that closed without its `end` (a head stopping, say): resumed like a drop."""


# what a follow resumes after: a dropped connection, a stream cut short, or a 503 from the head
# (a 429: the head serves as many streams to this client as it allows; a turn comes when one ends)
_RESUMED: tuple[type[Exception], ...] = (*TRANSPORT_ERRORS, Unavailable, TooManyRequests, _CutShort)


def follow_events(http: Http, run_id: str, deadline: float | None = None) -> Iterator[dict[str, Any]]:
    """Yield the run's events from the start until it ends: from the stream its submit opened if
    this process holds it, else (and after a dropped connection) from `GET /runs/{id}/stream`,
    resuming with Last-Event-ID (the stream sequence), so nothing is missed or repeated.
    `deadline` (a `time.monotonic()` value): raise WaitTimeout if the run has not ended by then."""
    last_id: str | None = None
    failures = 0
    opened = http.opened.take(run_id)
    if isinstance(opened, OpenedRun):
        try:
            _bound(opened.stream, run_id, deadline)
            for frame in opened.frames:
                if frame.event == "end":
                    opened.stream.finish()
                    return
                last_id = _note(http, frame, last_id)
                yield from msgspec.json.decode(frame.data)
                _bound(opened.stream, run_id, deadline)
        except TRANSPORT_ERRORS:
            _bound(None, run_id, deadline)  # a read that timed out at the deadline
            failures += 1  # go on from where it broke off (a stream closed early does too)
        finally:
            opened.close()
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        # what this process wrote or saw: the head can serve a run it follows from memory at once
        params = {"min_seq": http.session.seen_seq} if http.session.seen_seq else {}
        try:
            try:
                stream = http.streams.open("GET", f"/runs/{run_id}/stream", params=params, headers=headers)
            except TRANSPORT_ERRORS as exc:
                raise http.cannot_connect(exc) from exc  # Unreachable (a wrong URL) is not resumed
            http.session.reached = True
            try:
                if stream.status >= 400:
                    maze_head = stream.response.getheader(HEAD_HEADER) is not None
                    where = f"GET {http.server_url}/runs/{run_id}/stream"
                    raise_for_error(stream.status, stream.read_body(), maze_head, where)
                _bound(stream, run_id, deadline)
                for frame in stream:
                    if frame.event == "end":
                        stream.finish()
                        return
                    last_id = _note(http, frame, last_id)
                    failures = 0  # it moves again: a long run may lose its connection many times
                    yield from msgspec.json.decode(frame.data)
                    _bound(stream, run_id, deadline)
                raise _CutShort("the stream closed before the run ended")
            finally:
                stream.close()
        except Unreachable:
            raise
        except _RESUMED as exc:
            _bound(None, run_id, deadline)
            failures += 1
            if failures > 20:
                raise Unavailable(f"lost the event stream of run {run_id}: {exc}") from exc
            pause = min(0.05 * 2**failures, 2.0)
            time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))


def _bound(stream: EventStream | None, run_id: str, deadline: float | None) -> None:
    """Raise WaitTimeout past the deadline; else let the stream's next read wait only until then
    (its socket's timeout, which ends a read with TimeoutError, and this is asked again)."""
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise WaitTimeout(f"run {run_id} has not ended within the wait; it goes on", run_id=run_id)
    sock = stream.connection.sock if stream is not None and stream.connection is not None else None
    if sock is not None:
        sock.settimeout(remaining)


def _note(http: Http, frame: Frame, last_id: str | None) -> str | None:
    if frame.id:
        http.note_seen(int(frame.id))
        return frame.id
    return last_id
