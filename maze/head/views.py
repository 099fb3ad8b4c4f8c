"""Read-only views of the controller's live state for the cluster API (queues, capacity)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from maze.core.clock import now_ms
from maze.events.specs import Resources

if TYPE_CHECKING:
    from maze.head.controller import RunController


def resource_class(req: Resources) -> str:
    return f"cpu={req.cpu:g},cpu_mem={req.cpu_mem},gpu={req.gpu:g},gpu_mem={req.gpu_mem}"


def queues(ctl: RunController) -> dict[str, Any]:
    now = now_ms()
    classes: dict[str, dict[str, int]] = {}
    pending = []
    for run_id, task_id in ctl.ready:
        run = ctl.runs.get(run_id)
        if run is None:
            continue
        spec = run.tasks[task_id].spec
        cls = resource_class(spec.resources)
        classes.setdefault(cls, {"pending": 0, "placed": 0})["pending"] += 1
        pending.append(
            {
                "run_id": run_id,
                "task_id": task_id,
                "name": spec.name,
                "resource_class": cls,
                "reason": ctl.pending_reasons.get((run_id, task_id), "about to be placed"),
            }
        )
    placed = []
    for (run_id, task_id, attempt), res in ctl.placer.reservations.items():
        cls = resource_class(res.resources)
        classes.setdefault(cls, {"pending": 0, "placed": 0})["placed"] += 1
        run = ctl.runs.get(run_id)
        task = run.tasks.get(task_id) if run else None
        placed.append(
            {
                "run_id": run_id,
                "task_id": task_id,
                "attempt": attempt,
                "node_id": res.node_id,
                "gpus": res.gpus,
                "state": task.state if task else "unknown",
                "timeout_seconds": task.spec.timeout_seconds if task else None,
            }
        )
    retry_waits = [
        {
            "run_id": run.run_id,
            "task_id": t.spec.task_id,
            "next_attempt": t.next_attempt,
            "retry_in_s": max(0.0, (t.retry_at_ms - now) / 1000),
            "reason": t.error.error_type if t.error else None,
        }
        for run in ctl.runs.values()
        for t in run.tasks.values()
        if t.state == "retry_wait"
    ]
    node_queues = {
        node_id: {"running": beat.running, "waiting": beat.waiting}
        for node_id, beat in ctl.liveness.heartbeats.items()
        if node_id in ctl.placer.nodes
    }
    return {
        "by_resource_class": classes,
        "pending": pending,
        "placed": placed,
        "timeouts": [p for p in placed if p["timeout_seconds"]],
        "retry_waits": retry_waits,
        "node_queues": node_queues,
        "recent_rejects": {
            n: [{"at_ms": at, "reason": r} for at, r in d] for n, d in ctl.placer.rejects.items()
        },
    }


def node_live_view(ctl: RunController, node_id: str) -> dict[str, Any]:
    """Committed (placed) resources and the last heartbeat of one node."""
    view = ctl.placer.nodes.get(node_id)
    beat = ctl.liveness.heartbeats.get(node_id)
    out: dict[str, Any] = {
        "alive_in_controller": bool(view and view.alive),
        "heartbeat_age_s": ctl.liveness.age_s(node_id),
        "running": beat.running if beat else 0,
        "waiting": beat.waiting if beat else 0,
    }
    if view is not None:
        out["committed"] = {
            "cpu": round(view.committed.cpu, 6),
            "cpu_mem": view.committed.cpu_mem,
            "gpu_mem": dict(view.committed.gpu_mem),
            "gpu_share": dict(view.committed.gpu_share),
        }
    if beat is not None and beat.session == (view.session if view else ""):
        out["in_use"] = {"cpu": beat.cpu_used, "cpu_mem": beat.memory_used_mb}
        out["nvml_free_mb"] = beat.gpu_free_mb
    return out


def unregistered(ctl: RunController) -> list[dict[str, Any]]:
    """Workers heartbeating on NATS whose session is not a registered, live node of this head."""
    out = []
    for node_id, beat in ctl.liveness.heartbeats.items():
        view = ctl.placer.nodes.get(node_id)
        if view is None or view.session != beat.session or not view.alive:
            out.append(
                {
                    "node_id": node_id,
                    "session": beat.session,
                    "ip": beat.ip,
                    "heartbeat_age_s": ctl.liveness.age_s(node_id),
                }
            )
    return out
