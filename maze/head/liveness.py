"""Which worker sessions are alive: heartbeats watched in the KV bucket, judged against a timeout.
The controller turns a stale session into a `node.lost` event."""

from __future__ import annotations

import time

import msgspec
from nats.js import JetStreamContext

from maze.events.nodes import Heartbeat, NodeLost
from maze.events.store import heartbeat_bucket
from maze.head.placer import NodeView

_decoder = msgspec.msgpack.Decoder(Heartbeat)


class Liveness:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.heartbeats: dict[str, Heartbeat] = {}
        self.last_seen: dict[str, tuple[str, float]] = {}  # node -> (session, monotonic time)
        self.join_seen: dict[str, float] = {}
        self.live_since = time.monotonic()
        self._held: dict[str, tuple[Heartbeat, set[tuple[str, str, int]]]] = {}

    def went_live(self) -> None:
        """Sessions known from history get a full timeout from now to show a heartbeat."""
        self.live_since = time.monotonic()

    def joined(self, node_id: str) -> None:
        self.join_seen[node_id] = time.monotonic()

    def age_s(self, node_id: str) -> float | None:
        seen = self.last_seen.get(node_id)
        return round(time.monotonic() - seen[1], 3) if seen else None

    async def watch(self, js: JetStreamContext) -> None:
        watcher = await (await heartbeat_bucket(js)).watchall()
        async for entry in watcher:
            if entry is None or not entry.value:
                continue
            try:
                beat = _decoder.decode(entry.value)
            except msgspec.DecodeError:
                continue
            self.heartbeats[beat.node_id] = beat
            self.last_seen[beat.node_id] = (beat.session, time.monotonic())

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
        """NodeLost for every live node whose current session has not heartbeaten in time: the
        liveness timeout, or for an operator's reconcile three of the node's own intervals."""
        lost = []
        mono = time.monotonic()
        for node in nodes:
            session, seen = self.last_seen.get(node.node_id, ("", 0.0))
            if session != node.session:  # no beat of this session yet: count from when we saw it join
                seen = max(self.live_since, self.join_seen.get(node.node_id, 0.0))
            limit = self.timeout_s
            beat = self.heartbeats.get(node.node_id)
            if force_reason and beat is not None and beat.session == node.session:
                limit = min(limit, 3 * beat.interval_s)
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
