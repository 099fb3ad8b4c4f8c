"""The run controller's pure core: folds run and node events into state and decides what to record
and what work to send. Synchronous, no I/O and no clock (the caller passes `now`), so it can be
driven without NATS, in tests and in `bench/controller_cost.py`.

It is a fold of the log (DESIGN.md §6.6): `apply` is the only way its state changes, and `decide`
changes none of it. A decision takes effect when the caller has published it and its event comes
back through `apply`, in log order with every worker's report, so a restarted core that folds the
same log decides the same. Until then the decision waits in the overlay (maze/head/inflight.py),
which keeps it from being decided twice and holds the capacity it will take.

Cost per event is proportional to what changed (DESIGN.md §6.8): folding an event touches the task
it names and its direct neighbours; a decision pass looks only at runs touched since the last one
(and there only at their undecided failures), at retry backoffs that are due (a heap), at attempts
orphaned by a membership change, at deliveries that are due, and at the heads of the per-shape
ready queues. What is O(run) happens once per run: building it when its last chunk is in, and
dropping it when it ends.

An exception while folding or deciding one run ends that run (`controller_error`, with a log line)
instead of stopping the controller.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import msgspec
import structlog
from msgspec import Struct

from maze.core.task_machine import ACTIVE, ENDED_BY_CONTROLLER, PLACEABLE, foreign
from maze.events import gather, subjects
from maze.events.agents import (
    AgentCompacted,
    AgentDecided,
    AgentFinal,
    AgentObserved,
    AgentRepair,
    AgentToolCall,
)
from maze.events.artifacts import ArtifactRegistered, FileEntry
from maze.events.catalog import Event, fenced_in_nodes, fenced_in_runs
from maze.events.codec import encode_value
from maze.events.nodes import NodeJoined, NodeLeft, NodeLost
from maze.events.runs import (
    LeaderElected,
    RunCancelRequested,
    RunCreated,
    RunFinalizeRequested,
    RunFinished,
    TaskAppended,
    TasksAdded,
)
from maze.events.specs import Resources, TaskError, TaskSpec
from maze.events.tasks import (
    AttemptEvent,
    AttemptFailed,
    AttemptLost,
    AttemptPlaced,
    AttemptRejected,
    AttemptStarted,
    AttemptSucceeded,
    RetryScheduled,
)
from maze.events.work import CancelRun, WorkItem
from maze.head.agent import drive
from maze.head.agent_state import fold_agent_event, fold_appended
from maze.head.delivery import Delivery
from maze.head.followers import MAX_FOLLOWERS, NOTHING, follower_inputs, follower_of, stale
from maze.head.inflight import Inflight
from maze.head.intake import PartialRun, RunIntake, count_mismatch_error
from maze.head.placer import Placement, Placer
from maze.head.ready import SKIPPED, ReadyQueues, TaskKey
from maze.head.retry import RetryTimers, next_attempt_delay_ms
from maze.head.run_state import (
    RunRuntime,
    TaskRuntime,
    append_tasks,
    appendable,
    apply_attempt_event,
    file_view,
    finish,
    new_run,
    ready_tasks,
    register_artifact,
    resolve_inputs,
)

log = structlog.get_logger(__name__)

Holds = Callable[[str, str, tuple[str, str, int]], bool]
DONE_RUNS_KEPT = 10_000  # ended run ids remembered (late events of older ones are ignored anyway)
# A task's placements that never start (the node rejects it, or goes away first) come back at once
# the first time, then after a backoff (REQUEUE_BACKOFF_MS, doubling, at most REQUEUE_MAX_BACKOFF_MS),
# and after MAX_REQUEUES in a row the task fails with resource_unavailable.
MAX_REQUEUES = 20
REQUEUE_BACKOFF_MS = 250
REQUEUE_MAX_BACKOFF_MS = 10_000


def requeue_delay_ms(requeues: int) -> int:
    return int(min(REQUEUE_MAX_BACKOFF_MS, REQUEUE_BACKOFF_MS * 2 ** max(0, requeues - 2)))


class Decision(Struct):
    """What one pass decided: run events to record, then work to send once they are stored.
    Nothing of it is in the core's state until its events come back through `apply`."""

    events: list[Event]
    work: dict[str, list[WorkItem]]  # node id -> its new work items, in placement order
    # Code that older runs carried inline (func_hash -> cloudpickle bytes), which the work above
    # needs in the blob store before it is sent.
    code: dict[str, bytes]
    # Work sent again from the log (placed, never started): node id -> items
    resend: dict[str, list[WorkItem]]
    # Nodes to tell that a run they hold attempts of has ended (cancelled, timed out): node id ->
    # runs. Besides those, the nodes of the attempts this decision ends as cancelled are told
    # (maze/head/controller.py), once those ends are stored.
    cancels: dict[str, list[CancelRun]] = {}
    # Content to put in the blob store before the events are published (sha256 -> bytes): the
    # whole of each tool result a ReAct step shows compacted (maze/head/agent_observe.py)
    blobs: dict[str, bytes] = {}


