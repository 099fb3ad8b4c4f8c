"""Run ids by their beginning: the one place a short run id (as people type it from a table) is
turned into the run's full id; the CLI resolves every run id it is given through it."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import Parameter

from maze.api.openapi import TASK_ID_PATTERN, answers
from maze.api.state import HeadState, MinSeq
from maze.api.views import RunIdMatches

MAX_MATCHES = 100

# a run id or its beginning, with or without `run_`: the characters of an id (as the read models'
# query checks them)
Prefix = Annotated[
    str,
    Parameter(
        pattern=TASK_ID_PATTERN,
        description="A run id or its beginning (1-128 letters, digits, `_` or `-`), with or without `run_`.",
    ),
]
Limit = Annotated[int, Parameter(ge=1, le=MAX_MATCHES, description="At most this many ids.")]


@get("/run-ids/{prefix:str}", responses=answers(400, 409, 503))
async def match_run_ids(
    prefix: Prefix, head: HeadState, limit: Limit = 10, min_seq: MinSeq = None
) -> RunIdMatches:
    """The ids of the runs whose id is `prefix` or starts with it (or with `run_` + it), newest
    first, at most `limit` (1-100): `{"prefix", "run_ids"}`. A run whose id is exactly `prefix` is
    the only answer. No match is an empty list, not a 404."""
    run_ids: list[str] = await head.read("match_run_ids", prefix, limit, min_seq=min_seq)
    return RunIdMatches(prefix=prefix, run_ids=run_ids)
