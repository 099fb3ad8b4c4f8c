"""Log routes: what a run's tasks printed (README "Logs"), read from the `MAZE_LOGS` stream.

A line: `{"cursor", "task_id", "attempt", "node_id", "stream", "at_ms", "line"}`; `stream` is
`stdout`, `stderr` or `maze` (Maze's own note: the cap's marker). `cursor` only grows: pass the
last one seen as `after` (or `Last-Event-ID`) to go on from there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.params import Parameter
from litestar.response import Stream

from maze.api import log_reader
from maze.api.openapi import (
    SEQ_MAX,
    TASK_ID_PATTERN,
    LastEventId,
    RunId,
    answers,
    documented,
    sse_log_event_schema,
)
from maze.api.runs import require_run
from maze.api.sse import END, counted, frame, sse_response
from maze.api.state import HeadState
from maze.api.views import LogLineView, LogsPage
from maze.events import subjects

MAX_LINES = 10_000  # per answer
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # of line text per answer (at least one line)
_json = msgspec.json.Encoder()

TaskId = Annotated[
    str | None,
    Parameter(pattern=TASK_ID_PATTERN, description="Only this task's lines."),
]
Tail = Annotated[
    int | None,
    Parameter(
        ge=0,
        le=MAX_LINES,
        schema_extra={"minimum": 0},  # Litestar drops a falsy `ge` from an optional's schema
        description=f"The last N lines (at most {MAX_LINES}), in order. Without it, the lines from the "
        "start (or after `after`), a page at a time.",
    ),
]
# a cursor is `stream seq * 1,000,000 + index`: below 2**53 for the first 9 billion log messages
After = Annotated[
    int | None,
    Parameter(
        ge=0,
        le=SEQ_MAX,
        schema_extra={"minimum": 0},
        description="Only lines after this cursor (the `cursor` of the last line you have).",
    ),
]
Limit = Annotated[int, Parameter(ge=1, le=MAX_LINES, description=f"Lines per page (at most {MAX_LINES}).")]


# the page's lines are answered as the reader decoded them (10,000 of them at most): LogsPage
# documents them
@get("/runs/{run_id:str}/logs", responses=answers(400, 404, 503, ok=LogsPage))
async def get_run_logs(
    run_id: RunId,
    head: HeadState,
    task_id: TaskId = None,
    tail: Tail = None,
    after: After = None,
    limit: Limit = MAX_LINES,
) -> dict[str, Any]:
    """What the run's tasks printed, line by line, with task, attempt, node, stream and time.
    With `tail`, the last lines; else a page from the start or from `after`: `more` says whether
    more followed, and `last_cursor` is the `after` of the next page."""
    subject = subjects.log_filter(run_id, task_id)
    start = -1 if after is None else after
    await require_run(head, run_id)
    if tail is not None:
        lines = await log_reader.read_tail(head.nc, subject, tail, start, MAX_ANSWER_BYTES)
        more = False
    else:
        lines, more = await log_reader.read_page(head.nc, subject, start, limit, MAX_ANSWER_BYTES)
    return {
        "run_id": run_id,
        "lines": lines,
        "last_cursor": lines[-1]["cursor"] if lines else max(start, 0),
        "more": more,
    }


@get(
    "/runs/{run_id:str}/logs/stream",
    media_type="text/event-stream",
    responses=answers(400, 404, 429, 503),
    operation_class=documented(content=(200, {"text/event-stream": sse_log_event_schema(LogLineView)})),
)
async def stream_run_logs(
    request: Request[Any, Any, Any],
    run_id: RunId,
    head: HeadState,
    task_id: TaskId = None,
    after: After = None,
    last_event_id: LastEventId = None,
) -> Stream:
    """Live SSE of the run's lines: `event: logs`, `data` a JSON list of lines, `id` the cursor of
    the last, until the run has ended and the lines stored before its end were sent (`event:
    end`). Reconnect with `Last-Event-ID` to go on without gaps or repeats."""
    if last_event_id is not None:
        after = last_event_id
    subject = subjects.log_filter(run_id, task_id)
    start = -1 if after is None else after
    await require_run(head, run_id)
    client = request.client.host if request.client else "?"
    head.streams.take(client)

    async def frames() -> AsyncIterator[bytes]:
        async for lines in log_reader.follow(head.nc, head.js, run_id, subject, start):
            yield frame("logs", _json.encode(lines), lines[-1]["cursor"])
        yield END

    return sse_response(counted(head.streams, client, frames()))
