"""Placement: which node runs an attempt, and why. Folded from node and attempt events.

Policy (README, "Placement"):
- A task with GPU needs goes only to a node whose cards have the GPU memory and share free now
  (best fit: the fullest card that still holds it), so two tasks never overfill a card.
- A task goes first to a node where it can start now, least-loaded first (committed CPUs / CPUs).
  Only when no node can start it now may it queue on one, up to `queue_factor` x the node's CPUs
  and memory committed; the worker starts queued attempts only when they fit what is running, so
  a node never runs more than its capacity while short tasks flow without a round trip to the
  head each (this pipelining is what takes a 2-core node past 1,000 tasks/s).
- On a tie, the node already holding more of the same run's attempts wins (locality for free).
- Ready tasks wait in one queue per shape (maze/head/ready.py): a task that does not fit anywhere
  now waits with its shape's reason and never blocks the smaller tasks behind it.

Reservations are indexed by node. When a node's membership changes (a new session joined, it left
or was lost), the attempts its old session held become `orphans`, a set the fold keeps (what that
node held, once, not a scan of every reservation at every pass) until each ends.

Reservations are folded from `attempt.placed`. A placement the controller decided but has not seen
come back from the log yet holds its capacity as `intended` (maze/head/inflight.py), so two passes
never give the same room away twice.
"""

from __future__ import annotations

from collections import deque

from msgspec import Struct, field

from maze.core.resources import EPSILON, Usage, add_usage, could_ever_fit, pick_gpus
from maze.events.nodes import NodeJoined
from maze.events.specs import NodeCapacity, Resources

AttemptKey = tuple[str, str, int]


class NodeView(Struct):
    node_id: str
    session: str
    hostname: str
    ip: str
    capacity: NodeCapacity
    alive: bool = True
    committed: Usage = field(default_factory=Usage)  # folded reservations
    joined_at_ms: int = 0
    intended: Usage = field(default_factory=Usage)  # placements decided, not yet in the log
    heartbeat_interval_s: float = 0.0  # as the session declared it when it joined (0: not declared)


class Reservation(Struct, frozen=True):
    node_id: str
    session: str
    resources: Resources
    gpus: list[int]
    epoch: int = 0  # the leadership its `attempt.placed` was stamped with (0: an intent, or before)


class Placement(Struct, frozen=True):
    node_id: str
    session: str
    gpus: list[int]
    reason: str


