"""Runs whose tasks are still arriving: a wide run is recorded as `run.created` (the first chunk of
its tasks, and how many chunks there are) followed by `tasks.added` chunks. The controller starts
such a run only when every chunk is in; a chunk seen twice (a redelivery, a retried submit) changes
nothing, and chunks may come in any order.

A run whose chunks never all arrive (the head died mid-submit and the client never retried) is
failed with `incomplete_submission` once it is older than the grace period, so it neither wedges
nor stays in memory for ever.
"""

from __future__ import annotations

import heapq

from msgspec import Struct

from maze.events.runs import RunCreated, TasksAdded
from maze.events.specs import TaskError, TaskSpec


class PartialRun(Struct):
    created: RunCreated
    chunks: dict[int, list[TaskSpec]]  # chunk index (0: run.created) -> its tasks
    received: int = 0  # tasks in the chunks received

    @property
    def complete(self) -> bool:
        return len(self.chunks) >= self.created.chunks

    def specs(self) -> list[TaskSpec]:
        return [spec for index in sorted(self.chunks) for spec in self.chunks[index]]


class RunIntake:
    def __init__(self, grace_ms: int) -> None:
        self.grace_ms = grace_ms
        self.partial: dict[str, PartialRun] = {}
        self._expiry: list[tuple[int, str]] = []  # (created at_ms + grace, run id)

    def __contains__(self, run_id: str) -> bool:
        return run_id in self.partial

    def expiry(self) -> list[tuple[int, str]]:
        return list(self._expiry)

    def restore(self, partial: dict[str, PartialRun], expiry: list[tuple[int, str]]) -> None:
        self.partial = partial
        self._expiry = list(expiry)
        heapq.heapify(self._expiry)

    def created(self, event: RunCreated) -> PartialRun | None:
        """A run.created. Returns the run, complete, when it needs no more chunks."""
        if event.run_id in self.partial:
            return None  # seen already
        run = PartialRun(created=event, chunks={0: list(event.tasks)}, received=len(event.tasks))
        if run.complete:
            return run
        self.partial[event.run_id] = run
        heapq.heappush(self._expiry, (event.at_ms + self.grace_ms, event.run_id))
        return None

    def added(self, event: TasksAdded) -> PartialRun | None:
        """A tasks.added chunk. Returns the run when this was its last missing chunk."""
        run = self.partial.get(event.run_id)
        if run is None or event.chunk in run.chunks or not 0 < event.chunk < run.created.chunks:
            return None  # unknown or ended run, a chunk seen already, or not one of this run's
        run.chunks[event.chunk] = list(event.tasks)
        run.received += len(event.tasks)
        if not run.complete:
            return None
        del self.partial[event.run_id]
        return run

    def rearm(self) -> None:
        """Every partial run's expiry, again (a pass pops entries it has looked at; a snapshot may
        have been taken meanwhile). Entries seen twice are harmless."""
        for run_id, run in self.partial.items():
            heapq.heappush(self._expiry, (run.created.at_ms + self.grace_ms, run_id))

    def expire_again(self, run_id: str, at_ms: int) -> None:
        """Its end could not be recorded: look at it again from `at_ms`."""
        if run_id in self.partial:
            heapq.heappush(self._expiry, (at_ms, run_id))

    def drop(self, run_id: str) -> None:
        """The run ended (e.g. failed as incomplete): forget its chunks."""
        self.partial.pop(run_id, None)

    def expired(self, now_ms: int) -> list[tuple[PartialRun, TaskError]]:
        """Partial runs older than the grace period, with the error that ends each."""
        out = []
        seen = set()
        while self._expiry and self._expiry[0][0] < now_ms:
            _, run_id = heapq.heappop(self._expiry)
            run = self.partial.get(run_id)
            if run is not None and run_id not in seen:
                seen.add(run_id)
                out.append((run, incomplete_error(run, self.grace_ms)))
        return out


def incomplete_error(run: PartialRun, grace_ms: int) -> TaskError:
    created = run.created
    return TaskError(
        error_type="incomplete_submission",
        message=(
            f"only {run.received} of {created.total_tasks} tasks were recorded ({len(run.chunks)} of "
            f"{created.chunks} chunks) within {grace_ms / 1000:g} s of the submission; the submit "
            "was interrupted and not retried. Submit the workflow again under a new run id"
        ),
        origin="controller",
    )


def count_mismatch_error(run: PartialRun) -> TaskError:
    created = run.created
    return TaskError(
        error_type="incomplete_submission",
        message=(
            f"the run's {created.chunks} chunk(s) hold {run.received} tasks, but run.created "
            f"announced {created.total_tasks}; the run was not started"
        ),
        origin="controller",
    )
