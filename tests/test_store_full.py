"""JetStream's store with no room left (an operator's nats-server with a small `max_file_store`,
filled by another stream) under a head with runs in flight: a submit is refused at once with
`StoreFull` saying so, `/readyz` says why, nothing accepted is lost, and once the store has room
again everything goes on."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.errors import APIError

from maze import MaClient, task
from maze.core.errors import StoreFull
from maze.head.nats_server import nats_server_binary, server_config
from tests.helpers import HeadProcess, NatsServer, wait_until


@task
def slow(x: int = 0, until: str = ""):
    import os
    import time as _t

    while until and not os.path.exists(until):  # held until the test says so
        _t.sleep(0.05)
    return {"x": x + 1}


class SmallNats(NatsServer):
    """A nats-server whose JetStream may keep 150 MB on disk, all streams together."""

    def start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        conf = self.store / "nats.conf"
        text = server_config("127.0.0.1", self.port, self.store / "js", "always", 1)
        text = text.replace("jetstream {\n", "jetstream {\n  max_file_store: 150MB\n")
        assert "max_file_store: 150MB" in text  # (else the filler below would fill the disk)
        conf.write_text(text)
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        from tests.helpers import _accepts

        wait_until(lambda: _accepts(self.port), timeout=15)


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[tuple[SmallNats, HeadProcess]]:
    server = SmallNats(tmp_path / "nats")
    server.start()
    head = HeadProcess(tmp_path / "head", nats_url=server.url, extra=["--cpus", "4"])
    head.start()
    wait_until(lambda: httpx.get(f"{head.url}/readyz", timeout=5).status_code == 200, timeout=30)
    yield server, head
    head.stop()
    server.stop()


async def _fill(url: str) -> None:
    """Another stream takes every byte the server may keep (down to a 16-byte message); at most
    150 MB are written, and each size ends only at the server's refusal for room."""
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    await js.add_stream(name="FILLER", subjects=["filler.>"])
    written = 0
    for size in (512 * 1024, 64 * 1024, 4096, 256, 16):
        while written < 150 * 1024 * 1024:
            try:
                await js.publish("filler.x", b"f" * size)
            except APIError as exc:
                assert exc.err_code == 10023, exc  # insufficient resources: full
                break
            written += size
    await nc.close()


async def _free(url: str) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().delete_stream("FILLER")
    await nc.close()


def test_a_full_store_refuses_new_work_at_once_and_loses_nothing_accepted(
    small_store: tuple[SmallNats, HeadProcess],
) -> None:
    server, head = small_store
    client = MaClient(head.url)
    release = head.data_dir / "release"
    wf = client.create_workflow()
    first = wf.add_task(slow, inputs={"x": 0, "until": str(release)})
    second = wf.add_task(slow, inputs={"x": first.outputs["x"]})
    accepted = wf.run()
    asyncio.run(_fill(server.url))
    # a new run: refused, saying why (not a timeout after retries)
    refused = client.create_workflow()
    refused.add_task(slow, inputs={"x": 5})
    with pytest.raises(StoreFull) as caught:
        refused.run()
    assert "the event store is full" in caught.value.message and "max_file_store" in caught.value.message
    answer = httpx.get(f"{head.url}/readyz", timeout=10)
    assert answer.status_code == 503 and "the event store is full" in answer.text, answer.text
    assert client.get_run(accepted)["state"] in ("pending", "running")  # waiting for room
    release.touch()  # its first task ends now, and reports into the full store
    # room again: the accepted run goes on to its end, and new runs are taken
    asyncio.run(_free(server.url))
    assert client.wait_run(accepted, timeout=90)["state"] == "succeeded"
    assert client.get_run_task(accepted, second.task_id)["result"] == {"x": 2}
    again = client.create_workflow()
    again.add_task(slow, inputs={"x": 5})
    assert client.wait_run(again.run(), timeout=60)["state"] == "succeeded"
    wait_until(lambda: httpx.get(f"{head.url}/readyz", timeout=5).status_code == 200, timeout=30)
    assert len(client.list_runs(limit=10)) == 2  # the refused one was never recorded
    report = httpx.post(f"{head.url}/projections/rebuild", timeout=120).json()
    assert report["equal"] is True, report
