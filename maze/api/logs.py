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
from maze.api.runs import require_run
from maze.api.sse import END, counted, frame, sse_response
from maze.api.state import HeadState
from maze.api.submit import ID_RE
from maze.core.errors import ValidationError
from maze.events import subjects

MAX_LINES = 10_000  # per answer
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # of line text per answer (at least one line)
_json = msgspec.json.Encoder()

TaskId = Annotated[str | None, Parameter(description="Only this task's lines.")]
Tail = Annotated[
    int | None,
    Parameter(
        description=f"The last N lines (at most {MAX_LINES}), in order. Without it, the lines from the "
        "start (or after `after`), a page at a time."
    ),
]
After = Annotated[
    int | None,
    Parameter(description="Only lines after this cursor (the `cursor` of the last line you have)."),
]


def _filter(run_id: str, task_id: str | None) -> str:
    if task_id is not None and not ID_RE.match(task_id):
        raise ValidationError("task_id is letters, digits, '_' or '-' (128 at most)", task_id=task_id)
    return subjects.log_filter(run_id, task_id)


def _after(value: int | None) -> int:
    if value is not None and value < 0:
        raise ValidationError("after must not be negative")
    return -1 if value is None else value


@get("/runs/{run_id:str}/logs")
async def get_run_logs(
    run_id: str,
    head: HeadState,
    task_id: TaskId = None,
    tail: Tail = None,
    after: After = None,
    limit: Annotated[int, Parameter(description=f"Lines per page (at most {MAX_LINES}).")] = MAX_LINES,
) -> dict[str, Any]:
    """What the run's tasks printed, line by line, with task, attempt, node, stream and time.
    With `tail`, the last lines; else a page from the start or from `after`: `more` says whether
    more followed, and `last_cursor` is the `after` of the next page."""
    subject = _filter(run_id, task_id)
    start = _after(after)
    if tail is not None and not 0 <= tail <= MAX_LINES:
        raise ValidationError(f"tail is between 0 and {MAX_LINES}")
    if not 1 <= limit <= MAX_LINES:
        raise ValidationError(f"limit is between 1 and {MAX_LINES}")
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


@get("/runs/{run_id:str}/logs/stream")
async def stream_run_logs(
    request: Request[Any, Any, Any], run_id: str, head: HeadState, task_id: TaskId = None, after: After = None
) -> Stream:
    """Live SSE of the run's lines: `event: logs`, `data` a JSON list of lines, `id` the cursor of
    the last, until the run has ended and the lines stored before its end were sent (`event:
    end`). Reconnect with `Last-Event-ID` to go on without gaps or repeats."""
    last_id = request.headers.get("last-event-id")
    if last_id:
        try:
            after = int(last_id)
        except ValueError as exc:
            raise ValidationError("Last-Event-ID must be a log cursor") from exc
    subject = _filter(run_id, task_id)
    start = _after(after)
    await require_run(head, run_id)
    client = request.client.host if request.client else "?"
    head.streams.take(client)

    async def frames() -> AsyncIterator[bytes]:
        async for lines in log_reader.follow(head.nc, head.js, run_id, subject, start):
            yield frame("logs", _json.encode(lines), lines[-1]["cursor"])
        yield END

    return sse_response(counted(head.streams, client, frames()))
