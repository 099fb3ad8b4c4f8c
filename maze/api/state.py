"""What route handlers get injected: the head's services."""

from __future__ import annotations

import asyncio
from typing import Any

import duckdb
from nats.js import JetStreamContext

from maze.core.errors import Unavailable
from maze.core.settings import Settings
from maze.events import subjects
from maze.events.blobs import BlobStore
from maze.events.store import payload_budget
from maze.head.controller import RunController
from maze.projections.projector import Projector

READ_BARRIER_S = 10.0


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
        self.last_published = 0

    def note_published(self, seq: int) -> None:
        self.last_published = max(self.last_published, seq)

    async def controller_ready(self, timeout: float = 30.0) -> bool:
        try:
            await asyncio.wait_for(self.controller.caught_up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def read_barrier(self) -> None:
        """Read-your-writes: wait (bounded) until the projections include everything this head has
        published or seen, so a GET right after a POST finds what the POST created."""
        target = max(self.last_published, self.controller.positions.get(subjects.RUNS_STREAM, 0))
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
