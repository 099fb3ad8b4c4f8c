"""Read-only views of the controller's live state for the cluster API (queues, capacity)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from maze.core.clock import now_ms
from maze.events.specs import Resources

if TYPE_CHECKING:
    from maze.head.controller import RunController


SAMPLE = 100  # task keys listed per section; the counts cover everything


def resource_class(req: Resources) -> str:
    return f"cpu={req.cpu:g},cpu_mem={req.cpu_mem},gpu={req.gpu:g},gpu_mem={req.gpu_mem}"


def queues(ctl: RunController) -> dict[str, Any]:
    """Counts per resource class (with the reason its queue waits), and bounded samples of the
    waiting, placed and retrying attempts: cheap however many tasks are ready. Per class:
    `pending` (ready, waiting to be placed), `queued` (placed on a node, not started yet),
    `running`, and `placed` (queued + running)."""
    now = now_ms()
    core = ctl.core
    ready = core.ready
    classes: dict[str, dict[str, Any]] = {}

    def counts(cls: str) -> dict[str, Any]:
        return classes.setdefault(cls, {"pending": 0, "queued": 0, "running": 0, "placed": 0, "reason": None})

    for shape, count in ready.counts.items():
        counts(resource_class(shape)).update(pending=count, reason=ready.reasons.get(shape))
    reservations = ctl.placer.reservations
    running = 0
    # bounded by the cluster's capacity (and the followers placed with each: maze/head/followers.py)
    for (run_id, task_id, attempt), res in reservations.items():
        run = core.runs.get(run_id)
        task = run.tasks.get(task_id) if run else None
        # a follower holds nothing until its upstream succeeds: counted in its own class
        entry = counts(resource_class(task.spec.resources if task is not None else res.resources))
        entry["placed"] += 1
        started = task is not None and task.attempt == attempt and task.state == "running"
        entry["running" if started else "queued"] += 1
        running += started
    pending = []
    for shape, (run_id, task_id) in ready.sample(SAMPLE):
        run = core.runs.get(run_id)
        pending.append(
            {
                "run_id": run_id,
                "task_id": task_id,
                "name": run.tasks[task_id].spec.name if run else "",
                "resource_class": resource_class(shape),
                "reason": ready.reasons.get(shape) or "about to be placed",
            }
        )
    placed: list[dict[str, Any]] = []
    timeouts: list[dict[str, Any]] = []
    for (run_id, task_id, attempt), res in reservations.items():
        if len(placed) >= SAMPLE and len(timeouts) >= SAMPLE:
            break
        run = core.runs.get(run_id)
        task = run.tasks.get(task_id) if run else None
        entry = {
            "run_id": run_id,
            "task_id": task_id,
            "name": task.spec.name if task else "",
            "attempt": attempt,
            "node_id": res.node_id,
            "gpus": res.gpus,
            "state": task.state if task else "unknown",
            "timeout_seconds": task.spec.timeout_seconds if task else None,
        }
        if len(placed) < SAMPLE:
            placed.append(entry)
        if entry["timeout_seconds"] and len(timeouts) < SAMPLE:
            timeouts.append(entry)
    retry_waits: list[dict[str, Any]] = []
    for due, (run_id, task_id), attempt in core.retries.sample(SAMPLE):
        run = core.runs.get(run_id)
        task = run.tasks[task_id] if run else None
        if task is None or task.state != "retry_wait" or task.next_attempt != attempt:
            continue  # an entry whose task moved on
        retry_waits.append(
            {
                "run_id": run_id,
                "task_id": task_id,
                "name": task.spec.name,
                "next_attempt": attempt,
                "retry_in_s": max(0.0, (due - now) / 1000),
                "reason": task.error.error_type if task.error else None,
            }
        )
    retry_waits.sort(key=lambda r: r["retry_in_s"])
    node_queues = {
        node_id: {"running": beat.running, "waiting": beat.waiting}
        for node_id, beat in ctl.liveness.heartbeats.items()
        if node_id in ctl.placer.nodes
    }
    return {
        "by_resource_class": classes,
        "totals": {
            "pending": len(ready),
            "placed": len(reservations),
            "queued": len(reservations) - running,
            "running": running,
            "retry_waits": len(core.retries),  # upper bound: entries are dropped lazily
            "incomplete_runs": len(core.intake.partial),
        },
        "pending": pending,
        "placed": placed,
        "timeouts": timeouts,
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
        "heartbeat_interval_s": ctl.liveness.interval_s(node_id, view.session) if view else None,
        "liveness_timeout_s": ctl.liveness.timeout_for(node_id, view.session) if view else None,
        "running": beat.running if beat else 0,
        "waiting": beat.waiting if beat else 0,
    }
    if view is not None:
        cap = view.capacity
        # whether sandboxed tasks run there: how it limits them, or why it cannot
        out["sandbox"] = {
            "available": cap.sandbox,
            "limits" if cap.sandbox else "reason": cap.sandbox_limits or "not reported by this node",
            "network": cap.sandbox_network,
        }
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
