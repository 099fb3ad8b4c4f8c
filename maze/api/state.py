"""What route handlers get injected: the head's services."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from litestar.params import Parameter
from nats.js import JetStreamContext

from maze.api.limits import StreamSlots, SubmitBytes
from maze.core.settings import Settings
from maze.events.blobs import BlobStore
from maze.events.store import payload_budget
from maze.head.controller import RunController
from maze.projections.client import ReadModels

MinSeq = Annotated[
    int | None,
    Parameter(
        query="min_seq",
        ge=0,
        le=2**53 - 1,  # as maze/api/openapi.py's SEQ_MAX
        schema_extra={"minimum": 0},  # Litestar drops a falsy `ge` from an optional's schema
        description="Answer only once the read models include the runs stream up to this sequence "
        "(the `seq` a POST /runs returned): read your own writes. Without it, no wait. A sequence past "
        "the end of the log is a 409.",
    ),
]


class HeadState:
    def __init__(
        self,
        js: JetStreamContext,
        nc: Any,
        controller: RunController,
        readmodels: ReadModels,
        settings: Settings,
        nats_urls: list[str],
        api_token: str | None = None,
        worker_nats: Callable[[str], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.js = js
        self.nc = nc
        self.controller = controller
        self.readmodels = readmodels  # in their own process (maze/projections/service.py)
        self.settings = settings
        self.nats_urls = nats_urls
        self.api_token = api_token  # None: an open (loopback-only, or --insecure) head
        # node id -> the NATS URLs (with credentials of its own) a worker of that node connects with
        self.worker_nats = worker_nats
        self.max_payload = int(nc.max_payload)
        self.budget = payload_budget(nc)
        self.blobs = BlobStore(nc, settings.limits.blob_max_bytes)
        self.streams = StreamSlots(settings.max_streams, settings.max_streams_per_client)
        self.submits = SubmitBytes(settings.max_submit_bytes)

    async def controller_ready(self, timeout: float = 30.0) -> bool:
        if self.controller.caught_up.is_set():
            return True
        try:
            await asyncio.wait_for(self.controller.caught_up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def read(
        self, op: str, *args: Any, min_seq: int | None = None, timeout: float | None = None
    ) -> Any:
        """A read-model query. With `min_seq` (the seq the caller's own POST returned, or any it
        has seen) it answers only once the read models include the runs stream up to it, waiting
        a bounded time, else 503: read your own writes. Without it, no wait for anyone's writes. A
        per-run query of a run the log has never answers 404 (it waits for the read models).
        `timeout`: answer 503 sooner than the usual bound."""
        return await self.readmodels.call(op, *args, min_seq=min_seq, timeout=timeout)
