"""The run controller: folds every run and node event into state, decides what is ready, places
it, and records each decision as an event before acting on it.

It rebuilds its whole state from the streams when it starts (or after any error) and only begins
deciding once it has caught up, so a head restart neither loses nor duplicates work.

This is the asyncio/NATS shell around the pure core (`maze/head/scheduler.py`): it feeds the core
events from the streams, asks it for a decision after each batch, records the decided events and
sends the work (`maze/head/dispatch.py`). It still folds its own decisions before they come back
from the stream (they are idempotent to fold twice).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from maze.core.clock import now_ms
from maze.core.settings import Settings
from maze.events import headers, subjects
from maze.events.blobs import BlobStore
from maze.events.catalog import Event
from maze.events.codec import decode_events
from maze.events.fit import make_fit
from maze.events.nodes import NodeJoined, NodeLost
from maze.events.specs import TaskError
from maze.events.store import EventStore, payload_budget, publish_durably, subscribe_ordered
from maze.head.dispatch import (
    CodeUploader,
    batch_msg_id,
    batch_payload,
    encode_item,
    fit_item,
    item_limit,
    pack_batches,
)
from maze.head.liveness import Liveness
from maze.head.placer import Placer
from maze.head.run_state import RunRuntime
from maze.head.scheduler import Decision, Scheduler

log = structlog.get_logger(__name__)

_TICK = object()
YIELD_AFTER_S = 0.01
WorkMessage = tuple[str, bytes, str]  # node id, WorkBatch payload, message id


class RunController:
    def __init__(
        self, nc: NATS, store: EventStore, settings: Settings, blobs: BlobStore | None = None
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.store = store
        self.settings = settings
        self.blobs = blobs or BlobStore(nc, settings.limits.blob_max_bytes)
        self.code = CodeUploader(self.blobs)  # what is stored stays stored across rebuilds
        self.budget = payload_budget(nc)
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.core = Scheduler(self.settings.node_queue_factor, int(self.settings.submission_grace_s * 1000))
        self.positions: dict[str, int] = {subjects.RUNS_STREAM: 0, subjects.NODES_STREAM: 0}
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.live = False
        self.caught_up.clear()
        self.liveness = Liveness(self.settings.liveness_timeout)
        self._wakeup_at: int | None = None

    # the folded state, as the API, the head process and the golden test read it
    @property
    def runs(self) -> dict[str, RunRuntime]:
        return self.core.runs

    @property
    def done_runs(self) -> set[str]:
        return self.core.done_runs

    @property
    def placer(self) -> Placer:
        return self.core.placer

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
                began = time.monotonic()
                for entry in batch:
                    if entry is not _TICK:
                        self._apply_msg(entry)
                    if time.monotonic() - began > YIELD_AFTER_S:
                        # a burst (a wide run's chunks, a replay) must not hold the event loop
                        # that the API and the local worker share
                        await asyncio.sleep(0)
                        began = time.monotonic()
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
        # also bounds how late an incomplete submission is noticed
        while True:
            await asyncio.sleep(min(1.0, self.settings.liveness_timeout / 4))
            self.queue.put_nowait(_TICK)

    def _check_caught_up(self, targets: dict[str, int]) -> None:
        if all(self.positions[s] >= t for s, t in targets.items()):
            self.live = True
            self.liveness.went_live()
            self.core.went_live()
            self.caught_up.set()
            log.info(
                "controller.caught_up",
                active_runs=len(self.core.runs),
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
        self.core.apply(event)
        if isinstance(event, NodeJoined):
            self.liveness.joined(event.node_id)

    # ---- deciding -----------------------------------------------------------------------------
    async def _decide(self) -> None:
        now = now_ms()
        lost_nodes = self.liveness.stale(self.placer.alive_nodes(), now)
        if lost_nodes:
            for lost in lost_nodes:
                self.apply(lost)
            # recorded before the attempts they orphan, so history reads in cause order
            await self._publish_node_events(lost_nodes)
        decision = self.core.decide(now)
        messages = await self._prepare_work(decision, now) if decision.work else []
        if decision.events:
            # an error text of the controller's own (an upstream's 100,000 output keys, say) must
            # not make an event too large to store: that would fail every pass, for ever
            await self.store.publish_runs(make_fit(decision.events, self.budget))
        if messages:
            await asyncio.gather(
                *(
                    publish_durably(
                        self.store.js, subjects.work_subject(node), data, {headers.MSG_ID: msg_id}
                    )
                    for node, data, msg_id in messages
                )
            )
        self._arm_wakeup(now)

    async def _prepare_work(self, decision: Decision, now: int) -> list[WorkMessage]:
        """Each node's work as messages within the byte budget. An attempt whose work cannot be
        sent is recorded failed (its event joins `decision.events`) instead."""
        code_failed = await self.code.ensure(decision.code) if decision.code else {}
        limit = item_limit(self.budget)
        messages: list[WorkMessage] = []
        for node_id, items in decision.work.items():
            kept, encoded = [], []
            for item in items:
                error: TaskError | None = code_failed.get(item.func_hash)
                data = b""
                if error is None:
                    data = encode_item(item)
                    if len(data) > limit:
                        fitted = await fit_item(item, data, limit, self.blobs)
                        if isinstance(fitted, TaskError):
                            error = fitted
                        else:
                            item, data = fitted
                if error is not None:
                    log.warning(
                        "work.not_sent", run_id=item.run_id, task_id=item.task_id, error=error.message
                    )
                    decision.events.append(self.core.fail_work(item, error, now))
                    continue
                kept.append(item)
                encoded.append(data)
            for part in pack_batches([len(e) for e in encoded], self.budget):
                batch = [encoded[i] for i in part]
                messages.append((node_id, batch_payload(batch), batch_msg_id([kept[i] for i in part])))
        return messages

    def _arm_wakeup(self, now: int) -> None:
        """Wake the loop when the earliest retry backoff ends (the tick bounds it to a second)."""
        due = self.core.next_wakeup()
        if due is None or due <= now:
            return
        if self._wakeup_at is not None and now < self._wakeup_at <= due:
            return  # an earlier wake-up is armed already
        self._wakeup_at = due
        asyncio.get_running_loop().call_later((due - now) / 1000, self.queue.put_nowait, _TICK)

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

    # ---- queries (for the API) ----------------------------------------------------------------
    def pending_reason(self, run_id: str, task_id: str) -> str | None:
        return self.core.pending_reason(run_id, task_id)
