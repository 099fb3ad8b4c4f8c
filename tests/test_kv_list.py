"""Listing a KV bucket (maze/events/kv_list.py, behind workspace listings and saved workflows) on a
real nats-server: every live entry stored before the read, deleted ones left out, however many
listings run at once on one event loop (nats-py's own watch could end its listing early there,
nats-io/nats.py #842: a workspace listed on a busy head came back empty)."""

from __future__ import annotations

import asyncio

import nats
from nats.js.api import KeyValueConfig

from maze.events.kv_list import live_entries
from tests.helpers import NatsServer

BUCKET = "kv-list-test"


async def _filled(url: str) -> tuple[nats.NATS, list[str]]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    kv = await js.create_key_value(KeyValueConfig(bucket=BUCKET, history=1))  # as the head makes them
    keys = [f"ws.dir{i % 3}.file{i:02d}" for i in range(40)]
    for key in keys:
        await kv.put(key, key.encode())
    await kv.put(keys[0], b"replaced")  # the latest value is the one listed
    for key in keys[-4:]:
        await kv.delete(key)
    await kv.put("other.file", b"x")
    return nc, keys


def test_every_live_entry_is_listed_by_every_concurrent_listing(nats_server: NatsServer) -> None:
    async def main() -> None:
        nc, keys = await _filled(nats_server.url)
        try:
            js = nc.jetstream()
            kv = await js.key_value(BUCKET)
            live = sorted(keys[:-4])
            listings = await asyncio.gather(*(live_entries(js, BUCKET, "ws.>") for _ in range(40)))
            for listing in listings:
                assert [e.key for e in listing] == live
            first = listings[0]
            assert {e.key: e.value for e in first}[keys[0]] == b"replaced"
            for entry in first:
                assert entry.revision == (await kv.get(entry.key)).revision

            # a writer adding and replacing entries while 20 listings run: each has every entry
            # stored before it began (and may have some of the writer's)
            async def write() -> None:
                for i in range(200):
                    await kv.put(f"ws.new.{i:03d}", b"n")
                    await kv.put(keys[1], f"v{i}".encode())

            writer = asyncio.ensure_future(write())
            during = await asyncio.gather(*(live_entries(js, BUCKET, "ws.>") for _ in range(20)))
            await writer
            for listing in during:
                listed = [e.key for e in listing]
                assert set(live) <= set(listed) and listed == sorted(listed)
            narrowed = await live_entries(js, BUCKET, "ws.dir1.>")
            assert [e.key for e in narrowed] == [k for k in live if k.startswith("ws.dir1.")]
            one = await live_entries(js, BUCKET, "ws.>", first_only=True)
            assert len(one) == 1 and one[0].key in live
            assert await live_entries(js, BUCKET, "nothing.>") == []
        finally:
            await nc.close()

    asyncio.run(main())
