"""NATS roles on the embedded server: the head has a user that may do everything; each worker node a
user of its own that may do only what a worker does. What a worker's credentials cannot do is
refused by NATS, and what they may write but not mean (a run created on a worker's subject) is
refused by every fold."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from nats.js.api import ConsumerConfig

from maze import MaClient, task
from maze.core.clock import now_ms
from maze.events import subjects
from maze.events.blobs import BlobStore
from maze.events.codec import encode_events
from maze.events.runs import RunCreated
from maze.events.tasks import AttemptStarted
from tests.helpers import HeadProcess


@task
def ping(x: int = 0):
    return {"x": x}


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    proc = HeadProcess(tmp_path_factory.mktemp("roles") / "head")  # the embedded server
    proc.start()
    yield proc
    proc.stop()


def _worker_url(head: HeadProcess, node_id: str) -> str:
    resp = httpx.get(f"{head.url}/cluster/nats", params={"node_id": node_id}, timeout=10)
    assert resp.status_code == 200, resp.text
    (url,) = resp.json()["nats_urls"]
    return str(url)


def test_each_worker_gets_credentials_of_its_own_never_the_heads(head: HeadProcess) -> None:
    one, two = _worker_url(head, "node-one"), _worker_url(head, "node-two")
    assert "worker-node-one:" in one and "worker-node-two:" in two and one != two
    head_password = msgspec.json.decode((head.data_dir / "nats-users.json").read_bytes())["head"]
    assert head_password not in one and head_password not in two and "maze-head" not in one
    assert _worker_url(head, "node-one") == one, "the same node gets the same credentials again"
    missing = httpx.get(f"{head.url}/cluster/nats", timeout=10)
    # a required parameter of the route (the document says so): refused before the route runs
    assert missing.status_code == 400 and "node_id" in missing.text, missing.text
    assert missing.json()["error"]["type"] == "validation_error"
    bad = httpx.get(f"{head.url}/cluster/nats", params={"node_id": "a.b"}, timeout=10)
    assert bad.status_code == 400
    out = subprocess.run(
        [sys.executable, "-m", "maze", "cluster", "join-command", "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and head_password not in out.stdout and "maze start --worker" in out.stdout


async def _refused(url: str, attempt, node: str = "node-one") -> str:  # type: ignore[no-untyped-def]
    """Run `attempt(nc)`, connected as node `node`'s worker is (its own inbox prefix, so that
    replies to what it may ask do reach it), and return the permissions error NATS reported."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(url, error_cb=on_error, inbox_prefix=subjects.worker_inbox(node))
    try:
        with pytest.raises(Exception):  # noqa: B017 (a timeout, no responders or a permissions error)
            await attempt(nc)
        for _ in range(50):
            if errors:
                break
            await asyncio.sleep(0.02)
    finally:
        await nc.close()
    assert any("permissions violation" in e.lower() for e in errors), errors
    return errors[0]


