"""Which attempt a task process is running now, for code that runs inside it: its run, task,
attempt number, node and the worker's work root (set by the task process before each attempt,
maze/workers/child.py; empty outside an attempt). Maze's own tasks read it (maze/tasks/app_command.py
gives it to an app's command as `MAZE_*` variables)."""

from __future__ import annotations

_current: dict[str, str] = {}


def current() -> dict[str, str]:
    """`run_id`, `task_id`, `attempt`, `node_id`, `work_root` of the attempt running now."""
    return dict(_current)


def enter(context: dict[str, str] | None) -> None:
    _current.clear()
    _current.update({str(k): str(v) for k, v in (context or {}).items()})
