"""What one client, or all of them, may hold of a head at once (the head must outlive any of them).

- Request bodies: 64 MB (the app's default), 512 MB for `POST /runs` (a 100,000-task run is ~40 MB;
  big values travel as blobs), blob uploads streamed to the blob store with its own cap.
- Live streams (SSE: `GET /runs/{id}/stream`, `POST /runs?follow=true`): `max_streams` in all and
  `max_streams_per_client` per client address (settings; 1,000 and 100), 429 past either, before
  anything is recorded.
- Submissions being read and recorded: `max_submit_bytes` of request bodies at once (settings,
  1 GiB; a body without a Content-Length counts as the largest allowed), 429 past it before the
  body is read (`details.limit = "submit_bytes"`: the SDK waits and submits again). Bounds what
  many concurrent large submits hold of the head's memory.
- A client that stops reading a stream is let go after SLOW_CLIENT_S (maze/api/sse.py), and a
  reader the head's run feed cannot keep up with goes on from the log (maze/head/feeds.py): neither
  holds the head's memory.
"""

from __future__ import annotations

from maze.core.errors import TooManyRequests


class StreamSlots:
    """Bounds the live streams (SSE) a head serves: MAX_STREAMS in all, MAX_STREAMS_PER_CLIENT per
    client address. A stream past either is refused with 429 before it starts."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open = 0
        self.by_client: dict[str, int] = {}

    def take(self, client: str) -> None:
        if self.open >= self.total:
            raise TooManyRequests(f"this head serves {self.total} live streams at most; retry later")
        if self.by_client.get(client, 0) >= self.per_client:
            raise TooManyRequests(
                f"{client} has {self.per_client} live streams open already (the most per client); "
                "close some or retry later"
            )
        self.open += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1

    def give_back(self, client: str) -> None:
        self.open -= 1
        left = self.by_client.get(client, 1) - 1
        if left:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)


class SubmitBytes:
    """Bounds the request bodies of submissions being read and recorded at once."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0

    def take(self, size: int) -> None:
        if self.held and self.held + size > self.total:
            raise TooManyRequests(
                f"this head is reading {self.held / 1e6:.0f} MB of other submissions (it reads "
                f"{self.total / 1e6:.0f} MB at once); retry shortly",
                limit="submit_bytes",
            )
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size
