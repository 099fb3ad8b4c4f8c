"""Health and the projection rebuild command."""

from __future__ import annotations

from typing import Any

from litestar import get, post

from maze.api.openapi import answers
from maze.api.state import HeadState
from maze.api.views import Health
from maze.core.errors import MazeError


@get("/health", responses=answers())
async def health(head: HeadState) -> Health:
    """The controller, the read models' positions (null while their process does not answer:
    `degraded`) and how many nodes are alive."""
    try:
        positions = (await head.read("status"))["positions"]
    except MazeError:  # the read models' process is down: say so, the head still answers
        positions = None
    return Health(
        status="ok" if positions is not None else "degraded",
        controller_live=head.controller.caught_up.is_set(),
        projection_positions=positions,
        nodes=len(head.controller.placer.alive_nodes()),
    )


@post("/projections/rebuild", status_code=200, responses=answers(503))
async def rebuild_projections(head: HeadState) -> dict[str, Any]:
    """Drop and rebuild every read model from the event log; report whether it equals the live one."""
    result: dict[str, Any] = await head.read("rebuild")
    return result
