"""Which worker sessions are alive: heartbeats watched in the KV bucket, judged against a timeout.
The controller turns a stale session into a `node.lost` event.

The watch is how beats arrive, but a watch can stall while the node it is served from fails over
(a NATS node killed: the watch's ordered consumer is re-created) while workers go on beating. So a
session that looks stale is confirmed against the bucket itself before it is declared lost: a beat
stored after the last one the watch delivered means the watch lagged, not the node; a bucket that
cannot be read says nothing either way, and nobody is declared lost on it.

Each session is judged by its own heartbeat interval, as its worker declared it (in `node.joined`
and in every beat): it is lost after BEATS_MISSED of its intervals without a beat, and never
sooner than the head's liveness timeout. A worker started with the original Maze's
`--heartbeat-interval 20` is lost after 60 s of silence, not after the head's default 10 s."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from maze.core.settings import BEATS_MISSED
from maze.events import subjects
from maze.events.nodes import Heartbeat, NodeLost
from maze.events.store import describe_error, heartbeat_bucket
from maze.head.placer import NodeView

log = structlog.get_logger(__name__)
_decoder = msgspec.msgpack.Decoder(Heartbeat)


WATCH_RESTART_S = 1.0  # a heartbeat watch that ended is started again after this long


class Liveness:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.heartbeats: dict[str, Heartbeat] = {}
        self.last_seen: dict[str, tuple[str, float]] = {}  # node -> (session, monotonic time)
        self.revisions: dict[str, int] = {}  # node -> the bucket revision of its latest beat seen
        self.undecodable = 0  # heartbeat values that could not be read (counted and logged)
        self.foreign = 0  # beats naming a node other than the key they were written under
        # called with every beat seen (the controller looks for sessions it has folded as ended)
        self.on_beat: Callable[[Heartbeat], None] | None = None
        self.unconfirmed = 0  # stale-looking sessions the bucket showed alive (the watch lagged)
        self.join_seen: dict[str, float] = {}
        self.intervals: dict[str, float] = {}  # node -> the heartbeat interval its session declared
        self.live_since = time.monotonic()
        self.bucket_made: datetime | None = None  # when the heartbeat bucket was made, as last seen
        self._held: dict[str, tuple[Heartbeat, set[tuple[str, str, int]]]] = {}

    def went_live(self) -> None:
        """Sessions known from history get a full timeout from now to show a heartbeat."""
        self.live_since = time.monotonic()

    def joined(self, node_id: str, interval_s: float = 0.0) -> None:
        """A session of the node joined, beating every `interval_s` (0: not declared)."""
        self.join_seen[node_id] = time.monotonic()
        self.intervals[node_id] = interval_s

    def interval_s(self, node_id: str, session: str) -> float:
        """The heartbeat interval of the node's session: as it joined, or as its beats say."""
        declared = self.intervals.get(node_id, 0.0)
        beat = self.heartbeats.get(node_id)
        if beat is not None and beat.session == session:
            declared = max(declared, beat.interval_s)
        return declared

    def timeout_for(self, node_id: str, session: str) -> float:
        """How long the node's session may be silent before it is lost: BEATS_MISSED of its own
        intervals, never less than the head's liveness timeout."""
        return max(self.timeout_s, BEATS_MISSED * self.interval_s(node_id, session))

    def age_s(self, node_id: str) -> float | None:
        seen = self.last_seen.get(node_id)
        return round(time.monotonic() - seen[1], 3) if seen else None

    async def watch(self, js: JetStreamContext) -> None:
        """Every beat as it is written, for as long as the controller runs: a watch that fails is
        started again (one of a bucket made again is started again by the controller, which is
        told: a watch of the lost bucket may wait in silence)."""
        while True:
            watcher = None
            try:
                watcher = await (await heartbeat_bucket(js)).watchall()
                async for entry in watcher:
                    if entry is None or not entry.value:
                        continue
                    self._saw(entry.value, entry.revision or 0, entry.key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("liveness.watch_restarting", error=describe_error(exc))
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]
            await asyncio.sleep(WATCH_RESTART_S)

    def grace(self) -> None:
        """The heartbeat bucket was made again, empty (a NATS server lost it): every session gets a
        full timeout from now to show a beat there, as at start, not judged by a bucket that lost
        its beats."""
        self.live_since = time.monotonic()
        for node_id, (session, _) in list(self.last_seen.items()):
            self.last_seen[node_id] = (session, self.live_since)
        self.revisions.clear()  # (the new bucket counts its revisions from 1 again)

    def _saw(self, value: bytes, revision: int, key: str) -> Heartbeat | None:
        try:
            beat = _decoder.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.undecodable += 1
            log.error("liveness.heartbeat_undecodable", revision=revision, error=str(exc))
            return None
        if beat.node_id != key:
            # a node may write only its own key (maze/head/nats_auth.py): a beat naming another
            # node there is a worker vouching for a node it is not, and never keeps that one alive
            self.foreign += 1
            log.error("liveness.heartbeat_of_another_node", key=key, names=beat.node_id, revision=revision)
            return None
        if revision < self.revisions.get(beat.node_id, 0):
            return beat  # older than what was seen already (a confirmation raced the watch)
        self.revisions[beat.node_id] = revision
        self.heartbeats[beat.node_id] = beat
        self.last_seen[beat.node_id] = (beat.session, time.monotonic())
        if self.on_beat is not None:
            self.on_beat(beat)
        return beat

    async def confirm(self, js: JetStreamContext, lost: list[NodeLost]) -> list[NodeLost]:
        """Of the sessions `stale` named, those the bucket itself shows silent: a beat stored after
        the latest one the watch delivered clears its session; an unreadable bucket clears all."""
        if not lost:
            return lost
        try:
            kv: KeyValue = await heartbeat_bucket(js)
            made = (await js.stream_info(f"KV_{subjects.HEARTBEAT_BUCKET}")).created
        except Exception as exc:
            log.warning("liveness.unverifiable", nodes=[e.node_id for e in lost], error=describe_error(exc))
            return []
        if self.bucket_made is not None and made != self.bucket_made:
            # made again (another head's stream keeper may have made it before this one's looked):
            # its beats are not the lost bucket's, and nodes get a full timeout to write there
            log.warning("liveness.bucket_made_again", nodes=[e.node_id for e in lost])
            self.bucket_made = made
            self.grace()
            return []
        self.bucket_made = made
        entries = await asyncio.gather(*(kv.get(e.node_id) for e in lost), return_exceptions=True)
        confirmed = []
        for event, entry in zip(lost, entries, strict=True):
            if isinstance(entry, KeyNotFoundError):
                confirmed.append(event)
                continue
            if isinstance(entry, BaseException):  # the store cannot say: judge again on a later pass
                log.warning("liveness.unverifiable", node_id=event.node_id, error=describe_error(entry))
                continue
            known = self.revisions.get(event.node_id, 0)
            beat = self._saw(entry.value, entry.revision or 0, entry.key) if entry.value else None
            if beat is not None and beat.session == event.session and (entry.revision or 0) > known:
                self.unconfirmed += 1
                log.info("liveness.watch_lagged", node_id=event.node_id, session=event.session)
                continue
            confirmed.append(event)
        return confirmed

    def holds(self, node_id: str, session: str, key: tuple[str, str, int]) -> bool:
        """Whether the node session's latest heartbeat lists the attempt as waiting or running."""
        beat = self.heartbeats.get(node_id)
        if beat is None or beat.session != session:
            return False
        held = self._held.get(node_id)
        if held is None or held[0] is not beat:
            held = self._held[node_id] = (beat, set(beat.holding))
        return key in held[1]

    def stale(self, nodes: list[NodeView], now_ms: int, force_reason: str | None = None) -> list[NodeLost]:
        """NodeLost for every live node whose current session has not heartbeaten in time: within
        `timeout_for` it, or for an operator's reconcile three of the node's own intervals."""
        lost = []
        mono = time.monotonic()
        for node in nodes:
            session, seen = self.last_seen.get(node.node_id, ("", 0.0))
            if session != node.session:  # no beat of this session yet: count from when we saw it join
                seen = max(self.live_since, self.join_seen.get(node.node_id, 0.0))
            limit = self.timeout_for(node.node_id, node.session)
            beat = self.heartbeats.get(node.node_id)
            if force_reason and beat is not None and beat.session == node.session:
                limit = min(limit, BEATS_MISSED * beat.interval_s)
            if mono - seen > limit:
                lost.append(
                    NodeLost(
                        node_id=node.node_id,
                        session=node.session,
                        at_ms=now_ms,
                        reason=force_reason or "heartbeat_timeout",
                    )
                )
        return lost
