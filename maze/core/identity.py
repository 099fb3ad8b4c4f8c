"""How a Maze head names itself over HTTP: every answer it sends (errors and unknown routes too)
carries `X-Maze-Head: <version>`, so a client can tell a head from another server at a wrong URL."""

from __future__ import annotations

import importlib.metadata

HEAD_HEADER = "X-Maze-Head"


def maze_version() -> str:
    try:
        return importlib.metadata.version("maze")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
