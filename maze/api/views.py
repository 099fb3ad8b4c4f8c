"""What the API answers on success, as types: the OpenAPI document shows them and
tests/test_openapi_contract.py checks every answer against them.

Rows of the read models (runs, tasks, attempts) are read as dicts and answered as they are; these
types document them (a route declares one with `answers(..., ok=RunView)`, maze/api/openapi.py),
and a field the read models add later is allowed (no `forbid_unknown_fields`). Answers a route
builds itself are these types.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

RunState = Literal["created", "running", "succeeded", "failed", "cancelled", "timed_out"]
TaskState = Literal[
    "pending", "queued", "running", "retry_wait", "succeeded", "failed", "cancelled", "timed_out"
]


class Submitted(msgspec.Struct):
    """A recorded submission. `seq` is the stream sequence of the run's last event: pass it as
    `min_seq` to read your own write. `duplicate`: the same request had been recorded already (a
    retry), and this is that run."""

    duplicate: bool
    run_id: str
    workflow_id: str
    seq: int
    tasks: int
    events: int


class ListedRun(msgspec.Struct):
    """A run as `GET /runs` lists it. `error` is the structured error of the task that failed it
    (or why the run ended otherwise); `progress` counts its tasks per state; `retry_of` names the
    run this one retries (`POST /runs/{id}/retry`); `timeout_seconds` is the run-level timeout it
    was created with."""

    run_id: str
    workflow_id: str
    kind: str
    state: RunState
    created_at_ms: int
    started_at_ms: int | None
    finished_at_ms: int | None
    task_count: int
    tasks_succeeded: int
    tasks_failed: int
    error: dict[str, Any] | None
    failed_task_id: str | None
    run_seq: int
    progress: dict[str, int]
    retry_of: str | None
    timeout_seconds: float | None
    max_tasks: int | None  # a dynamic run's bound on its tasks (null: not a dynamic run)


class SummarizedTask(msgspec.Struct):
    """A final task of a run and its outputs, briefly: an output too long to show is a
    `{"__maze_value__": "truncated", "type", "size", "preview"}` descriptor; `outputs` is null
    unless the task succeeded."""

    task_id: str
    name: str
    state: TaskState
    outputs: dict[str, Any] | None


class ResultSummary(msgspec.Struct):
    """The outputs of a finished run's final (sink) tasks, in submission order, at most 10 tasks
    and 20 outputs each (maze/projections/run_summary.py); `truncated` says whether anything was
    left out or cut."""

    sink_tasks: int
    tasks: list[SummarizedTask]
    truncated: bool
    # a dynamic run ended by finalize: the result its client gave (absent otherwise)
    result: Any = msgspec.UNSET


class RunView(ListedRun):
    """A run's snapshot: what `GET /runs` lists, with `result_summary` once the run has finished
    (null before) and `retried_by`, the runs that retry it, oldest first."""

    result_summary: ResultSummary | None
    retried_by: list[str]


class TaskView(msgspec.Struct):
    """A task of a run: its spec as submitted, where and how often it ran, its result or its
    structured error (`error_type`, `message`, `retryable`, `origin`, `node_id`, `attempt`,
    `traceback` ...). `pending_reason` says why a waiting task is not placed yet. A value that is
    not plain data shows as a descriptor (`{"__maze_value__": "pickle"|"blob", "type", "size", ...}`)."""

    run_id: str
    task_id: str
    name: str
    func_name: str
    task_type: str
    state: TaskState
    attempt: int
    failures: int
    node_id: str | None
    node_ip: str | None
    gpus: list[Any] | None
    resources: dict[str, Any]
    inputs: dict[str, Any]
    upstream: list[str]
    outputs: list[str] | None
    result: Any
    error: dict[str, Any] | None
    placement_reason: str | None
    queued_at_ms: int | None
    started_at_ms: int | None
    finished_at_ms: int | None
    run_seq: int
    task_index: int
    pending_reason: str | None


class AttemptView(msgspec.Struct):
    """One attempt of a task: where it was placed and why, how it ended."""

    run_id: str
    task_id: str
    attempt: int
    node_id: str | None
    node_ip: str | None
    pid: int | None
    state: str
    gpus: list[Any] | None
    reason: str | None
    error: dict[str, Any] | None
    placed_at_ms: int | None
    started_at_ms: int | None
    finished_at_ms: int | None
    duration_ms: float | None
    run_seq: int


class TaskDetail(TaskView):
    """A task with every attempt it had."""

    attempts: list[AttemptView]


class Cancelled(msgspec.Struct):
    """A recorded cancel (`seq`: the stream sequence of `run.cancel_requested`). `state` is
    `cancelled` once the run has ended (200), `cancelling` while it has not yet (202)."""

    run_id: str
    seq: int
    reason: str
    state: Literal["cancelled", "cancelling"]


class Retried(msgspec.Struct):
    """A recorded retry: `run_id` is the new run, `retry_of` the one it retries; `carried` counts
    the tasks that keep their recorded results (`failed_only`). `duplicate`: the same request had
    been recorded already, and this is that run."""

    run_id: str
    retry_of: str
    workflow_id: str
    seq: int
    tasks: int
    carried: int
    duplicate: bool


class LogLineView(msgspec.Struct):
    """A line a task printed (or a piece of a very long one). `stream`: `stdout`, `stderr`, or
    `maze` (Maze's own note that output past the cap was cut). `cursor` only grows: pass the last
    one you have as `after` (or `Last-Event-ID`) to go on from there."""

    cursor: int
    task_id: str
    attempt: int
    node_id: str
    stream: Literal["stdout", "stderr", "maze"]
    at_ms: int
    line: str


class LogsPage(msgspec.Struct):
    """Lines of a run's tasks, oldest first. `more`: more lines followed when this page was read;
    `last_cursor` is the `after` of the next page."""

    run_id: str
    lines: list[LogLineView]
    last_cursor: int
    more: bool


class RunIdMatches(msgspec.Struct):
    """The ids of the runs whose id is `prefix` or starts with it (or with `run_` + it), newest
    first."""

    prefix: str
    run_ids: list[str]


class EventsPage(msgspec.Struct):
    """A page of a run's events from the log (each one `{"type": <tag>, ...}` as stored). Ask
    again with `after` = `last_seq` while `more`."""

    run_id: str
    events: list[dict[str, Any]]
    last_seq: int
    more: bool


class Health(msgspec.Struct):
    status: Literal["ok", "degraded"]
    controller_live: bool
    projection_positions: dict[str, int] | None
    nodes: int


class Alive(msgspec.Struct):
    status: Literal["ok"]


class Ready(msgspec.Struct):
    status: Literal["ready"]
    projector_lag: int | None


class JoinLimits(msgspec.Struct):
    """The value limits a worker applies: `log_cap_bytes` is what an attempt's output may take
    before it is cut. (A worker reads each with a default: an older head answered fewer.)"""

    inline_bytes: int
    blob_max_bytes: int
    log_cap_bytes: int


class JoinInfo(msgspec.Struct):
    """Where a worker node connects, with credentials of its own, and the limits its results
    respect. `js_api_prefix`: where the node's NATS account has the JetStream API (null: the
    default `$JS.API`)."""

    nats_urls: list[str]
    head_makes_consumer: bool
    limits: JoinLimits
    js_api_prefix: str | None


class BlobStored(msgspec.Struct):
    sha256: str
    size: int
    uri: str
    created: bool


class MissingBlobs(msgspec.Struct):
    missing: list[str]


class Limits(msgspec.Struct):
    """Size limits (`GET /cluster/limits`): values above `inline_value_bytes` travel as blobs,
    blobs above `blob_max_bytes` are refused, what an attempt prints past `log_cap_bytes` is cut, and
    no message exceeds the event store's `max_payload_bytes` (events are packed within
    `event_budget_bytes`)."""

    inline_value_bytes: int
    blob_max_bytes: int
    max_payload_bytes: int
    event_budget_bytes: int
    log_cap_bytes: int


class ArtifactView(msgspec.Struct):
    """A file a task's succeeded attempt created or changed in its directory, stored in the blob
    store: `uri` (`maze://artifacts/sha256/<hex>`) is its content, readable at
    `GET /artifacts/sha256/{sha256}`."""

    task_id: str
    attempt: int
    path: str
    sha256: str
    size: int
    node_id: str
    at_ms: int
    uri: str


class DynamicCreated(msgspec.Struct):
    """A dynamic run was created (`duplicate`: by an earlier copy of this request)."""

    run_id: str
    workflow_id: str
    seq: int  # the stream sequence of its `run.created`
    max_tasks: int
    timeout_seconds: float | None
    duplicate: bool


class Appended(msgspec.Struct):
    """Tasks appended to a dynamic run and folded by the controller (`duplicate`: appended by an
    earlier copy of this request; `seq` is then 0). `task_count`: the tasks the run holds now."""

    run_id: str
    task_ids: list[str]
    seq: int
    task_count: int
    max_tasks: int
    duplicate: bool


class Finalized(msgspec.Struct):
    """A finalize of a dynamic run: `state` is `succeeded` once the run has ended, `finalizing`
    before."""

    run_id: str
    seq: int
    state: str
