"""Following a run's live event stream (SSE) from the head."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
from httpx_sse import connect_sse

from maze.core.errors import Unavailable
from maze.sdk.http import Http, raise_for_error


def follow_events(http: Http, run_id: str) -> Iterator[dict[str, Any]]:
    """Yield the run's events from the start until it ends, resuming with Last-Event-ID (the stream
    sequence) if the connection drops, so nothing is missed or repeated."""
    last_id: str | None = None
    failures = 0
    timeout = httpx.Timeout(10.0, read=None)
    while True:
        hdrs = {"Last-Event-ID": last_id} if last_id else {}
        try:
            # the SDK's own pool: a new client costs ~20 ms of TLS set-up
            with connect_sse(
                http.client, "GET", f"/runs/{run_id}/stream", headers=hdrs, timeout=timeout
            ) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    raise_for_error(source.response)
                for sse in source.iter_sse():
                    if sse.event == "end":
                        return
                    last_id = sse.id or last_id
                    if sse.id:
                        http.note_seen(int(sse.id))
                    yield from msgspec.json.decode(sse.data)
                return
        except (httpx.TransportError, Unavailable) as exc:  # dropped connection, or a 503 from the head
            failures += 1
            if failures > 20:
                raise Unavailable(f"lost the event stream of run {run_id}: {exc}") from exc
            time.sleep(min(0.05 * 2**failures, 2.0))
