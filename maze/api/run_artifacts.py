"""A run's artifacts: the files its tasks made, as the read models folded them."""

from __future__ import annotations

from typing import Any

from litestar import get

from maze.api.openapi import RunId, answers
from maze.api.state import HeadState, MinSeq
from maze.api.views import ArtifactView


@get("/runs/{run_id:str}/artifacts", responses=answers(400, 404, 409, 503, ok=list[ArtifactView]))
async def get_run_artifacts(run_id: RunId, head: HeadState, min_seq: MinSeq = None) -> list[dict[str, Any]]:
    """The files the run's tasks created or changed (runs with a workspace: `run(workspace_dir=...)`
    or `artifact_mode=True`), of the attempts that succeeded, by task in submission order then by
    path. Each one's content is `GET /artifacts/sha256/{sha256}`."""
    found: list[dict[str, Any]] = await head.read("get_artifacts", run_id, min_seq=min_seq)
    return found