def test_a_workers_credentials_cannot_create_runs_purge_or_read_other_work(head: HeadProcess) -> None:
    url = _worker_url(head, "node-one")
    created = RunCreated(run_id="run_forged", workflow_id="w", at_ms=now_ms(), tasks=[])

    async def create_run(nc: nats.NATS) -> None:
        await nc.jetstream(timeout=1).publish(subjects.run_subject("run_forged"), encode_events([created]))

    async def purge(nc: nats.NATS) -> None:
        await nc.jetstream(timeout=1).purge_stream(subjects.RUNS_STREAM)

    async def delete(nc: nats.NATS) -> None:
        await nc.jetstream(timeout=1).delete_stream(subjects.WORK_STREAM)

    async def others_work(nc: nats.NATS) -> None:
        config = ConsumerConfig(
            durable_name="worker-node-two", filter_subject=subjects.work_subject("node-two")
        )
        await nc.jetstream(timeout=1).add_consumer(subjects.WORK_STREAM, config)

    async def listen_to_others_work(nc: nats.NATS) -> None:
        await nc.subscribe(subjects.work_subject("node-two"))
        await nc.flush(timeout=1)
        await asyncio.sleep(0.3)
        raise RuntimeError("the subscription itself is refused asynchronously")

    async def own_name_others_filter(nc: nats.NATS) -> None:
        # its own consumer's name, on another node's work subject
        config = ConsumerConfig(
            name="worker-node-one",
            durable_name="worker-node-one",
            filter_subject=subjects.work_subject("node-two"),
        )
        await nc.jetstream(timeout=1).add_consumer(subjects.WORK_STREAM, config)

    async def own_durable_unfiltered(nc: nats.NATS) -> None:
        # the legacy create, whose subject names no filter: the request's could be anything
        config = ConsumerConfig(
            durable_name="worker-node-one", filter_subject=subjects.work_subject("node-two")
        )
        await nc.jetstream(timeout=1).add_consumer(subjects.WORK_STREAM, config)

    async def read_others_replies(nc: nats.NATS) -> None:
        await nc.subscribe("_INBOX.>")
        await nc.flush(timeout=1)
        await asyncio.sleep(0.3)
        raise RuntimeError("the subscription itself is refused asynchronously")

    async def own_consumer_pushing_onto_the_heads_subject(nc: nats.NATS) -> None:
        # its own name and filter, but a push consumer: the server would publish the work it
        # holds onto the deliver subject, here the head's own subject of a run
        config = ConsumerConfig(
            name="worker-node-one",
            durable_name="worker-node-one",
            filter_subject=subjects.work_subject("node-one"),
            deliver_subject=subjects.run_subject("run_pushed"),
        )
        await nc.jetstream(timeout=1).add_consumer(subjects.WORK_STREAM, config)

    async def blob_consumer_pushing_onto_the_heads_subject(nc: nats.NATS) -> None:
        # the blob store holds bytes any worker may write: pushed to a head subject, a forgery
        config = ConsumerConfig(deliver_subject=subjects.run_subject("run_pushed"))
        await nc.jetstream(timeout=1).add_consumer(subjects.BLOB_STREAM, config)

    for attempt in (
        own_consumer_pushing_onto_the_heads_subject,
        blob_consumer_pushing_onto_the_heads_subject,
        create_run,
        purge,
        delete,
        others_work,
        listen_to_others_work,
        own_name_others_filter,
        own_durable_unfiltered,
        read_others_replies,
    ):
        asyncio.run(_refused(url, attempt))

    async def what_it_may_do() -> None:
        # the control: the same connection does what a worker does, so the refusals above are
        # the actions' own, not a connection that can do nothing
        nc = await nats.connect(url, inbox_prefix=subjects.worker_inbox("node-one"))
        try:
            js = nc.jetstream(timeout=5)
            # its work consumer, which the head made when it handed out these credentials
            info = await js.consumer_info(subjects.WORK_STREAM, "worker-node-one")
            assert info.config.filter_subject == subjects.work_subject("node-one")
            assert info.config.deliver_subject is None
            await js.stream_info(subjects.BLOB_STREAM)
            # a value stored and read back in chunks (batched direct gets), as a worker does
            blobs = BlobStore(nc, 64 * 1024 * 1024)
            blobs.chunk_bytes = 64 * 1024
            data = bytes(range(256)) * 2048  # 512 KiB: 8 chunks
            sha, size = await blobs.put(data)
            assert size == len(data) and await blobs.get(sha) == data
            # what it may write, it may not write with a rollup, which would purge every blob, or
            # every node's heartbeat, at once: the streams refuse rollups
            before = (await js.stream_info(subjects.BLOB_STREAM)).state.messages
            for subject in (
                f"$O.{subjects.BLOB_BUCKET}.M.{'0' * 64}",
                f"$KV.{subjects.HEARTBEAT_BUCKET}.node-one",
            ):
                with pytest.raises(nats.js.errors.APIError, match="rollup"):
                    await js.publish(subject, b"{}", headers={"Nats-Rollup": "all"})
            assert (await js.stream_info(subjects.BLOB_STREAM)).state.messages == before
            assert await blobs.get(sha) == data
        finally:
            await nc.close()

    asyncio.run(what_it_may_do())


