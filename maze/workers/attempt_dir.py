"""Each attempt's own working directory on its worker: the task's code runs there (its process
chdir's into it), a run with a workspace has its files staged there, and what the attempt leaves
there is what it made."""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


def _component(value: str, what: str) -> str:
    if not _COMPONENT.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{what} {value!r} cannot name a directory")
    return value


class AttemptDirs:
    """Each attempt's own directory under the worker's work root: <root>/<run_id>/<task_id>/<attempt>."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def make(self, run_id: str, task_id: str, attempt: int) -> Path:
        """The attempt's directory, created empty (one left by an earlier try is wiped first)."""
        path = self.root / _component(run_id, "run id") / _component(task_id, "task id") / str(int(attempt))
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
            with contextlib.suppress(OSError):  # not empty: another attempt of it is here
                parent.rmdir()
