"""Blobs a worker fetched recently (task code and input values), verified, bounded by bytes, so a
fan-out over one large value or one closure fetches it once."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from maze.events.blobs import BlobStore

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class BlobCache:
    def __init__(self, blobs: BlobStore, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.blobs = blobs
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._fetching: dict[str, asyncio.Task[bytes]] = {}

    async def get(self, sha: str) -> bytes:
        """The blob's content (checked against its hash by the store). Raises BlobMissing or
        ArtifactError from the store."""
        content = self._items.get(sha)
        if content is not None:
            self._items.move_to_end(sha)
            return content
        task = self._fetching.get(sha)
        if task is None:
            task = asyncio.create_task(self.blobs.get(sha), name=f"blob-fetch-{sha[:12]}")
            self._fetching[sha] = task
            task.add_done_callback(lambda _: self._fetching.pop(sha, None))
        content = await asyncio.shield(task)
        self._keep(sha, content)
        return content

    async def get_many(self, shas: list[str]) -> dict[str, bytes]:
        contents = await asyncio.gather(*(self.get(s) for s in shas))
        return dict(zip(shas, contents, strict=True))

    def _keep(self, sha: str, content: bytes) -> None:
        if sha in self._items or len(content) > self.max_bytes // 4:
            return  # one huge blob would push out everything else
        self._items[sha] = content
        self.size += len(content)
        while self.size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.size -= len(old)
