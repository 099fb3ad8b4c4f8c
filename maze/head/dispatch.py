"""Sending work: each placed attempt's work item within the server's message limit, and the items
for a node packed into batches bounded by bytes as well as by count (DESIGN.md §6.7).

A work item carries its code by hash only. One whose inputs are too large for a message gets its
largest inline values moved to the blob store (a reference stays in their place) until it fits;
when even that cannot make it fit, or a value is above the blob store's limit, the attempt fails
with `payload_too_large` (sizes and limits in the message), a permanent error that is never
retried. Code that older runs carried inline is put into the blob store once before the first work
that needs it is sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec
import structlog

from maze.core.errors import PayloadTooLarge
from maze.events import values
from maze.events.blobs import BlobStore
from maze.events.gather import shown_name
from maze.events.specs import TaskError
from maze.events.store import pack_by_bytes
from maze.events.work import WorkItem

log = structlog.get_logger(__name__)

MAX_ITEMS = 256  # work items per message
BATCH_ENVELOPE = 64  # the WorkBatch map around its list of items
ITEM_OVERHEAD = 8  # pack_by_bytes' allowance per item
_encoder = msgspec.msgpack.Encoder()


def item_limit(budget: int) -> int:
    """The largest encoded work item a message can carry on its own."""
    return budget - BATCH_ENVELOPE - ITEM_OVERHEAD


def encode_item(item: WorkItem) -> bytes:
    return _encoder.encode(item)


def batch_payload(encoded: Sequence[bytes]) -> bytes:
    """A WorkBatch message from already encoded items (the same bytes as encoding the batch)."""
    return _encoder.encode({"items": [msgspec.Raw(e) for e in encoded]})


def pack_batches(sizes: Sequence[int], budget: int, max_items: int = MAX_ITEMS) -> list[range]:
    """Consecutive runs of items, each within `budget` bytes (the batch envelope included) and at
    most `max_items` long. Raises PayloadTooLarge for an item that fits no message on its own."""
    out: list[range] = []
    for part in pack_by_bytes(sizes, budget - BATCH_ENVELOPE, ITEM_OVERHEAD):
        out += [range(s, min(s + max_items, part.stop)) for s in range(part.start, part.stop, max_items)]
    return out


def batch_msg_id(items: Sequence[WorkItem], epoch: int = 0) -> str:
    """The work message's id (JetStream drops a second message with the same id in the stream's
    duplicate window). It names each attempt with the node session it was placed on, and the
    deciding leadership: a deposed leader's placement of the same attempt number elsewhere never
    makes the new leader's work look like a duplicate."""
    digest = hashlib.sha256(
        "|".join(f"{i.run_id}/{i.task_id}/{i.attempt}/{i.session}" for i in items).encode()
    )
    return f"work/{epoch}/{digest.hexdigest()[:40]}"


def too_large(item: WorkItem, message: str) -> TaskError:
    return TaskError(
        error_type="payload_too_large",
        message=f"the work of task {item.task_id!r} (attempt {item.attempt}) cannot be sent: {message}",
        retryable=False,
        origin="controller",
        attempt=item.attempt,
    )


async def fit_item(
    item: WorkItem, encoded: bytes, limit: int, blobs: BlobStore
) -> tuple[WorkItem, bytes] | TaskError:
    """The item as it can be sent (`limit` bytes at most encoded): as it is, or with its largest
    inline input values moved to the blob store. A TaskError when it cannot be made to fit."""
    if len(encoded) <= limit:
        return item, encoded
    wires = {key: bytes(raw) for key, raw in values.decode_map_raw(item.inputs).items()}
    sizes = {key: len(w) for key, w in wires.items() if values.ext_code(w) not in values.REFERENCES}
    for key in values.keys_to_spill(sizes, len(encoded) - limit):
        codec, content, kind = values.content_of(wires[key])
        if len(content) > blobs.max_blob_bytes:
            return too_large(
                item,
                f"input {shown_name(key)!r} is {len(content)} bytes, above the blob store's limit of "
                f"{blobs.max_blob_bytes} bytes",
            )
        ref = values.blob_ref_for(codec, content, kind)
        try:
            await blobs.put(content, ref.sha256)
        except PayloadTooLarge as exc:
            return too_large(item, exc.message)
        wires[key] = values.wire_blob(ref)
    fitted = msgspec.structs.replace(
        item, inputs=_encoder.encode({k: msgspec.Raw(w) for k, w in wires.items()})
    )
    encoded = encode_item(fitted)
    if len(encoded) > limit:
        return too_large(
            item,
            f"its work item is {len(encoded)} bytes encoded even with its input values in the blob "
            f"store (too many inputs), above the message limit of {limit} bytes",
        )
    log.info("work.inputs_spilled", run_id=item.run_id, task_id=item.task_id, attempt=item.attempt)
    return fitted, encoded


class CodeUploader:
    """Puts code that older runs carried inline into the blob store, once per hash."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self.stored: set[str] = set()

    async def ensure(self, code: dict[str, bytes]) -> dict[str, TaskError]:
        """Store what is not stored yet; returns the hashes that could not be, with why."""
        failed: dict[str, TaskError] = {}
        for func_hash, content in code.items():
            if func_hash in self.stored:
                continue
            try:
                await self.blobs.put(content, func_hash)
            except PayloadTooLarge as exc:
                failed[func_hash] = TaskError(
                    error_type="payload_too_large",
                    message=f"the task's code cannot be stored: {exc.message}",
                    origin="controller",
                )
                continue
            self.stored.add(func_hash)
        return failed
