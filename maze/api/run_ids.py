"""Run ids by their beginning: the one place a short run id (as people type it from a table) is
turned into the run's full id; the CLI resolves every run id it is given through it."""

from __future__ import annotations

from typing import Any

from litestar import get

from maze.api.state import HeadState, MinSeq


@get("/run-ids/{prefix:str}")
async def match_run_ids(
    prefix: str, head: HeadState, limit: int = 10, min_seq: MinSeq = None
) -> dict[str, Any]:
    """The ids of the runs whose id is `prefix` or starts with it (or with `run_` + it), newest
    first, at most `limit` (1-100): `{"prefix", "run_ids"}`. A run whose id is exactly `prefix` is
    the only answer. No match is an empty list, not a 404."""
    run_ids: list[str] = await head.read("match_run_ids", prefix, limit, min_seq=min_seq)
    return {"prefix": prefix, "run_ids": run_ids}
