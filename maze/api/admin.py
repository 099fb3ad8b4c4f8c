"""Health and the projection rebuild command."""

from __future__ import annotations

from typing import Any

from litestar import get, post

from maze.api.state import HeadState
from maze.projections.rebuild import rebuild


@get("/health")
async def health(head: HeadState) -> dict[str, Any]:
    return {
        "status": "ok",
        "controller_live": head.controller.caught_up.is_set(),
        "projection_positions": head.projector.positions,
        "nodes": len(head.controller.placer.alive_nodes()),
    }


@post("/projections/rebuild", status_code=200)
async def rebuild_projections(head: HeadState) -> dict[str, Any]:
    """Drop and rebuild every read model from the event log; report whether it equals the live one."""
    return await rebuild(head.nc, head.projector)
