"""Every live entry of a KV bucket under a key filter, as stored when the read begins.

nats-py's `KeyValue.watch` marks the end of what was stored with a `None` that can come too early:
it compares the consumer's pending count, in a consumer-info reply that can overtake deliveries,
with the messages read off the socket so far, and messages the server has already sent are in
neither (nats-io/nats.py #842, open in 2.16). A workspace listed on a busy head then came back
empty. Here the end is a count taken from the consumer itself once it exists (what it has
delivered plus what it still holds), and beyond it until a message says nothing is pending (a
consumer recreated after a gap, or a count read while a replaced entry was being swapped, would
otherwise stop short). Deletes count as messages; each wait is bounded by `timeout`.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

KV_OPERATION = "KV-Operation"
MARKER_REASON = "Nats-Marker-Reason"  # nats-server 2.11+: a TTL or purge marker


class KvEntry(NamedTuple):
    key: str
    value: bytes
    revision: int


async def live_entries(
    js: JetStreamContext,
    bucket: str,
    key_filter: str = ">",
    timeout: float = 10.0,
    first_only: bool = False,
) -> list[KvEntry]:
    """The entries of `bucket` whose keys match `key_filter` (NATS wildcards), deleted ones left
    out, by key. `first_only`: stop at the first live one. Raises TimeoutError when the server
    sends nothing for `timeout` seconds while entries are still due."""
    prefix = f"$KV.{bucket}."
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def arrived(msg: Msg) -> None:
        queue.put_nowait(msg)

    sub = await js.subscribe(
        prefix + key_filter,
        stream=f"KV_{bucket}",
        cb=arrived,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
    )
    try:
        info = await sub.consumer_info()
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        due = (delivered or 0) + (info.num_pending or 0)
        found: dict[str, KvEntry] = {}
        seen, pending = 0, 0
        while seen < due or pending:
            msg = await asyncio.wait_for(queue.get(), timeout)
            seen += 1
            pending = msg.metadata.num_pending or 0
            headers = msg.headers or {}
            if KV_OPERATION in headers or MARKER_REASON in headers or not msg.data:
                found.pop(msg.subject[len(prefix) :], None)  # deleted or purged: not live
                continue
            key = msg.subject[len(prefix) :]
            found[key] = KvEntry(key, msg.data, msg.metadata.sequence.stream)
            if first_only:
                break
        return [found[key] for key in sorted(found)]
    finally:
        await sub.unsubscribe()
