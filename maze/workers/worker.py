"""A worker node: pulls the attempts placed on it, starts each when it fits what is running now,
runs it in its own OS process, and records start and outcome as events.

Work messages are acknowledged on receipt: they are transport, and the run stream is the record.
If this process dies, its heartbeats stop (or its next session joins) and the controller marks the
attempts it held `node_lost` and retries them elsewhere; work addressed to an earlier session is
ignored, so an attempt never runs twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from pathlib import Path
from traceback import format_exc
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from maze.core import hops
from maze.core.clock import now_ms
from maze.core.errors import ArtifactError, BlobMissing, MazeError, PayloadTooLarge, ValidationError
from maze.core.resources import Usage, add_usage, fits_assigned
from maze.core.settings import ValueLimits
from maze.core.tasks import cancel_and_wait
from maze.events import subjects
from maze.events.artifacts import ArtifactRegistered, FileEntry
from maze.events.blobs import BlobStore
from maze.events.catalog import Event
from maze.events.codec import decode_work
from maze.events.nodes import HOLDING_LISTED, Heartbeat, NodeJoined, NodeLeft
from maze.events.specs import NodeCapacity, TaskError
from maze.events.store import EventStore, ensure_work_consumer, heartbeat_bucket, jetstream, payload_budget
from maze.events.tasks import AttemptFailed, AttemptRejected, AttemptStarted, AttemptSucceeded
from maze.events.values import blob_refs
from maze.events.work import CancelRun, WorkItem
from maze.workers import sandbox
from maze.workers.affinity import CoreAllocator
from maze.workers.attempt_dir import AttemptDirs
from maze.workers.blob_cache import BlobCache
from maze.workers.capacity import gpu_free_mb
from maze.workers.child import MAX_MESSAGE_CHARS, MAX_TRACEBACK_CHARS, clip
from maze.workers.files import FileStager, Staged, TooManyFiles, has_files
from maze.workers.follow import Followers, told_unstored
from maze.workers.logs import TaskLogs
from maze.workers.outbox import Outbox
from maze.workers.pool import ProcessExited, ProcessPool, ReplyRefused, TaskProcess
from maze.workers.pull import ContinuousPull
from maze.workers.results import store_result

log = structlog.get_logger(__name__)
ENDED_RUNS_KEPT = 10_000  # ended runs remembered, so that work of theirs still on its way is dropped
SUPERSEDED_KEPT = 10_000  # attempts rejected for a deposed leader's copy taken here (worker._superseded)
_beat = msgspec.msgpack.Encoder()
# An attempt's start is recorded this long after it began, or with its end if that comes first
# (a no-op's start and end are one message, not two; DESIGN.md §1's budget of messages per task).
START_REPORT_AFTER_S = 0.005
REMOVE_DIR_AFTER_S = 0.05  # an attempt's directory goes this long after its end (its report first)
UNSENT_RESEND_S = 5.0  # a rejoin's try at sending the batch in flight again, as it was


class Worker:
    def __init__(
        self,
        nc: NATS,
        node_id: str,
        capacity: NodeCapacity,
        ip: str,
        hostname: str | None = None,
        heartbeat_interval: float = 2.0,
        on_registration_lost: Callable[[], Coroutine[Any, Any, None]] | None = None,
        limits: ValueLimits | None = None,
        make_consumer: Callable[[], Coroutine[Any, Any, None]] | None = None,
        work_dir: Path | None = None,
        sandboxing: bool = True,
        sandbox_hidden: list[Path] | None = None,
    ) -> None:
        self.limits = limits or ValueLimits()
        # each attempt runs in its own directory under the work root (maze/workers/attempt_dir.py)
        self.work_dir = work_dir or Path(tempfile.gettempdir()) / f"maze-work-{node_id}"
        self.attempt_dirs = AttemptDirs(self.work_dir)
        # sandboxed attempts (maze/workers/sandbox.py): probed at start; what they must never read
        self.sandboxing = sandboxing
        self.sandbox_hidden = sandbox.default_hidden(self.work_dir, sandbox_hidden or [])
        self.sandboxes: sandbox.SandboxPool | None = None
        # who makes this node's work consumer when it is missing: None, the worker itself
        self.make_consumer = make_consumer
        self.nc = nc
        self.node_id = node_id
        self.capacity = capacity
        self.ip = ip
        self.hostname = hostname or socket.gethostname()
        self.heartbeat_interval = heartbeat_interval
        self.on_registration_lost = on_registration_lost
        self.session = ""
        self.pool = ProcessPool(warm=max(1, int(capacity.cpus)), max_idle=max(2, int(capacity.cpus) * 2))
        self.cores = CoreAllocator()
        self.waiting: list[WorkItem] = []
        self.waiting_keys: set[tuple[str, str, int]] = set()
        # followers (maze/head/followers.py): held, then run with their reports gated
        self.follow = Followers(lambda event, stored: self.outbox.emit(event, stored), self._gate_closed)
        self._rejoining = False
        self._rejoin_lock = asyncio.Lock()
        self._stopping = False
        self._pulling = False  # between a session's join and its leave: work is taken
        self.usage = Usage()
        self.running: dict[tuple[str, str, int], asyncio.Task[None]] = {}
        # attempts whose work was taken -> the leadership that placed them (WorkItem.epoch)
        self.seen: OrderedDict[tuple[str, str, int], int] = OrderedDict()
        self._unreported: dict[tuple[str, str, int], tuple[AttemptStarted, asyncio.TimerHandle]] = {}
        self.ended_runs: OrderedDict[str, None] = OrderedDict()  # runs the controller ended
        self.stopped: set[tuple[str, str, int]] = set()  # attempts killed for their run's end
        # work for an attempt being stopped here (void, its message not stored) that the log placed
        # after all: started once the stopped one has ended
        self.after_stop: dict[tuple[str, str, int], WorkItem] = {}
        # attempts whose work this node took from a deposed leader, then rejected from the log
        self.superseded: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[Any]] = set()  # held: the loop keeps weak references only
        self.logs = TaskLogs(node_id)  # what tasks print (maze/workers/logs.py)
        self._bind(nc)
        self.log = log.bind(node_id=node_id)

    def _bind(self, nc: NATS) -> None:
        self.nc = nc
        self.js = jetstream(nc)
        self.store = EventStore(nc, reporter=self.node_id, salt=self.session)
        self.outbox = Outbox(self.store, self._on_unrecordable)
        self.blobs = BlobStore(nc, self.limits.blob_max_bytes)
        self.cache = BlobCache(self.blobs)
        self.files = FileStager(self.blobs, self.cache, self.work_dir / ".content")
        self.budget = payload_budget(nc)
        self.logs.bind(self.js, self.budget)

    @property
    def durable(self) -> str:
        return f"worker-{self.node_id}"

    async def start(self) -> None:
        self.pool.start()
        await self._probe_sandbox()
        await self.join()

    async def _probe_sandbox(self) -> None:
        """Whether this node runs sandboxed attempts, said in its capacity (NodeJoined)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # what an earlier run of this worker left (killed: no cleanup ran) goes before any attempt
        wiped = await asyncio.to_thread(self.attempt_dirs.wipe, ".content", (".conda",))
        if wiped < 0:
            log.warning(
                "worker.work_root_not_ours_not_wiped", node_id=self.node_id, work_dir=str(self.work_dir)
            )
        elif wiped:
            log.info("worker.work_root_wiped", node_id=self.node_id, entries=wiped)
        support = await asyncio.to_thread(
            sandbox.probe, self.node_id, self.work_dir, self.sandbox_hidden, self.sandboxing
        )
        self.capacity = msgspec.structs.replace(
            self.capacity,
            sandbox=support.ok,
            sandbox_limits=support.detail,
            sandbox_network=support.ok and support.slirp is not None,
        )
        if support.ok:
            self.sandboxes = sandbox.SandboxPool(
                support, self.work_dir, self.sandbox_hidden, self.capacity.memory_mb
            )
            self.sandboxes.start()
        log.info("worker.sandbox", node_id=self.node_id, available=support.ok, detail=support.detail)

    async def join(self) -> None:
        """Register a new session of this node and start pulling its work."""
        self.session = uuid.uuid4().hex[:12]
        self.store.salt = self.session  # its message ids: no other node can guess them
        self.log = log.bind(node_id=self.node_id, session=self.session)
        # Work placed on an earlier session of this node is void (the controller re-places it): it
        # is taken and dropped when it comes (a worker may not purge streams)
        await self._ensure_consumer()
        self.puller = ContinuousPull(
            self.nc, subjects.WORK_STREAM, self.durable, self._on_work, ensure_consumer=self._ensure_consumer
        )
        await self.puller.start()
        self._pulling = True
        self.kv = await heartbeat_bucket(self.js)
        self.outbox.start()
        await self._beat()
        await self.store.publish(
            subjects.node_subject(self.node_id),
            [
                NodeJoined(
                    node_id=self.node_id,
                    session=self.session,
                    at_ms=now_ms(),
                    hostname=self.hostname,
                    ip=self.ip,
                    capacity=self.capacity,
                    heartbeat_interval_s=self.heartbeat_interval,
                )
            ],
        )
        self._tasks = [asyncio.create_task(self._heartbeat_forever(), name=f"worker-beat-{self.node_id}")]
        self.log.info(
            "worker.joined",
            cpus=self.capacity.cpus,
            memory_mb=self.capacity.memory_mb,
            gpus=[(g.index, g.name, g.total_mem_mb) for g in self.capacity.gpus],
        )

    async def _ensure_consumer(self) -> None:
        """This node's durable consumer on its work subject: there, or made. Made by the head where
        this worker's NATS user may not make consumers (the embedded server's roles), by this worker
        where it may (a NATS of the user's own, without roles)."""
        try:
            await self.js.consumer_info(subjects.WORK_STREAM, self.durable)
            return
        except NotFoundError:
            pass
        if self.make_consumer is not None:
            await self.make_consumer()
        else:
            await ensure_work_consumer(self.js, self.node_id)

    async def leave(self) -> None:
        """End this session: stop pulling, kill running attempts (they will be retried)."""
        self._pulling = False
        await self.puller.stop()
        # cancelled until it takes (maze/core/tasks.py): the heartbeat of a session that ended must
        # stop, or the head goes on seeing the lost session alive and this node never rejoins
        await cancel_and_wait([*self._tasks, *self.running.values()])
        self._tasks = []
        self.waiting.clear()
        self.waiting_keys.clear()
        self.after_stop.clear()
        self.follow.clear()

    async def stop(self, reason: str = "stopped") -> None:
        self._stopping = True  # no rejoin after this (one waiting for the lock gives up)
        async with self._rejoin_lock:
            await self._stop(reason)

    async def _stop(self, reason: str) -> None:
        await self.leave()
        self.pool.shutdown()
        if self.sandboxes is not None:
            self.sandboxes.shutdown()
        await self.logs.close()
        try:
            await asyncio.wait_for(self.outbox.drain(), 5)
            await self.store.publish(
                subjects.node_subject(self.node_id),
                [NodeLeft(node_id=self.node_id, session=self.session, at_ms=now_ms(), reason=reason)],
            )
        except Exception as exc:
            self.log.warning("worker.leave_not_recorded", error=str(exc))
        await self.outbox.stop()

    async def rejoin(self, nc: NATS | None = None, lost: str | None = None) -> None:
        """A fresh session: after being declared lost, or (agent) after the head or NATS restarted.
        One at a time (the agent's watch, a loss told by the head and an unrecordable event may all
        ask at once): two interleaved would start two heartbeats and leak one. `lost`: the session
        found lost; when another rejoin has replaced it meanwhile (and no new connection is
        given), there is nothing left to do — a second rejoin would kill the new session's work."""
        async with self._rejoin_lock:
            if self._stopping:
                return
            if lost is not None and nc is None and self.session != lost:
                self.log.info("worker.rejoin_done_already", lost=lost)
                return
            await self._rejoin(nc)

    async def _rejoin(self, nc: NATS | None) -> None:
        await self.leave()
        await self.outbox.stop()
        old_store, inflight, pending = self.store, self.outbox.inflight, self.outbox.pending
        if inflight:
            # the batch whose ack was awaited, sent again as it was, with this session's salt: if
            # it was stored, the server deduplicates it (same message ids); if this connection is
            # gone, it goes with the rest through the new session (stored twice if it had been:
            # the folds take a report twice alike, the history shows it twice)
            try:
                await asyncio.wait_for(old_store.publish_runs(inflight), UNSENT_RESEND_S)
                inflight = []
            except Exception as exc:
                self.log.warning("worker.unsent_batch_not_resent", events=len(inflight), error=repr(exc))
        # bound again even on the same connection: the head may have sent new value limits
        self._bind(nc or self.nc)
        for event in [*inflight, *pending]:
            self.outbox.emit(event)
        await self.join()

    def _on_unrecordable(self, events: list[Event], exc: BaseException) -> None:
        """The store refused these events for good: a new session, so that the controller records
        every attempt of this one lost and retries it (an attempt whose outcome cannot be recorded
        must not hang its run)."""
        self.log.error("worker.events_unrecordable_rejoining", events=len(events), error=repr(exc))
        self._in_background(self.rejoin(lost=self.session), "worker-rejoin-unrecordable")

    # ---- liveness -----------------------------------------------------------------------------
    async def _beat(self) -> None:
        beat = Heartbeat(
            node_id=self.node_id,
            session=self.session,
            at_ms=now_ms(),
            running=len(self.running),
            waiting=len(self.waiting),
            cpu_used=self.usage.cpu,
            memory_used_mb=self.usage.cpu_mem,
            gpu_free_mb=gpu_free_mb(self.capacity),
            ip=self.ip,
            interval_s=self.heartbeat_interval,
            # what waits here unstarted (a running attempt's start is in the log already, or
            # within START_REPORT_AFTER_S): the controller sends none of it again
            holding=[w.key for w in self.waiting[:HOLDING_LISTED]],
        )
        await self.kv.put(self.node_id, _beat.encode(beat))

    async def _heartbeat_forever(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._beat()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.log.warning("worker.heartbeat_failed", error=str(exc), failures=failures)
                if failures >= 3 and self.on_registration_lost is not None:
                    self._in_background(self.on_registration_lost(), "worker-registration-lost")
                    return

    def _declared_lost(self, why: str) -> None:
        """The head declared this session lost: register a new one (once)."""
        if self._rejoining:
            return
        self.log.warning("worker.declared_lost_rejoining", reason=why)
        self._rejoining = True
        self._in_background(self._rejoin_once(self.session), "worker-rejoin")

    def _in_background(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run `work` as a task this worker holds (the loop keeps weak references only)."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _rejoin_once(self, lost: str) -> None:
        """Register a new session, trying again (and saying why) until it is registered: a rejoin
        that failed once must not leave the worker silently without a session."""
        delay = 0.5
        try:
            while True:
                try:
                    await self.rejoin(lost=lost)
                    return
                except Exception as exc:
                    self.log.warning("worker.rejoin_failed", error=repr(exc), retry_in_s=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
        finally:
            self._rejoining = False

    # ---- receiving ----------------------------------------------------------------------------
    def _on_work(self, msg: Msg) -> None:
        batch = decode_work(msg.data)
        self._accept_all(batch.items)
        for cancel in batch.cancels:
            self._end_run(cancel)
        if self.session in batch.lost_sessions:
            self._declared_lost("told on its work subject")
        self._pump()

    def take_work(self, items: list[WorkItem]) -> None:
        """Work handed over in process by the controller of the head this worker runs in, once its
        placements are stored: what its work message would carry, without the message (no publish,
        no delivery, no decode). Taken as a pulled message is: an earlier session's work, a
        duplicate, or work of an ended run is dropped, and work the session cannot take now (it is
        leaving) is re-sent from the log by the controller's delivery check."""
        if not self._pulling:
            return
        self._accept_all(items)
        self._pump()

    def take_early(self, items: list[WorkItem], gate: asyncio.Future[bool]) -> set[tuple[str, str, int]]:
        """Work of a run whose message (its `run.created` with these placements) is being stored,
        handed over by the API of the head this worker runs in (maze/api/early.py): taken as
        `take_work` takes work, and started now; what it reports waits for `gate` (that message
        stored with these placements: True; not stored, or another copy was: False, and it is
        stopped). Returns the attempts taken (their work is not handed again once stored)."""
        if not self._pulling:
            return set()
        taken = set()
        for item in items:
            if item.key in self.seen or item.key in self.running or item.key in self.after_stop:
                continue  # (another copy's, or one being stopped: the controller sends it)
            hops.mark("work_received", item.run_id)
            self._accept(item)
            if item.key not in self.seen:
                continue
            taken.add(item.key)
            if not item.after:  # (a follower is gated once its upstream ends: on its success)
                self.follow.gate(item.key, gate)
        self._pump()
        return taken

    async def early_quiet(self, gate: asyncio.Future[bool], timeout: float) -> None:
        """Wait until nothing behind `gate` runs any more (each attempt, and the followers behind
        its success, ended), or `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.follow.running_behind(gate):
            left = deadline - loop.time()
            if left <= 0:
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self.follow.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except TimeoutError:
                return
            finally:
                with contextlib.suppress(ValueError):
                    self.follow.waiters.remove(waiter)

    def take_reports(
        self, gate: asyncio.Future[bool], room: int, size: Callable[[Event], int]
    ) -> tuple[list[Event], list[asyncio.Future[bool]]]:
        """What the attempts behind `gate` that ended reported, for the message `gate` stands for
        (Followers.take): never sent by this worker. `settle_early` then says that message's fate."""
        return self.follow.take(gate, room, size)

    def settle_early(
        self,
        gate: asyncio.Future[bool],
        handed: set[tuple[str, str, int]],
        told: list[asyncio.Future[bool]],
        stored: bool,
    ) -> None:
        """The run's message was stored with its placements and the reports taken into it
        (`stored`), or not: what waits behind it is sent, or dropped and stopped. Not stored, the
        attempts handed early are forgotten as seen (work sent again from the log is taken)."""
        for future in told:
            if not future.done():
                future.set_result(stored)
        if not gate.done():
            gate.set_result(stored)
        # what waits behind them goes (or stops) now, not a turn of the loop later: work the log
        # sends for the same attempts meanwhile finds them forgotten, or stopping (after_stop)
        self.follow.settle_now({gate, *told})
        if not stored:
            for key in handed:
                if key not in self.running and key not in self.waiting_keys and not self.follow.holds(key):
                    self.seen.pop(key, None)

    def take_cancels(self, cancels: list[CancelRun]) -> None:
        """The controller's word that runs ended (or their held followers go), handed over in
        process by the controller of the head this worker runs in, as its work is."""
        for cancel in cancels:
            self._end_run(cancel)
        self._pump()

    def _accept_all(self, items: list[WorkItem]) -> None:
        for item in items:
            hops.mark("work_received", item.run_id)
            self._accept(item)

    def _end_run(self, cancel: CancelRun) -> None:
        """The controller ended the run (cancelled, timed out) and its attempts here with it (the
        log says so already): kill those running (their process groups), drop those waiting, and
        start none of it that comes later. Nothing is reported for them: their ends are recorded."""
        run_id = cancel.run_id
        for key in self.follow.drop_run(run_id):
            self.seen.pop(key, None)
        # followers running behind a success not stored yet: what they report is void (the log
        # records them lost or ended already), and those of a failed run stop too
        for key in self.follow.void_run(run_id):
            if cancel.held_only:
                self._gate_closed(key)
        if cancel.held_only:  # the run failed: only its followers go; its attempts run on
            return
        for key in [k for k in self.after_stop if k[0] == run_id]:
            del self.after_stop[key]  # (its run ended: nothing of it starts again)
        self.ended_runs[run_id] = None
        if len(self.ended_runs) > ENDED_RUNS_KEPT:
            self.ended_runs.popitem(last=False)
        dropped = [w for w in self.waiting if w.run_id == run_id]
        if dropped:
            self.waiting = [w for w in self.waiting if w.run_id != run_id]
            for item in dropped:
                self.waiting_keys.discard(item.key)
                self.follow.ended(item.key)
        killed = [key for key in self.running if key[0] == run_id]
        for key in killed:
            self.stopped.add(key)
        if killed:
            # cancelled until it takes: a cancel swallowed on 3.11 must not leave the task running
            self._in_background(cancel_and_wait([self.running[key] for key in killed]), f"end-run-{run_id}")
        if dropped or killed:
            self.log.info(
                "worker.run_ended_here",
                run_id=run_id,
                killed=len(killed),
                dropped=len(dropped),
                why=cancel.reason,
            )

    def _accept(self, item: WorkItem) -> None:
        if item.session != self.session:
            return  # placed on an earlier session of this node; already re-placed
        if item.run_id in self.ended_runs:
            return  # its run was ended while this was on its way
        if item.key in self.running and item.key in self.stopped and item.key not in self.seen:
            # stopped as void (it may not report), and placed by the log after all: taken once the
            # stopped one has ended (a follower is not: sent again, it is held after its upstream)
            if not item.after:
                self.after_stop[item.key] = item
                self.seen[item.key] = item.epoch
            return
        taken = self.seen.get(item.key, 0)  # (0: taken from a head that named no leadership)
        if taken and item.epoch > taken:
            self._superseded(item)
            return
        if item.key in self.seen or item.key in self.running or item.key in self.waiting_keys:
            return  # work sent again (the controller's delivery check, or a restarted controller)
        if item.after:
            up = (item.run_id, item.after, item.after_attempt)
            done = self.follow.succeeded(up)  # (its work came after the upstream's end)
            if not (up in self.running or up in self.waiting_keys or self.follow.holds(up) or done):
                # its upstream is not here (it failed, or its work never came): sent again from
                # the log once the upstream's success puts it in force
                return
            self.follow.hold(item)
            if done is not None:
                self._start_follower(up, *done)
        else:
            self.waiting.append(item)
            self.waiting_keys.add(item.key)
        self.seen[item.key] = item.epoch
        if len(self.seen) > 100_000:
            self.seen.popitem(last=False)

    def _superseded(self, item: WorkItem) -> None:
        """Work for an attempt this node took from an older leadership: that placement was a deposed
        leader's, refused by every fold, and this is the log's own placement of the same attempt
        number. It is rejected (placed again under the next number: its reports cannot be taken
        for the older one's, nor dropped as their duplicates). What the older placement left here
        unstarted goes; what it started runs on (it reported, or will, the same task, on the inputs
        that leader gave it: if that lands first, the log takes it, and the rejection changes
        nothing)."""
        key = item.key
        taken_from = self.seen.get(key)
        self.log.warning(
            "worker.placement_superseded",
            run_id=item.run_id,
            task_id=item.task_id,
            attempt=item.attempt,
            epoch=item.epoch,
            taken_from=taken_from,
        )
        if key in self.waiting_keys or self.follow.holds(key):  # unstarted: it goes, with its chain
            self._drop_waiting(key)
            self.follow.release(key)
            self._drop_followers_of(key)
        self.after_stop.pop(key, None)
        self.seen[key] = item.epoch  # (the same work sent again is a duplicate)
        self.superseded[key] = None  # (kept as seen whatever the older copy's end: see _gate_closed)
        if len(self.superseded) > SUPERSEDED_KEPT:
            self.superseded.popitem(last=False)
        why = (
            f"attempt {item.attempt} was taken here from an earlier leadership's placement (epoch "
            f"{taken_from}), which the log refused: placed again"
        )
        # sent as it is: not behind a gate the older placement's attempt may have left for this key
        self.outbox.emit(self._rejection(item, why), None)

    def _drop_waiting(self, key: tuple[str, str, int]) -> None:
        """Attempt `key`, waiting here unstarted, goes (nothing of it ran, nothing is reported)."""
        self.waiting_keys.discard(key)
        self.waiting = [w for w in self.waiting if w.key != key]
        self.follow.ended(key)

    def _drop_followers_of(self, key: tuple[str, str, int]) -> None:
        """The followers held after attempt `key`, which will not succeed here, dropped (the
        controller records them lost); forgotten as seen, so that work sent again is taken."""
        for follower in self.follow.drop_after(key):
            self.seen.pop(follower, None)

    def _gate_closed(self, key: tuple[str, str, int]) -> None:
        """The success follower `key` ran behind was not stored as it is: the follower's attempt is
        void (the controller records it lost), so it stops here, reporting nothing, with the chain
        held after it. Its work is taken again if the log puts it in force after all (a success
        stored in a batch that failed elsewhere is told unstored)."""
        self._drop_followers_of(key)
        if key not in self.superseded:  # (the log's placement of it was rejected here: not taken)
            self.seen.pop(key, None)
        if key in self.waiting_keys:
            self._drop_waiting(key)
        elif key in self.running and self.running[key] is not asyncio.current_task():
            # (told from within its own attempt's end: it reports nothing more, and nothing to stop)
            self.stopped.add(key)
            self._in_background(cancel_and_wait([self.running[key]]), f"void-follower-{key[1]}")

    def _start_follower(self, key: tuple[str, str, int], stored: asyncio.Future[bool], result: bytes) -> None:
        """Attempt `key` succeeded: its follower runs now, first in line, in its slot, while that
        success is being stored (what it reports waits for it: maze/workers/follow.py)."""
        started = self.follow.start(key, stored, result)
        if started is None:
            return
        item, ready = started
        if isinstance(ready, str):
            self._fail(item, "invalid_input", ready, retryable=False)
            self.follow.ended(item.key)
            self._drop_followers_of(item.key)
            return
        self.waiting.insert(0, ready)
        self.waiting_keys.add(ready.key)

    # ---- running ------------------------------------------------------------------------------
    def _pump(self) -> None:
        """Start every waiting attempt that fits what is running now (not only the first); none
        once the session is leaving (what waits is dropped with it)."""
        if not self._pulling:
            return
        still_waiting = []
        for item in self.waiting:
            if item.resources.sandbox and self.sandboxes is None:
                # never run unsandboxed: the controller places it elsewhere (or says why it waits)
                self.waiting_keys.discard(item.key)
                self._reject(item, f"this node cannot sandbox ({self.capacity.sandbox_limits})")
                self.follow.ended(item.key)
                continue
            if item.resources.network and not self.capacity.sandbox_network:
                self.waiting_keys.discard(item.key)
                self._reject(item, "this node cannot give a sandbox network (slirp4netns is not installed)")
                self.follow.ended(item.key)
                continue
            if fits_assigned(self.capacity, self.usage, item.resources, item.gpus):
                if item.gpus and not self._gpu_memory_free(item):
                    self.waiting_keys.discard(item.key)  # rejected: the controller places it again
                    self.follow.ended(item.key)
                    continue
                add_usage(self.usage, item.resources, item.gpus)
                self.waiting_keys.discard(item.key)
                self.running[item.key] = asyncio.create_task(self._run(item))
            else:
                still_waiting.append(item)
        self.waiting = still_waiting

    def _gpu_memory_free(self, item: WorkItem) -> bool:
        """Re-check real cards with pynvml: another process may be using the memory we were given."""
        free = gpu_free_mb(self.capacity)
        short = [g for g in item.gpus if g in free and free[g] < item.resources.gpu_mem]
        if not short:
            return True
        reason = ", ".join(f"GPU {g} has {free[g]} MB free, needs {item.resources.gpu_mem} MB" for g in short)
        self._reject(item, reason)
        return False

    def _reject(self, item: WorkItem, reason: str) -> None:
        self.follow.report(item.key, self._rejection(item, reason))

    def _rejection(self, item: WorkItem, reason: str) -> AttemptRejected:
        return AttemptRejected(
            run_id=item.run_id,
            task_id=item.task_id,
            attempt=item.attempt,
            node_id=self.node_id,
            at_ms=now_ms(),
            reason=reason,
            placed_epoch=item.epoch,
        )

    async def _run(self, item: WorkItem) -> None:
        tp: TaskProcess | None = None
        directory: Path | None = None
        staged: dict[str, Staged] = {}
        reuse = False
        handed = False  # the task process has the attempt: user code may have run
        done: tuple[asyncio.Future[bool], bytes] | None = None  # its success, when a follower waits
        cores = self.cores.take(item.resources.cpu)
        pool: ProcessPool = self.pool
        attempt_dir: Path | None = None
        try:
            if item.resources.sandbox and self.sandboxes is not None:
                pool = self.sandboxes
                attempt_dir = directory = self.attempt_dirs.make(item.run_id, item.task_id, item.attempt)
                try:  # removed at the end whatever happens here (a spare's renamed onto it too)
                    tp = self.sandboxes.acquire_for(attempt_dir, item.resources)
                except sandbox.SandboxError as exc:
                    self._fail(item, "sandbox_error", str(exc), retryable=False)
                    return
                except OSError as exc:  # bubblewrap or its cgroup could not be started
                    self._fail(
                        item, "sandbox_error", f"the sandbox could not be started: {exc}", retryable=True
                    )
                    return
            else:
                tp = self.pool.acquire(fresh=bool(item.gpus))
            self._will_report_start(
                AttemptStarted(
                    run_id=item.run_id,
                    task_id=item.task_id,
                    attempt=item.attempt,
                    node_id=self.node_id,
                    at_ms=now_ms(),
                    node_ip=self.ip,
                    pid=tp.pid,
                )
            )
            try:
                # a sandbox's directory is made before it is acquired (its spare is renamed onto
                # it, maze/workers/sandbox.py): staged after, never made again
                files = has_files(item)  # a workspace, or file inputs
                if attempt_dir is not None:
                    directory = attempt_dir
                elif files:
                    directory = self.attempt_dirs.make(item.run_id, item.task_id, item.attempt)
                # else no directory of its own: a task of a run without files runs where its task
                # process is (making and removing three directory levels cost ~0.35 ms an attempt
                # on this VM's ext4, a tenth of a no-op task's latency, for nothing to put there)
                if files and directory is not None:
                    staged = await self.files.stage(item, directory)
                request = await self._request(item, tp, cores)
                if directory is not None:
                    request["cwd"] = str(directory)
            except (ArtifactError, BlobMissing, ValidationError, PayloadTooLarge) as exc:
                # missing or corrupt content, a path no attempt may write: never used
                self._fail(item, "artifact_error", exc.message, retryable=False)
                return
            except Exception as exc:  # the store did not answer: another attempt may succeed
                self._fail(
                    item,
                    "artifact_error",
                    f"could not fetch the task's blobs or stage its files: {exc!r}",
                    retryable=True,
                )
                return
            try:
                hops.mark("process_start", item.run_id)
                handed = True
                if pool is self.sandboxes:
                    env = sandbox.attempt_env(item.run_id, item.task_id, item.attempt, self.node_id)
                    request.update(self.sandboxes.context(tp, env))
                reply = await self.logs.run(pool, tp, request, item, self.limits.log_cap_bytes)
                hops.mark("process_returned", item.run_id)
                if pool is self.sandboxes and item.workspace:
                    # nothing of the task runs on while its files are read (a thread it left
                    # could swap a file for a link between their walk and their reading); without
                    # files to read the sandbox is killed as it is released
                    await self.sandboxes.end(tp)
            except sandbox.SandboxError as exc:
                self._fail(item, "sandbox_error", str(exc), retryable=True)
                return
            except ReplyRefused as exc:
                self._fail(item, exc.error_type, exc.message, retryable=False)
                return
            except TimeoutError:
                self._fail(
                    item, "timed_out", f"attempt exceeded timeout of {item.timeout_seconds}s", retryable=True
                )
                return
            except ProcessExited as exc:
                why = self.sandboxes.verdict(tp) if pool is self.sandboxes else None
                if why is not None:  # its memory or process limit, or bubblewrap's own failure
                    self._fail(item, why[0], why[1], retryable=why[0] != "out_of_memory")
                else:
                    self._fail(item, "process_exited", str(exc), retryable=True)
                return
            reuse = not item.gpus
            if reply.get("has_func"):
                tp.loaded.add(item.func_hash)
            if reply["ok"]:
                done = await self._succeed(item, reply, directory, staged)
            else:
                err = reply["payload"]
                why = self.sandboxes.verdict(tp) if pool is self.sandboxes else None
                self._fail(
                    item,
                    err["error_type"],
                    err["message"] + (f" ({why[1]})" if why is not None else ""),
                    retryable=err["retryable"],
                    traceback=err["traceback"],
                    exception_type=err["exception_type"],
                )
        except asyncio.CancelledError:
            reuse = False
            raise
        except Exception as exc:  # a fault of the worker's own: the attempt must still end
            reuse = False
            self.log.exception("worker.attempt_crashed", run_id=item.run_id, task_id=item.task_id)
            self._fail(
                item,
                "worker_error",
                f"the worker failed while running this attempt: {exc!r}",
                retryable=True,
                traceback=format_exc(),
            )
        finally:
            if item.key in self.stopped:  # its run ended: its end is recorded, nothing to report
                self.stopped.discard(item.key)
                self._forget_start(item.key)
            elif handed:  # cancelled while its code ran: the start is recorded all the same
                self._report_start(item.key)
            else:  # cancelled before its code ran: it never started
                self._forget_start(item.key)
            if tp is not None:
                pool.release(tp, reuse=reuse)
            if directory is not None:
                self._remove_dir(directory, big=bool(item.workspace))
            self.cores.give_back(cores, item.resources.cpu)
            add_usage(self.usage, item.resources, item.gpus, sign=-1)
            self.running.pop(item.key, None)
            self.follow.ended(item.key)
            again = self.after_stop.pop(item.key, None)
            if again is not None:  # its placement by the log, come while it was being stopped
                self.seen.pop(again.key, None)
                self._accept(again)
            if self.follow.follows(item.key):
                if done is not None and not told_unstored(done[0]):
                    self._start_follower(item.key, *done)
                elif again is None:  # it failed, or its success was not stored as it is (its gate
                    self._drop_followers_of(item.key)  # closed); what follows `again` waits for it
            elif done is not None:
                self.follow.note_success(item.key, *done)  # for a follower whose work comes later
            self._pump()

    # ---- reporting starts ---------------------------------------------------------------------
    def _will_report_start(self, started: AttemptStarted) -> None:
        """An attempt's start is recorded START_REPORT_AFTER_S after it began, or just before its
        end if that comes first: a short attempt's start and end then travel in one message."""
        key = (started.run_id, started.task_id, started.attempt)
        handle = asyncio.get_running_loop().call_later(START_REPORT_AFTER_S, self._report_start, key)
        self._unreported[key] = (started, handle)

    def _report_start(self, key: tuple[str, str, int]) -> None:
        entry = self._unreported.pop(key, None)
        if entry is not None:
            entry[1].cancel()
            self.follow.report(key, entry[0])

    def _forget_start(self, key: tuple[str, str, int]) -> None:
        entry = self._unreported.pop(key, None)
        if entry is not None:
            entry[1].cancel()

    async def _request(self, item: WorkItem, tp: TaskProcess, cores: list[int]) -> dict[str, Any]:
        """What the task process needs: its code unless it holds it already, its inputs, and every
        blob those inputs refer to (fetched once per worker and checked against its hash)."""
        refs = blob_refs(item.inputs)
        blobs = await self.cache.get_many(sorted({r.sha256 for r in refs}))
        func: bytes | None = None
        if item.func_hash not in tp.loaded:
            func = item.func or await self.cache.get(item.func_hash)
        return {
            "func_name": item.func_name,
            "func_hash": item.func_hash,
            "func": func,
            "call_style": item.call_style,
            "inputs": item.inputs,
            "gathers": item.gathers,
            "blobs": blobs,
            "outputs": item.outputs,
            "gpus": item.gpus,
            "cores": cores,
            "blob_max_bytes": self.limits.blob_max_bytes,
            # maze/core/attempt_context.py: which attempt this is, for code that asks
            "context": {
                "run_id": item.run_id,
                "task_id": item.task_id,
                "attempt": str(item.attempt),
                "node_id": self.node_id,
                "work_root": str(self.attempt_dirs.root),
            },
        }

    def _remove_dir(self, directory: Path, big: bool) -> None:
        """The attempt's directory goes, after the attempt's end has left (not before it, on the
        hot path); one that may hold many files goes in a thread."""
        if not big:
            asyncio.get_running_loop().call_later(REMOVE_DIR_AFTER_S, self.attempt_dirs.remove, directory)
            return
        removing = asyncio.get_running_loop().run_in_executor(None, self.attempt_dirs.remove, directory)
        self._background.add(removing)
        removing.add_done_callback(self._background.discard)

    async def _artifacts(
        self, item: WorkItem, directory: Path, staged: dict[str, Staged]
    ) -> list[FileEntry] | None:
        """The files the attempt made, stored (None: it was failed instead)."""
        try:
            return await self.files.collect(directory, staged, item.artifacts)
        except TooManyFiles as exc:
            self._fail(item, "artifact_error", exc.message, retryable=False)
        except PayloadTooLarge as exc:
            self._fail(
                item, "artifact_error", f"a file the task made is too large: {exc.message}", retryable=False
            )
        except MazeError as exc:
            self._fail(
                item, "artifact_error", f"the task's files could not be stored: {exc.message}", retryable=True
            )
        except Exception as exc:  # the store did not answer, a file vanished while it was read
            self._fail(
                item, "artifact_error", f"the task's files could not be stored: {exc!r}", retryable=True
            )
        return None

    async def _succeed(
        self, item: WorkItem, reply: dict[str, Any], directory: Path | None, staged: dict[str, Staged]
    ) -> tuple[asyncio.Future[bool], bytes] | None:
        """Reports the attempt's success (or the failure it turned into). With a follower held
        after it: when the success is stored (a future), and its result."""
        artifacts: list[FileEntry] = []
        if item.workspace and directory is not None:
            found = await self._artifacts(item, directory, staged)
            if found is None:
                return None
            artifacts = found
        try:
            result = await store_result(
                [tuple(o) for o in reply["payload"]], self.limits, self.budget, self.blobs
            )
        except PayloadTooLarge as exc:
            self._fail(item, "payload_too_large", exc.message, retryable=False)
            return None
        except MazeError as exc:
            self._fail(
                item, "artifact_error", f"the result could not be stored: {exc.message}", retryable=True
            )
            return None
        self._report_start(item.key)
        at = now_ms()
        for entry in artifacts:  # before the end, in the same message as a rule
            self.follow.report(
                item.key,
                ArtifactRegistered(
                    run_id=item.run_id,
                    task_id=item.task_id,
                    attempt=item.attempt,
                    node_id=self.node_id,
                    path=entry.path,
                    sha256=entry.sha256,
                    size=entry.size,
                    at_ms=at,
                ),
            )
        leads = item.leads or self.follow.follows(item.key)
        stored = asyncio.get_running_loop().create_future() if leads else None
        self.follow.report(
            item.key,
            AttemptSucceeded(
                run_id=item.run_id,
                task_id=item.task_id,
                attempt=item.attempt,
                node_id=self.node_id,
                at_ms=now_ms(),
                result=result,
                duration_ms=reply["duration_ms"],
            ),
            stored,
        )
        return (stored, result) if stored is not None else None

    def _fail(
        self,
        item: WorkItem,
        error_type: str,
        message: str,
        retryable: bool,
        traceback: str | None = None,
        exception_type: str | None = None,
    ) -> None:
        self._report_start(item.key)
        self.follow.report(
            item.key,
            AttemptFailed(
                run_id=item.run_id,
                task_id=item.task_id,
                attempt=item.attempt,
                at_ms=now_ms(),
                node_id=self.node_id,
                error=TaskError(
                    error_type=error_type,
                    message=clip(message, MAX_MESSAGE_CHARS),
                    retryable=retryable,
                    origin="task",
                    node_id=self.node_id,
                    node_ip=self.ip,
                    attempt=item.attempt,
                    traceback=clip(traceback, MAX_TRACEBACK_CHARS) if traceback else None,
                    exception_type=exception_type,
                ),
            ),
        )
