"""Health, cluster view and the projection rebuild command."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import get, post

from maze.api.state import HeadState
from maze.core.resources import Usage
from maze.projections import queries
from maze.projections.rebuild import rebuild


@get("/health")
async def health(head: HeadState) -> dict[str, Any]:
    return {
        "status": "ok",
        "controller_live": head.controller.caught_up.is_set(),
        "projection_positions": head.projector.positions,
        "nodes": len(head.controller.placer.alive_nodes()),
    }


@get("/cluster/nats")
async def cluster_nats(head: HeadState) -> dict[str, Any]:
    """Where workers connect: the NATS URLs of this head's event store."""
    return {"nats_urls": head.nats_urls}


def _usage(u: Usage) -> dict[str, Any]:
    return {"cpu": round(u.cpu, 6), "cpu_mem": u.cpu_mem, "gpu_mem": dict(u.gpu_mem)}


@get("/cluster/resources")
async def cluster_resources(head: HeadState) -> dict[str, Any]:
    await head.read_barrier()
    rows = await asyncio.to_thread(queries.list_nodes, head.cursor())
    placer = head.controller.placer
    nodes = []
    for row in rows:
        view = placer.nodes.get(row["node_id"])
        committed = view.committed if view else Usage()
        row["committed"] = _usage(committed)
        row["free"] = {
            "cpu": round(max(0.0, row["cpus"] - committed.cpu), 6),
            "cpu_mem": max(0, row["memory_mb"] - committed.cpu_mem),
        }
        nodes.append(row)
    return {"nodes": nodes}


@post("/projections/rebuild", status_code=200)
async def rebuild_projections(head: HeadState) -> dict[str, Any]:
    """Drop and rebuild every read model from the event log; report whether it equals the live one."""
    return await rebuild(head.nc, head.projector)
