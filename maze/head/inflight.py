"""Decisions the controller has made but not yet seen come back from the log.

The controller never applies its own decisions to its state: a decision takes effect when the
message that records it is folded, in log order, like every worker's report (DESIGN.md §6.6). Until
then this overlay keeps it from deciding the same thing again, and holds the capacity a placement
will take. It is not state: a restarted controller starts with an empty overlay and decides again
whatever the log does not have.
"""

from __future__ import annotations

from maze.events.agents import AGENT_EVENTS
from maze.events.catalog import Event
from maze.events.runs import RunFinished, TaskAppended
from maze.events.specs import TaskError
from maze.events.tasks import AttemptFailed, AttemptLost, AttemptPlaced, RetryScheduled

TaskKey = tuple[str, str]
STEP_EVENTS = (*AGENT_EVENTS, TaskAppended)  # what a ReAct run's step records
AttemptKey = tuple[str, str, int]


class Inflight:
    def __init__(self) -> None:
        self.tasks: dict[TaskKey, int] = {}  # placed (or failed before placement): attempt number
        self.lost: dict[AttemptKey, None] = {}  # attempts given up on (their node went away)
        self.decided: dict[TaskKey, None] = {}  # failures whose retry is decided
        self.runs: dict[str, None] = {}  # runs whose end is decided
        self.agents: dict[str, None] = {}  # ReAct runs whose next step is decided (maze/head/agent.py)
        # runs a decision found it cannot go on with (the error their end will carry); folded
        # state only once that end comes back from the log
        self.broken: dict[str, TaskError] = {}

    def __len__(self) -> int:
        return (
            len(self.tasks)
            + len(self.lost)
            + len(self.decided)
            + len(self.runs)
            + len(self.broken)
            + len(self.agents)
        )

    def record(self, event: Event) -> None:
        """A decision about to be published."""
        if isinstance(event, AttemptPlaced | AttemptFailed):
            self.tasks[(event.run_id, event.task_id)] = event.attempt
        elif isinstance(event, AttemptLost):
            self.lost[(event.run_id, event.task_id, event.attempt)] = None
        elif isinstance(event, RetryScheduled):
            self.decided[(event.run_id, event.task_id)] = None
        elif isinstance(event, RunFinished):
            self.runs[event.run_id] = None
        elif isinstance(event, STEP_EVENTS):  # only the controller's own, here
            self.agents[event.run_id] = None

    def settle(self, event: Event) -> None:
        """An event folded from the log: a decision of ours it records is in effect now (or was
        overtaken by what came before it, which the fold already resolved)."""
        if isinstance(event, AttemptPlaced | AttemptFailed):
            key = (event.run_id, event.task_id)
            if self.tasks.get(key, event.attempt + 1) <= event.attempt:
                del self.tasks[key]
        elif isinstance(event, AttemptLost):
            self.lost.pop((event.run_id, event.task_id, event.attempt), None)
        elif isinstance(event, RetryScheduled):
            self.decided.pop((event.run_id, event.task_id), None)
        elif isinstance(event, STEP_EVENTS):
            self.agents.pop(event.run_id, None)
        elif isinstance(event, RunFinished):
            self.runs.pop(event.run_id, None)
            self.broken.pop(event.run_id, None)
            self.agents.pop(event.run_id, None)
            # the run is over: nothing of it is still to come (bounded by what is in flight)
            for key in [k for k in self.tasks if k[0] == event.run_id]:
                del self.tasks[key]

    def forget(self, events: list[Event]) -> None:
        """Decisions whose publish failed: decide them again."""
        for event in events:
            if isinstance(event, AttemptPlaced | AttemptFailed):
                key = (event.run_id, event.task_id)
                if self.tasks.get(key) == event.attempt:
                    del self.tasks[key]
            elif isinstance(event, AttemptLost):
                self.lost.pop((event.run_id, event.task_id, event.attempt), None)
            elif isinstance(event, RetryScheduled):
                self.decided.pop((event.run_id, event.task_id), None)
            elif isinstance(event, RunFinished):
                self.runs.pop(event.run_id, None)
            elif isinstance(event, STEP_EVENTS):
                self.agents.pop(event.run_id, None)
