"""What route handlers get injected: the head's services."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import duckdb
from litestar.params import Parameter
from nats.js import JetStreamContext

from maze.api.event_reader import last_run_seq
from maze.core.errors import NotFound, Unavailable
from maze.core.settings import Settings
from maze.events import subjects
from maze.events.blobs import BlobStore
from maze.events.store import payload_budget
from maze.head.controller import RunController
from maze.projections.projector import Projector

MinSeq = Annotated[
    int | None,
    Parameter(
        query="min_seq",
        ge=0,
        description="Answer only once the read models include the runs stream up to this sequence "
        "(the `seq` a POST /runs returned): read your own writes. Without it, no wait.",
    ),
]

READ_BARRIER_S = 10.0
T = TypeVar("T")


class HeadState:
    def __init__(
        self,
        js: JetStreamContext,
        nc: Any,
        controller: RunController,
        projector: Projector,
        settings: Settings,
        nats_urls: list[str],
    ) -> None:
        self.js = js
        self.nc = nc
        self.controller = controller
        self.projector = projector
        self.settings = settings
        self.nats_urls = nats_urls
        self.max_payload = int(nc.max_payload)
        self.budget = payload_budget(nc)
        self.blobs = BlobStore(nc, settings.limits.blob_max_bytes)

    async def controller_ready(self, timeout: float = 30.0) -> bool:
        try:
            await asyncio.wait_for(self.controller.caught_up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def read_barrier(self, min_seq: int | None) -> None:
        """Read-your-writes for one caller: with `min_seq` (the seq its own POST returned), wait
        (bounded) until the read models include the runs stream up to it, else 503. Without it,
        answer from what is projected now: a reader never waits for other clients' writes."""
        if min_seq:
            await self._reach(min_seq)

    async def query_run(self, query: Callable[..., T], run_id: str, *args: Any) -> T:
        """Run a per-run read-model query. A run the log has must not read as missing: if the read
        models do not know it yet, wait for them to reach its last event and ask again (a 404
        follows only when the log has no such run)."""
        try:
            return await asyncio.to_thread(query, self.cursor(), run_id, *args)
        except NotFound as exc:
            if "task_id" in exc.details:
                raise  # the run is there, the task is not
            last = await last_run_seq(self.js, run_id)
            if not last:
                raise
            await self._reach(last)
            return await asyncio.to_thread(query, self.cursor(), run_id, *args)

    async def _reach(self, target: int) -> None:
        if not await self.projector.wait_for({subjects.RUNS_STREAM: target}, timeout=READ_BARRIER_S):
            at = self.projector.positions.get(subjects.RUNS_STREAM, 0)
            # never answer from read models that miss what was already accepted
            raise Unavailable(
                f"read models are catching up with the event log (at event {at} of {target}); retry shortly",
                at=at,
                target=target,
            )

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.projector.cursor()
