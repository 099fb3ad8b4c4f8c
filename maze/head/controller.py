"""The run controller: folds every run and node event into state, decides what is ready, places
it, and records each decision as an event before acting on it.

This is the asyncio/NATS shell around the pure core (`maze/head/scheduler.py`):
- it starts from the latest snapshot (maze/head/snapshot.py) and replays only the events after it,
  deciding once it has caught up with the streams;
- it feeds the core every stored event, in stream order, and asks it for a decision after each
  batch; it never applies a decision itself: decisions take effect when they come back from the log
  (DESIGN.md §6.6), so the core's state is always the fold of what is stored;
- it publishes the decided events, then the work of placements that were stored, and re-sends work
  the log says was placed and never started (maze/head/delivery.py);
- it declares nodes lost from the heartbeat bucket (recorded as `node.lost`, folded on return);
- it snapshots the folded state every `snapshot_interval_s` and when it stops.

An error in one run's events or decisions ends that run (`controller_error`); only an error outside
any run (the streams themselves) restarts the controller, from its latest snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from maze.core import hops
from maze.core.clock import now_ms
from maze.core.errors import Conflict
from maze.core.settings import Settings
from maze.core.tasks import cancel_and_wait
from maze.events import headers, subjects
from maze.events.blobs import BlobStore
from maze.events.catalog import Event, event_tag, stamp
from maze.events.codec import decode_leniently, decode_stats, with_fence, without_foreign
from maze.events.fit import make_fit
from maze.events.nodes import Heartbeat, NodeJoined, NodeLeft, NodeLost
from maze.events.runs import LeaderElected, RunCreated, RunFinished
from maze.events.specs import TaskError, TaskSpec
from maze.events.store import (
    EventStore,
    describe_error,
    is_transient,
    payload_budget,
    publish_durably,
    subscribe_ordered,
)
from maze.events.tasks import AttemptFailed, AttemptPlaced
from maze.events.work import CancelRun, WorkBatch, WorkItem
from maze.head import snapshot
from maze.head.dispatch import (
    CodeUploader,
    batch_msg_id,
    batch_payload,
    encode_item,
    fit_item,
    item_limit,
    pack_batches,
)
from maze.head.feeds import RunFeeds
from maze.head.lease import Lease
from maze.head.liveness import Liveness
from maze.head.metrics import HeadMetrics
from maze.head.placer import Placer
from maze.head.run_state import RunRuntime
from maze.head.scheduler import Decision, Scheduler

log = structlog.get_logger(__name__)
CANCELS_PER_MESSAGE = 200  # runs a node is told of in one message
CANCEL_REASON_CHARS = 200

_TICK = object()
SUBMIT_TURN_S = 30.0  # the longest a submit waits for another of the same run (submit_turn)
YIELD_AFTER_S = 0.01
STOP_WAIT_S = 10.0  # how long a stop waits for the controller's tasks to end (then logs them)
ENDED_SESSIONS_KEPT = 10_000
SNAPSHOT_COST_FACTOR = 100  # a snapshot waits at least 100x as long as the last one took to make
SNAPSHOT_MAX_BYTES = 1 << 40  # the blob store's per-value cap is for users' values, not this
WorkMessage = tuple[str, bytes, str]  # node id, WorkBatch payload, message id


class LocalNode(Protocol):
    """The worker that runs in this head's own process (maze/workers/worker.py), whose work is
    handed over in process instead of sent on its work subject."""

    node_id: str

    def take_work(self, items: list[WorkItem]) -> None: ...

    def take_cancels(self, cancels: list[CancelRun]) -> None: ...

    # a new run's first attempts, started while its message is stored (maze/api/early.py)
    def take_early(self, items: list[WorkItem], gate: asyncio.Future[bool]) -> set[tuple[str, str, int]]: ...

    async def early_quiet(self, gate: asyncio.Future[bool], timeout: float) -> None: ...

    def take_reports(
        self, gate: asyncio.Future[bool], room: int, size: Callable[[Event], int]
    ) -> tuple[list[Event], list[asyncio.Future[bool]]]: ...

    def settle_early(
        self,
        gate: asyncio.Future[bool],
        handed: set[tuple[str, str, int]],
        told: list[asyncio.Future[bool]],
        stored: bool,
    ) -> None: ...


STREAMS = (subjects.RUNS_STREAM, subjects.NODES_STREAM)


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
        self.snapshots = snapshot.SnapshotStore(self.js, BlobStore(nc, SNAPSHOT_MAX_BYTES))
        self.budget = payload_budget(nc)
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self._losing: set[tuple[str, str]] = set()  # node sessions declared lost, not yet folded
        self.feeds = RunFeeds()  # what it folds of the runs stream, for the API's live streams
        self.local_node: LocalNode | None = None  # the worker in this process (set by the head)
        self.metrics = HeadMetrics(self)  # kept across restarts: what it counted stays counted
        self._snapshot_lock = asyncio.Lock()
        # which head decides (maze/head/lease.py): kept across restarts of this controller's fold
        self.lease = Lease(
            self.js,
            settings.head_id,
            settings.lease_s,
            self._lease_changed,
            self._epoch_floor,
            ready=lambda: self.live,
        )
        self._lease_task: asyncio.Task[None] | None = None
        self._electing = 0  # an epoch this head took and has not yet recorded in the log
        self._submits: dict[str, asyncio.Future[None]] = {}  # runs being submitted (submit_turn)
        self._reset(None)

    def _reset(self, state: snapshot.SchedulerState | None) -> None:
        settings = self.settings
        args = (
            settings.node_queue_factor,
            int(settings.submission_grace_s * 1000),
            int(settings.work_resend_s * 1000),
        )
        self.core = snapshot.restore(state, *args) if state is not None else Scheduler(*args)
        self.positions: dict[str, int] = dict.fromkeys(STREAMS, 0)
        if state is not None:
            self.positions.update(state.positions)
        self.started_from = dict(self.positions)
        # active runs' last folded message on their own subject (head_seq)
        self.head_seqs: dict[str, int] = {}
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self._rewatch = asyncio.Event()  # the heartbeat bucket was made again: watch it anew
        self.live = False
        self.caught_up.clear()
        self.liveness = Liveness(self.settings.liveness_timeout)
        self.liveness.on_beat = self._check_beat
        for node_id, view in self.core.placer.nodes.items():
            self.liveness.joined(node_id, view.heartbeat_interval_s)
        self._losing.clear()
        self._ended_sessions: OrderedDict[tuple[str, str], None] = OrderedDict()  # folded lost or left
        self._nudged: dict[tuple[str, str], float] = {}  # ended sessions still beating: told when
        self._zombies: list[NodeLost] = []
        self._uncertain: list[tuple[int | None, list[Event]]] = []  # unpublished decisions
        self._end_waiters: dict[str, list[asyncio.Future[str]]] = {}  # run id -> who waits for its end
        self._wakeup_at: int | None = None
        self._snapshot_positions = dict(self.positions)
        self._snapshot_not_before = time.monotonic() + self.settings.snapshot_interval_s

    # the folded state, as the API, the head process and the golden test read it
    @property
    def runs(self) -> dict[str, RunRuntime]:
        return self.core.runs

    @property
    def done_runs(self) -> dict[str, str]:
        return self.core.done_runs

    @property
    def placer(self) -> Placer:
        return self.core.placer

    @property
    def deciding(self) -> bool:
        """Whether this head's controller decides now: it has folded the log up to where it stood
        at start, holds the lease, and has folded the `leader.elected` of its epoch (so everything a
        former leader wrote before it is folded, and anything that one writes later is refused) in
        both streams it decides in (the nodes stream records each leadership too)."""
        return (
            self.live
            and self.lease.fresh
            and self.core.epoch == self.lease.epoch
            and self.core.nodes_epoch >= self.lease.epoch
        )

    def leadership(self) -> dict[str, Any]:
        """Who holds the lease, and whether this head decides (`this_head`)."""
        return {**self.lease.view(), "this_head": self.deciding}

    @property
    def leading(self) -> bool:
        """`maze_controller_leader`: whether this head decides."""
        return self.deciding

    # ---- leadership ---------------------------------------------------------------------------
    async def _epoch_floor(self) -> int:
        """The latest epoch this head knows of: the latest it folded, or the latest `leader.elected`
        in the log (written since). A new one must be above it, whatever the lease bucket says (it
        may have been lost or recreated)."""
        floor = self.core.epoch
        try:
            msg = await self.js.get_last_msg(subjects.RUNS_STREAM, subjects.LEADER_SUBJECT)
        except NotFoundError:
            return floor
        for event in decode_leniently(msg.data or b"", msg.subject).events:
            if isinstance(event, LeaderElected):
                floor = max(floor, event.epoch)
        return floor

    def _lease_changed(self, leading: bool, epoch: int) -> None:
        if leading:
            self._electing = epoch  # recorded by the loop (a publish), decided on once folded
        else:
            self._electing = 0
            self._losing.clear()  # a new leader declares losses afresh from the log
            log.warning("controller.deposed", epoch=epoch)
        self.queue.put_nowait(_TICK)

    async def _record_election(self) -> None:
        """Write `leader.elected` for the epoch this head took. It decides once that is folded."""
        epoch = self._electing
        event = LeaderElected(head_id=self.settings.head_id, epoch=epoch, at_ms=now_ms())
        try:
            # in both streams a controller decides in: each stream's folds refuse, in that
            # stream's own order, the decisions of an older leadership written after it
            await self.store.publish_many(
                [(subjects.LEADER_SUBJECT, [event]), (subjects.NODES_LEADER_SUBJECT, [event])]
            )
        except Exception as exc:  # tried again on the next pass
            log.warning("controller.election_not_recorded", epoch=epoch, error=describe_error(exc))
            return
        if self._electing == epoch:
            self._electing = 0

    def _elected(self, event: LeaderElected) -> None:
        """A `leader.elected` folded: this head's own starts its decisions (everything it must look
        at is due again, as after a start); another's ends them."""
        if event.epoch == self.lease.epoch and event.head_id == self.settings.head_id and self.live:
            self.liveness.went_live()
            self.core.went_live(now_ms())
            log.warning("controller.leading", epoch=event.epoch, head_id=event.head_id)

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="run-controller")
        self._lease_task = asyncio.create_task(self.lease.run(), name="controller-lease")

    async def stop(self) -> None:
        """Snapshot the folded state (so the next start replays nothing), hand the lease over
        (another head takes it at once), then stop."""
        if self.deciding and self.positions != self._snapshot_positions:
            try:
                await self.save_snapshot()
            except Exception as exc:
                log.warning("controller.snapshot_at_stop_failed", error=describe_error(exc))
        await cancel_and_wait([self._lease_task], timeout=STOP_WAIT_S)
        with contextlib.suppress(Exception):
            await self.lease.release()
        await cancel_and_wait([self._task], timeout=STOP_WAIT_S)

    async def _run_forever(self) -> None:
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.restarts += 1
                self.last_error = describe_error(exc)
                log.exception("controller.crashed_restarting_from_snapshot", restarts=self.restarts)
                await asyncio.sleep(0.5)

    async def _run_once(self) -> None:
        began = time.monotonic()
        state = await self.snapshots.load()
        self._reset(state)
        targets = {}
        for stream in STREAMS:
            info = await self.js.stream_info(stream)
            targets[stream] = info.state.last_seq
        log.info(
            "controller.starting",
            from_snapshot=state is not None,
            positions=self.positions,
            targets=targets,
            active_runs=len(self.core.runs),
        )
        subs = []
        helpers: list[asyncio.Task[None]] = []
        queue = self.queue

        async def enqueue(msg: Msg) -> None:
            queue.put_nowait(msg)

        try:
            for stream, subject in (
                (subjects.RUNS_STREAM, subjects.RUN_SUBJECTS),
                (subjects.NODES_STREAM, subjects.NODE_SUBJECTS),
            ):
                subs.append(await subscribe_ordered(self.js, subject, self.positions[stream] + 1, cb=enqueue))
            self._check_caught_up(targets, began)
            await self._lead()
            helpers += [
                asyncio.create_task(self._watch_beats_forever(), name="heartbeat-watch"),
                asyncio.create_task(self._tick_forever(), name="liveness-tick"),
                asyncio.create_task(self._snapshot_forever(), name="controller-snapshots"),
            ]
            while True:
                item = await queue.get()
                batch = [item]
                while not queue.empty() and len(batch) < 10_000:
                    batch.append(queue.get_nowait())
                slice_began = time.monotonic()
                for entry in batch:
                    if entry is not _TICK:
                        self._apply_msg(entry)
                    if time.monotonic() - slice_began > YIELD_AFTER_S:
                        # a burst (a wide run's chunks, a replay) must not hold the event loop
                        # that the API and the local worker share
                        await asyncio.sleep(0)
                        slice_began = time.monotonic()
                if not self.live:
                    self._check_caught_up(targets, began)
                await self._lead()
        finally:
            await cancel_and_wait(helpers, timeout=STOP_WAIT_S)
            for sub in subs:
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass

    async def _lead(self) -> None:
        """A pass of a leader: record a fresh election first, then decide."""
        if self._electing and self.live:
            await self._record_election()
        if self.deciding:
            await self._decide()

    async def _watch_beats_forever(self) -> None:
        """The heartbeat watch; started anew when the bucket was made again (`memory_streams_made`):
        a watch of the bucket that was lost may not notice."""
        while True:
            watch = asyncio.create_task(self.liveness.watch(self.js), name="heartbeat-watch")
            self._rewatch.clear()
            try:
                await self._rewatch.wait()
            finally:
                await cancel_and_wait([watch], timeout=STOP_WAIT_S)

    async def _tick_forever(self) -> None:
        # also bounds how late an incomplete submission or a due delivery is noticed
        while True:
            await asyncio.sleep(min(1.0, self.settings.liveness_timeout / 4))
            self.queue.put_nowait(_TICK)

    def _check_caught_up(self, targets: dict[str, int], began: float) -> None:
        if all(self.positions[s] >= t for s, t in targets.items()):
            self.live = True
            self.lease.wake()
            self.liveness.went_live()
            self.core.went_live(now_ms())
            self.metrics.fold.went_live(self.core, self.positions)
            self.caught_up.set()
            log.info(
                "controller.caught_up",
                active_runs=len(self.core.runs),
                nodes=len(self.placer.nodes),
                positions=self.positions,
                replayed={s: self.positions[s] - self.started_from[s] for s in STREAMS},
                took_ms=round((time.monotonic() - began) * 1000, 1),
            )

    # ---- folding ------------------------------------------------------------------------------
    def _apply_msg(self, msg: Msg) -> None:
        meta = msg.metadata
        stream, seq = meta.stream, meta.sequence.stream
        self.positions[stream] = max(self.positions.get(stream, 0), seq)
        decoded = decode_leniently(msg.data, msg.subject)
        if decoded.unknown or decoded.malformed or decoded.refused:
            decode_stats.note(decoded, {"stream": stream, "seq": seq, "subject": msg.subject})
        if decoded.malformed and stream == subjects.RUNS_STREAM:
            # the run cannot be folded faithfully any more: end it rather than let it hang
            error = "; ".join(f"a malformed {m.tag} event ({m.error})" for m in decoded.malformed)
            self.core.break_run(subjects.run_id_of(msg.subject), f"{error} at {stream} sequence {seq}")
        if stream == subjects.RUNS_STREAM and msg.subject.count(".") == 2:  # a head's, `maze.run.<run>`
            run_id = subjects.run_id_of(msg.subject)
            if any(isinstance(e, RunFinished) for e in decoded.events):
                self.head_seqs.pop(run_id, None)
            elif run_id in self.core.runs or any(isinstance(e, RunCreated) for e in decoded.events):
                self.head_seqs[run_id] = seq
        if stream == subjects.RUNS_STREAM:
            # what the history shows as it is written: a deposed leader's decisions, and a node's
            # reports on attempts placed elsewhere (judged before this message is folded), refused
            shown = without_foreign(with_fence(decoded, self.core.epoch), msg.subject, self.core.placed_on)
            self.feeds.note(msg.subject, seq, shown, len(msg.data))
        counted = self.metrics.fold.observes(stream, seq)
        for event in decoded.events:
            if stream == subjects.NODES_STREAM and not self._node_fence(event):
                continue
            self.apply(event, counted)
            if hops.enabled():
                hops.mark(f"folded_{event_tag(event)}", getattr(event, "run_id", ""))
        if self._end_waiters and stream == subjects.RUNS_STREAM:
            self._tell_end_waiters(subjects.run_id_of(msg.subject))

    def _node_fence(self, event: Event) -> bool:
        """An event of the nodes stream: whether to fold it (Scheduler.admit_node_event)."""
        if self.core.admit_node_event(event):
            return True
        if isinstance(event, NodeLost):  # refused (this head's own, late): it may declare it again
            self._losing.discard((event.node_id, event.session))
        return False

    async def wait_ended(self, run_id: str, timeout: float) -> str | None:
        """The run's final state once this controller has folded its end (at once if it has), or
        None after `timeout` seconds."""
        state = self.core.done_runs.get(run_id)
        if state:
            return state
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._end_waiters.setdefault(run_id, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._end_waiters.get(run_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._end_waiters.pop(run_id, None)

    def _tell_end_waiters(self, run_id: str) -> None:
        state = self.core.done_runs.get(run_id)
        if state:
            for waiter in self._end_waiters.pop(run_id, []):
                if not waiter.done():
                    waiter.set_result(state)

    def apply(self, event: Event, counted: bool = False) -> None:
        """Fold one event. Idempotent: the log may deliver an event twice. `counted`: count what it
        changes in the metrics (the same fold, observed: maze/head/metrics.py)."""
        if counted:
            self.metrics.fold.fold(self.core, event)
        else:
            self.core.apply(event)
        if isinstance(event, LeaderElected):
            self._elected(event)
        elif isinstance(event, NodeJoined):
            self.liveness.joined(event.node_id, event.heartbeat_interval_s)
        elif isinstance(event, NodeLost | NodeLeft):
            self._ended_sessions[(event.node_id, event.session)] = None
            if len(self._ended_sessions) > ENDED_SESSIONS_KEPT:
                self._ended_sessions.popitem(last=False)

    def _check_beat(self, beat: Heartbeat) -> None:
        """A session the log says is over, still beating: its worker never heard (the loss was
        published while it was cut off or frozen). Tell it again, at most once per liveness
        timeout, so it rejoins with a new session instead of waiting for work that never comes."""
        key = (beat.node_id, beat.session)
        node = self.placer.nodes.get(beat.node_id)
        ended = key in self._ended_sessions or (
            node is not None and node.session == beat.session and not node.alive
        )
        if not ended or not self.deciding:
            return
        mono = time.monotonic()
        if mono - self._nudged.get(key, -1e9) < self.settings.liveness_timeout:
            return
        self._nudged[key] = mono
        if len(self._nudged) > ENDED_SESSIONS_KEPT:
            self._nudged.pop(next(iter(self._nudged)))
        log.warning("controller.ended_session_still_beating", node_id=beat.node_id, session=beat.session)
        self._zombies.append(
            NodeLost(
                node_id=beat.node_id, session=beat.session, at_ms=now_ms(), reason="session_already_ended"
            )
        )
        self.queue.put_nowait(_TICK)

    # ---- deciding -----------------------------------------------------------------------------
    async def _decide(self) -> None:
        now = now_ms()
        if self._zombies:
            zombies, self._zombies = stamp(self._zombies, self.lease.epoch), []
            try:
                await self.store.publish_many([(subjects.node_head_subject(e.node_id), [e]) for e in zombies])
                await self._tell_lost(zombies)
            except Exception as exc:  # told again on a later beat
                log.warning("controller.ended_session_not_told", error=describe_error(exc))
                for zombie in zombies:
                    self._nudged.pop((zombie.node_id, zombie.session), None)
        stale = self.liveness.stale(self._alive_not_losing(), now)
        await self._declare_lost(await self.liveness.confirm(self.js, stale))
        await self._settle_uncertain()
        if not self.deciding:  # the lease moved while this pass awaited: its decisions would be
            return  # stamped with an epoch other than the one their work names (a later pass)
        decision = self.core.decide(now, self.liveness.holds)
        decision.events = stamp(decision.events, self.lease.epoch)
        if decision.blobs and not await self._store_blobs(decision):
            return
        if decision.events:
            results = await self.store.publish_runs_settled(make_fit(decision.events, self.budget))
            failed = {run_id: r for run_id, r in results.items() if isinstance(r, BaseException)}
            if failed:
                await self._not_recorded(decision, failed)
            acks = {run_id: r for run_id, r in results.items() if not isinstance(r, BaseException)}
            stored_again = {run_id for run_id, run_acks in acks.items() if any(a.duplicate for a in run_acks)}
            stored_again |= set(failed)
            if hops.enabled():
                for event in decision.events:
                    hops.mark(f"published_{event_tag(event)}", getattr(event, "run_id", ""))
            if stored_again:
                # the same decisions were stored before (an ack lost): what the log holds is sent
                # from the log, by the delivery check, not what was decided now
                decision.work = {
                    node: [i for i in items if i.run_id not in stored_again]
                    for node, items in decision.work.items()
                }
            self._fault_after_placed(decision)
            await self._send_cancels(decision, set(failed))
        elif decision.cancels:
            await self._send_cancels(decision, set())
        await self._send(decision, now)
        self._arm_wakeup(now)

    async def _store_blobs(self, decision: Decision) -> bool:
        """Put what the decision's events refer to in the blob store first (a ReAct step's
        compacted results, whole). If that fails nothing of the decision is published: it is all
        decided again on the next pass."""
        try:
            await asyncio.gather(*(self.blobs.put(data, sha) for sha, data in decision.blobs.items()))
        except Exception as exc:
            log.warning("controller.blobs_not_stored", error=describe_error(exc))
            self.core.forget(decision)  # decided again on the next tick (not at once: a full store
            return False  # would refuse it again at once, a pass after a pass)
        return True

    async def _send_cancels(self, decision: Decision, not_stored: set[str]) -> None:
        """Tell each node holding attempts of a run this decision ended (cancelled, timed out)
        to stop them: on its work subject, in order with its work, once the ends are stored (a
        run whose ends were not stored is decided again). Nodes that started an attempt of such
        a run after its end are told again (`decision.cancels`). Best effort: what a node never
        hears, it reports on, and is told again then."""
        told: dict[str, dict[str, CancelRun]] = {}
        for event in decision.events:
            if (
                isinstance(event, AttemptFailed)
                and event.error.error_type == "cancelled"
                and event.error.origin == "controller"
                and event.node_id
                and event.run_id not in not_stored
            ):
                told.setdefault(event.node_id, {})[event.run_id] = CancelRun(
                    event.run_id, event.error.message
                )
        for node_id, cancels in decision.cancels.items():
            for cancel in cancels:  # (a whole run's end wins over dropping its held followers)
                if cancel.held_only and cancel.run_id in not_stored:
                    continue  # its failed end was not stored: decided again, told again then
                told.setdefault(node_id, {}).setdefault(cancel.run_id, cancel)
        if not told:
            return

        async def tell(node_id: str, runs: dict[str, CancelRun]) -> None:
            cancels = [
                msgspec.structs.replace(c, reason=c.reason[:CANCEL_REASON_CHARS]) for c in runs.values()
            ]
            local = self.local_node
            if local is not None and node_id == local.node_id and self.deciding:
                local.take_cancels(cancels)  # in process, as its work is (in order with it)
                return
            batch = WorkBatch(items=[], cancels=cancels)
            await self._tell_node(
                # (a word dropping a failed run's held followers is not the run's end: its own id)
                node_id,
                batch,
                f"cancel/{self.lease.epoch}/{node_id}/"
                + ",".join(sorted(f"{r}{'~held' if c.held_only else ''}" for r, c in runs.items())),
            )

        messages = [  # bounded: CANCELS_PER_MESSAGE runs of clipped reasons stay far below max_payload
            (node_id, dict(list(runs.items())[i : i + CANCELS_PER_MESSAGE]))
            for node_id, runs in told.items()
            for i in range(0, len(runs), CANCELS_PER_MESSAGE)
        ]
        results = await asyncio.gather(*(tell(n, r) for n, r in messages), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("controller.cancel_not_sent", error=describe_error(result))

    # ---- placements made at submit (maze/api/runs.py) ------------------------------------------
    def place_new_run(self, created: RunCreated) -> tuple[Decision, int] | None:
        """The placements of a run about to be recorded, to go in the message of its `run.created`
        (Scheduler.place_new_run). None unless this controller is live and can place some now."""
        return self._place_early(
            lambda now: self.core.place_new_run(created, now),
            "controller.place_at_submit_failed",
            created.run_id,
        )

    def place_appended(self, run_id: str, specs: list[TaskSpec]) -> tuple[Decision, int] | None:
        """The placements of tasks about to be appended to a dynamic run, to go in the message of
        their `task.appended` (Scheduler.place_appended); then `submitted` / `submit_failed` as for
        a new run. None unless this controller is live and can place some now."""
        return self._place_early(
            lambda now: self.core.place_appended(run_id, specs, now),
            "controller.place_at_append_failed",
            run_id,
        )

    def _place_early(
        self, place: Callable[[int], Decision | None], failed: str, run_id: str
    ) -> tuple[Decision, int] | None:
        """Placements made before their run's message is recorded, stamped with this leadership:
        none while another head decides (it places once the message is folded), and none when
        deciding them fails (the ordinary passes place them then)."""
        if not self.deciding:
            return None
        now = now_ms()
        try:
            decision = place(now)
        except Exception:
            log.exception(failed, run_id=run_id)
            return None
        if decision is None:
            return None
        decision.events = stamp(decision.events, self.lease.epoch)
        return decision, now

    def memory_streams_made(self, made: list[str]) -> None:
        """Streams kept in memory were made again (maze/head/stream_keeper.py), empty. The work
        stream: what it held is gone, so every attempt placed and not started is sent again from
        the log now. The heartbeat bucket: every node gets a full timeout to beat there again."""
        if subjects.WORK_STREAM in made:
            self.core.delivery.all_due_now(now_ms())
        if f"KV_{subjects.HEARTBEAT_BUCKET}" in made:
            self.liveness.grace()
            self._rewatch.set()
        self.queue.put_nowait(_TICK)

    def head_seq(self, run_id: str) -> int | None:
        """The stream sequence of the last message on the run's own subject (`maze.run.<run>`:
        everything but the nodes' reports) that this controller has folded; None when it has not
        seen it (a run folded from a snapshot, or one that has ended)."""
        return self.head_seqs.get(run_id)

    async def submitted(
        self, decision: Decision, now: int, stored: bool, handed: set[tuple[str, str, int]] | None = None
    ) -> None:
        """The run's message is in the log (`stored`: with these placements, not an earlier copy):
        send their work, but for what this head's worker took already (`handed`: started with the
        message, maze/api/early.py). Otherwise the placements are forgotten (decided again, or
        already in the log from the first copy, whose work the delivery check sends)."""
        if not stored:
            self.core.forget(decision)
            self.queue.put_nowait(_TICK)  # decided again now (the first copy's run may wait for it)
            return
        if handed and self.local_node is not None:
            local = self.local_node.node_id
            decision.work[local] = [i for i in decision.work.get(local, []) if i.key not in handed]
        if hops.enabled():
            for event in decision.events:
                hops.mark(f"published_{event_tag(event)}", getattr(event, "run_id", ""))
        self._fault_after_placed(decision, in_pass=False)
        try:
            await self._send(decision, now)
        except Exception as exc:  # the run is accepted all the same: the delivery check sends it
            log.warning("controller.submitted_work_not_sent", error=describe_error(exc))

    @contextlib.asynccontextmanager
    async def submit_turn(self, run_id: str) -> AsyncIterator[None]:
        """One submit of a run at a time in this head: the same request sent twice at once (or two
        under one run id) is recorded in turn, so that the copy placed at submit (and started
        early, maze/api/early.py) is the one stored, and the other finds it in the log (a duplicate,
        or a conflict) instead of overtaking it. Bounded: a submit stuck past SUBMIT_TURN_S (its
        publish hanging) no longer holds the next one back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SUBMIT_TURN_S
        while (busy := self._submits.get(run_id)) is not None and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(busy), deadline - loop.time())
        mine: asyncio.Future[None] = loop.create_future()
        self._submits[run_id] = mine
        try:
            yield
        finally:
            if self._submits.get(run_id) is mine:
                del self._submits[run_id]
            mine.set_result(None)

    def submit_failed(self, decision: Decision) -> None:
        """The run's message may or may not be stored (an ack lost, a timeout): its placements are
        forgotten only once the log is folded past where it stood, like any unsettled decision."""
        self._uncertain.append((None, list(decision.events)))

    def submit_abandoned(self, decision: Decision) -> None:
        """The placements were not sent with the run (no room in its message, or the request
        ended before its publish): decided again, by a pass now."""
        self.core.forget(decision)
        self.queue.put_nowait(_TICK)

    def _fault_after_placed(self, decision: Decision, in_pass: bool = True) -> None:
        """Tests only: die between recording placements and sending their work, in any path
        (`kill-after-placed`) or only in the controller's passes (`kill-after-placed-in-pass`)."""
        fault = self.settings.fault_injection
        wanted = fault == "kill-after-placed" or (fault == "kill-after-placed-in-pass" and in_pass)
        if wanted and any(isinstance(e, AttemptPlaced) for e in decision.events):
            log.warning("controller.fault_injection_kill", fault=self.settings.fault_injection)
            os.kill(os.getpid(), signal.SIGKILL)

    async def _not_recorded(self, decision: Decision, failed: dict[str, BaseException]) -> None:
        """Some runs' decisions ended in an error. Some of their messages may be stored anyway
        (an ack lost): forget them only once the log is folded up to where it stood after the
        error, so that what was stored is settled by its echo first and nothing is decided twice.
        A run whose publish the store refuses for good is ended (it would fail every pass)."""
        events = [e for e in decision.events if getattr(e, "run_id", None) in failed]
        for run_id, exc in failed.items():
            log.warning("controller.decisions_not_recorded", run_id=run_id, error=describe_error(exc))
            if not is_transient(exc):
                self.core.break_run(
                    run_id, f"the event store refused this run's events: {describe_error(exc)}", decided=True
                )
        self._uncertain.append((None, events))
        await self._settle_uncertain()

    async def _settle_uncertain(self) -> None:
        if not self._uncertain:
            return
        position = self.positions[subjects.RUNS_STREAM]
        still: list[tuple[int | None, list[Event]]] = []
        for target, events in self._uncertain:
            if target is None:
                try:
                    target = (await self.js.stream_info(subjects.RUNS_STREAM)).state.last_seq
                except Exception as exc:  # the store is down: ask again on the next pass
                    log.warning("controller.log_position_unknown", error=describe_error(exc))
                    still.append((None, events))
                    continue
            if position >= target:
                self.core.forget(Decision(events=events, work={}, code={}, resend={}))
            else:
                still.append((target, events))
        self._uncertain = still

    def _alive_not_losing(self) -> list[Any]:
        alive = self.placer.alive_nodes()
        sessions = {(n.node_id, n.session) for n in alive}
        self._losing &= sessions  # a loss folded back: that session is no longer alive
        return [n for n in alive if (n.node_id, n.session) not in self._losing]

    async def _declare_lost(self, lost: list[NodeLost]) -> None:
        """Record nodes lost; they take effect (their attempts orphaned) when folded back."""
        if not lost:
            return
        lost = stamp(lost, self.lease.epoch)
        keys = {(e.node_id, e.session) for e in lost}
        self._losing |= keys
        try:
            await self.store.publish_many([(subjects.node_head_subject(e.node_id), [e]) for e in lost])
        except Exception as exc:
            log.warning("controller.node_loss_not_recorded", error=describe_error(exc))
            self._losing -= keys
            return
        try:
            await self._tell_lost(lost)
        except Exception as exc:  # its next beat makes it a zombie: told again then
            log.warning("controller.lost_session_not_told", error=describe_error(exc))

    async def _tell_lost(self, lost: list[NodeLost]) -> None:
        """Tell each node's worker which of its sessions were declared lost, on the node's work
        subject (its worker pulls it through its own account: no subscription of its own to a head
        subject is needed)."""
        by_node: dict[str, list[str]] = {}
        for event in lost:
            by_node.setdefault(event.node_id, []).append(event.session)
        await asyncio.gather(
            *(
                self._tell_node(
                    node_id,
                    WorkBatch(items=[], lost_sessions=sessions),
                    f"lost/{node_id}/{','.join(sorted(sessions))}/{now_ms()}",
                )
                for node_id, sessions in by_node.items()
            )
        )

    async def _tell_node(self, node_id: str, batch: WorkBatch, msg_id: str) -> None:
        """A word to node `node_id` on its work subject, which its worker pulls (in order with its
        work); the message id salted as every head write is (EventStore.salt). Only while this head
        decides: what a deposed leader would tell (a cancel, a lost session) is never sent, by the
        lease's own argument (a standby takes over only after this head has stopped deciding)."""
        if not self.deciding:
            log.warning("controller.tell_withheld_not_deciding", node_id=node_id, msg_id=msg_id)
            return
        salt = f"/{self.store.salt}" if self.store.salt else ""
        await publish_durably(
            self.store.js,
            subjects.work_subject(node_id),
            msgspec.msgpack.encode(batch),
            {headers.MSG_ID: f"{msg_id}{salt}"[:250]},
        )

    async def _send(self, decision: Decision, now: int) -> None:
        """The decision's work (and the work re-sent from the log), within the byte budget. Work
        that cannot be sent at all is recorded failed instead (folded when it comes back). Work of
        the worker in this process is handed to it directly (its placements are stored: what a
        work message would carry, in memory, as the in-memory work stream would keep it)."""
        if not decision.work and not decision.resend:
            return
        failed: list[Event] = []
        local: list[WorkItem] = []
        messages = await self._pack(decision.work, decision.code, now, failed, "", local)
        if decision.resend:
            messages += await self._pack(decision.resend, decision.code, now, failed, f"/resend/{now}", local)
        if failed:
            try:
                await self.store.publish_runs(make_fit(stamp(failed, self.lease.epoch), self.budget))
            except Exception as exc:  # the delivery check will meet them again
                log.warning("controller.work_failures_not_recorded", error=describe_error(exc))
        if not messages and not local:
            return
        if not self.deciding:  # deposed meanwhile: its placements, if they stand, are resent by the
            log.warning(  # new leader
                "controller.work_withheld_not_deciding", messages=len(messages), handed=len(local)
            )
            return
        if local and self.local_node is not None:
            if hops.enabled():
                for item in local:
                    hops.mark("work_sent", item.run_id)
            try:
                self.local_node.take_work(local)
                self.metrics.work_handed.inc(len(local))
            except Exception as exc:
                # recorded as placed: the delivery check sends it again from the log (a copy the
                # worker took already is not taken twice: it starts it if it still waits)
                log.warning("controller.work_not_handed", error=describe_error(exc))
            if not messages:
                # one turn of the loop: the attempts just taken reach their task processes before
                # the caller goes on (an API answer, the rest of a pass), not after it
                await asyncio.sleep(0)
        results = await asyncio.gather(
            *(
                publish_durably(self.store.js, subjects.work_subject(node), data, {headers.MSG_ID: msg_id})
                for node, data, msg_id in messages
            ),
            return_exceptions=True,
        )
        if hops.enabled():
            for items in [*decision.work.values(), *decision.resend.values()]:
                for item in items:
                    hops.mark("work_sent", item.run_id)
        for result in results:
            if isinstance(result, BaseException):
                # recorded as placed: the delivery check sends it again from the log
                log.warning("controller.work_not_sent", error=describe_error(result))

    async def _pack(
        self,
        work: dict[str, list[WorkItem]],
        code: dict[str, bytes],
        now: int,
        failed: list[Event],
        msg_suffix: str,
        local: list[WorkItem],
    ) -> list[WorkMessage]:
        """Each node's work as messages within the byte budget; the work of the worker in this
        process joins `local` instead. An attempt whose work cannot be sent (its code not stored,
        too large for any message) is recorded failed (its event joins `failed`) instead."""
        code_failed = await self.code.ensure(code) if code else {}
        limit = item_limit(self.budget)
        messages: list[WorkMessage] = []
        local_id = self.local_node.node_id if self.local_node is not None else None
        for node_id, items in work.items():
            kept, encoded = [], []
            for item in items:
                error: TaskError | None = code_failed.get(item.func_hash)
                data = b""
                if error is None and node_id == local_id:
                    local.append(item)
                    continue
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
                    failed.append(self.core.fail_work(item, error, now))
                    continue
                kept.append(item)
                encoded.append(data)
            for part in pack_batches([len(e) for e in encoded], self.budget):
                batch = [encoded[i] for i in part]
                msg_id = batch_msg_id([kept[i] for i in part], self.lease.epoch) + msg_suffix
                messages.append((node_id, batch_payload(batch), msg_id))
        return messages

    def _arm_wakeup(self, now: int) -> None:
        """Wake the loop when the earliest retry backoff or delivery check is due (the tick bounds
        it to a second)."""
        due = self.core.next_wakeup()
        if due is None or due <= now:
            return
        if self._wakeup_at is not None and now < self._wakeup_at <= due:
            return  # an earlier wake-up is armed already
        self._wakeup_at = due
        asyncio.get_running_loop().call_later((due - now) / 1000, self.queue.put_nowait, _TICK)

    async def reconcile_workers(self) -> dict[str, Any]:
        """Operator command: declare every node without a recent heartbeat lost now."""
        if not self.deciding:
            holder = self.leadership()
            raise Conflict(
                f"this head does not decide now; ask the head that does ({holder['head_id']})",
                leader=holder,
            )
        now = now_ms()
        stale = self.liveness.stale(self._alive_not_losing(), now, force_reason="reconciled")
        lost = await self.liveness.confirm(self.js, stale)
        await self._declare_lost(lost)
        self.queue.put_nowait(_TICK)
        lost_ids = {e.node_id for e in lost}
        return {
            "lost_nodes": sorted(lost_ids),
            "alive_nodes": [n.node_id for n in self.placer.alive_nodes() if n.node_id not in lost_ids],
        }

    # ---- snapshots ----------------------------------------------------------------------------
    async def _snapshot_forever(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.settings.snapshot_interval_s))
            if (
                not self.deciding  # one head writes snapshots: the one that decides
                or time.monotonic() < self._snapshot_not_before
                or self.positions == self._snapshot_positions
            ):
                continue
            try:
                await self.save_snapshot()
            except Exception as exc:
                log.warning("controller.snapshot_failed", error=describe_error(exc))
                self._snapshot_not_before = time.monotonic() + self.settings.snapshot_interval_s

    async def save_snapshot(self) -> snapshot.Pointer:
        """Capture the folded state now (synchronously: nothing folds in between), then store it.
        One save at a time (the periodic one and the one at stop may meet), newest last."""
        async with self._snapshot_lock:
            return await self._save_snapshot()

    async def _save_snapshot(self) -> snapshot.Pointer:
        began = time.monotonic()
        state = snapshot.capture(self.core, self.positions)
        data = snapshot.encode(state)
        took = time.monotonic() - began
        self._snapshot_positions = dict(state.positions)
        self._snapshot_not_before = time.monotonic() + max(
            self.settings.snapshot_interval_s, SNAPSHOT_COST_FACTOR * took
        )
        return await self.snapshots.save(state, data)

    # ---- queries (for the API) ----------------------------------------------------------------
    def pending_reason(self, run_id: str, task_id: str) -> str | None:
        return self.core.pending_reason(run_id, task_id)

    def diagnostics(self) -> dict[str, Any]:
        last = self.snapshots.last
        return {
            "live": self.live,
            "positions": dict(self.positions),
            "started_from": dict(self.started_from),
            "restarts": self.restarts,
            "last_error": self.last_error,
            "active_runs": len(self.core.runs),
            "decisions_in_flight": len(self.core.inflight),
            "awaiting_start": len(self.core.delivery.awaiting),
            "broken_runs": sorted({*self.core.broken, *self.core.inflight.broken}),
            "snapshot": None
            if last is None
            else {"positions": last.positions, "bytes": last.size, "at_ms": last.at_ms},
            "decoding": decode_stats.snapshot(),
            "leadership": {
                **self.leadership(),
                "folded_epoch": self.core.epoch,
                "folded_nodes_epoch": self.core.nodes_epoch,
                "fenced": self.core.fenced,
            },
            "liveness_watch_lagged": self.liveness.unconfirmed,
            "heartbeats_undecodable": self.liveness.undecodable,
            "heartbeats_of_another_node": self.liveness.foreign,
            "run_feeds": self.feeds.stats(),
        }
