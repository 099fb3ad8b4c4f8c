"""The run controller's pure core: folds run and node events into state and decides what to record
and what work to send. Synchronous, no I/O and no clock (the caller passes `now`), so it can be
driven without NATS, in tests and in `bench/controller_cost.py`.

Cost per event is proportional to what changed (DESIGN.md §6.8): folding an event touches the task
it names and its direct neighbours; a decision pass looks only at runs touched since the last one
(and there only at their undecided failures), at retry backoffs that are due (a heap), at the
attempts of nodes whose membership changed, and at the heads of the per-shape ready queues. What is
O(run) happens once per run: building it when its last chunk is in, and dropping it when it ends.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from msgspec import Struct

from maze.events.catalog import Event
from maze.events.codec import encode_value
from maze.events.nodes import NodeJoined, NodeLeft, NodeLost
from maze.events.runs import RunCreated, RunFinished, TasksAdded
from maze.events.specs import Resources, TaskError, TaskSpec
from maze.events.tasks import (
    AttemptFailed,
    AttemptPlaced,
    AttemptRejected,
    AttemptStarted,
    AttemptSucceeded,
    RetryScheduled,
)
from maze.events.work import WorkItem
from maze.head.intake import PartialRun, RunIntake, count_mismatch_error
from maze.head.placer import Placement, Placer
from maze.head.ready import SKIPPED, ReadyQueues, TaskKey
from maze.head.retry import RetryTimers, next_attempt_delay_ms
from maze.head.run_state import (
    PLACEABLE,
    RunRuntime,
    apply_attempt_event,
    finish,
    new_run,
    ready_tasks,
    resolve_inputs,
)

AttemptEvent = (
    AttemptPlaced | AttemptStarted | AttemptSucceeded | AttemptFailed | AttemptRejected | RetryScheduled
)


class Decision(Struct):
    """What one pass decided: run events to record (already folded in), then work to send."""

    events: list[Event]
    work: dict[str, list[WorkItem]]  # node id -> its new work items, in placement order
    # Code that older runs carried inline (func_hash -> cloudpickle bytes), which the work above
    # needs in the blob store before it is sent.
    code: dict[str, bytes]


class Scheduler:
    def __init__(self, queue_factor: float = 16.0, grace_ms: int = 600_000) -> None:
        self.runs: dict[str, RunRuntime] = {}
        self.done_runs: set[str] = set()
        self.placer = Placer(queue_factor)
        self.ready = ReadyQueues()
        self.retries = RetryTimers()
        self.intake = RunIntake(grace_ms)
        self.refused: dict[str, TaskError] = {}  # complete runs that cannot start (bad chunks)
        self.dirty: dict[str, None] = {}  # runs touched since the last pass, in order
        self.placement_due = True  # new ready tasks or freed capacity since the last pass

    # ---- folding ------------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Fold one event. Idempotent, so the controller's own events may come back safely."""
        step = FOLD.get(type(event))
        if step is not None:  # an event kind the controller has no use for
            step(self, event)

    def _node_joined(self, event: NodeJoined) -> None:
        self.placer.node_joined(event)
        self.placement_due = True

    def _node_left(self, event: NodeLeft | NodeLost) -> None:
        self.placer.node_left(event.node_id, event.session)

    def _created(self, event: RunCreated) -> None:
        if self._known(event.run_id):
            return
        complete = self.intake.created(event)
        if complete is not None:
            self._start(complete)

    def _added(self, event: TasksAdded) -> None:
        if event.run_id in self.intake:
            complete = self.intake.added(event)
            if complete is not None:
                self._start(complete)

    def _known(self, run_id: str) -> bool:
        return (
            run_id in self.runs or run_id in self.done_runs or run_id in self.intake or run_id in self.refused
        )

    def _start(self, partial: PartialRun) -> None:
        created = partial.created
        if partial.received != created.total_tasks:
            self.refused[created.run_id] = count_mismatch_error(partial)
            self.dirty[created.run_id] = None
            return
        specs = None if created.chunks <= 1 else partial.specs()
        run = new_run(created, specs)
        self.runs[run.run_id] = run
        for task_id in ready_tasks(run):
            self.ready.add((run.run_id, task_id), run.tasks[task_id].spec.resources)
        self.placement_due = True
        self.dirty[run.run_id] = None

    def _finished(self, event: RunFinished) -> None:
        run_id = event.run_id
        ended = self.runs.pop(run_id, None)
        self.done_runs.add(run_id)
        self.intake.drop(run_id)
        self.refused.pop(run_id, None)
        self.dirty.pop(run_id, None)  # nothing left to decide (and replay keeps no ended run here)
        if ended is not None:
            finish(ended, event)
            for task_id in ended.tasks:  # O(run), once per run
                self.ready.discard((run_id, task_id))

    def _placed(self, event: AttemptPlaced) -> None:
        run = self.runs.get(event.run_id)
        if run is not None:
            self.placer.reserve(
                (event.run_id, event.task_id, event.attempt),
                event.node_id,
                event.session,
                run.tasks[event.task_id].spec.resources,
                event.gpus,
            )
        self._attempt(event)

    def _terminal(self, event: AttemptSucceeded | AttemptFailed | AttemptRejected) -> None:
        self.placer.release((event.run_id, event.task_id, event.attempt))
        self.placement_due = True
        if isinstance(event, AttemptRejected):
            self.placer.note_reject(event.run_id, event.task_id, event.node_id, event.at_ms, event.reason)
        self._attempt(event)

    def _attempt(self, event: AttemptEvent) -> None:
        run_id = event.run_id
        run = self.runs.get(run_id)
        if run is None:
            return
        for ready_id in apply_attempt_event(run, event):
            self.ready.add((run_id, ready_id), run.tasks[ready_id].spec.resources)
            self.placement_due = True
        task = run.tasks[event.task_id]
        if task.state not in PLACEABLE:
            self.ready.discard((run_id, event.task_id))
        if isinstance(event, RetryScheduled) and task.state == "retry_wait":
            self.retries.schedule((run_id, event.task_id), task.retry_at_ms, task.next_attempt)
        self.dirty[run_id] = None

    # ---- deciding -----------------------------------------------------------------------------
    def went_live(self) -> None:
        """After replaying history: look at every run and node once before the first pass."""
        for run_id in self.runs:
            self.dirty[run_id] = None
        for run_id in self.refused:
            self.dirty[run_id] = None
        self.placer.mark_all_changed()
        self.placement_due = True

    def decide(self, now: int) -> Decision:
        decision = Decision(events=[], work=defaultdict(list), code={})
        events = decision.events
        for event in self._orphaned(now) + self._expired(now):
            self.apply(event)
            events.append(event)
        while self.dirty:
            dirty, self.dirty = self.dirty, {}
            for run_id in dirty:
                for event in self._decide_run(run_id, now):
                    self.apply(event)
                    events.append(event)
        for key in self.retries.pop_due(now, self._still_waiting):
            self.ready.add(key, self.runs[key[0]].tasks[key[1]].spec.resources)
            self.placement_due = True
        if self.placement_due and len(self.ready):
            self.placement_due = False
            self.ready.place(lambda key, shape: self._try_place(key, shape, now, decision))
        decision.work = dict(decision.work)
        return decision

    def _orphaned(self, now: int) -> list[Event]:
        lost: list[Event] = []
        for (run_id, task_id, attempt), res in self.placer.take_orphaned():
            lost.append(
                AttemptFailed(
                    run_id=run_id,
                    task_id=task_id,
                    attempt=attempt,
                    at_ms=now,
                    node_id=res.node_id,
                    error=TaskError(
                        error_type="node_lost",
                        message=f"node {res.node_id} (session {res.session}) went away during the attempt",
                        retryable=True,
                        origin="controller",
                        node_id=res.node_id,
                        attempt=attempt,
                    ),
                )
            )
        return lost

    def _expired(self, now: int) -> list[Event]:
        return [
            RunFinished(run_id=partial.created.run_id, at_ms=now, state="failed", error=error)
            for partial, error in self.intake.expired(now)
        ]

    def _decide_run(self, run_id: str, now: int) -> list[Event]:
        refused = self.refused.get(run_id)
        if refused is not None:
            return [RunFinished(run_id=run_id, at_ms=now, state="failed", error=refused)]
        run = self.runs.get(run_id)
        if run is None or run.finished:
            return []
        out: list[Event] = []
        for task_id in run.undecided:
            task = run.tasks[task_id]
            if task.error is None:
                continue
            delay = next_attempt_delay_ms(task.spec.retry, task.error, task.attempt)
            if delay is not None:
                out.append(
                    RetryScheduled(
                        run_id=run_id,
                        task_id=task_id,
                        next_attempt=task.attempt + 1,
                        at_ms=now,
                        delay_ms=delay,
                        reason=task.error.error_type,
                    )
                )
                continue
            return [
                RunFinished(
                    run_id=run_id, at_ms=now, state="failed", error=task.error, failed_task_id=task_id
                )
            ]
        if run.remaining == 0:
            out.append(RunFinished(run_id=run_id, at_ms=now, state="succeeded"))
        return out

    def _still_waiting(self, key: TaskKey, attempt: int) -> bool:
        run = self.runs.get(key[0])
        if run is None:
            return False
        task = run.tasks[key[1]]
        return task.state == "retry_wait" and task.next_attempt == attempt

    def _try_place(self, key: TaskKey, req: Resources, now: int, decision: Decision) -> str | None:
        run_id, task_id = key
        run = self.runs.get(run_id)
        if run is None or run.finished:
            return SKIPPED
        task = run.tasks[task_id]
        if task.state not in PLACEABLE:
            return SKIPPED
        choice = self.placer.choose(run_id, req, task_id)
        if not isinstance(choice, Placement):
            return choice
        attempt = task.next_attempt if task.state == "retry_wait" else task.attempt + 1
        spec = task.spec
        inputs = resolve_inputs(run, spec)
        if isinstance(inputs, TaskError):
            # Decided on the next pass, with the failures of that run.
            failed = AttemptFailed(run_id=run_id, task_id=task_id, attempt=attempt, at_ms=now, error=inputs)
            self.apply(failed)
            decision.events.append(failed)
            return SKIPPED
        placed = AttemptPlaced(
            run_id=run_id,
            task_id=task_id,
            attempt=attempt,
            node_id=choice.node_id,
            at_ms=now,
            gpus=choice.gpus,
            reason=choice.reason,
            session=choice.session,
        )
        self.apply(placed)
        decision.events.append(placed)
        decision.work[choice.node_id].append(work_item(spec, placed, encode_value(inputs)))
        code = run.functions.get(spec.func_hash)
        if code is not None:
            decision.code[spec.func_hash] = code
        return None

    def fail_work(self, item: WorkItem, error: TaskError, now: int) -> AttemptFailed:
        """An attempt placed in this pass whose work cannot be sent (e.g. too large even with its
        values in the blob store): recorded failed, folded in, decided on the next pass."""
        failed = AttemptFailed(
            run_id=item.run_id, task_id=item.task_id, attempt=item.attempt, at_ms=now, error=error
        )
        self.apply(failed)
        return failed

    # ---- queries ------------------------------------------------------------------------------
    def pending_reason(self, run_id: str, task_id: str) -> str | None:
        return self.ready.reason((run_id, task_id))

    def next_wakeup(self) -> int | None:
        """When the earliest retry backoff ends (ms), if any."""
        return self.retries.next_due()


