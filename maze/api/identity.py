"""Marks every answer of the head as a Maze head's (maze/core/identity.py): a Litestar
`before_send` hook, so that errors, unknown routes and refused calls carry the header too."""

from __future__ import annotations

from typing import Any

from litestar.datastructures import MutableScopeHeaders

from maze.core.identity import HEAD_HEADER, maze_version

_VERSION = maze_version()


async def mark_maze_head(message: Any, scope: Any) -> None:
    if message["type"] == "http.response.start":
        MutableScopeHeaders.from_message(message)[HEAD_HEADER] = _VERSION
