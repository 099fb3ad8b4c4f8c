"""Reading a whole stream fast: the rebuild's reader, on a NATS connection of its own.

nats-py spends ~9 µs on each message it delivers (its regex parser, a `Msg` with parsed headers,
an asyncio queue, a task switch), more than folding an event in a shard; a rebuild of a
history written as a live cluster writes it (three messages a run) was held to that. This reader
speaks the few parts of the protocol a replay needs: CONNECT (as the client connection: its
servers, credentials and TLS, wire.py), one subscription, the JetStream API's consumer requests,
and MSG and HMSG cut out of whole chunks of the socket's bytes.

The consumer is an ephemeral pull consumer (no acks, in memory), asked for one batch at a time of
at most `fetch_bytes`, within the limits the server sets on requests. A batch is read whole before
it is handed on: nothing is then pending at the server while the caller takes its time (a server
drops a client it cannot write to for its write deadline, 10 s by default), and what this process
holds is one batch. Every message up to `upto` comes once, in order: a consumer the server drops (a
409, a leader moved, its server died, a delivery missed), or a connection lost (its server died or
is shutting down), is made again from the sequence after the last message handed on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

import structlog
from nats.aio.client import Client as NATS

from maze.core.errors import Unavailable
from maze.events.store import api_prefix
from maze.events.wire import Disconnected, Silent, Wire

log = structlog.get_logger(__name__)

FETCH_BYTES = 8 << 20  # a batch of messages asked for at once, at most (or one message, if larger)
FETCH_MSGS = 100_000  # the same in messages (the bytes bound comes first for events of any size)
EXPIRES_S = 5.0  # a batch request the server ends after this long, sent or not
STALL_S = 10.0  # batches with nothing in them this long: the stream stopped short of `upto`
ANSWER_S = 3.0  # past a request's expiry, how long its end may take to arrive
API_ANSWER_S = 10.0  # a JetStream API request's answer (Maze's own JetStream timeout)
CREATE_S = 30.0  # how long a consumer may take to be made (a cluster electing its leaders)
LOST_LIMIT = 5  # consumers or connections lost in a row, with nothing read between, before failing
MAX_FETCH_BYTES = 1 << 30  # grown to for a stored message larger than a batch (1 GiB)
# JetStream error codes that a retry may see gone: the cluster has no leader for the stream yet,
# or is electing its meta leader
TRANSIENT_CODES = {10008, 10009, 10005, 10118, 10119}

Message = tuple[int, str, bytes]  # stream sequence, subject, payload (headers are not needed)
_Ended = tuple[int, str]  # a status: its code and text (408, "Request Timeout")


class LogReader:
    """One NATS connection for replays (`open`), reading streams with `read`; connected again
    (to any server of the client's) if it is lost midway."""

    def __init__(self, wire: Wire, prefix: str) -> None:
        self._wire = wire
        self._prefix = prefix
        self.fetch_bytes = max(FETCH_BYTES, wire.max_payload + (64 << 10))  # a message alone fits
        self.requests = 0  # batches asked for
        self.consumers = 0  # consumers made
        self._delivered = 0  # the current consumer's last delivery read

    @property
    def connections(self) -> int:
        return self._wire.connections

    @classmethod
    @asynccontextmanager
    async def open(cls, nc: NATS) -> AsyncIterator[LogReader]:
        """A connection to the server `nc` is connected to, as the same user, over TLS if `nc` is."""
        wire = Wire.like(nc)
        await wire.connect()
        try:
            yield cls(wire, api_prefix(nc))
        finally:
            await wire.close()

    async def read(
        self, stream: str, subject: str, start: int, upto: int
    ) -> AsyncGenerator[list[Message], None]:
        """The messages of `stream` on `subject` from sequence `start` up to `upto` (inclusive), in
        order, each once, in lists as they arrive."""
        kept = start - 1
        lost = 0  # in a row, with nothing read between
        while kept < upto:
            consumer = None
            try:
                consumer, limits = await self._consumer(stream, subject, kept + 1)
                async for msgs in self._fetch(stream, consumer, limits, kept, upto):
                    kept, lost = msgs[-1][0], 0
                    yield msgs
                return  # up to `upto`, or to the stream's end where the messages up to it are gone
            except (_ConsumerGone, Disconnected) as exc:
                lost += 1
                if lost > LOST_LIMIT:
                    raise Unavailable(
                        f"reading the {stream} stream failed {lost} times in a row: {exc}"
                    ) from exc
                log.info("log_reader.resuming", stream=stream, after=kept, why=str(exc))
                if isinstance(exc, Disconnected):
                    await self._wire.reconnect(CREATE_S)
            finally:
                if consumer is not None:
                    self._wire.publish_quietly(f"{self._prefix}.CONSUMER.DELETE.{stream}.{consumer}", b"")

    async def _fetch(
        self, stream: str, consumer: str, limits: dict[str, int], kept: int, upto: int
    ) -> AsyncIterator[list[Message]]:
        """Batches from the consumer (which starts after `kept`), each read whole and none empty,
        until one reaches `upto` (cut there) or the stream's end (the messages up to `upto` that
        are not there were deleted: a sequence is never given again)."""
        where = f"{self._prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        idle = 0.0
        while True:
            size = self.fetch_bytes
            if limits["max_bytes"]:
                size = min(size, limits["max_bytes"])
            request = {
                # no more than can be left up to `upto`: nothing past it is sent to nobody
                "batch": max(1, min(FETCH_MSGS, limits["max_batch"] or FETCH_MSGS, upto - kept)),
                "max_bytes": size,
                "expires": int(min(EXPIRES_S * 1e9, limits["max_expires"] or EXPIRES_S * 1e9)),
            }
            msgs, ended, pending = await self._batch(where, consumer, request, upto)
            if msgs:
                idle = 0.0
                last = msgs[-1][0]
                if last >= upto:  # the end: what came after `upto` is not asked for
                    msgs = [m for m in msgs if m[0] <= upto]
                if msgs:
                    kept = msgs[-1][0]
                    yield msgs
                if last >= upto or pending == 0:
                    return
                continue
            if ended is not None and ended[0] == 409 and "MaxBytes" in ended[1]:
                # nothing came: the next message alone is larger than a batch (stored before the
                # server's message limit was lowered, or on a server with a larger one)
                if size >= min(MAX_FETCH_BYTES, limits["max_bytes"] or MAX_FETCH_BYTES):
                    raise Unavailable(
                        f"reading the {stream} stream: a message after sequence {kept} is larger than "
                        f"{size} bytes, the most a batch may hold"
                    )
                self.fetch_bytes = size * 2
                continue
            idle += request["expires"] / 1e9
            if idle >= STALL_S:
                raise Unavailable(f"the {stream} stream stopped answering during the rebuild")

    async def _batch(
        self, where: str, consumer: str, request: dict[str, int], upto: int
    ) -> tuple[list[Message], _Ended | None, int | None]:
        """One batch request, read whole: its messages, the status that ended it (None: it ended
        by its count, or by its bytes exactly, which the server says nothing of, or it reached
        `upto`, or the stream's end), and how many messages the stream held after the last one
        (its ack subject says: 0, the end for now)."""
        reply = self._wire.new_inbox()
        self._wire.publish(where, json.dumps(request).encode(), reply)
        self.requests += 1
        inbox, mine = reply.encode(), consumer.encode()
        got: list[Message] = []
        left = request["max_bytes"]
        # the server ends every request by its expiry: silence past it is a consumer gone
        wait = request["expires"] / 1e9 + ANSWER_S
        pending: int | None = None
        while True:
            try:
                frames, status = await self._wire.frames(inbox, wait)
            except Silent as exc:
                raise _ConsumerGone("a batch request went unanswered") from exc
            for name, delivery, seq, subject, payload, size, after in frames:
                if name != mine:
                    continue  # what an earlier consumer still sent
                if delivery != self._delivered + 1:
                    raise _ConsumerGone(f"a delivery was missed ({self._delivered} then {delivery})")
                self._delivered = delivery
                got.append((seq, subject, payload))
                left -= size
                pending = after
            if status is not None:
                code, text = status
                if code == 100:
                    continue  # a heartbeat
                if code == 409 and text.startswith("Exceeded"):  # a server limit: no retry helps
                    raise Unavailable(f"the server refused a batch request of the rebuild: {code} {text}")
                if code in (404, 408) or (code == 409 and ("MaxBytes" in text or "Batch Completed" in text)):
                    return got, status, pending
                raise _ConsumerGone(f"{code} {text}")
            if len(got) >= request["batch"] or left <= 0 or pending == 0 or (got and got[-1][0] >= upto):
                return got, None, pending  # the server sends no more for this request

    async def _consumer(self, stream: str, subject: str, start: int) -> tuple[str, dict[str, int]]:
        """A new consumer from `start`, and the limits the server sets on its requests."""
        config = {
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": max(1, start),
            "ack_policy": "none",
            "filter_subject": subject,
            "inactive_threshold": int(60e9),
            "mem_storage": True,
            "num_replicas": 1,
        }
        self.consumers += 1
        self._delivered = 0  # the consumer's deliveries are numbered from 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CREATE_S
        body = json.dumps({"stream_name": stream, "config": config}).encode()
        while True:
            try:
                answer = await self._wire.request(
                    f"{self._prefix}.CONSUMER.CREATE.{stream}", body, API_ANSWER_S
                )
            except Silent:  # no JetStream leader to answer yet (one is being elected)
                answer = {"error": {"code": 503, "description": f"no answer in {API_ANSWER_S:.0f} s"}}
            error = answer.get("error")
            if error is None:
                made = answer.get("config") or {}
                limits = {k: int(made.get(k) or 0) for k in ("max_batch", "max_bytes", "max_expires")}
                return str(answer["name"]), limits
            why = f"cannot read the {stream} stream: {error.get('description', error)}"
            transient = error.get("code") == 503 or error.get("err_code") in TRANSIENT_CODES
            if not transient or loop.time() >= deadline:
                raise Unavailable(why)
            log.info("log_reader.consumer_retry", stream=stream, error=why)
            await asyncio.sleep(0.5)


class _ConsumerGone(Exception):
    """The server ended the consumer (a leader moved, the consumer was deleted): make it again."""
