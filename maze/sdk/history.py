"""Run history from the SDK: searching it page by page, and waiting for a run to end.

`GET /runs` answers a list of runs (as it always has) and names the next page in its
`X-Next-Cursor` header; `RunPage` is that list with the cursor beside it, so `list_runs` keeps
returning a list to code written before filters and cursors existed."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from maze.core.errors import ValidationError
from maze.core.task_machine import TERMINAL
from maze.sdk.http import Http
from maze.sdk.stream import follow_events

When = datetime | int | str | None


class RunPage(list[dict[str, Any]]):
    """A page of runs (a list of run snapshots) and `next_cursor`: pass it as `cursor=` with the
    same filters for the next page; None when this page was the last."""

    next_cursor: str | None = None


def when_param(name: str, value: When) -> str | int | None:
    """A time as the API takes it: a datetime (naive means UTC), milliseconds since the epoch, or
    an ISO 8601 string (checked by the head)."""
    if value is None or isinstance(value, int | str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat() + "+00:00"
        return value.isoformat()
    raise ValidationError(f"{name} is a datetime, milliseconds since the epoch or an ISO 8601 string")


def listed(name: str, value: str | Iterable[str] | None) -> str | None:
    """One value or several as the API takes them: comma separated."""
    if value is None or isinstance(value, str):
        return value
    values = list(value)
    for v in values:
        if not isinstance(v, str) or "," in v:
            raise ValidationError(f"{name} values are strings without commas")
    return ",".join(values) or None


def run_params(
    limit: int = 20,
    state: str | Iterable[str] | None = None,
    offset: int = 0,
    kind: str | Iterable[str] | None = None,
    created_after: When = None,
    created_before: When = None,
    search: str | None = None,
    sort: str = "created",
    order: str = "desc",
    cursor: str | None = None,
) -> dict[str, Any]:
    """`GET /runs`'s query parameters from `MaClient.list_runs`'s arguments."""
    return {
        "limit": limit,
        "state": listed("state", state),
        "offset": offset or None,
        "kind": listed("kind", kind),
        "created_after": when_param("created_after", created_after),
        "created_before": when_param("created_before", created_before),
        "search": search,
        "sort": sort,
        "order": order,
        "cursor": cursor,
    }


def list_runs(http: Http, params: dict[str, Any]) -> RunPage:
    resp = http.get_response("/runs", **params)
    page = RunPage(resp.json())
    page.next_cursor = resp.headers.get("x-next-cursor")
    return page


def iter_runs(http: Http, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    while True:
        page = list_runs(http, params)
        yield from page
        if not page.next_cursor:
            return
        params = {**params, "cursor": page.next_cursor, "offset": None}


def wait_run(http: Http, run_id: str, timeout: float | None) -> dict[str, Any]:
    """Follow the run's live stream until it ends (no polling), then read its final snapshot."""
    deadline = None if timeout is None else time.monotonic() + timeout
    run: dict[str, Any] = http.get(f"/runs/{run_id}")
    if run["state"] in TERMINAL:
        return run
    for _ in follow_events(http, run_id, deadline=deadline):
        pass
    # the stream's last id is noted as seen: this read waits for the read models to include it
    final: dict[str, Any] = http.get(f"/runs/{run_id}")
    return final
