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


class NodeLeft(Struct, frozen=True, tag="node.left"):
    """A worker session ended (graceful stop, or declared lost)."""

    node_id: str
    session: str
    at_ms: int
    reason: str = "stopped"
