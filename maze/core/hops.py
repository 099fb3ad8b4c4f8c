"""Per-hop timestamps of a run's way through Maze, for bench/latency_hops.py (where one task's
latency goes). Off unless a process starts with `trace_hops` set (MAZE_TRACE_HOPS, a directory):
then it appends `hop run_id microseconds` lines to a file of its own there. They never go into
events: the log stays what it is, and a process with tracing off pays one comparison per hop."""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path
from typing import IO

_out: IO[str] | None = None


def configure(directory: str) -> None:
    """Start writing this process's hops under `directory` (empty: off)."""
    global _out
    if not directory or _out is not None:
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    _out = open(Path(directory) / f"hops-{os.getpid()}.txt", "a", buffering=1 << 16)  # noqa: SIM115
    atexit.register(_out.close)


def enabled() -> bool:
    return _out is not None


def mark(hop: str, run_id: str, at_us: int | None = None) -> None:
    if _out is not None:
        _out.write(f"{hop} {run_id} {time.time_ns() // 1000 if at_us is None else at_us}\n")


def flush() -> None:
    if _out is not None:
        _out.flush()
