"""What a run's tasks printed, from the head: a page or a tail (`GET /runs/{id}/logs`), or live
(`GET /runs/{id}/logs/stream`, SSE, resumed after a dropped connection with Last-Event-ID)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgspec

from maze.core.errors import TooManyRequests, Unavailable
from maze.sdk.http import Http, raise_for_error
from maze.sdk.sse_client import TRANSPORT_ERRORS


def get_logs(http: Http, run_id: str, tail: int | None, task_id: str | None) -> list[dict[str, Any]]:
    """The last `tail` lines, or (`tail=None`) every line, fetched a page at a time."""
    if tail is not None:
        answer: dict[str, Any] = http.get(f"/runs/{run_id}/logs", tail=tail, task_id=task_id)
        lines: list[dict[str, Any]] = answer["lines"]
        return lines
    out: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        answer = http.get(f"/runs/{run_id}/logs", task_id=task_id, after=after)
        out += answer["lines"]
        if not answer["more"] or not answer["lines"]:
            return out
        after = int(answer["last_cursor"])


class _CutShort(Exception):
    """The stream closed without its `end`: resumed like a drop."""


_RESUMED: tuple[type[Exception], ...] = (*TRANSPORT_ERRORS, Unavailable, TooManyRequests, _CutShort)


def follow_logs(
    http: Http, run_id: str, task_id: str | None = None, after: int | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the run's lines as they are stored (after cursor `after`), until the run has ended
    and its lines are all given."""
    failures = 0
    last = after
    params: dict[str, str | int] = {"task_id": task_id} if task_id else {}
    while True:
        headers = {"Last-Event-ID": str(last)} if last is not None else {}
        try:
            stream = http.streams.open("GET", f"/runs/{run_id}/logs/stream", params=params, headers=headers)
            try:
                if stream.status >= 400:
                    raise_for_error(stream.status, stream.read_body())
                for frame in stream:
                    if frame.event == "end":
                        stream.finish()
                        return
                    lines: list[dict[str, Any]] = msgspec.json.decode(frame.data)
                    if frame.id:
                        last = int(frame.id)
                    failures = 0
                    yield from lines
                raise _CutShort("the log stream closed before the run ended")
            finally:
                stream.close()
        except _RESUMED as exc:
            failures += 1
            if failures > 20:
                raise Unavailable(f"lost the log stream of run {run_id}: {exc}") from exc
            time.sleep(min(0.05 * 2**failures, 2.0))
