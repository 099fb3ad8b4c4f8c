"""Each attempt's own working directory on its worker: the task's code runs there (its process
chdir's into it), a run with a workspace has its files staged there, and what the attempt leaves
there is what it made."""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

MARKER = ".maze-work-root"
_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


def _component(value: str, what: str) -> str:
    if not _COMPONENT.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{what} {value!r} cannot name a directory")
    return value


class AttemptDirs:
    """Each attempt's own directory under the worker's work root: <root>/<run_id>/<task_id>/<attempt>."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, run_id: str, task_id: str, attempt: int) -> Path:
        """Where the attempt's directory is (not made: see `make`)."""
        return self.root / _component(run_id, "run id") / _component(task_id, "task id") / str(int(attempt))

    def make(self, run_id: str, task_id: str, attempt: int) -> Path:
        """The attempt's directory, created empty (one left by an earlier try is wiped first)."""
        path = self.path(run_id, task_id, attempt)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def wipe(self, keep: str, kept: tuple[str, ...] = ()) -> int:
        """At the worker's start: everything under the root but `keep` (the content cache) and
        `kept` (left whole: the conda environments apps made, maze/tasks/app_command.py) goes,
        what an earlier run of this worker, killed, left there (attempt directories, sandbox
        spares), and unfinished downloads in `keep` (`*.part`). Only in a root this worker made
        (marked with MARKER): a directory a user named that holds files of theirs is left as it
        is. How many entries went (-1: not wiped, not ours)."""
        removed = 0
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / MARKER
        if not marker.exists():
            if any(self.root.iterdir()):
                return -1
            marker.write_text("the work root of a Maze worker: emptied at its start\n")
        for entry in self.root.iterdir():
            if entry.name == MARKER or (entry.name in kept and entry.is_dir() and not entry.is_symlink()):
                continue
            if entry.name == keep and entry.is_dir() and not entry.is_symlink():
                for part in entry.glob("*.part"):
                    with contextlib.suppress(OSError):
                        part.unlink()
                        removed += 1
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            removed += 1
        return removed

    def remove(self, path: Path) -> None:
        """After the attempt is recorded: its directory, and its task's and run's when empty."""
        shutil.rmtree(path, ignore_errors=True)
        for parent in (path.parent, path.parent.parent):
            if parent == self.root or self.root not in parent.parents:
                break
            with contextlib.suppress(OSError):  # not empty: another attempt of it is here
                parent.rmdir()