class Placer:
    def __init__(self, queue_factor: float = 4.0) -> None:
        self.queue_factor = queue_factor
        self.nodes: dict[str, NodeView] = {}
        self.reservations: dict[AttemptKey, Reservation] = {}
        self.run_load: dict[tuple[str, str], int] = {}  # (node, run) -> attempts reserved
        self.rejects: dict[str, deque[tuple[int, str]]] = {}  # node -> recent (at_ms, reason)
        self.avoid: dict[tuple[str, str], str] = {}  # (run, task) -> node that just rejected it
        self.by_node: dict[str, dict[AttemptKey, None]] = {}  # node -> its reservations
        self.orphans: dict[AttemptKey, None] = {}  # reservations whose node session is gone
        self.intents: dict[AttemptKey, Reservation] = {}  # decided placements, not yet folded

    # ---- folding ------------------------------------------------------------------------------
    def node_joined(self, event: NodeJoined) -> None:
        old = self.nodes.get(event.node_id)
        view = NodeView(
            node_id=event.node_id,
            session=event.session,
            hostname=event.hostname,
            ip=event.ip,
            capacity=event.capacity,
            joined_at_ms=event.at_ms,
            heartbeat_interval_s=event.heartbeat_interval_s,
        )
        if old is not None:
            view.committed = old.committed  # reservations of the old session are released by loss
            view.intended = old.intended
        else:
            # placements folded before the node's first join: a replay reads the run and node
            # streams side by side, in no fixed order between them, and must fold to one state
            for key in self.by_node.get(event.node_id, {}):
                res = self.reservations[key]
                add_usage(view.committed, res.resources, res.gpus)
        self.nodes[event.node_id] = view
        self._orphan_gone(event.node_id)

    def node_left(self, node_id: str, session: str) -> None:
        node = self.nodes.get(node_id)
        if node is not None and node.session == session and node.alive:
            node.alive = False
            self._orphan_gone(node_id)

    def _orphan_gone(self, node_id: str) -> None:
        """Orphans are what the node's membership says now (a replay that reads the node stream
        late may see a session's join after its placements: they are orphans only meanwhile)."""
        for key in self.by_node.get(node_id, {}):
            if self._is_orphan(self.reservations[key]):
                self.orphans[key] = None
            else:
                self.orphans.pop(key, None)

    def note_reject(self, run_id: str, task_id: str, node_id: str, at_ms: int, reason: str) -> None:
        self.rejects.setdefault(node_id, deque(maxlen=20)).append((at_ms, reason))
        self.avoid[(run_id, task_id)] = node_id

    def reserve(
        self, key: AttemptKey, node_id: str, session: str, req: Resources, gpus: list[int], epoch: int = 0
    ) -> None:
        self.forget_intent(key)
        self.avoid.pop((key[0], key[1]), None)
        if key in self.reservations:
            return
        res = Reservation(node_id=node_id, session=session, resources=req, gpus=list(gpus), epoch=epoch)
        self.reservations[key] = res
        self.by_node.setdefault(node_id, {})[key] = None
        node = self.nodes.get(node_id)
        if node is not None:
            add_usage(node.committed, req, gpus)
        if self._is_orphan(res):
            self.orphans[key] = None  # placed on a session already gone (seen in replay)
        load_key = (node_id, key[0])
        self.run_load[load_key] = self.run_load.get(load_key, 0) + 1

    def intend(self, key: AttemptKey, placement: Placement, req: Resources) -> None:
        """A placement decided now: its capacity is held until its `attempt.placed` is folded."""
        res = Reservation(
            node_id=placement.node_id, session=placement.session, resources=req, gpus=placement.gpus
        )
        self.forget_intent(key)  # an intent decided again replaces the old one, never adds to it
        self.intents[key] = res
        node = self.nodes.get(res.node_id)
        if node is not None:
            add_usage(node.intended, req, res.gpus)

    def forget_intent(self, key: AttemptKey) -> None:
        res = self.intents.pop(key, None)
        if res is not None:
            node = self.nodes.get(res.node_id)
            if node is not None:
                add_usage(node.intended, res.resources, res.gpus, sign=-1)

    def release(self, key: AttemptKey) -> None:
        self.orphans.pop(key, None)
        res = self.reservations.pop(key, None)
        if res is None:
            return
        held = self.by_node.get(res.node_id)
        if held is not None:
            held.pop(key, None)
            if not held:
                del self.by_node[res.node_id]
        node = self.nodes.get(res.node_id)
        if node is not None:
            add_usage(node.committed, res.resources, res.gpus, sign=-1)
        load_key = (res.node_id, key[0])
        left = self.run_load.get(load_key, 0) - 1
        if left > 0:
            self.run_load[load_key] = left
        else:
            self.run_load.pop(load_key, None)

    def _is_orphan(self, res: Reservation) -> bool:
        node = self.nodes.get(res.node_id)
        if node is None:
            return False  # its node's join is still to be folded (see node_joined)
        return not node.alive or node.session != res.session

    # ---- deciding -----------------------------------------------------------------------------
    def alive_nodes(self) -> list[NodeView]:
        return [n for n in self.nodes.values() if n.alive]

    def never_fits(self, req: Resources) -> str | None:
        """None if some live node could hold the request when empty, else why none can."""
        nodes = self.alive_nodes()
        if not nodes:
            return "no worker node has joined the cluster"
        reasons = []
        for node in nodes:
            why = could_ever_fit(node.capacity, req)
            if why is None:
                return None
            reasons.append(f"{node.node_id}: {why}")
        return "no node can ever hold this task (" + "; ".join(reasons) + ")"

    def choose(self, run_id: str, req: Resources, task_id: str = "") -> Placement | str:
        """A placement, or the reason nothing fits now. A node that just rejected this task is
        tried last."""
        avoid = self.avoid.get((run_id, task_id))  # forgotten when the next placement is folded
        nodes = sorted(self.alive_nodes(), key=lambda n: n.node_id == avoid)
        best: tuple[int, float, int, str] | None = None
        best_gpus: list[int] = []
        for node in nodes:
            if best is not None and node.node_id == avoid:
                break
            cap = node.capacity
            if could_ever_fit(cap, req) is not None:
                continue
            used = _combined(node)
            factor = self.queue_factor
            if used.cpu + req.cpu > cap.cpus * factor + EPSILON:
                continue
            if req.cpu_mem and used.cpu_mem + req.cpu_mem > cap.memory_mb * factor:
                continue
            gpus = pick_gpus(cap, used, req)
            if gpus is None:
                continue
            load = used.cpu / cap.cpus if cap.cpus else 0.0
            starts_now = (
                used.cpu + req.cpu <= cap.cpus + EPSILON and used.cpu_mem + req.cpu_mem <= cap.memory_mb
            )
            locality = -self.run_load.get((node.node_id, run_id), 0)
            score = (0 if starts_now else 1, round(load, 6), locality, node.node_id)
            if best is None or score < best:
                best, best_gpus = score, gpus
        if best is None:
            return self._pending_reason(req)
        node = self.nodes[best[3]]
        committed = best[1] * node.capacity.cpus
        reason = f"least-loaded ({committed:g} of {node.capacity.cpus:g} CPUs committed)"
        if best[0]:
            reason += "; queued on the node until it fits (no node could start it now)"
        if req.gpu > 0:
            reason += f"; GPU best fit {best_gpus}"
        return Placement(node_id=node.node_id, session=node.session, gpus=best_gpus, reason=reason)

    def _pending_reason(self, req: Resources) -> str:
        never = self.never_fits(req)
        if never is not None:
            return never
        want = f"cpu={req.cpu:g}, cpu_mem={req.cpu_mem}MB"
        if req.gpu:
            want += f", gpu={req.gpu:g}, gpu_mem={req.gpu_mem}MB"
        return f"waiting for free capacity ({want}); every node that could hold it is busy"


def _combined(node: NodeView) -> Usage:
    """What the node has committed, placements decided but not yet folded included."""
    intended = node.intended
    if (
        abs(intended.cpu) < EPSILON
        and not intended.cpu_mem
        and not intended.gpu_mem
        and not intended.gpu_share
    ):
        return node.committed
    used = Usage(
        cpu=node.committed.cpu + intended.cpu,
        cpu_mem=node.committed.cpu_mem + intended.cpu_mem,
        gpu_share=dict(node.committed.gpu_share),
        gpu_mem=dict(node.committed.gpu_mem),
    )
    for idx, share in intended.gpu_share.items():
        used.gpu_share[idx] = used.gpu_share.get(idx, 0.0) + share
    for idx, mem in intended.gpu_mem.items():
        used.gpu_mem[idx] = used.gpu_mem.get(idx, 0) + mem
    return used
