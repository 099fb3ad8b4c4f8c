"""Cluster routes: nodes and their capacity, queues, the NATS address for joining, reconcile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from litestar import get, post
from litestar.params import Parameter

from maze.api.openapi import answers
from maze.api.state import HeadState, MinSeq
from maze.api.views import JoinInfo, JoinLimits
from maze.core.settings import without_credentials
from maze.events.store import ensure_work_consumer, is_transient
from maze.head import views
from maze.head.nats_auth import JS_API_PREFIX, NODE_ID_RE, check_node_id


async def _with_retries(step: Callable[[], Awaitable[None]], within_s: float = 5.0) -> None:
    """`step` against the head's JetStream, again while it answers "unavailable" (a moment after
    the embedded server reloads its configuration for a new node's account)."""
    deadline = time.monotonic() + within_s
    delay = 0.05
    while True:
        try:
            await step()
            return
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


@get("/cluster/nats", responses=answers(400, 503))
async def cluster_nats(
    head: HeadState,
    node_id: Annotated[
        str, Parameter(pattern=NODE_ID_RE.pattern, description="The joining worker's node id (--node-id).")
    ],
) -> JoinInfo:
    """Where a worker of node `node_id` connects: NATS URLs with credentials of its own (on the
    embedded server, a NATS account of its own that imports only what a worker uses of the head's:
    maze/head/nats_auth.py), never the head's; the JetStream API prefix of that account; and the
    value limits workers apply to results. The node's work consumer is made here, by the head: a
    worker may not make consumers (a consumer's deliver subject could be any subject)."""
    value_limits = head.settings.limits
    prefix = head.settings.worker_js_api_prefix or None
    if head.worker_nats is not None:
        urls = await head.worker_nats(check_node_id(node_id))
        prefix = JS_API_PREFIX
    else:
        urls = head.settings.worker_nats_urls or [without_credentials(u) for u in head.nats_urls]
    await _with_retries(lambda: ensure_work_consumer(head.js, check_node_id(node_id)))
    return JoinInfo(
        nats_urls=urls,
        # the node's work consumer is made by the head, here, before this answer: a worker may
        # not make consumers (maze/head/nats_auth.py)
        head_makes_consumer=True,
        js_api_prefix=prefix,
        limits=JoinLimits(
            inline_bytes=value_limits.inline_bytes,
            blob_max_bytes=value_limits.blob_max_bytes,
            log_cap_bytes=value_limits.log_cap_bytes,
        ),
    )


@get("/cluster/resources", responses=answers(400, 409, 503))
async def cluster_resources(head: HeadState, min_seq: MinSeq = None) -> dict[str, Any]:
    """Every node with total / committed / free CPU and memory (`committed`: what its queued and
    running attempts reserve; `in_use`: what its running attempts hold, from its last heartbeat),
    each GPU's memory (`nvml_free_mb`: measured free memory, where the node reports it), and whether it
    runs sandboxed tasks (`sandbox`: `available`, and its `limits` or the `reason` it cannot); and workers
    seen heartbeating on NATS that are not registered nodes of this head (`unregistered_nodes`,
    also answered as `unregistered_ray_nodes`, the original Maze's name)."""
    return await resources_view(head, min_seq)


async def resources_view(head: HeadState, min_seq: int | None = None) -> dict[str, Any]:
    """`GET /cluster/resources`'s answer (also sent by `GET /cluster/stream`)."""
    rows = await head.read("list_nodes", min_seq=min_seq)
    ctl = head.controller
    nodes = []
    for row in rows:
        live = views.node_live_view(ctl, row["node_id"])
        committed = live.get("committed", {"cpu": 0.0, "cpu_mem": 0, "gpu_mem": {}, "gpu_share": {}})
        gpus = []
        for gpu in row["gpus"] or []:
            used = committed["gpu_mem"].get(gpu["index"], 0)
            gpus.append(
                {
                    **gpu,
                    "reserved_mem_mb": used,
                    "free_mem_mb": gpu["total_mem_mb"] - used,
                    "reserved_share": committed["gpu_share"].get(gpu["index"], 0.0),
                    "nvml_free_mb": live.get("nvml_free_mb", {}).get(gpu["index"]),
                }
            )
        nodes.append(
            {
                "node_id": row["node_id"],
                "session": row["session"],
                "hostname": row["hostname"],
                "ip": row["ip"],
                "state": row["state"],
                "joined_at_ms": row["joined_at_ms"],
                "left_at_ms": row["left_at_ms"],
                "heartbeat_age_s": live["heartbeat_age_s"],
                # the session's declared interval, and how long it may be silent before it is lost
                "heartbeat_interval_s": live["heartbeat_interval_s"],
                "liveness_timeout_s": live["liveness_timeout_s"],
                "running": live["running"],
                "waiting": live["waiting"],
                "cpu": {
                    "total": row["cpus"],
                    "committed": committed["cpu"],
                    "free": round(max(0.0, row["cpus"] - committed["cpu"]), 6),
                    "in_use": live.get("in_use", {}).get("cpu", 0.0),
                },
                "memory_mb": {
                    "total": row["memory_mb"],
                    "committed": committed["cpu_mem"],
                    "free": max(0, row["memory_mb"] - committed["cpu_mem"]),
                    "in_use": live.get("in_use", {}).get("cpu_mem", 0),
                },
                "gpus": gpus,
                "sandbox": live.get("sandbox", {"available": False, "reason": "not reported by this node"}),
            }
        )
    unregistered = views.unregistered(ctl)
    return {
        "nodes": nodes,
        "unregistered_nodes": unregistered,
        # the original Maze's name for the same list (its workers were Ray nodes): code written
        # for it reads this key
        "unregistered_ray_nodes": unregistered,
        "leader": ctl.leadership(),
    }


@get("/cluster/queues", responses=answers())
async def cluster_queues(head: HeadState) -> dict[str, Any]:
    """Attempts waiting for placement (with reasons) and placed per resource class, retry waits,
    attempts with timeouts, per-node queues and recent reject reasons."""
    return views.queues(head.controller)


@post("/cluster/reconcile", status_code=200, responses=answers(503))
async def reconcile_workers(head: HeadState) -> dict[str, Any]:
    """Declare every node that stopped heartbeating lost now; their attempts are retried."""
    return await head.controller.reconcile_workers()


@get("/cluster/diagnostics", responses=answers(503))
async def cluster_diagnostics(head: HeadState) -> dict[str, Any]:
    """The run controller's health: whether it is deciding, where it started from (its snapshot)
    and how far it has folded, restarts and the last error, runs it had to end because their
    events could not be folded, and the events readers skipped (unknown types from a newer
    version, counted; malformed events of known types, each named with its stream and sequence)."""
    return {"controller": head.controller.diagnostics(), "projector": await head.read("status")}
