"""Node events, on subject `maze.node.<node_id>`. Liveness itself lives in a KV bucket."""

from __future__ import annotations

from msgspec import Struct

from maze.events.specs import NodeCapacity


class NodeJoined(Struct, frozen=True, tag="node.joined"):
    """A worker process (one `session`) offers its capacity. A new session of the same node id
    means the previous one is gone: its in-flight attempts are lost."""

    node_id: str
    session: str
    at_ms: int
    hostname: str
    ip: str
    capacity: NodeCapacity
    # seconds between this session's heartbeats, as its worker declared them (0: not declared, a
    # worker from before it was sent): the controller judges the session's liveness by it
    heartbeat_interval_s: float = 0.0


class NodeLeft(Struct, frozen=True, tag="node.left"):
    """A worker session ended (graceful stop, or declared lost)."""

    node_id: str
    session: str
    at_ms: int
    reason: str = "stopped"


class NodeLost(Struct, frozen=True, tag="node.lost"):
    """The controller declared a worker session dead (no heartbeat within the liveness timeout,
    or an operator's reconcile). Its in-flight attempts end `node_lost`."""

    node_id: str
    session: str
    at_ms: int
    reason: str = "heartbeat_timeout"
    # the declaring controller's leadership epoch: refused by the folds of the nodes stream once a
    # later leadership is recorded there (a deposed leader's late declaration)
    epoch: int = 0


class Heartbeat(Struct, frozen=True):
    """The value a worker puts under its node id in the heartbeat KV bucket (not an event)."""

    node_id: str
    session: str
    at_ms: int
    running: int = 0
    waiting: int = 0
    cpu_used: float = 0.0
    memory_used_mb: int = 0
    gpu_free_mb: dict[int, int] = {}
    ip: str = ""
    interval_s: float = 2.0
    # The attempts (run, task, attempt) this session holds, waiting or running (at most
    # HOLDING_LISTED): the controller does not send their work again.
    holding: list[tuple[str, str, int]] = []


HOLDING_LISTED = 4096
