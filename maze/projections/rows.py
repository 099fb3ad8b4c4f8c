"""One read-model row per struct, field for column (schema.TABLES; a unit test keeps them equal).

Structs, not dicts: a 100,000-task run keeps its task and attempt rows in memory while it is
active, and a struct row is a fifth of a dict row's size. Rows hold only immutable values, so the
cyclic garbage collector need not track them."""

from __future__ import annotations

from msgspec import Struct


class RunRow(Struct, gc=False):
    run_id: str
    workflow_id: str
    kind: str
    state: str
    created_at_ms: int
    started_at_ms: int | None
    finished_at_ms: int | None
    task_count: int
    tasks_succeeded: int
    tasks_failed: int
    error: str | None
    failed_task_id: str | None
    run_seq: int
    progress: str
    names: str
    result_summary: str | None
    retry_of: str | None = None
    timeout_seconds: float | None = None
    max_tasks: int | None = None  # a dynamic run's bound on its tasks (None: not dynamic)


class TaskRow(Struct, gc=False):
    run_id: str
    task_id: str
    name: str
    func_name: str
    task_type: str
    state: str
    attempt: int
    failures: int
    node_id: str | None
    node_ip: str | None
    gpus: str
    resources: str
    inputs: str
    upstream: str
    outputs: str | None
    result: str | None
    error: str | None
    placement_reason: str | None
    queued_at_ms: int | None
    started_at_ms: int | None
    finished_at_ms: int | None
    run_seq: int
    task_index: int


class AttemptRow(Struct, gc=False):
    run_id: str
    task_id: str
    attempt: int
    node_id: str | None
    node_ip: str | None
    pid: int | None
    state: str
    gpus: str
    reason: str | None
    error: str | None
    placed_at_ms: int | None
    started_at_ms: int | None
    finished_at_ms: int | None
    duration_ms: float | None
    run_seq: int


class ArtifactRow(Struct, gc=False):
    """A file an attempt registered (`artifact.registered`)."""

    run_id: str
    task_id: str
    attempt: int
    path: str
    sha256: str
    size: int
    node_id: str
    at_ms: int
    run_seq: int


ROW_TYPES: dict[str, type[Struct]] = {
    "runs": RunRow,
    "tasks": TaskRow,
    "attempts": AttemptRow,
    "artifacts": ArtifactRow,
}
