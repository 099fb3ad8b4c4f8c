"""Run-level events, on subject `maze.run.<run_id>`."""

from __future__ import annotations

from msgspec import Struct

from maze.events.specs import TaskError, TaskSpec


class RunCreated(Struct, frozen=True, tag="run.created"):
    """A whole static DAG, accepted in one event: tasks plus their code, once per distinct function."""

    run_id: str
    workflow_id: str
    at_ms: int
    tasks: list[TaskSpec]
    functions: dict[str, bytes]  # func_hash -> cloudpickle bytes
    kind: str = "static"


class RunFinished(Struct, frozen=True, tag="run.finished"):
    """The one final state of a run: succeeded, failed, cancelled or timed_out."""

    run_id: str
    at_ms: int
    state: str
    error: TaskError | None = None
    failed_task_id: str | None = None
