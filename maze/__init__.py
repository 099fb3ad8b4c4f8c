"""Maze: a task-level distributed runtime for agent workflows.

from maze import MaClient, task
"""

from maze.core.errors import (
    Conflict,
    MazeError,
    NotFound,
    ResourceUnavailable,
    SerializationError,
    Unavailable,
    ValidationError,
)
from maze.sdk.client import MaClient
from maze.sdk.task import task
from maze.sdk.workflow import MaTask, MaWorkflow, TaskOutput, TaskOutputs

__all__ = [
    "Conflict",
    "MaClient",
    "MaTask",
    "MaWorkflow",
    "MazeError",
    "NotFound",
    "ResourceUnavailable",
    "SerializationError",
    "TaskOutput",
    "TaskOutputs",
    "Unavailable",
    "ValidationError",
    "task",
]
