"""Run-level events, on subject `maze.run.<run_id>`."""

from __future__ import annotations

from msgspec import Struct

from maze.events.agents import AgentSpec
from maze.events.specs import TaskError, TaskSpec


class RunCreated(Struct, frozen=True, tag="run.created"):
    """A static DAG was accepted. A wide run's tasks are recorded across several events: this one
    carries the first chunk and says how many follow as `tasks.added`; the run starts only when all
    `task_count` tasks are recorded. Task code is referenced by `TaskSpec.func_hash` and lives in
    the blob store."""

    run_id: str
    workflow_id: str
    at_ms: int
    tasks: list[TaskSpec]
    # Older versions embedded each function's cloudpickle bytes here (func_hash -> bytes). Still
    # read when replaying their runs; never written now.
    functions: dict[str, bytes] = {}
    kind: str = "static"
    task_count: int = 0  # tasks in the whole run; 0 (older events): exactly `tasks`
    chunks: int = 1  # events carrying the run's tasks: this one and `chunks - 1` tasks.added
    # the run ends `timed_out` this long after `at_ms` (None: no run-level timeout)
    timeout_seconds: float | None = None
    retry_of: str = ""  # the run this one retries (POST /runs/{id}/retry), if any
    # the sha256 of its workspace manifest blob (maze/events/artifacts.py): "" for a run without
    # files; set, each attempt runs in a directory staged with the workspace and its upstream
    # tasks' artifacts, and registers the files it makes
    workspace: str = ""
    # a dynamic run (kind "dynamic" or "react"): the most tasks `task.appended` may bring (0: not
    # dynamic)
    max_tasks: int = 0
    # a ReAct run (kind "react"): its agent, whose steps the run controller appends
    # (maze/head/agent.py)
    agent: AgentSpec | None = None

    @property
    def total_tasks(self) -> int:
        return self.task_count or len(self.tasks)


class TasksAdded(Struct, frozen=True, tag="tasks.added"):
    """Chunk `chunk` (1 .. chunks-1) of a wide run's tasks, recorded after its run.created."""

    run_id: str
    chunk: int
    at_ms: int
    tasks: list[TaskSpec]
    offset: int = 0  # submission-order index of its first task (chunks may be stored out of order)


class RunFinished(Struct, frozen=True, tag="run.finished"):
    """The one final state of a run: succeeded, failed, cancelled or timed_out."""

    run_id: str
    at_ms: int
    state: str
    error: TaskError | None = None
    failed_task_id: str | None = None
    epoch: int = 0  # the deciding controller's leadership epoch
    # a dynamic run ended by `finalize`: the result its client gave, as a wire value
    # (maze/events/values.py; a blob reference when large)
    result: bytes | None = None


class RunCancelRequested(Struct, frozen=True, tag="run.cancel_requested"):
    """Someone asked for the run to stop (`POST /runs/{id}/cancel`): a command, recorded by the API
    of any head. The deciding controller ends the run `cancelled` where the request lands in the
    log: each queued or running attempt ends (`attempt.failed`, error `cancelled`), the nodes that
    hold them are told to kill them, and `run.finished` follows in the same message. A request
    that lands after the run's end changes nothing."""

    run_id: str
    at_ms: int
    reason: str = ""


class TaskAppended(Struct, frozen=True, tag="task.appended"):
    """Tasks appended to a dynamic run while it runs (`POST /runs/{id}/tasks`), validated by the
    head against the run's folded state before it was recorded: their references name tasks of the
    run recorded before (or earlier in `tasks`), so the graph stays acyclic. Every fold takes it
    whole or not at all, by the same rule: not when the run has ended, when a task id is taken
    already, when a reference names an unknown task, or when the run would then hold more than its
    `max_tasks` (a race between two heads' checks; the head that recorded it answers 409)."""

    run_id: str
    at_ms: int
    tasks: list[TaskSpec]
    # set when the run controller appended them (a ReAct run's next step, maze/head/agent.py): its
    # leadership epoch, as on every decision; 0 from a client
    epoch: int = 0


class RunFinalizeRequested(Struct, frozen=True, tag="run.finalize_requested"):
    """A dynamic run's client ended it with `result` (`POST /runs/{id}/finalize`): a command, like a
    cancel. The deciding controller ends the run `succeeded` with that result where the request
    lands in the log; its attempts still queued or running end `cancelled` in the same message. A
    request that lands after the run's end (or after a cancel) changes nothing."""

    run_id: str
    at_ms: int
    result: bytes  # a wire value (maze/events/values.py)


class LeaderElected(Struct, frozen=True, tag="leader.elected"):
    """A head's run controller took the lease (maze/head/lease.py) with `epoch`: from here on in the
    runs stream, a decision carrying an older epoch (a deposed leader's late write) is refused by
    every fold. On subject `maze.run._leader`, so that it is ordered with every run's events."""

    head_id: str
    epoch: int
    at_ms: int
