"""Each attempt's own directory on the worker: where its task code runs (its current directory)
and, sandboxed, the one place it may write (maze/workers/sandbox.py)."""

from __future__ import annotations

import shutil
from pathlib import Path


class AttemptDirs:
    """Each attempt's own directory under the worker's work root: <root>/<run_id>/<task_id>/<attempt>."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def make(self, run_id: str, task_id: str, attempt: int) -> Path:
        """The attempt's directory, created empty (an old one, of a worker that died, is wiped)."""
        for part in (run_id, task_id):
            if not part or part in (".", "..") or "/" in part or "\0" in part:
                raise ValueError(f"not a usable directory name: {part!r}")
        path = self.root / run_id / task_id / str(attempt)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def remove(self, path: Path) -> None:
        """After the attempt is recorded: its directory, and its task's and run's when empty."""
        shutil.rmtree(path, ignore_errors=True)
        for parent in (path.parent, path.parent.parent):
            if parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break
