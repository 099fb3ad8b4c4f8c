"""Controller snapshots: its folded state and the stream positions it was folded to, so a start
replays only what follows (start-up cost follows the active state, not the length of history).

A snapshot is the scheduler's folded state, never its overlay of decisions in flight (what the log
does not have, a restarted controller decides again). It is stored as a blob (the blob store,
content-addressed, checked on read) and named by one key in the `maze-controller` KV bucket with
the positions and the identity of the streams it belongs to; the blob it replaced is deleted.

A snapshot that does not fit (another format version, streams recreated since, positions past the
end of a stream) is ignored with a log line: the log is the truth, and a replay from sequence 1
rebuilds the same state.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict, deque
from typing import Any

import msgspec
import structlog
from msgspec import Struct
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from maze.events import subjects
from maze.events.blobs import BlobStore
from maze.events.specs import Resources, TaskError
from maze.head.intake import PartialRun
from maze.head.placer import NodeView, Reservation
from maze.head.run_state import RunRuntime
from maze.head.scheduler import Scheduler

log = structlog.get_logger(__name__)

FORMAT = 3  # bump when the state's shape changes: older snapshots are then ignored (replayed)
# 2: dynamic runs (RunRuntime.dynamic, max_tasks, finalize); 3: ReAct runs (RunRuntime.agent)
KEY = "snapshot"
AttemptKey = tuple[str, str, int]
TaskKey = tuple[str, str]


class SchedulerState(Struct):
    """Everything `Scheduler` folded, in a form msgspec encodes in one call."""

    format: int
    positions: dict[str, int]
    runs: dict[str, RunRuntime]
    done_runs: list[str]
    refused: dict[str, TaskError]
    broken: dict[str, TaskError]
    partial: dict[str, PartialRun]
    expiry: list[tuple[int, str]]
    nodes: dict[str, NodeView]
    reservations: dict[AttemptKey, Reservation]
    run_load: dict[tuple[str, str], int]
    rejects: dict[str, list[tuple[int, str]]]
    avoid: dict[TaskKey, str]
    orphans: list[AttemptKey]
    ready: list[tuple[TaskKey, Resources, int]]  # live queued tasks: (task, shape, readiness seq)
    ready_seq: int
    reasons: dict[Resources, str]
    retries: list[tuple[int, int, str, str, int]]
    retries_seq: int
    awaiting: list[AttemptKey]
    epoch: int = 0  # the latest leadership folded, and its head
    leader: str = ""
    nodes_epoch: int = 0  # the latest leadership recorded in the nodes stream
    done_states: list[str] = []  # each of `done_runs`' final state ("": from an older snapshot)
    cancel_early: dict[str, str] = {}  # cancels requested before their run started


class Pointer(Struct):
    """The KV value naming the current snapshot."""

    format: int
    sha256: str
    size: int
    positions: dict[str, int]
    streams: dict[str, str]  # stream name -> its creation time (a recreated stream is another log)
    at_ms: int


_encoder = msgspec.msgpack.Encoder()
_state = msgspec.msgpack.Decoder(SchedulerState)
_pointer = msgspec.msgpack.Decoder(Pointer)


def capture(core: Scheduler, positions: dict[str, int]) -> SchedulerState:
    """The folded state (the overlay of decisions in flight left out)."""
    placer, ready = core.placer, core.ready
    retries, retries_seq = core.retries.state()
    nodes = {
        node_id: msgspec.structs.replace(view, intended=type(view.intended)())
        for node_id, view in placer.nodes.items()
    }
    return SchedulerState(
        format=FORMAT,
        positions=dict(positions),
        runs=core.runs,
        done_runs=list(core.done_runs),
        refused=core.refused,
        broken=core.broken,
        partial=core.intake.partial,
        expiry=core.intake.expiry(),
        nodes=nodes,
        reservations=placer.reservations,
        run_load=placer.run_load,
        rejects={n: list(d) for n, d in placer.rejects.items()},
        avoid=placer.avoid,
        orphans=list(placer.orphans),
        ready=ready.live(),
        ready_seq=ready.next_seq(),
        reasons=ready.reasons,
        retries=retries,
        retries_seq=retries_seq,
        awaiting=list(core.delivery.awaiting),
        epoch=core.epoch,
        leader=core.leader,
        nodes_epoch=core.nodes_epoch,
        done_states=list(core.done_runs.values()),
        cancel_early=core.cancel_early,
    )


def encode(state: SchedulerState) -> bytes:
    return _encoder.encode(state)


def decode(data: bytes) -> SchedulerState:
    return _state.decode(data)


def restore(state: SchedulerState, queue_factor: float, grace_ms: int, resend_after_ms: int) -> Scheduler:
    """A scheduler in exactly the folded state captured (its derived indexes rebuilt)."""
    core = Scheduler(queue_factor, grace_ms, resend_after_ms)
    core.runs = state.runs
    states = state.done_states or [""] * len(state.done_runs)
    core.done_runs = OrderedDict(zip(state.done_runs, states, strict=True))
    core.cancel_early = state.cancel_early
    core.deadlines = [(run.deadline_ms, run_id) for run_id, run in state.runs.items() if run.deadline_ms]
    heapq.heapify(core.deadlines)
    core.refused = state.refused
    core.broken = state.broken
    core.intake.restore(state.partial, state.expiry)
    placer = core.placer
    placer.nodes = state.nodes
    placer.reservations = state.reservations
    for key, res in state.reservations.items():
        placer.by_node.setdefault(res.node_id, {})[key] = None
    placer.run_load = state.run_load
    placer.rejects = {n: deque(entries, maxlen=20) for n, entries in state.rejects.items()}
    placer.avoid = state.avoid
    placer.orphans = dict.fromkeys(state.orphans)
    core.ready.restore(state.ready, state.ready_seq, state.reasons)
    core.retries.restore(state.retries, state.retries_seq)
    core.delivery.awaiting = dict.fromkeys(state.awaiting)
    core.epoch, core.leader = state.epoch, state.leader
    core.nodes_epoch = state.nodes_epoch
    return core


# ---- storing ----------------------------------------------------------------------------------
class SnapshotStore:
    def __init__(self, js: JetStreamContext, blobs: BlobStore) -> None:
        self.js = js
        self.blobs = blobs
        self.last: Pointer | None = None

    async def _kv(self) -> Any:
        return await self.js.key_value(subjects.CONTROLLER_BUCKET)

    async def stream_ids(self) -> dict[str, str]:
        out = {}
        for stream in (subjects.RUNS_STREAM, subjects.NODES_STREAM):
            info = await self.js.stream_info(stream)
            out[stream] = str(info.created or "")
        return out

    async def save(self, state: SchedulerState, data: bytes) -> Pointer:
        began = time.monotonic()
        sha, size = await self.blobs.put(data)
        pointer = Pointer(
            format=FORMAT,
            sha256=sha,
            size=size,
            positions=state.positions,
            streams=await self.stream_ids(),
            at_ms=int(time.time() * 1000),
        )
        kv = await self._kv()
        previous = await self._current(kv)
        await kv.put(KEY, _encoder.encode(pointer))
        if previous is not None and previous.sha256 != sha:
            await self.blobs.delete(previous.sha256)
        self.last = pointer
        log.info(
            "controller.snapshot_saved",
            bytes=size,
            positions=state.positions,
            active_runs=len(state.runs),
            took_ms=round((time.monotonic() - began) * 1000, 1),
        )
        return pointer

    async def _current(self, kv: Any) -> Pointer | None:
        try:
            entry = await kv.get(KEY)
        except KeyNotFoundError:
            return None
        try:
            return _pointer.decode(entry.value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None

    async def load(self) -> SchedulerState | None:
        """The latest snapshot that belongs to these streams, or None (replay from sequence 1)."""
        try:
            kv = await self._kv()
        except BucketNotFoundError:
            return None
        pointer = await self._current(kv)
        if pointer is None:
            return None
        why = await self._unusable(pointer)
        if why is not None:
            log.warning("controller.snapshot_ignored", reason=why, positions=pointer.positions)
            return None
        try:
            state = decode(await self.blobs.get(pointer.sha256))
        except Exception as exc:  # missing, corrupt (hash-checked) or of another shape
            log.warning("controller.snapshot_ignored", reason=f"unreadable: {exc!r}", sha256=pointer.sha256)
            return None
        if state.format != FORMAT:
            log.warning("controller.snapshot_ignored", reason=f"format {state.format}, want {FORMAT}")
            return None
        self.last = pointer
        return state

    async def _unusable(self, pointer: Pointer) -> str | None:
        if pointer.format != FORMAT:
            return f"format {pointer.format}, this version reads {FORMAT}"
        if pointer.streams != await self.stream_ids():
            return "the streams were recreated since it was taken"
        for stream, seq in pointer.positions.items():
            info = await self.js.stream_info(stream)
            if seq > info.state.last_seq:
                return f"it is at {stream} {seq}, past the stream's last sequence {info.state.last_seq}"
        return None


def fingerprint(core: Scheduler) -> bytes:
    """The folded state in a form two cores can be compared by, byte for byte: what depends on
    when passes ran rather than on the log (pending reasons, which retry backoffs have been
    moved to the ready queue, expiry entries already looked at), or on how the run and node
    streams interleaved (the order orphans were found in), is normalized away."""
    state = capture(core, {})
    waiting = {
        (run_id, task_id)
        for run_id, run in core.runs.items()
        for task_id, task in run.tasks.items()
        if task.state == "retry_wait"
    }
    normalized = msgspec.structs.replace(
        state,
        ready=sorted(((k, shape, 0) for k, shape, _ in state.ready if k not in waiting), key=lambda e: e[0]),
        ready_seq=0,
        reasons={},
        retries=[],
        retries_seq=0,
        expiry=[],
        orphans=sorted(state.orphans),  # found in the order the two streams were read
    )
    return encode(normalized)
