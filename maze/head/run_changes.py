"""Which runs changed, for the Runs console's live list (`GET /runs/changes`): the run controller
notes every runs-stream message it folds (maze/head/feeds.py), and each watcher collects the ids of
the runs they touched until its stream takes them. Bounded: a watcher holds at most MAX_PENDING run
ids, past that it only says "many runs changed" (`overflow`), and its client reads the page again."""

from __future__ import annotations

import asyncio

MAX_PENDING = 1_000


class ChangeWatcher:
    __slots__ = ("changed", "last_seq", "overflow", "runs")

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}  # run id -> the stream sequence of its last change
        self.overflow = False
        self.last_seq = 0
        self.changed = asyncio.Event()

    def note(self, run_id: str, seq: int) -> None:
        if run_id in self.runs or len(self.runs) < MAX_PENDING:
            self.runs[run_id] = seq
        else:
            self.overflow = True
        self.last_seq = max(self.last_seq, seq)
        self.changed.set()

    def take(self) -> tuple[dict[str, int], bool, int]:
        """What changed since the last take: run ids with their last sequence, whether more runs
        changed than were kept, and the last sequence noted."""
        runs, overflow = self.runs, self.overflow
        self.runs, self.overflow = {}, False
        self.changed.clear()
        return runs, overflow, self.last_seq
