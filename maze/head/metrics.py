"""The head's Prometheus metrics (`GET /metrics`), in a registry of its own.

Each source costs what DESIGN.md §6.8 allows:
- What the run controller folds (tasks by state, task and run outcomes, attempt durations, placement
  waits) is counted where it happens, by `FoldMetrics`: the controller's shell hands it each event
  (`RunController.apply`), it reads the core's state before and after the core folds it and never
  changes that state (folds stay pure, STYLE.md habit 3). O(1) per event, and O(run) once per run
  when it ends, as the core's own fold of `run.finished`. Values are plain ints, read by a scrape.
- What is cheap to read whole (queue depth per resource class, nodes by state, the leader, active
  runs) is read at scrape time: bounded by the shapes and the nodes, not by the runs.
- Publish latency is timed around `publish_durably` (maze/events/store.py `observe_publishes`).
- The read models' lag is asked of their process by the route (maze/api/health.py), set here.

Nothing is counted twice: each stream sequence is observed at most once per process, and none
before the controller first caught up with the log (what came before is history, not this
process's work). A replay after the controller restarts from a snapshot therefore counts only what
this process had not folded yet, and a message the log delivers twice counts once; an event stored
twice (a publish retried outside the dedupe window) changes no state the second time, and what
is counted is a change of state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from maze.events import subjects
from maze.events.catalog import Event
from maze.events.runs import RunCreated, RunFinished, TaskAppended, TasksAdded
from maze.events.tasks import (
    AttemptFailed,
    AttemptLost,
    AttemptPlaced,
    AttemptRejected,
    AttemptStarted,
    AttemptSucceeded,
    RetryScheduled,
)
from maze.head.views import resource_class

if TYPE_CHECKING:
    from maze.head.controller import RunController
    from maze.head.scheduler import Scheduler

ACTIVE_STATES = ("pending", "queued", "running", "retry_wait")
OUTCOMES = ("succeeded", "failed", "cancelled", "timed_out")
ATTEMPT_EVENTS = frozenset(
    {
        AttemptPlaced,
        AttemptStarted,
        AttemptSucceeded,
        AttemptFailed,
        AttemptRejected,
        AttemptLost,
        RetryScheduled,
    }
)
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
PUBLISH_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20)
PUBLISH_STREAMS = frozenset(
    {subjects.RUNS_STREAM, subjects.WORK_STREAM, subjects.NODES_STREAM, subjects.BLOB_STREAM}
)
TaskKey = tuple[str, str]


class FoldMetrics:
    """Counts what the controller's fold changes. Times come from the events' `at_ms` (a worker's
    clock for its reports, the head's for placements: a wait across clocks that disagree is
    clipped at zero)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.active = dict.fromkeys(ACTIVE_STATES, 0)  # tasks of active runs, by state
        self.tasks_finished = dict.fromkeys(OUTCOMES, 0)
        self.runs_finished = dict.fromkeys(OUTCOMES, 0)
        self.attempt_duration = Histogram(
            "maze_attempt_duration_seconds",
            "How long attempts ran, by how they ended (succeeded: as the worker measured it; "
            "failed, timed_out: from the attempt's start to its failure).",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._durations = {
            o: self.attempt_duration.labels(outcome=o) for o in ("succeeded", "failed", "timed_out")
        }
        self.placement_wait = Histogram(
            "maze_placement_wait_seconds",
            "From a task becoming ready (its run started, its last upstream succeeded, its retry "
            "backoff ended, its placement came back unstarted) to its attempt.placed.",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        # the highest stream sequence observed, per stream; None until the first catch-up
        self.marks: dict[str, int] | None = None
        self._run_started: dict[str, int] = {}  # run id -> when it started (its root tasks' readiness)
        self._ready_at: dict[TaskKey, int] = {}  # readiness of tasks that became ready later
        self._started_at: dict[TaskKey, int] = {}  # running attempts' starts

    def observes(self, stream: str, seq: int) -> bool:
        """Whether the message at `seq` of `stream` is to be counted (then it is marked counted)."""
        marks = self.marks
        if marks is None or seq <= marks.get(stream, 0):
            return False
        marks[stream] = seq
        return True

    def went_live(self, core: Scheduler, positions: dict[str, int]) -> None:
        """The controller caught up with the log: from here on what it folds is counted. The
        gauge of active tasks is taken whole (O(active tasks), once per catch-up); transitions keep
        it from then on."""
        marks = self.marks if self.marks is not None else {}
        for stream, seq in positions.items():
            marks[stream] = max(marks.get(stream, 0), seq)
        self.marks = marks
        active = dict.fromkeys(ACTIVE_STATES, 0)
        for run in core.runs.values():
            for task in run.tasks.values():
                if task.state in active:
                    active[task.state] += 1
        self.active = active

    def fold(self, core: Scheduler, event: Event) -> None:
        """Fold `event` into `core` (exactly `core.apply(event)`) and count what that changed."""
        kind = type(event)
        if kind in ATTEMPT_EVENTS:
            self._attempt(core, event)
        elif kind is RunFinished:
            self._run_finished(core, event)  # type: ignore[arg-type]
        elif kind is RunCreated or kind is TasksAdded:
            self._run_added(core, event)  # type: ignore[arg-type]
        elif kind is TaskAppended:
            self._appended(core, event)  # type: ignore[arg-type]
        else:
            core.apply(event)

    def _attempt(self, core: Scheduler, event: Any) -> None:
        run_id, task_id = event.run_id, event.task_id
        run = core.runs.get(run_id)
        task = run.tasks.get(task_id) if run is not None else None
        before = task.state if task is not None else None
        core.apply(event)
        if task is None or run is None:
            return
        after = task.state
        if after == before and after != "retry_wait":  # no transition (a duplicate, a late report)
            return
        key = (run_id, task_id)
        active = self.active
        if before in active:
            active[before] -= 1
        if after in active:
            active[after] += 1
        if after == "queued" and task.waiting:  # a follower: placed ahead, it waited for nothing
            self._ready_at.pop(key, None)
        elif after == "queued":
            ready = self._ready_at.pop(key, None)
            if ready is None and event.attempt == 1:  # a root task's first placement
                ready = self._run_started.get(run_id)
            if ready is not None:
                self.placement_wait.observe(max(0, event.at_ms - ready) / 1000)
        elif after == "running":
            self._started_at[key] = event.at_ms
        elif after == "succeeded":
            self.tasks_finished["succeeded"] += 1
            started = self._started_at.pop(key, None)
            took_ms = event.duration_ms or (event.at_ms - started if started is not None else 0)
            self._durations["succeeded"].observe(max(0, took_ms) / 1000)
            for down in task.downstream:
                child = run.tasks[down]
                if child.state == "pending" and not child.waiting:
                    self._ready_at[(run_id, down)] = event.at_ms
        elif after in ("failed", "timed_out"):
            started = self._started_at.pop(key, None)
            if started is not None:
                self._durations[after].observe(max(0, event.at_ms - started) / 1000)
            self._ready_at.pop(key, None)
        elif after == "retry_wait":
            self._ready_at[key] = task.retry_at_ms
        elif after == "pending":  # a placement came back unstarted: ready again now
            self._ready_at[key] = event.at_ms
            self._started_at.pop(key, None)

    def _run_added(self, core: Scheduler, event: RunCreated | TasksAdded) -> None:
        known = event.run_id in core.runs
        core.apply(event)
        run = core.runs.get(event.run_id)
        if known or run is None:
            return  # not started by this event (a duplicate, or chunks still to come)
        self.active["pending"] += len(run.tasks)  # O(1): every task of a new run is pending
        self._run_started[event.run_id] = event.at_ms

    def _appended(self, core: Scheduler, event: TaskAppended) -> None:
        run = core.runs.get(event.run_id)
        before = len(run.tasks) if run is not None else 0
        core.apply(event)
        if run is None:
            return
        if len(run.tasks) == before:
            return  # refused by the fold (maze/head/run_state.py `appendable`)
        self.active["pending"] += len(event.tasks)
        for spec in event.tasks:
            if not run.tasks[spec.task_id].waiting:
                self._ready_at[(event.run_id, spec.task_id)] = event.at_ms

    def _run_finished(self, core: Scheduler, event: RunFinished) -> None:
        run_id = event.run_id
        run = core.runs.get(run_id)
        ending = run_id not in core.done_runs and (
            run is not None or run_id in core.intake or run_id in core.refused
        )
        core.apply(event)
        if not ending or run_id not in core.done_runs:
            return
        self.runs_finished[event.state] = self.runs_finished.get(event.state, 0) + 1
        self._run_started.pop(run_id, None)
        if run is None:
            return
        # Each task is counted once: succeeded when it succeeded; every other one now, as it
        # ended (failed, timed_out) or, if it never ended, cancelled (its run ended first).
        active, finished = self.active, self.tasks_finished
        for task_id, task in run.tasks.items():  # O(run), once per run
            state = task.state
            if state == "succeeded":
                continue
            key = (run_id, task_id)
            self._ready_at.pop(key, None)
            self._started_at.pop(key, None)
            if state in active:
                active[state] -= 1
            finished[state if state in ("failed", "timed_out") else "cancelled"] += 1


class HeadMetrics:
    """The registry `GET /metrics` renders, and what feeds it."""

    def __init__(self, controller: RunController) -> None:
        self.registry = CollectorRegistry()
        self.fold = FoldMetrics(self.registry)
        self.publish_latency = Histogram(
            "maze_publish_latency_seconds",
            "From a durable publish to the stream's ack, retries included (acknowledged ones).",
            ["stream"],
            buckets=PUBLISH_BUCKETS,
            registry=self.registry,
        )
        self._publish_by_stream: dict[str, Any] = {}
        self.work_handed = Counter(
            "maze_work_handed_locally",
            "Attempts handed to the worker in the head's own process (no work message).",
            registry=self.registry,
        )
        # runs-stream messages the read models have not committed yet; NaN while they do not answer
        self.projector_lag: float = math.nan
        self.registry.register(_ScrapeCollector(controller, self))

    def observe_publish(self, subject: str, seconds: float) -> None:
        stream = subjects.stream_of(subject)
        child = self._publish_by_stream.get(stream)
        if child is None:
            label = stream if stream in PUBLISH_STREAMS else "other"
            child = self._publish_by_stream[stream] = self.publish_latency.labels(stream=label)
        child.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of everything. On the event loop, like the fold, so it
        reads the controller's state between two events."""
        return generate_latest(self.registry)


class _ScrapeCollector(Collector):
    """What a scrape reads from the controller whole, and the fold's counts."""

    def __init__(self, controller: RunController, metrics: HeadMetrics) -> None:
        self.controller = controller
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self._families(with_values=False))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(with_values=True))

    def _families(self, with_values: bool) -> Iterator[Metric]:
        ctl, fold = self.controller, self.metrics.fold
        finished = CounterMetricFamily(
            "maze_tasks_finished",
            "Tasks that reached a final state, by state (succeeded when it succeeds; failed, "
            "timed_out or cancelled when its run ends).",
            labels=["state"],
        )
        active = GaugeMetricFamily("maze_tasks_active", "Tasks of active runs, by state.", labels=["state"])
        runs_finished = CounterMetricFamily(
            "maze_runs_finished", "Runs that ended, by state.", labels=["state"]
        )
        runs_active = GaugeMetricFamily("maze_runs_active", "Runs the controller holds (not ended).")
        queue = GaugeMetricFamily(
            "maze_queue_depth",
            "Ready tasks waiting to be placed, per resource class (the controller's ready queues).",
            labels=["resource_class"],
        )
        nodes = GaugeMetricFamily(
            "maze_nodes", "Worker node sessions, by state (alive; gone: lost or left).", labels=["state"]
        )
        leader = GaugeMetricFamily(
            "maze_controller_leader", "1 while this head's run controller is live and deciding."
        )
        restarts = CounterMetricFamily(
            "maze_controller_restarts", "Times the run controller restarted from its snapshot."
        )
        lag = GaugeMetricFamily(
            "maze_projector_lag_messages",
            "Runs-stream messages the read models have not committed yet (NaN: they did not answer).",
        )
        if with_values:
            for state, count in fold.tasks_finished.items():
                finished.add_metric([state], count)
            for state, count in fold.active.items():
                active.add_metric([state], count)
            for state, count in fold.runs_finished.items():
                runs_finished.add_metric([state], count)
            runs_active.add_metric([], len(ctl.core.runs))
            for shape, count in ctl.core.ready.counts.items():
                queue.add_metric([resource_class(shape)], count)
            alive = sum(1 for node in ctl.placer.nodes.values() if node.alive)
            nodes.add_metric(["alive"], alive)
            nodes.add_metric(["gone"], len(ctl.placer.nodes) - alive)
            leader.add_metric([], 1 if ctl.leading else 0)
            restarts.add_metric([], ctl.restarts)
            lag.add_metric([], self.metrics.projector_lag)
        yield from (finished, active, runs_finished, runs_active, queue, nodes, leader, restarts, lag)
