"""The streams kept in memory, made again when a NATS server lost them.

The work stream (`MAZE_WORK`) and the heartbeat bucket are transport, not history, and JetStream
keeps them in memory (maze/events/store.py `ensure_streams`). A nats-server that restarts (an operator's, killed or
upgraded; a single server, or a quorum of a cluster at once) comes back with its file streams, the
log, and without those. Nothing would make them again: work for the other nodes could not be sent
(each submit waiting out the publish's retries), those nodes could not beat or pull, and their
attempts would wait for ever. So every head looks every `interval_s`, and at once after its
connection came back, and makes what is missing again (`ensure_memory_streams`: those two only,
safe from every head at once). Whichever head made them, every head's controller is told
(`on_made`, on a stream made since its last look, or one whose sequence went back): work lost with the old stream is sent again from the
log at once (every attempt placed and not started), not at its delivery check's next backoff; and
every node gets a full liveness timeout to beat in the new, empty bucket before it may be declared
lost.

While the log's streams are missing nothing is made (making them would start an empty log): that
is the log itself gone, which no head can mend; it is said, loudly, every time it is seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog
from nats.js.api import StreamInfo
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from maze.core.tasks import cancel_and_wait
from maze.events import subjects
from maze.events.store import describe_error

log = structlog.get_logger(__name__)

CHECK_INTERVAL_S = 5.0
STOP_WAIT_S = 5.0
MEMORY_STREAMS = (subjects.WORK_STREAM, f"KV_{subjects.HEARTBEAT_BUCKET}")
LOG_STREAMS = (subjects.RUNS_STREAM, subjects.NODES_STREAM)


class StreamKeeper:
    def __init__(
        self,
        js: JetStreamContext,
        ensure: Callable[[], Awaitable[None]],
        on_made: Callable[[list[str]], None],
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.js = js
        self.ensure = ensure
        self.on_made = on_made
        self.interval_s = interval_s
        self.reconnected = asyncio.Event()
        # each memory stream as last seen: (when it was made, its last sequence)
        self.seen: dict[str, tuple[datetime | None, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stream-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task], timeout=STOP_WAIT_S)

    def connection_back(self) -> None:
        """The NATS connection was made again (nats-py's reconnected callback): look now."""
        self.reconnected.set()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.reconnected.wait(), self.interval_s)
            except TimeoutError:
                pass
            self.reconnected.clear()
            try:
                await self.check()
            except Exception as exc:  # NATS not answering now: looked at again on the next turn
                log.info("streams.check_failed", error=describe_error(exc))

    async def check(self) -> list[str]:
        """Make the memory streams again if any is missing, and tell the controller of every one
        that is new since the last look, whoever made it (another head, a head starting), or that
        lost what it held (a cluster's quorum restarted: there, empty). Returns those."""
        lost = [name for name in LOG_STREAMS if await self._info(name) is None]
        if lost:
            log.error(
                "streams.log_missing",
                streams=lost,
                hint="the NATS server lost the event log (its JetStream store was removed?): it is not "
                "made again empty; restore the store, or start the heads anew",
            )
            return []
        infos = {name: await self._info(name) for name in MEMORY_STREAMS}
        missing = [name for name, info in infos.items() if info is None]
        if missing:
            log.warning("streams.memory_streams_missing", missing=missing)
            await self.ensure()
            infos = {name: await self._info(name) for name in MEMORY_STREAMS}
        made = []
        for name, info in infos.items():
            if info is None:  # (gone again meanwhile: the next turn)
                continue
            now = (info.created, info.state.last_seq)
            before = self.seen.get(name)
            if name in missing or (before is not None and (now[0] != before[0] or now[1] < before[1])):
                made.append(name)
            self.seen[name] = now
        if made:
            log.warning("streams.memory_streams_made_again", streams=made)
            self.on_made(made)
        return made

    async def _info(self, name: str) -> StreamInfo | None:
        try:
            return await self.js.stream_info(name)
        except NotFoundError:
            return None
