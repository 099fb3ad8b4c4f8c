"""The run controller: folds every run and node event into state, decides what is ready, places
it, and records each decision as an event before acting on it.

It rebuilds its whole state from the streams when it starts (or after any error) and only begins
deciding once it has caught up, so a head restart neither loses nor duplicates work.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from maze.core.clock import now_ms
from maze.core.settings import Settings
from maze.events import subjects
from maze.events.catalog import ATTEMPT_TERMINAL, Event
from maze.events.codec import decode_events, encode_value
from maze.events.nodes import NodeJoined, NodeLeft, NodeLost
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import Resources, TaskError
from maze.events.store import EventStore, subscribe_ordered
from maze.events.tasks import AttemptFailed, AttemptPlaced, AttemptRejected, RetryScheduled
from maze.events.work import WorkBatch, WorkItem
from maze.head.liveness import Liveness
from maze.head.placer import Placement, Placer
from maze.head.retry import next_attempt_delay_ms
from maze.head.run_state import (
    RunRuntime,
    apply_attempt_event,
    finish,
    new_run,
    ready_tasks,
    resolve_inputs,
)

log = structlog.get_logger(__name__)

_TICK = object()
TaskKey = tuple[str, str]


class RunController:
    def __init__(self, nc: NATS, store: EventStore, settings: Settings) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.store = store
        self.settings = settings
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.runs: dict[str, RunRuntime] = {}
        self.done_runs: set[str] = set()
        self.placer = Placer(self.settings.node_queue_factor)
        self.ready: dict[TaskKey, None] = {}
        self.retry_due: dict[TaskKey, int] = {}  # task waiting out a retry backoff -> when (ms)
        self.placement_due = True  # new ready tasks or freed capacity since the last pass
        self.pending_reasons: dict[TaskKey, str] = {}
        self.dirty: set[str] = set()
        self.positions: dict[str, int] = {subjects.RUNS_STREAM: 0, subjects.NODES_STREAM: 0}
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.live = False
        self.caught_up.clear()
        self.liveness = Liveness(self.settings.liveness_timeout)

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="run-controller")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run_forever(self) -> None:
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controller.crashed_rebuilding")
                await asyncio.sleep(0.5)

    async def _run_once(self) -> None:
        self._reset()
        targets = {}
        for stream in self.positions:
            info = await self.js.stream_info(stream)
            targets[stream] = info.state.last_seq
        subs = []
        helpers: list[asyncio.Task[None]] = []
        queue = self.queue

        async def enqueue(msg: Msg) -> None:
            queue.put_nowait(msg)

        try:
            for subject in (subjects.RUN_SUBJECTS, subjects.NODE_SUBJECTS):
                subs.append(await subscribe_ordered(self.js, subject, 1, cb=enqueue))
            self._check_caught_up(targets)
            if self.live:
                await self._decide()
            helpers += [
                asyncio.create_task(self.liveness.watch(self.js), name="heartbeat-watch"),
                asyncio.create_task(self._tick_forever(), name="liveness-tick"),
            ]
            while True:
                item = await queue.get()
                batch = [item]
                while not queue.empty() and len(batch) < 10_000:
                    batch.append(queue.get_nowait())
                for entry in batch:
                    if entry is not _TICK:
                        self._apply_msg(entry)
                if not self.live:
                    self._check_caught_up(targets)
                if self.live:
                    await self._decide()
        finally:
            for task in helpers:
                task.cancel()
            for sub in subs:
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.settings.liveness_timeout / 4))
            self.queue.put_nowait(_TICK)

    def _check_caught_up(self, targets: dict[str, int]) -> None:
        if all(self.positions[s] >= t for s, t in targets.items()):
            self.live = True
            self.liveness.went_live()
            self.caught_up.set()
            for run in self.runs.values():
                self.dirty.add(run.run_id)
            log.info(
                "controller.caught_up",
                active_runs=len(self.runs),
                nodes=len(self.placer.nodes),
                positions=self.positions,
            )

    # ---- folding ------------------------------------------------------------------------------
    def _apply_msg(self, msg: Msg) -> None:
        meta = msg.metadata
        self.positions[meta.stream] = max(self.positions.get(meta.stream, 0), meta.sequence.stream)
        for event in decode_events(msg.data):
            self.apply(event)

    def apply(self, event: Event) -> None:
        """Fold one event. Idempotent, so the controller's own events may come back safely."""
        if isinstance(event, NodeJoined):
            self.placer.node_joined(event)
            self.liveness.joined(event.node_id)
            self.placement_due = True
            return
        if isinstance(event, NodeLeft | NodeLost):
            self.placer.node_left(event.node_id, event.session)
            return
        if isinstance(event, RunCreated):
            if event.run_id not in self.runs and event.run_id not in self.done_runs:
                created = new_run(event)
                self.runs[created.run_id] = created
                for task_id in ready_tasks(created):
                    self.ready[(created.run_id, task_id)] = None
                self.placement_due = True
                self.dirty.add(created.run_id)
            return
        run_id: str = event.run_id
        if isinstance(event, AttemptPlaced):
            placed_run = self.runs.get(run_id)
            spec_res = placed_run.tasks[event.task_id].spec.resources if placed_run else None
            if spec_res is not None:
                self.placer.reserve(
                    (run_id, event.task_id, event.attempt),
                    event.node_id,
                    event.session,
                    spec_res,
                    event.gpus,
                )
            self.ready.pop((run_id, event.task_id), None)
            self.pending_reasons.pop((run_id, event.task_id), None)
        elif isinstance(event, ATTEMPT_TERMINAL):
            self.placer.release((run_id, event.task_id, event.attempt))
            self.placement_due = True
            if isinstance(event, AttemptRejected):
                self.placer.note_reject(run_id, event.task_id, event.node_id, event.at_ms, event.reason)
        if isinstance(event, RunFinished):
            ended = self.runs.pop(run_id, None)
            self.done_runs.add(run_id)
            if ended is not None:
                finish(ended, event)
                for task_id in ended.tasks:
                    self.ready.pop((run_id, task_id), None)
                    self.pending_reasons.pop((run_id, task_id), None)
            return
        run = self.runs.get(run_id)
        if run is None:
            return
        for task_id in apply_attempt_event(run, event):
            self.ready[(run_id, task_id)] = None
            self.placement_due = True
        if isinstance(event, RetryScheduled):
            task = run.tasks[event.task_id]
            if task.state == "retry_wait":
                self.retry_due[(run_id, event.task_id)] = task.retry_at_ms
                if self.live and event.delay_ms > 0:
                    asyncio.get_running_loop().call_later(event.delay_ms / 1000, self.queue.put_nowait, _TICK)
        self.dirty.add(run_id)

    # ---- deciding -----------------------------------------------------------------------------
    async def _decide(self) -> None:
        events: list[Event] = []
        now = now_ms()
        lost_nodes = self.liveness.stale(self.placer.alive_nodes(), now)
        if lost_nodes:
            for lost in lost_nodes:
                self.apply(lost)
            # recorded before the attempts they orphan, so history reads in cause order
            await self._publish_node_events(lost_nodes)
        events += self._reconcile_lost_nodes(now)
        for event in events:
            self.apply(event)
        for key, due_ms in list(self.retry_due.items()):
            if due_ms <= now:  # backoff over (the liveness tick bounds the lateness to a second)
                del self.retry_due[key]
                if key[0] in self.runs:
                    self.ready[key] = None
                    self.placement_due = True
        decided: list[Event] = []
        for run_id in list(self.dirty):
            run = self.runs.get(run_id)
            if run is not None:
                decided += self._decide_run(run, now)
        self.dirty.clear()
        for event in decided:
            self.apply(event)
        events += decided
        placed, work = self._place(now)
        events += placed
        if events:
            await self.store.publish_runs(events)
        if work:
            await self._publish_work(work)

    def _reconcile_lost_nodes(self, now: int) -> list[Event]:
        lost: list[Event] = []
        for (run_id, task_id, attempt), res in self.placer.orphaned():
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

    def _decide_run(self, run: RunRuntime, now: int) -> list[Event]:
        if run.finished:
            return []
        out: list[Event] = []
        for task in run.tasks.values():
            if not task.undecided_failure or task.error is None:
                continue
            delay = next_attempt_delay_ms(task.spec.retry, task.error, task.attempt)
            if delay is not None:
                out.append(
                    RetryScheduled(
                        run_id=run.run_id,
                        task_id=task.spec.task_id,
                        next_attempt=task.attempt + 1,
                        at_ms=now,
                        delay_ms=delay,
                        reason=task.error.error_type,
                    )
                )
                continue
            return [
                RunFinished(
                    run_id=run.run_id,
                    at_ms=now,
                    state="failed",
                    error=task.error,
                    failed_task_id=task.spec.task_id,
                )
            ]
        if run.remaining == 0:
            out.append(RunFinished(run_id=run.run_id, at_ms=now, state="succeeded"))
        return out

    def _place(self, now: int) -> tuple[list[Event], dict[str, list[WorkItem]]]:
        events: list[Event] = []
        work: dict[str, list[WorkItem]] = defaultdict(list)
        if not self.placement_due:
            return events, work
        self.placement_due = False
        no_room: dict[Resources, str] = {}  # shapes that found no node in this pass
        for key in list(self.ready):
            run_id, task_id = key
            run = self.runs.get(run_id)
            if run is None or run.finished:
                self.ready.pop(key, None)
                continue
            task = run.tasks[task_id]
            if task.state not in ("pending", "retry_wait"):
                self.ready.pop(key, None)
                continue
            attempt = task.next_attempt if task.state == "retry_wait" else task.attempt + 1
            req = task.spec.resources
            if req in no_room:  # a task of this shape found no node already in this pass
                self.pending_reasons[key] = no_room[req]
                continue
            choice = self.placer.choose(run_id, req, task_id)
            if not isinstance(choice, Placement):
                self.pending_reasons[key] = no_room[req] = choice
                continue
            inputs = resolve_inputs(run, task.spec)
            if isinstance(inputs, TaskError):
                # Decided on the next pass, when this event comes back from the stream.
                failed = AttemptFailed(
                    run_id=run_id, task_id=task_id, attempt=attempt, at_ms=now, error=inputs
                )
                self.ready.pop(key, None)
                self.apply(failed)
                events.append(failed)
                continue
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
            events.append(placed)
            spec = task.spec
            work[choice.node_id].append(
                WorkItem(
                    run_id=run_id,
                    task_id=task_id,
                    attempt=attempt,
                    func_name=spec.func_name,
                    func_hash=spec.func_hash,
                    call_style=spec.call_style,
                    inputs=encode_value(inputs),
                    outputs=spec.outputs,
                    resources=spec.resources,
                    gpus=choice.gpus,
                    timeout_seconds=spec.timeout_seconds,
                    session=choice.session,
                )
            )
        return events, work

    async def _publish_node_events(self, events: list[NodeLost]) -> None:
        await self.store.publish_many([(subjects.node_subject(e.node_id), [e]) for e in events])

    async def reconcile_workers(self) -> dict[str, Any]:
        """Operator command: declare every node without a recent heartbeat lost now."""
        now = now_ms()
        lost = self.liveness.stale(self.placer.alive_nodes(), now, force_reason="reconciled")
        for event in lost:
            self.apply(event)
        if lost:
            await self._publish_node_events(lost)
        self.queue.put_nowait(_TICK)
        return {
            "lost_nodes": [e.node_id for e in lost],
            "alive_nodes": [n.node_id for n in self.placer.alive_nodes()],
        }

    async def _publish_work(self, work: dict[str, list[WorkItem]]) -> None:
        messages = []
        for node_id, items in work.items():
            for start in range(0, len(items), 256):
                chunk = items[start : start + 256]
                digest = hashlib.sha256(
                    "|".join(f"{i.run_id}/{i.task_id}/{i.attempt}" for i in chunk).encode()
                ).hexdigest()[:40]
                messages.append(self.store.publish_work(node_id, WorkBatch(items=chunk), f"work/{digest}"))
        await asyncio.gather(*messages)

    # ---- queries (for the API) ----------------------------------------------------------------
    def pending_reason(self, run_id: str, task_id: str) -> str | None:
        return self.pending_reasons.get((run_id, task_id))