class Scheduler:
    def __init__(
        self, queue_factor: float = 16.0, grace_ms: int = 600_000, resend_after_ms: int = 5_000
    ) -> None:
        # folded state: a function of the log alone
        self.runs: dict[str, RunRuntime] = {}
        self.done_runs: OrderedDict[str, str] = OrderedDict()  # ended run id -> its final state
        self.placer = Placer(queue_factor)
        self.ready = ReadyQueues()
        self.retries = RetryTimers()
        self.intake = RunIntake(grace_ms)
        self.refused: dict[str, TaskError] = {}  # complete runs that cannot start (bad chunks)
        # cancels requested before the run started (its chunks not all in): run id -> reason
        self.cancel_early: dict[str, str] = {}
        # run-level timeouts of active runs, earliest first (an index: rebuilt by folding)
        self.deadlines: list[tuple[int, str]] = []
        # nodes that reported a start of an attempt of a run cancelled or timed out already:
        # told again (the first word may not have reached them). Seen only once live.
        self.late_starts: dict[str, dict[str, str]] = {}
        self.live = False
        self.broken: dict[str, TaskError] = {}  # runs an event could not be folded into
        self.delivery = Delivery(resend_after_ms)
        # what the next pass looks at
        self.dirty: dict[str, None] = {}  # runs touched since the last pass, in order
        self.placement_due = True  # new ready tasks or freed capacity since the last pass
        # decided, not yet folded back
        self.inflight = Inflight()
        self.submitting: dict[str, None] = {}  # runs placed at submit whose submit is not over
        self.fold_errors = 0  # node events that could not be folded (skipped, logged)
        self.epoch = 0  # the latest leadership folded (`leader.elected`): older decisions are refused
        self.nodes_epoch = 0  # the same, as recorded in the nodes stream (judges node.lost)
        self.leader = ""  # the head that holds it
        self.fenced = 0  # decisions refused for their epoch
        self.blobs_due: dict[str, bytes] = {}  # what the pass being decided needs stored first
        # nodes to tell that followers they hold for a failing run will not run: node -> runs
        self.drop_held: dict[str, dict[str, str]] = {}

    # ---- folding ------------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Fold one event. Idempotent, so the log may deliver it twice. A decision of an older
        leadership than the latest `leader.elected` folded (a deposed leader's late write) is
        refused: counted, and nothing else."""
        if fenced_in_runs(event, self.epoch) or fenced_in_nodes(event, self.nodes_epoch):
            self.fenced += 1
            log.warning(
                "controller.decision_fenced",
                kind=type(event).__name__,
                epoch=self.nodes_epoch if isinstance(event, NodeLost) else self.epoch,
            )
            self.inflight.forget([event])
            return
        step = FOLD.get(type(event))
        if step is None:  # an event kind the controller has no use for
            return
        try:
            step(self, event)
        except Exception as exc:  # a bug, or an event no fold foresaw: that run ends, nothing else
            run_id = getattr(event, "run_id", None)
            if run_id is None:  # a node event: skipped, loudly (a restart would meet it again)
                self.fold_errors += 1
                log.exception("controller.node_event_not_folded", kind=type(event).__name__)
            else:
                self.break_run(run_id, f"the run controller could not fold a {type(event).__name__}: {exc!r}")
        self.inflight.settle(event)

    def apply_from(self, stream: str, event: Event) -> None:
        """Fold an event read from `stream`: what every replay of the streams calls (the nodes
        stream's events pass `admit_node_event` first)."""
        if stream != subjects.NODES_STREAM or self.admit_node_event(event):
            self.apply(event)

    def admit_node_event(self, event: Event) -> bool:
        """An event read from the nodes stream: whether to fold it. Its `leader.elected` moves the
        leadership that judges node decisions (not the runs stream's, whose order with the nodes
        stream no two folds share) and is not folded; a `node.lost` of an older leadership written
        after it is refused (counted)."""
        if isinstance(event, LeaderElected):
            self.nodes_epoch = max(self.nodes_epoch, event.epoch)
            return False
        if fenced_in_nodes(event, self.nodes_epoch):
            self.fenced += 1
            log.warning("controller.decision_fenced", kind=type(event).__name__, epoch=self.nodes_epoch)
            return False
        return True

    def break_run(self, run_id: str, message: str, decided: bool = False) -> None:
        """This run can no longer be folded (or decided) faithfully: end it with a clear error.

        A break found folding an event is folded state (a restart folds it again). One found
        deciding (`decided`: an exception in a decision, a store that refuses the run's events)
        lives in the overlay until the run's end comes back from the log, like any decision."""
        log.error("controller.run_broken", run_id=run_id, error=message)
        if run_id in self.done_runs:
            return  # it has ended already
        broken = self.inflight.broken if decided else self.broken
        if run_id not in broken:
            broken[run_id] = TaskError(error_type="controller_error", message=message, origin="controller")
        self.dirty[run_id] = None

    def _elected(self, event: LeaderElected) -> None:
        if event.epoch > self.epoch:
            self.epoch, self.leader = event.epoch, event.head_id

    def _node_joined(self, event: NodeJoined) -> None:
        self.placer.node_joined(event)
        self.placement_due = True

    def _node_left(self, event: NodeLeft | NodeLost) -> None:
        self.placer.node_left(event.node_id, event.session)

    def _artifact(self, event: ArtifactRegistered) -> None:
        run = self.runs.get(event.run_id)
        if run is not None:
            register_artifact(run, event)

    def _cancel_requested(self, event: RunCancelRequested) -> None:
        run = self.runs.get(event.run_id)
        if run is not None:
            if run.cancel is None and run.finalize is None and not run.finished:
                run.cancel = event.reason
                self.dirty[event.run_id] = None
        elif event.run_id in self.intake:  # not started yet: it ends cancelled once it does
            self.cancel_early.setdefault(event.run_id, event.reason)

    def _finalize_requested(self, event: RunFinalizeRequested) -> None:
        run = self.runs.get(event.run_id)
        if run is not None and run.dynamic and run.cancel is None and run.finalize is None:
            run.finalize = event.result
            self.dirty[event.run_id] = None

    def _appended(self, event: TaskAppended) -> None:
        """Tasks appended to a dynamic run: placed in the pass that follows this fold."""
        self.submitting.pop(event.run_id, None)  # what its append decided comes with it
        run = self.runs.get(event.run_id)
        if run is None or appendable(run, event.tasks) is not None:
            return  # ended, or refused by the rule every fold applies (maze/head/run_state.py)
        for task_id in append_tasks(run, event.tasks):
            self.ready.add((run.run_id, task_id), run.tasks[task_id].spec.resources)
        if run.agent is not None:
            fold_appended(run.agent, event.tasks)
        self.placement_due = True
        self.dirty[run.run_id] = None

    def _agent_noted(self, event: AgentCompacted) -> None:
        """A compaction only says what the observation that came with it shows: nothing to fold."""

    def _agent_event(
        self, event: AgentDecided | AgentToolCall | AgentRepair | AgentObserved | AgentFinal
    ) -> None:
        run = self.runs.get(event.run_id)
        if run is not None and run.agent is not None:
            fold_agent_event(run.agent, event)
            self.dirty[run.run_id] = None

    def _created(self, event: RunCreated) -> None:
        self.submitting.pop(event.run_id, None)  # what its submit decided comes with it
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
        run.cancel = self.cancel_early.pop(run.run_id, None)
        self.runs[run.run_id] = run
        if run.deadline_ms:
            heapq.heappush(self.deadlines, (run.deadline_ms, run.run_id))
        for task_id in ready_tasks(run):
            self.ready.add((run.run_id, task_id), run.tasks[task_id].spec.resources)
        self.placement_due = True
        self.dirty[run.run_id] = None

    def _finished(self, event: RunFinished) -> None:
        run_id = event.run_id
        ended = self.runs.pop(run_id, None)
        self.cancel_early.pop(run_id, None)
        self.done_runs[run_id] = event.state
        if len(self.done_runs) > DONE_RUNS_KEPT:
            self.done_runs.popitem(last=False)
        self.intake.drop(run_id)
        self.refused.pop(run_id, None)
        self.broken.pop(run_id, None)
        self.dirty.pop(run_id, None)  # nothing left to decide (and replay keeps no ended run here)
        if ended is not None:
            finish(ended, event)
            for task_id, task in ended.tasks.items():  # O(run), once per run
                self.ready.discard((run_id, task_id))
                self.placer.avoid.pop((run_id, task_id), None)
                if task.attempt:
                    key = (run_id, task_id, task.attempt)
                    self.delivery.settled(key)
                    if task.state == "queued":
                        # never started: nothing of it will report, so nothing else frees it
                        self.placer.release(key)

    def _placed(self, event: AttemptPlaced) -> None:
        key = (event.run_id, event.task_id, event.attempt)
        run = self.runs.get(event.run_id)
        if run is None:
            self.placer.forget_intent(key)
            return
        task = run.tasks.get(event.task_id)
        if task is None:  # placed with an append the run refused where it landed (place_appended)
            self.placer.forget_intent(key)
            return
        before = task.attempt
        self._attempt(event)
        if task.attempt == event.attempt > before:  # the placement took effect
            if task.waiting:  # a follower: it holds nothing, and waits, until its upstream succeeds
                self.placer.reserve(key, event.node_id, event.session, NOTHING, event.gpus, event.epoch)
                return
            self.placer.reserve(
                key, event.node_id, event.session, task.spec.resources, event.gpus, event.epoch
            )
            self.delivery.placed(key, event.at_ms)
        else:
            self.placer.forget_intent(key)  # a placement the log had already overtaken

    def placed_on(self, run_id: str, task_id: str, attempt: int) -> str | None:
        """The node attempt `attempt` of the task was placed on, while this core knows it (its
        reservation, or the task's current attempt); None once forgotten."""
        res = self.placer.reservations.get((run_id, task_id, attempt))
        if res is not None:
            return res.node_id
        run = self.runs.get(run_id)
        task = run.tasks.get(task_id) if run is not None else None
        return task.node_id if task is not None and task.attempt == attempt else None

    def _foreign(
        self, event: AttemptStarted | AttemptSucceeded | AttemptFailed | AttemptRejected | AttemptLost
    ) -> bool:
        """A worker's report on an attempt not placed on its node changes nothing at all: not the
        task (the task machine ignores it too), not the attempt's reservation or delivery."""
        return foreign(event, self.placed_on(event.run_id, event.task_id, event.attempt))

    def _started(self, event: AttemptStarted) -> None:
        if self.live and self.done_runs.get(event.run_id) in ENDED_BY_CONTROLLER:
            # a node started an attempt of a run that ended while it was placed there: the word
            # to kill it may not have reached the node (or came before the work): told again
            self.late_starts.setdefault(event.node_id, {})[event.run_id] = "the run has ended"
        if self._foreign(event):
            return
        self.delivery.settled((event.run_id, event.task_id, event.attempt))
        self._attempt(event)

    def _terminal(self, event: AttemptSucceeded | AttemptFailed | AttemptRejected | AttemptLost) -> None:
        if self._foreign(event):
            return
        if isinstance(event, AttemptRejected) and self._started_before(event):
            return  # (the attempt goes on: its end, or its node's loss, ends it)
        key = (event.run_id, event.task_id, event.attempt)
        self.placer.release(key)
        self.delivery.settled(key)
        self.placement_due = True
        if isinstance(event, AttemptRejected):
            self.placer.note_reject(event.run_id, event.task_id, event.node_id, event.at_ms, event.reason)
        self._attempt(event)
        if type(event) is AttemptSucceeded:
            self._followers_in_force(event)

    def _followers_in_force(self, event: AttemptSucceeded) -> None:
        """A task succeeded: a follower of it (queued, waiting for nothing now, holding nothing)
        takes its own resources in the slot the task left, and is watched until it starts."""
        run = self.runs.get(event.run_id)
        task = run.tasks.get(event.task_id) if run is not None else None
        if run is None or task is None or task.state != "succeeded" or len(task.downstream) != 1:
            return
        down = run.tasks[task.downstream[0]]
        if down.state == "retry_wait" and not down.waiting:  # it failed as a follower (unsendable)
            self.retries.schedule((run.run_id, down.spec.task_id), down.retry_at_ms, down.next_attempt)
            return
        key = (event.run_id, down.spec.task_id, down.attempt)
        res = self.placer.reservations.get(key)
        if down.state != "queued" or down.waiting or res is None or res.resources != NOTHING:
            return
        self.placer.release(key)
        self.placer.reserve(key, res.node_id, res.session, down.spec.resources, res.gpus, res.epoch)
        self.delivery.placed(key, event.at_ms)

    def _started_before(self, event: AttemptRejected) -> bool:
        """A rejection of an attempt whose start (or end) the log took first changes nothing: a node
        that ran a deposed leader's placement of the same number reported it (maze/workers/worker.py
        `_superseded`; the same task, on the inputs that leader gave it), and rejected the log's
        own after."""
        run = self.runs.get(event.run_id)
        task = run.tasks.get(event.task_id) if run is not None else None
        return task is not None and task.attempt == event.attempt and task.state != "queued"

    def _attempt(self, event: AttemptEvent) -> None:
        run_id = event.run_id
        run = self.runs.get(run_id)
        if run is None:
            return
        for ready_id in apply_attempt_event(run, event):
            self.ready.add((run_id, ready_id), run.tasks[ready_id].spec.resources)
            self.placement_due = True
        task = run.tasks.get(event.task_id)
        if task is None:
            return
        if task.state not in PLACEABLE:
            self.ready.discard((run_id, event.task_id))
        if isinstance(event, RetryScheduled) and task.state == "retry_wait":
            self.retries.schedule((run_id, event.task_id), task.retry_at_ms, task.next_attempt)
        self.dirty[run_id] = None

    # ---- deciding -----------------------------------------------------------------------------
    def went_live(self, now: int) -> None:
        """After replaying history: look at every run, orphan and delivery once before the first
        pass (work for attempts placed and never started may never have been sent)."""
        for run_id in self.runs:
            self.dirty[run_id] = None
            # a snapshot may have been taken while a pass had taken tasks out of the queues
            self._requeue(run_id)
        for run_id in [*self.refused, *self.broken]:
            self.dirty[run_id] = None
        self.live = True
        self.intake.rearm()
        self.delivery.all_due_now(now)
        self.placement_due = True

    def decide(self, now: int, holds: Holds | None = None) -> Decision:
        """What to record and send now. Besides the overlay of decisions in flight it changes only
        indexes it can rebuild (`_requeue`): the ready queues, the retry heap, the expiry heap.
        `holds(node, session, attempt)`: whether that node session reports holding the attempt."""
        decision = Decision(events=[], work=defaultdict(list), code={}, resend=defaultdict(list))
        events = decision.events
        events += self._orphaned(now) + self._expired(now)
        while self.deadlines and self.deadlines[0][0] <= now:  # run-level timeouts due
            _, run_id = heapq.heappop(self.deadlines)
            if run_id in self.runs:
                self.dirty[run_id] = None
        if self.late_starts:
            late, self.late_starts = self.late_starts, {}
            decision.cancels = {
                node: [CancelRun(run_id=r, reason=why) for r, why in runs.items()]
                for node, runs in late.items()
            }
        for event in events:
            self.inflight.record(event)
        while self.dirty:
            dirty, self.dirty = self.dirty, {}
            for run_id in dirty:
                try:
                    decided = self._decide_run(run_id, now)
                except Exception as exc:
                    self.break_run(
                        run_id, f"the run controller failed deciding this run: {exc!r}", decided=True
                    )
                    continue
                for event in decided:
                    self.inflight.record(event)
                events += decided
        for key in self.retries.pop_due(now, self._still_waiting):
            self.ready.add(key, self.runs[key[0]].tasks[key[1]].spec.resources)
            self.placement_due = True
        if self.placement_due and len(self.ready):
            self.placement_due = False
            self.ready.place(lambda key, shape: self._try_place_safely(key, shape, now, decision))
        self._resend(now, decision, holds)
        if self.drop_held:
            cancels = dict(decision.cancels)
            for node, runs in self.drop_held.items():
                told = [CancelRun(run_id=r, reason=why, held_only=True) for r, why in runs.items()]
                cancels[node] = [*cancels.get(node, []), *told]
            decision.cancels, self.drop_held = cancels, {}
        decision.work = dict(decision.work)
        decision.resend = dict(decision.resend)
        if self.blobs_due:
            decision.blobs, self.blobs_due = self.blobs_due, {}
        return decision

    def place_new_run(self, created: RunCreated, now: int) -> Decision | None:
        """Placements for a run that is about to be recorded, to travel in the same message as its
        `run.created` (one write and no controller round trip before its first tasks start).

        The same decision the first pass after folding `run.created` would make, made before:
        the message folds to the state it would have reached (the run, then its placements),
        whatever else lands in the log before it. Only for a run recorded in one message and only
        while nothing else waits to be placed (tasks already waiting go first). None when there
        is nothing to place now; what it does not place waits for the ordinary passes."""
        run_id = created.run_id
        if created.chunks > 1 or len(self.ready) or self._known(run_id) or run_id in self.submitting:
            return None  # one decision per run in flight: a second submit of it waits for the log
        run = new_run(created)
        decision = Decision(events=[], work=defaultdict(list), code={}, resend={})
        for task_id in ready_tasks(run):
            task = run.tasks[task_id]
            if isinstance(self._place(run, task, task.spec.resources, now, decision), str):
                break  # the first that must wait: the rest wait with it, in order
        if not decision.events:
            return None
        decision.work = dict(decision.work)
        self.submitting[run_id] = None  # until its message is folded, or the decision forgotten
        return decision

    def place_appended(self, run_id: str, specs: list[TaskSpec], now: int) -> Decision | None:
        """Placements for tasks about to be appended to a dynamic run, to travel in the message of
        their `task.appended` (as `place_new_run` does for `run.created`): the same decision the
        first pass after folding the append would make, made before. Only the appended tasks whose
        upstream tasks have all succeeded (a succeeded task stays so whatever lands in the log
        before the append), only while nothing else waits to be placed, one append per run in
        flight. None when there is nothing to place now; the rest wait for the ordinary passes.
        Were the append refused where it lands (the run ended first), its placements name tasks
        the run never took and change nothing (`_placed`)."""
        run = self.runs.get(run_id)
        if run is None or run.agent is not None or run.cancel is not None or run.finalize is not None:
            return None  # a ReAct run's controller appends itself; an ending run takes nothing
        if run.finished or len(self.ready) or run_id in self.submitting or appendable(run, specs) is not None:
            return None
        if (
            run_id in self.inflight.runs  # its end is decided, not folded yet
            or run_id in self.broken
            or run_id in self.inflight.broken
            or (run.deadline_ms and now >= run.deadline_ms)
        ):
            return None
        decision = Decision(events=[], work=defaultdict(list), code={}, resend={})
        for spec in specs:
            ups = spec.upstream()
            if any(up not in run.tasks or run.tasks[up].state != "succeeded" for up in ups):
                continue  # waits for an upstream task (appended now, or not done yet)
            if isinstance(self._place(run, TaskRuntime(spec=spec), spec.resources, now, decision), str):
                break  # the first that must wait: the rest wait with it, in order
        if not decision.events:
            return None
        decision.work = dict(decision.work)
        self.submitting[run_id] = None  # until its message is folded, or the decision forgotten
        return decision

    def forget(self, decision: Decision) -> None:
        """The decision's events are not in the log (the caller has folded far enough to know):
        decide again on the next pass. A decision that did reach the log was settled when folded,
        and forgetting it changes nothing."""
        self.inflight.forget(decision.events)
        runs: dict[str, None] = {}
        for event in decision.events:
            if isinstance(event, AttemptPlaced):
                self.placer.forget_intent((event.run_id, event.task_id, event.attempt))
            run_id = getattr(event, "run_id", None)
            if run_id is not None:
                runs[run_id] = None
            if isinstance(event, RunFinished):
                self.intake.expire_again(event.run_id, event.at_ms)
        for run_id in runs:  # O(run) once per run, not once per forgotten event
            self.submitting.pop(run_id, None)
            self.dirty[run_id] = None
            self._requeue(run_id)

    def _requeue(self, run_id: str) -> None:
        """Put back what a pass took out of the queues of this run (what decide changed besides
        the overlay: tasks dropped from the ready queues, backoffs popped from the heap): O(run),
        on a failed publish or a start only."""
        run = self.runs.get(run_id)
        if run is None:
            return
        for task_id, task in run.tasks.items():
            key = (run_id, task_id)
            if key in self.inflight.tasks or task_id in run.undecided:
                continue
            if task.state == "pending" and not task.waiting:
                self.ready.add(key, task.spec.resources)
                self.placement_due = True
            elif task.state == "retry_wait" and not task.waiting:
                self.retries.schedule(key, task.retry_at_ms, task.next_attempt)

    def _orphaned(self, now: int) -> list[Event]:
        """Attempts whose node session went away: each is given up on, once (what that means for
        the task depends on where the decision lands in the log: task_machine, AttemptLost)."""
        lost: list[Event] = []
        for key in self.placer.orphans:
            if key in self.inflight.lost:
                continue
            res = self.placer.reservations[key]
            lost.append(
                AttemptLost(
                    run_id=key[0],
                    task_id=key[1],
                    attempt=key[2],
                    node_id=res.node_id,
                    session=res.session,
                    at_ms=now,
                    reason=self._why_gone(res.node_id),
                )
            )
        return lost

    def _why_gone(self, node_id: str) -> str:
        node = self.placer.nodes.get(node_id)
        if node is None:
            return "unknown node"
        return "a new session of the node joined" if node.alive else "the node left or was lost"

    def _expired(self, now: int) -> list[Event]:
        return [
            RunFinished(run_id=partial.created.run_id, at_ms=now, state="failed", error=error)
            for partial, error in self.intake.expired(now)
            if partial.created.run_id not in self.inflight.runs
        ]

    def _decide_run(self, run_id: str, now: int) -> list[Event]:
        if run_id in self.inflight.runs:
            return []
        ended = self.refused.get(run_id) or self.broken.get(run_id) or self.inflight.broken.get(run_id)
        if ended is not None and (
            run_id in self.done_runs
            or not (run_id in self.runs or run_id in self.intake or run_id in self.refused)
        ):
            # ended already, or never seen created (a stray event of a run that ended before the
            # remembered ones): nothing to end, and never a second end
            self.broken.pop(run_id, None)
            self.inflight.broken.pop(run_id, None)
            return []
        if ended is not None:
            run = self.runs.get(run_id)
            lost = self._followers_not_in_force(run, now) if run is not None else []
            return [*lost, RunFinished(run_id=run_id, at_ms=now, state="failed", error=ended)]
        run = self.runs.get(run_id)
        if run is None or run.finished:
            return []
        if run.remaining == 0 and not run.dynamic:  # every task succeeded before the cancel or
            return [RunFinished(run_id=run_id, at_ms=now, state="succeeded")]  # the deadline: it did
        if run.finalize is not None:
            return self._end_run(run, "succeeded", None, now, run.finalize)
        if run.cancel is not None:
            why = f"cancelled: {run.cancel}" if run.cancel else "cancelled"
            return self._end_run(run, "cancelled", TaskError("cancelled", why, origin="controller"), now)
        if run.deadline_ms and now >= run.deadline_ms:
            why = f"the run exceeded its timeout of {run.timeout_s:g}s"
            return self._end_run(run, "timed_out", TaskError("timeout", why, origin="controller"), now)
        out: list[Event] = []
        for task_id in run.undecided:
            if (run_id, task_id) in self.inflight.decided or (run_id, task_id) in self.inflight.tasks:
                continue
            task = run.tasks[task_id]
            if task.state in PLACEABLE and task.requeues > 1:
                out.append(self._after_requeues(run_id, task, now))
                continue
            if task.error is None:
                continue
            delay = next_attempt_delay_ms(task.spec.retry, task.error, task.failures)
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
            if run.dynamic:  # its client sees the failure (wait_for_task) and decides what next
                continue
            return [
                *self._followers_not_in_force(run, now),  # never run: shown not run, as pending tasks
                RunFinished(
                    run_id=run_id, at_ms=now, state="failed", error=task.error, failed_task_id=task_id
                ),
            ]
        if run.remaining == 0 and not run.dynamic:
            out.append(RunFinished(run_id=run_id, at_ms=now, state="succeeded"))
        if run.agent is not None and run_id not in self.inflight.agents:
            step = drive(run, run.agent, now)
            closing: list[Event] = []
            if step is not None and step.end is not None:
                end = step.end
                closing = self._end_run(run, end.state, end.error, now, end.result)
                if not closing:  # waits for a decision in flight: the whole step is decided again
                    return out
                if end.failed_task_id:
                    closing[-1] = msgspec.structs.replace(closing[-1], failed_task_id=end.failed_task_id)
            if step is not None:
                out += step.events + closing
                self.blobs_due.update(step.blobs)
        return out

    def _end_run(
        self, run: RunRuntime, state: str, error: TaskError | None, now: int, result: bytes | None = None
    ) -> list[Event]:
        """A run ended by the controller (cancelled, timed out) before its tasks finished: each of
        its queued or running attempts ends now (`cancelled`: no reservation outlives the run,
        and no report of a node can revive it), then the run, in one message. Waits while a
        decision about one of its tasks is in flight (it is decided again once that is folded).
        O(run), once per run."""
        run_id = run.run_id
        if run_id in self.submitting:  # an append's placements are in flight: end it once folded
            return []
        if any((run_id, task_id) in self.inflight.tasks for task_id in run.tasks):
            return []
        out: list[Event] = []
        why = error.message if error is not None else "finalized"
        for task_id, task in run.tasks.items():
            if task.state in ACTIVE:
                out.append(
                    AttemptFailed(
                        run_id=run_id,
                        task_id=task_id,
                        attempt=task.attempt,
                        at_ms=now,
                        node_id=task.node_id or "",
                        error=TaskError(
                            error_type="cancelled",
                            message=f"stopped: the run ended {state} ({why})",
                            retryable=False,
                            origin="controller",
                            node_id=task.node_id,
                            attempt=task.attempt,
                        ),
                    )
                )
        out.append(RunFinished(run_id=run_id, at_ms=now, state=state, error=error, result=result))
        return out

    def _after_requeues(self, run_id: str, task: TaskRuntime, now: int) -> Event:
        """A task whose placements keep coming back unstarted (rejected, or lost before the
        start): back off before the next one, and after MAX_REQUEUES give up with
        `resource_unavailable` (a failure: its run fails unless retries allow otherwise)."""
        task_id = task.spec.task_id
        if task.requeues > MAX_REQUEUES:
            return AttemptFailed(
                run_id=run_id,
                task_id=task_id,
                attempt=task.attempt + 1,
                at_ms=now,
                error=TaskError(
                    error_type="resource_unavailable",
                    message=f"placed {task.requeues} times in a row and never started; the last: "
                    f"{task.requeue_reason}",
                    # another try later may find room: retried when retry_on names it
                    retryable=True,
                    origin="controller",
                    attempt=task.attempt + 1,
                ),
            )
        return RetryScheduled(
            run_id=run_id,
            task_id=task_id,
            next_attempt=task.attempt + 1,
            at_ms=now,
            delay_ms=requeue_delay_ms(task.requeues),
            reason=f"requeued: {task.requeue_reason}",
        )

    def _still_waiting(self, key: TaskKey, attempt: int) -> bool:
        run = self.runs.get(key[0])
        if run is None:
            return False
        task = run.tasks[key[1]]
        # (a follower failed before its upstream succeeded waits for that too: never placed early)
        return task.state == "retry_wait" and task.next_attempt == attempt and not task.waiting

    def _try_place_safely(self, key: TaskKey, req: Resources, now: int, decision: Decision) -> str | None:
        try:
            return self._try_place(key, req, now, decision)
        except Exception as exc:
            self.break_run(
                key[0], f"the run controller failed placing task {key[1]!r}: {exc!r}", decided=True
            )
            return SKIPPED

    def _try_place(self, key: TaskKey, req: Resources, now: int, decision: Decision) -> str | None:
        run_id, task_id = key
        run = self.runs.get(run_id)
        if (
            run is None
            or run.finished
            or run.cancel is not None
            or run.finalize is not None
            or (run.deadline_ms and now >= run.deadline_ms)
            or run_id in self.broken
            or run_id in self.inflight.broken
            or run_id in self.inflight.runs
        ):
            return SKIPPED  # nothing of a run that ends now starts
        task = run.tasks[task_id]
        if task.state not in PLACEABLE or key in self.inflight.tasks:
            return SKIPPED
        return self._place(run, task, req, now, decision)

    def _place(
        self, run: RunRuntime, task: TaskRuntime, req: Resources, now: int, decision: Decision
    ) -> str | None:
        """Place one placeable task now if a node can take it (its AttemptPlaced and work join the
        decision; the overlay holds them until the placement comes back from the log), else the
        reason it waits."""
        run_id, task_id = run.run_id, task.spec.task_id
        choice = self.placer.choose(run_id, req, task_id)
        if not isinstance(choice, Placement):
            return choice
        attempt = task.attempt + 1
        spec = task.spec
        inputs = resolve_inputs(run, spec)
        if isinstance(inputs, TaskError):
            # Decided on the pass after it is folded, with the failures of that run.
            failed = AttemptFailed(run_id=run_id, task_id=task_id, attempt=attempt, at_ms=now, error=inputs)
            decision.events.append(failed)
            self.inflight.record(failed)
            return SKIPPED
        placed = self._record_placement(
            run, spec, attempt, choice, req, choice.reason, now, decision, choice.gpus
        )
        files = file_view(run, task) if run.workspace else []
        decision.work[choice.node_id].append(
            work_item(spec, placed, encode_value(inputs), run.workspace, files)
        )
        self._place_followers(run, task, placed, choice, decision)
        return None

    def _record_placement(
        self,
        run: RunRuntime,
        spec: TaskSpec,
        attempt: int,
        choice: Placement,
        req: Resources,
        reason: str,
        now: int,
        decision: Decision,
        gpus: list[int] | None = None,
    ) -> AttemptPlaced:
        """An attempt placed on `choice`'s node: its event joins the decision, `req` is reserved
        there and the placement is in flight until folded; the run's inline code (an older run's)
        goes with the decision."""
        placed = AttemptPlaced(
            run_id=run.run_id,
            task_id=spec.task_id,
            attempt=attempt,
            node_id=choice.node_id,
            at_ms=now,
            gpus=gpus or [],
            reason=reason,
            session=choice.session,
            epoch=self.epoch,  # (stamped so when published: its work names the same leadership)
        )
        self.placer.intend((run.run_id, spec.task_id, attempt), choice, req)
        self.inflight.record(placed)
        decision.events.append(placed)
        code = run.functions.get(spec.func_hash)
        if code is not None:
            decision.code[spec.func_hash] = code
        return placed

    def _place_followers(
        self,
        run: RunRuntime,
        up: TaskRuntime,
        up_placed: AttemptPlaced,
        choice: Placement,
        decision: Decision,
    ) -> None:
        """The chain below a task just placed, placed with it on its node as followers
        (maze/head/followers.py), each stale follower of an earlier attempt recorded lost first."""
        run_id, now = run.run_id, up_placed.at_ms
        for _ in range(MAX_FOLLOWERS):
            down = follower_of(run, up)
            if down is None or (run_id, down.spec.task_id) in self.inflight.tasks:
                return
            task_id = down.spec.task_id
            inputs = follower_inputs(run, down.spec, up.spec.task_id)
            if isinstance(inputs, TaskError):
                return  # placed, and failed, once its upstream succeeded
            if stale(down) and (run_id, task_id, down.attempt) not in self.inflight.lost:
                why = f"it followed an attempt of {up.spec.task_id} that did not succeed"
                decision.events.append(self._follower_lost(run_id, down, why, now))
            why = f"follows {up.spec.task_id} (attempt {up_placed.attempt}) on its node, in its slot"
            placed = self._record_placement(
                run, down.spec, down.attempt + 1, choice, NOTHING, why, now, decision
            )
            item = work_item(down.spec, placed, encode_value(inputs[0]))
            node_work = decision.work[choice.node_id]  # the last: the work of the one it follows
            node_work[-1] = msgspec.structs.replace(node_work[-1], leads=True)
            node_work.append(
                msgspec.structs.replace(
                    item, after=up.spec.task_id, after_attempt=up_placed.attempt, after_inputs=inputs[1]
                )
            )
            up, up_placed = down, placed

    def _followers_not_in_force(self, run: RunRuntime, now: int) -> list[Event]:
        """Every follower of a run about to fail that still waits for its upstream, recorded lost
        (it never ran: the read models show it not run, as they show its pending tasks), its node
        told to drop it (`decision.cancels`, once stored). O(run), once, at the run's failed end."""
        out: list[Event] = []
        for task in run.tasks.values():
            if stale(task) and (run.run_id, task.spec.task_id, task.attempt) not in self.inflight.lost:
                out.append(self._follower_lost(run.run_id, task, "the run is ending", now))
                if task.node_id:
                    self.drop_held.setdefault(task.node_id, {})[run.run_id] = "the run failed"
        return out

    def _follower_lost(self, run_id: str, down: TaskRuntime, why: str, now: int) -> AttemptLost:
        lost = AttemptLost(
            run_id=run_id,
            task_id=down.spec.task_id,
            attempt=down.attempt,
            node_id=down.node_id or "",
            session=down.session,
            at_ms=now,
            reason=why,
        )
        self.inflight.record(lost)
        return lost

    def _resend(self, now: int, decision: Decision, holds: Holds | None) -> None:
        """Work for attempts placed and not started after their delivery bound, built from what the
        log says about them (never from the overlay). One its node says it holds (its heartbeat
        lists the attempts waiting there) is looked at again later, not sent."""
        for key in self.delivery.due(now):
            item = self.work_from_log(key)
            if item is None:
                self.delivery.sent(key, now)  # not deliverable now (its session is gone): look again
                continue
            node_id = self.placer.reservations[key].node_id
            if holds is not None and holds(node_id, item.session, key):
                self.delivery.sent(key, now)
                continue
            decision.resend[node_id].append(item)
            count = self.delivery.sent(key, now)
            log.info("work.resent", run_id=key[0], task_id=key[1], attempt=key[2], sends=count)
            code = self.runs[key[0]].functions.get(item.func_hash)
            if code is not None:
                decision.code[item.func_hash] = code

    def work_from_log(self, key: tuple[str, str, int]) -> WorkItem | None:
        """The work item of a placed attempt, from the folded state (None when it is no longer
        deliverable: its run or attempt moved on, or its node session is gone)."""
        run = self.runs.get(key[0])
        res = self.placer.reservations.get(key)
        if run is None or res is None or key in self.placer.orphans:
            return None
        task = run.tasks.get(key[1])
        if task is None or task.attempt != key[2] or task.state != "queued":
            return None
        inputs = resolve_inputs(run, task.spec)
        if isinstance(inputs, TaskError):
            return None
        placed = AttemptPlaced(
            run_id=key[0],
            task_id=key[1],
            attempt=key[2],
            node_id=res.node_id,
            at_ms=0,
            gpus=res.gpus,
            session=res.session,
            epoch=res.epoch,  # the stored placement's leadership (a node took it once already)
        )
        files = file_view(run, task) if run.workspace else []
        return work_item(task.spec, placed, encode_value(inputs), run.workspace, files)

    def fail_work(self, item: WorkItem, error: TaskError, now: int) -> AttemptFailed:
        """An attempt placed in this pass whose work cannot be sent (e.g. too large even with its
        values in the blob store): recorded failed right after its placement, in the same
        message, and decided on the pass after both are folded."""
        return AttemptFailed(
            run_id=item.run_id, task_id=item.task_id, attempt=item.attempt, at_ms=now, error=error
        )

    # ---- queries ------------------------------------------------------------------------------
    def pending_reason(self, run_id: str, task_id: str) -> str | None:
        return self.ready.reason((run_id, task_id))

    def next_wakeup(self) -> int | None:
        """When the earliest retry backoff, delivery check or run timeout is due (ms), if any."""
        while self.deadlines and self.deadlines[0][1] not in self.runs:  # ended before its timeout
            heapq.heappop(self.deadlines)
        deadline = self.deadlines[0][0] if self.deadlines else None
        due = [t for t in (self.retries.next_due(), self.delivery.next_due(), deadline) if t is not None]
        return min(due) if due else None


# Each event type's fold step: a lookup by type, so the hot path has no chain of isinstance checks.
FOLD: dict[type, Callable[[Scheduler, Any], None]] = {
    NodeJoined: Scheduler._node_joined,
    NodeLeft: Scheduler._node_left,
    NodeLost: Scheduler._node_left,
    RunCreated: Scheduler._created,
    TasksAdded: Scheduler._added,
    RunFinished: Scheduler._finished,
    AttemptPlaced: Scheduler._placed,
    AttemptStarted: Scheduler._started,
    AttemptSucceeded: Scheduler._terminal,
    AttemptFailed: Scheduler._terminal,
    AttemptRejected: Scheduler._terminal,
    AttemptLost: Scheduler._terminal,
    RetryScheduled: Scheduler._attempt,
    LeaderElected: Scheduler._elected,
    RunCancelRequested: Scheduler._cancel_requested,
    RunFinalizeRequested: Scheduler._finalize_requested,
    TaskAppended: Scheduler._appended,
    AgentDecided: Scheduler._agent_event,
    AgentToolCall: Scheduler._agent_event,
    AgentRepair: Scheduler._agent_event,
    AgentObserved: Scheduler._agent_event,
    AgentFinal: Scheduler._agent_event,
    AgentCompacted: Scheduler._agent_noted,
    ArtifactRegistered: Scheduler._artifact,
}


def work_item(
    spec: TaskSpec,
    placed: AttemptPlaced,
    inputs: bytes,
    workspace: str = "",
    files: list[FileEntry] | None = None,
) -> WorkItem:
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
        epoch=placed.epoch,
        gathers=gather.templates(spec.inputs),
        workspace=workspace,
        files=files or [],
        artifacts=spec.artifacts,
    )
