"""Turning a task's outputs into the result an `attempt.succeeded` event carries: each value inline
when small, as a blob reference when above the inline limit, and the largest ones moved to the
blob store until the whole event fits one message."""

from __future__ import annotations

import msgspec

from maze.core.errors import PayloadTooLarge
from maze.core.settings import ValueLimits
from maze.events import values
from maze.events.blobs import BlobStore

_encoder = msgspec.msgpack.Encoder()
EVENT_ENVELOPE_BYTES = 1024  # the attempt.succeeded fields around the result
KEY_OVERHEAD = 16

Output = tuple[str, str, str, bytes]  # key, codec, type name, content


async def store_result(outputs: list[Output], limits: ValueLimits, budget: int, blobs: BlobStore) -> bytes:
    """The result map `{key: wire value}`. Raises PayloadTooLarge when a value exceeds the blob cap
    (checked again here: the task process checks first), or the store's errors when a blob cannot
    be written."""
    wires: dict[str, bytes] = {}
    contents: dict[str, tuple[str, bytes, str]] = {}
    for key, codec, kind, content in outputs:
        if len(content) > limits.blob_max_bytes:
            raise values.too_large(f"output {key!r}", len(content), limits.blob_max_bytes)
        contents[key] = (codec, content, kind)
        if len(content) > limits.inline_bytes:
            wires[key] = await _to_blob(blobs, codec, content, kind)
        else:
            wires[key] = values.wire_from_content(codec, content, kind)
    total = EVENT_ENVELOPE_BYTES + sum(len(k) + len(w) + KEY_OVERHEAD for k, w in wires.items())
    if total > budget:
        sizes = {k: len(w) for k, w in wires.items()}
        for key in values.keys_to_spill(sizes, total - budget):
            wires[key] = await _to_blob(blobs, *contents[key])
    result = _encoder.encode({k: msgspec.Raw(w) for k, w in wires.items()})
    if len(result) + EVENT_ENVELOPE_BYTES > budget:
        raise PayloadTooLarge(
            f"the result has {len(wires)} outputs taking {len(result)} bytes even with every large "
            f"value in the blob store, above the message limit of {budget} bytes; return fewer keys "
            "(e.g. one dict value)",
            size=len(result),
            limit=budget,
        )
    return result


async def _to_blob(blobs: BlobStore, codec: str, content: bytes, kind: str) -> bytes:
    ref = values.blob_ref_for(codec, content, kind)
    await blobs.put(content, ref.sha256)
    return values.wire_blob(ref)
