"""A run whose whole life is in its first message ends in that message.

A new run's first message holds its `run.created` and the placements made at submit, and may take
in what the head's own worker reported by the time it leaves (maze/api/early.py). When that is a
success for every task of the run, the controller's pass after folding the message decides the
same thing whatever else is in the log: `run.finished`, succeeded (Scheduler._decide_run: nothing
failed, nothing remains, no cancel, no deadline). Its placements are this head's decisions already,
made before the log under its leadership; the end joins them, stamped alike. The run's subject
takes that message only as its first (`Nats-Expected-Last-Subject-Sequence: 0`), so no cancel can
land before it; the folds see the end in the log as they see any, and the controller, having
folded it, decides nothing more for the run.

Only what the pass would end at once qualifies: a static run of one chunk, without a timeout (its
deadline is judged at the pass), a workspace, an agent or a retry's origin.
"""

from __future__ import annotations

from collections.abc import Sequence

from maze.events.catalog import Event
from maze.events.runs import RunCreated, RunFinished
from maze.events.tasks import AttemptFailed, AttemptLost, AttemptPlaced, AttemptRejected, AttemptSucceeded


def ends_with(created: RunCreated, events: Sequence[Event], now: int, epoch: int) -> RunFinished | None:
    """The run's `run.finished` when `events` (its first message after `run.created`: placements,
    then reports) hold a success of each of its tasks, on the attempt placed there; else None."""
    if (
        created.kind != "static"
        or created.chunks != 1
        or created.total_tasks != len(created.tasks)
        or created.timeout_seconds is not None
        or created.workspace
        or created.agent is not None
        or created.retry_of
        or created.functions
    ):
        return None
    if sum(isinstance(e, AttemptSucceeded) for e in events) < len(created.tasks):
        return None  # (a wide run: decided without a set of its tasks)
    placed: set[tuple[str, int]] = set()
    succeeded: set[str] = set()
    for event in events:
        if isinstance(event, AttemptPlaced):
            placed.add((event.task_id, event.attempt))
        elif isinstance(event, AttemptSucceeded):
            if (event.task_id, event.attempt) not in placed:
                return None
            succeeded.add(event.task_id)
        elif isinstance(event, (AttemptFailed, AttemptLost, AttemptRejected)):
            return None
    if succeeded != {spec.task_id for spec in created.tasks}:
        return None
    return RunFinished(run_id=created.run_id, at_ms=now, state="succeeded", epoch=epoch)
