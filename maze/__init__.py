"""Maze: a task-level distributed runtime for agent workflows.

from maze import MaClient, task

The names below are imported when first used (PEP 562): a process that needs only part of Maze
(a task process in a sandbox, maze/workers/sandbox.py, starts a fresh interpreter for each
attempt) does not pay for the SDK's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maze.agents.openai_task import openai_llm_task
    from maze.core.errors import (
        Conflict,
        MazeError,
        NotFound,
        ResourceUnavailable,
        SerializationError,
        TaskFailed,
        Unavailable,
        ValidationError,
    )
    from maze.sdk.client import MaClient
    from maze.sdk.dynamic import DynamicRun
    from maze.sdk.file_inputs import FileInput
    from maze.sdk.react import ReactWorkflow
    from maze.sdk.skills import Skill, load_skill
    from maze.sdk.task import task
    from maze.sdk.workflow import MaTask, MaWorkflow, TaskOutput, TaskOutputs
    from maze.tasks.agent_tools import exec_code, read_file, read_skill_file, write_file

_WHERE = {
    "Conflict": "maze.core.errors",
    "MazeError": "maze.core.errors",
    "NotFound": "maze.core.errors",
    "ResourceUnavailable": "maze.core.errors",
    "SerializationError": "maze.core.errors",
    "TaskFailed": "maze.core.errors",
    "Unavailable": "maze.core.errors",
    "ValidationError": "maze.core.errors",
    "openai_llm_task": "maze.agents.openai_task",
    "MaClient": "maze.sdk.client",
    "DynamicRun": "maze.sdk.dynamic",
    "FileInput": "maze.sdk.file_inputs",
    "ReactWorkflow": "maze.sdk.react",
    "Skill": "maze.sdk.skills",
    "load_skill": "maze.sdk.skills",
    "exec_code": "maze.tasks.agent_tools",
    "read_file": "maze.tasks.agent_tools",
    "read_skill_file": "maze.tasks.agent_tools",
    "write_file": "maze.tasks.agent_tools",
    "task": "maze.sdk.task",
    "MaTask": "maze.sdk.workflow",
    "MaWorkflow": "maze.sdk.workflow",
    "TaskOutput": "maze.sdk.workflow",
    "TaskOutputs": "maze.sdk.workflow",
}

__all__ = [
    "Conflict",
    "DynamicRun",
    "FileInput",
    "MaClient",
    "MaTask",
    "MaWorkflow",
    "MazeError",
    "NotFound",
    "ReactWorkflow",
    "ResourceUnavailable",
    "SerializationError",
    "Skill",
    "TaskFailed",
    "TaskOutput",
    "TaskOutputs",
    "Unavailable",
    "ValidationError",
    "exec_code",
    "load_skill",
    "openai_llm_task",
    "read_file",
    "read_skill_file",
    "task",
    "write_file",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'maze' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
