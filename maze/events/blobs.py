"""The content-addressed blob store: function code and large values, stored once by sha256 in the
JetStream Object Store bucket `maze-artifacts` (replicated like the streams).

It writes the Object Store's own layout (chunks on `$O.<bucket>.C.<nuid>`, the object's JSON info
on `$O.<bucket>.M.<name>` with a rollup), so `nats object` tools can read it, but differs from
nats-py's client where that one does not fit content addressing:
- a put of content already stored is a no-op (no second copy, no purge of chunks a reader may be
  reading); two writers racing on the same content at worst leave one orphaned chunk set;
- chunks are pipelined (a window of acks in flight), sized to the server's `max_payload`;
- every read checks the content against its sha256 name: a corrupt blob is reported, never used.

Object names are `sha256/<hex>`; values refer to them as `maze://artifacts/sha256/<hex>`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from maze.core.errors import ArtifactError, BlobMissing, PayloadTooLarge, Unavailable, ValidationError
from maze.events import subjects
from maze.events.store import api_prefix, jetstream, payload_budget, publish_durably, store_full

log = structlog.get_logger(__name__)

HEX_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_CHUNK = 1024 * 1024
CHUNK_BATCH = 16  # chunks asked for at once: at most 16 MiB in flight to one reader
WINDOW = 16  # chunk publishes awaiting their ack at once
ACK_TIMEOUT_S = 30.0


def object_name(sha: str) -> str:
    return f"sha256/{sha}"


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def meta_subject(sha: str) -> str:
    return f"$O.{subjects.BLOB_BUCKET}.M.{_b64(object_name(sha))}"


def chunk_subject(nuid: str) -> str:
    return f"$O.{subjects.BLOB_BUCKET}.C.{nuid}"


def check_hex(sha: str) -> str:
    if not HEX_RE.fullmatch(sha):
        raise ValidationError(f"{sha!r} is not a sha256 hex digest (64 lowercase hex characters)")
    return sha


class _ChunkWriter:
    """Publishes chunks in order on one subject with up to WINDOW acks outstanding."""

    def __init__(self, nc: NATS, subject: str) -> None:
        self.nc = nc
        self.subject = subject
        self.window = asyncio.Semaphore(WINDOW)
        self.pending: set[asyncio.Future[None]] = set()
        self.count = 0

    async def start(self) -> None:
        self.inbox = self.nc.new_inbox()
        self.futures: dict[str, asyncio.Future[None]] = {}
        self.sub = await self.nc.subscribe(self.inbox + ".*", cb=self._on_ack)

    async def _on_ack(self, msg: Msg) -> None:
        future = self.futures.pop(msg.subject, None)
        if future is None or future.done():
            return
        try:
            reply = json.loads(msg.data)
        except ValueError:
            reply = {"error": {"description": msg.data[:200].decode(errors="replace")}}
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            full = store_full(error, self.subject)
            future.set_exception(full or Unavailable(f"blob chunk not stored: {error.get('description')}"))
        else:
            future.set_result(None)

    async def write(self, chunk: bytes | memoryview) -> None:
        await self.window.acquire()
        reply = f"{self.inbox}.{self.count}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: self.window.release())
        self.futures[reply] = future
        self.pending.add(future)
        self.count += 1
        await self.nc.publish(self.subject, bytes(chunk), reply=reply)
        # surface a failed ack early instead of after the whole blob was sent
        for done in [f for f in self.pending if f.done()]:
            self.pending.discard(done)
            done.result()

    async def finish(self) -> None:
        try:
            if self.pending:
                await asyncio.wait_for(asyncio.gather(*self.pending), ACK_TIMEOUT_S)
        except TimeoutError as exc:
            raise Unavailable("the blob store did not acknowledge a chunk in time") from exc
        finally:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()


async def _rechunk(body: AsyncIterable[bytes], chunk_bytes: int) -> AsyncIterator[bytes]:
    """An upload's parts, whatever their sizes, as chunks of `chunk_bytes` (the last one less).
    Each chunk is made by one join of the parts it spans (a part that is a whole chunk passes as
    it is): a byte is copied once here, not three times as a growing bytearray copies it."""
    parts: list[bytes | memoryview] = []
    have = 0
    async for part in body:
        if not part:
            continue
        if not parts and len(part) == chunk_bytes and isinstance(part, bytes):
            yield part
            continue
        parts.append(part)
        have += len(part)
        if have < chunk_bytes:
            continue
        whole = b"".join(parts)
        if have == chunk_bytes:
            yield whole
            parts, have = [], 0
            continue
        joined = memoryview(whole)
        start = 0
        while have - start >= chunk_bytes:
            yield bytes(joined[start : start + chunk_bytes])
            start += chunk_bytes
        parts = [joined[start:]] if start < have else []
        have -= start
    if parts:
        yield b"".join(parts)


class _Hasher:
    """The sha256 of chunks in order, each large chunk hashed in a thread (hashlib lets go of the
    GIL on large buffers) while the event loop goes on with the next one: the hash of chunk N
    overlaps the publish of chunk N and the read of chunk N+1, instead of stopping the loop."""

    OFF_LOOP_BYTES = 256 * 1024

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self._last: asyncio.Future[None] | None = None

    async def update(self, chunk: bytes | memoryview) -> None:
        """Start hashing `chunk` once the previous chunk is hashed (the chunk must not change)."""
        if self._last is not None:
            await self._last
            self._last = None
        if len(chunk) < self.OFF_LOOP_BYTES:
            self.sha.update(chunk)
        else:
            self._last = asyncio.get_running_loop().run_in_executor(None, self.sha.update, chunk)

    async def done(self) -> Any:
        """The hash object, every chunk in."""
        if self._last is not None:
            await self._last
            self._last = None
        return self.sha

    async def close(self) -> None:
        """Wait for a hash in progress (the chunk it reads must outlive it)."""
        if self._last is not None:
            with contextlib.suppress(Exception):
                await self._last


class BlobStore:
    def __init__(self, nc: NATS, max_blob_bytes: int) -> None:
        self.nc = nc
        self.js: JetStreamContext = jetstream(nc)
        self.direct_get = f"{api_prefix(nc)}.DIRECT.GET.{subjects.BLOB_STREAM}"
        self.max_blob_bytes = max_blob_bytes
        self.chunk_bytes = max(64 * 1024, min(MAX_CHUNK, payload_budget(nc)))
        self._present: OrderedDict[str, int] = OrderedDict()  # sha -> size, known stored
        self._writing: dict[str, asyncio.Future[int]] = {}
        self._removals_followed = False
        self._reconnects = 0

    async def follow_removals(self) -> None:
        """Keep this process's memory of what is stored true without asking the server each time:
        every removal (a corrupt blob's tombstone, written by any process) is a message on the
        blob's meta subject, seen here as it is published. A reconnect may have missed one, so
        the memory is dropped then. After this, `missing` answers from memory what it has seen."""

        async def on_meta(msg: Msg) -> None:
            try:
                info = json.loads(msg.data or b"{}")
            except ValueError:
                return
            name = str(info.get("name", ""))
            if info.get("deleted") and name.startswith("sha256/"):
                self._present.pop(name.removeprefix("sha256/"), None)

        await self.nc.subscribe(f"$O.{subjects.BLOB_BUCKET}.M.>", cb=on_meta)
        await self.nc.flush()
        self._reconnects = int(self.nc.stats["reconnects"])
        self._removals_followed = True

    def _memory_is_current(self) -> bool:
        if not self._removals_followed:
            return False
        reconnects = int(self.nc.stats["reconnects"])
        if reconnects != self._reconnects:  # a removal may have passed while disconnected
            self._reconnects = reconnects
            self._present.clear()
        return True

    # ---- asking -------------------------------------------------------------------------------
    async def info(self, sha: str) -> dict[str, Any] | None:
        """The stored object's info (size, chunks, nuid), or None when it is not stored."""
        try:
            msg = await self.js.get_last_msg(subjects.BLOB_STREAM, meta_subject(check_hex(sha)))
        except NotFoundError:
            return None
        info: dict[str, Any] = json.loads(msg.data or b"{}")
        if info.get("deleted") or not info.get("nuid"):
            return None
        return info

    async def size_of(self, sha: str, fresh: bool = False) -> int | None:
        """The stored size, or None. `fresh`: ask the server, not this process's memory of what
        it saw stored (another process may have found the blob corrupt and removed it)."""
        if sha in self._present and not fresh:
            self._present.move_to_end(sha)
            return self._present[sha]
        info = await self.info(sha)
        if info is None:
            return None
        self._remember(sha, int(info.get("size") or 0))
        return int(info.get("size") or 0)

    async def missing(self, shas: list[str]) -> list[str]:
        """Which of `shas` are not stored: asked of the server, unless this process follows
        removals (`follow_removals`) and has seen them stored."""
        fresh = not self._memory_is_current()
        sizes = await asyncio.gather(*(self.size_of(s, fresh=fresh) for s in shas))
        return [s for s, size in zip(shas, sizes, strict=True) if size is None]

    def _remember(self, sha: str, size: int) -> None:
        self._present[sha] = size
        self._present.move_to_end(sha)
        while len(self._present) > 100_000:
            self._present.popitem(last=False)

    # ---- writing ------------------------------------------------------------------------------
    def check_size(self, size: int, what: str = "the blob") -> None:
        if size > self.max_blob_bytes:
            raise PayloadTooLarge(
                f"{what} is {size} bytes, above the blob store's limit of {self.max_blob_bytes} bytes "
                "(--blob-max-mb)",
                size=size,
                limit=self.max_blob_bytes,
            )

    async def put(self, content: bytes | memoryview, sha: str | None = None) -> tuple[str, int]:
        """Store `content` unless it is already stored; returns (sha256 hex, size). A caller that
        passes `sha` vouches for it (it just hashed the content); reads check it regardless."""
        data = memoryview(content)
        self.check_size(len(data))
        digest = sha or hashlib.sha256(data).hexdigest()
        if await self.size_of(digest) is not None:
            return digest, len(data)
        running = self._writing.get(digest)
        if running is not None:  # the same content is being written by this process already
            return digest, await asyncio.shield(running)

        async def chunks() -> AsyncIterator[bytes | memoryview]:
            for start in range(0, len(data), self.chunk_bytes):
                yield data[start : start + self.chunk_bytes]

        return digest, await self._write_once(digest, chunks(), verify=False)

    async def put_stream(self, body: AsyncIterable[bytes], sha: str) -> tuple[int, bool]:
        """Store a streamed upload (HTTP PUT) that must hash to `sha`. Returns (size, created).
        A body whose content does not hash to `sha` is rejected with nothing stored."""
        check_hex(sha)
        if await self.size_of(sha, fresh=True) is not None:
            # stored already: what the client sent is read and kept nowhere, but it is held to the
            # same rules as a new upload (a body that is not this content is refused all the same)
            hasher = _Hasher()
            size = 0
            try:
                async for part in body:
                    size += len(part)
                    self.check_size(size)
                    await hasher.update(part)
                got = (await hasher.done()).hexdigest()
            finally:
                await hasher.close()
            if got != sha:
                raise ValidationError(
                    f"the uploaded content hashes to sha256 {got}, not {sha}; nothing was written",
                    expected=sha,
                    actual=got,
                )
            return size, False

        return await self._write_once(sha, _rechunk(body, self.chunk_bytes), verify=True), True

    async def _write_once(self, sha: str, chunks: AsyncIterable[bytes | memoryview], verify: bool) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._writing[sha] = future
        try:
            _, size, _ = await self._write(chunks, sha, verify)
            future.set_result(size)
            return size
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: other waiters re-raise it themselves
            raise
        finally:
            self._writing.pop(sha, None)

    async def _write(
        self, chunks: AsyncIterable[bytes | memoryview], sha: str | None, verify: bool = False
    ) -> tuple[str, int, bool]:
        """Write `chunks` as a new object, hashed as they pass; (sha256, size, created). `sha`
        given: the content's hash (with `verify`, one it must hash to, else ValidationError with
        nothing stored). `sha` None: known only at the end, and content stored already keeps the
        stored copy (created False). Whatever is not kept leaves no chunk behind."""
        nuid = self.nc._nuid.next().decode()
        subject = chunk_subject(nuid)
        writer = _ChunkWriter(self.nc, subject)
        await writer.start()
        hasher = _Hasher()
        size = 0
        kept = False
        try:
            async for chunk in chunks:
                size += len(chunk)
                self.check_size(size)
                await hasher.update(chunk)
                await writer.write(chunk)
            await writer.finish()
            sha_done = await hasher.done()
            got = sha_done.hexdigest()
            if sha is not None and verify and got != sha:
                raise ValidationError(
                    f"the uploaded content hashes to sha256 {got}, not {sha}; nothing was stored",
                    expected=sha,
                    actual=got,
                )
            if sha is None:
                sha = got
                if await self.size_of(sha, fresh=True) is not None:
                    return sha, size, False  # stored already: this copy's chunks go (below)
            info = self._object_info(sha, nuid, size, writer.count, sha_done.digest())
            # a repeated meta message is harmless (the last one is read), so transient errors (a
            # leader election) are retried. No rollup header: the blob stream refuses them, since a
            # writer of the blob store (any worker) could purge the whole stream with one
            await publish_durably(self.js, meta_subject(sha), json.dumps(info).encode(), {})
            kept = True
        finally:
            await hasher.close()
            if not kept:
                with contextlib.suppress(Exception):
                    await writer.finish()  # the chunks in flight land before the purge
                with contextlib.suppress(Exception):
                    await self.js.purge_stream(subjects.BLOB_STREAM, subject=subject)
        self._remember(sha, size)
        return sha, size, True

    def _object_info(self, sha: str, nuid: str, size: int, chunks: int, digest: bytes) -> dict[str, Any]:
        """The object's info, as the Object Store writes it on its meta subject."""
        return {
            "name": object_name(sha),
            "bucket": subjects.BLOB_BUCKET,
            "nuid": nuid,
            "size": size,
            "chunks": chunks,
            "mtime": datetime.now(UTC).isoformat(),
            "digest": "SHA-256=" + base64.urlsafe_b64encode(digest).decode(),
            "options": {"max_chunk_size": self.chunk_bytes},
        }

    async def put_unhashed(self, body: AsyncIterable[bytes]) -> tuple[str, int, bool]:
        """Store a streamed upload whose sha256 is known only at its end (a workspace file): its
        chunks are written as they come and hashed as they pass, never held whole. Returns (sha256,
        size, created). Content already stored is kept once: the chunks just written are dropped.
        An upload that fails midway (a limit, a client gone) leaves nothing."""
        return await self._write(_rechunk(body, self.chunk_bytes), None)

    # ---- reading ------------------------------------------------------------------------------
    async def get(self, sha: str) -> bytes:
        """The blob's content, checked against its hash. Raises BlobMissing or ArtifactError."""
        parts = [part async for part in self.stream(sha)]
        return b"".join(parts)

    async def stream(self, sha: str) -> AsyncIterator[bytes]:
        """The blob's chunks in order. The hash is checked as they pass: the last chunk is held
        back until it matches, so a reader never receives all of a corrupt blob."""
        info = await self.info(sha)
        if info is None:
            raise BlobMissing(f"blob maze://artifacts/sha256/{sha} is not in the blob store", missing=[sha])
        expected_size = int(info.get("size") or 0)
        chunks = int(info.get("chunks") or 0)
        hasher = _Hasher()
        size = 0
        held: bytes | None = None
        try:
            async for data in self._chunks(info["nuid"], chunks):
                await hasher.update(data)  # in a thread while the chunk before goes out
                if held is not None:
                    yield held
                size += len(data)
                held = data
            got = (await hasher.done()).hexdigest()
        finally:
            await hasher.close()
        if got != sha or size != expected_size:
            log.error("blob.corrupt", sha256=sha, actual=got, size=size, expected_size=expected_size)
            removed = await self._remove_corrupt(sha, info)
            raise ArtifactError(
                f"blob maze://artifacts/sha256/{sha} is corrupt: its {size} stored bytes hash to "
                f"{got}; it was not used"
                + ("; it was removed, so storing the value again repairs it" if removed else ""),
                sha256=sha,
                actual=got,
            )
        if held is not None:
            yield held

    async def delete(self, sha: str) -> None:
        """Remove a blob: its meta becomes a tombstone (it reads as missing), its chunks are
        purged. For blobs only their writer refers to (controller snapshots); values and code are
        kept (no garbage collection yet)."""
        info = await self.info(sha)
        self._present.pop(sha, None)
        if info is None:
            return
        tombstone = {**info, "deleted": True, "size": 0, "chunks": 0, "mtime": datetime.now(UTC).isoformat()}
        await publish_durably(self.js, meta_subject(sha), json.dumps(tombstone).encode(), {})
        await self.js.purge_stream(subjects.BLOB_STREAM, subject=meta_subject(sha), keep=1)  # the tombstone
        await self.js.purge_stream(subjects.BLOB_STREAM, subject=chunk_subject(info["nuid"]))

    async def _remove_corrupt(self, sha: str, info: dict[str, Any]) -> bool:
        """Mark a blob that fails its hash deleted (a tombstone on its meta subject, as the Object
        Store does), so that it reads as missing and the next upload of the right bytes stores it:
        without this, a blob corrupted once could never be repaired, every put finding it
        "present". Best effort: the read fails either way."""
        self._present.pop(sha, None)
        tombstone = {**info, "deleted": True, "size": 0, "chunks": 0, "mtime": datetime.now(UTC).isoformat()}
        try:
            await publish_durably(self.js, meta_subject(sha), json.dumps(tombstone).encode(), {}, within_s=5)
        except Exception as exc:
            log.warning("blob.corrupt_not_removed", sha256=sha, error=repr(exc))
            return False
        return True

    async def _chunks(self, nuid: str, count: int) -> AsyncIterator[bytes]:
        """The blob's chunks in order, read by batched direct gets (`DIRECT.GET` with
        `next_by_subj` and `batch`, NATS 2.11+): as fast as a short-lived pull consumer, and a reader
        needs no right to create consumers on the blob stream (a consumer's deliver subject could
        be any subject, the head's included: maze/head/nats_auth.py)."""
        if count == 0:
            return
        subject = chunk_subject(nuid)
        replies: asyncio.Queue[Msg] = asyncio.Queue()
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=replies.put)
        try:
            seq, left = 1, count
            while left > 0:
                request = {"seq": seq, "next_by_subj": subject, "batch": min(left, CHUNK_BATCH)}
                await self.nc.publish(self.direct_get, json.dumps(request).encode(), reply=inbox)
                got = 0
                while True:
                    try:
                        msg = await asyncio.wait_for(replies.get(), ACK_TIMEOUT_S)
                    except TimeoutError as exc:
                        raise ArtifactError(f"blob chunks on {subject} stopped arriving") from exc
                    headers = msg.headers or {}
                    status = headers.get("Status")
                    if status == "204":  # the end of this batch
                        break
                    if status == "404":
                        # a direct get may be answered by a replica that lags behind the leader
                        # (just after the blob was written): the rest from the leader
                        async for chunk in self._chunks_from_leader(subject, seq, left):
                            yield chunk
                        return
                    if status is not None:
                        why = headers.get("Description", "")
                        raise ArtifactError(
                            f"blob chunk {count - left + 1} of {count} on {subject} could not be read "
                            f"({status} {why})"
                        )
                    seq = int(headers["Nats-Sequence"]) + 1
                    got += 1
                    left -= 1
                    yield msg.data or b""
                if got == 0:
                    raise ArtifactError(f"blob chunks on {subject} stopped arriving")
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _chunks_from_leader(self, subject: str, seq: int, count: int) -> AsyncIterator[bytes]:
        """`count` chunks on `subject` from sequence `seq` on, one stream-leader get each."""
        for _ in range(count):
            try:
                msg = await self.js.get_msg(subjects.BLOB_STREAM, seq=seq, subject=subject, next=True)
            except NotFoundError as exc:
                raise ArtifactError(f"blob chunks on {subject} are missing from sequence {seq}") from exc
            seq = int(msg.seq or 0) + 1
            yield msg.data or b""