# Each event type's fold step: a lookup by type, so the hot path has no chain of isinstance checks.
FOLD: dict[type, Callable[[Scheduler, Any], None]] = {
    NodeJoined: Scheduler._node_joined,
    NodeLeft: Scheduler._node_left,
    NodeLost: Scheduler._node_left,
    RunCreated: Scheduler._created,
    TasksAdded: Scheduler._added,
    RunFinished: Scheduler._finished,
    AttemptPlaced: Scheduler._placed,
    AttemptStarted: Scheduler._attempt,
    AttemptSucceeded: Scheduler._terminal,
    AttemptFailed: Scheduler._terminal,
    AttemptRejected: Scheduler._terminal,
    RetryScheduled: Scheduler._attempt,
}


def work_item(spec: TaskSpec, placed: AttemptPlaced, inputs: bytes) -> WorkItem:
    """The work message for a placed attempt: code by hash only, inputs as wire values."""
    return WorkItem(
        run_id=placed.run_id,
        task_id=placed.task_id,
        attempt=placed.attempt,
        func_name=spec.func_name,
        func_hash=spec.func_hash,
        call_style=spec.call_style,
        inputs=inputs,
        outputs=spec.outputs,
        resources=spec.resources,
        gpus=placed.gpus,
        timeout_seconds=spec.timeout_seconds,
        session=placed.session,
    )