def test_what_a_worker_writes_on_its_own_subject_but_may_not_mean_is_refused(head: HeadProcess) -> None:
    """NATS lets a worker write on its own report subject of any run; what it writes there counts
    only if it is that node's report on an attempt. A run it tries to create there is no run."""
    url = _worker_url(head, "node-one")
    forged = RunCreated(run_id="run_forged2", workflow_id="w", at_ms=now_ms(), tasks=[])
    client = MaClient(head.url)
    wf = client.create_workflow()
    wf.add_task(ping, inputs={"x": 1})
    real = wf.run()
    assert wf.show_results(real)["state"] == "succeeded"
    someone_else = AttemptStarted(run_id=real, task_id="t", attempt=1, node_id="node-two", at_ms=now_ms())

    async def write() -> None:
        nc = await nats.connect(url, inbox_prefix=subjects.worker_inbox("node-one"))
        try:
            js = nc.jetstream()
            await js.publish(subjects.report_subject("run_forged2", "node-one"), encode_events([forged]))
            await js.publish(subjects.report_subject(real, "node-one"), encode_events([someone_else]))
        finally:
            await nc.close()

    asyncio.run(write())

    def refused() -> int:
        decoding = httpx.get(f"{head.url}/cluster/diagnostics", timeout=10).json()["controller"]["decoding"]
        return int(decoding["refused_events"])

    from tests.helpers import wait_until

    wait_until(lambda: refused() >= 2, timeout=30)
    assert httpx.get(f"{head.url}/runs/run_forged2", timeout=10).status_code == 404
    shown = client.get_run_events(real)
    assert any(e.get("refused") for e in shown), "the history shows what was refused, as such"
    assert client.get_run(real)["state"] == "succeeded"


@task
def nap(seconds: float = 0.0):
    import time

    time.sleep(seconds)
    return {"slept": seconds}


def test_what_a_worker_writes_that_does_not_decode_never_breaks_a_run(head: HeadProcess) -> None:
    """A malformed event on the head's own subject ends its run (it cannot be folded faithfully);
    on a worker's subject it cannot be told to be that node's report, so it is refused and counted,
    and the run it names goes on: no worker can end another's run by writing garbage."""
    url = _worker_url(head, "node-one")
    client = MaClient(head.url)
    wf = client.create_workflow()
    wf.add_task(nap, inputs={"seconds": 2.0})
    run_id = wf.run()

    def refused() -> int:
        decoding = httpx.get(f"{head.url}/cluster/diagnostics", timeout=10).json()["controller"]["decoding"]
        return int(decoding["refused_events"])

    before = refused()
    garbage = msgspec.msgpack.encode([{"type": "attempt.failed", "run_id": run_id, "attempt": "one"}])

    async def write() -> None:
        nc = await nats.connect(url, inbox_prefix=subjects.worker_inbox("node-one"))
        try:
            js = nc.jetstream()
            await js.publish(subjects.report_subject(run_id, "node-one"), garbage)
            await js.publish(subjects.report_subject(run_id, "node-one"), b"\xc1 not msgpack at all")
        finally:
            await nc.close()

    asyncio.run(write())
    from tests.helpers import wait_until

    wait_until(lambda: refused() >= before + 2, timeout=30)
    assert wf.show_results(run_id)["state"] == "succeeded"
    shown = client.get_run_events(run_id)
    refusals = [e for e in shown if e.get("refused")]
    assert len(refusals) == 2 and all("does not decode" in e["refused"] for e in refusals), refusals
    assert not any("malformed" in e for e in shown)


def test_the_heads_local_worker_runs_with_a_workers_credentials(head: HeadProcess, tmp_path: Path) -> None:
    users = msgspec.json.decode((head.data_dir / "nats-users.json").read_bytes())
    assert any(node.endswith(f"-head-{head.port}") for node in users["workers"]), users["workers"].keys()
    client = MaClient(head.url)
    wf = client.create_workflow()
    first = wf.add_task(ping, inputs={"x": 2})
    wf.add_task(ping, inputs={"x": first.outputs["x"]})
    assert wf.show_results(wf.run())["state"] == "succeeded"
