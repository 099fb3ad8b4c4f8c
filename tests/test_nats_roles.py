"""NATS roles on the embedded server: the head has a user that may do everything; each worker node a
user of its own that may do only what a worker does. What a worker's credentials cannot do is
refused by NATS, and what they may write but not mean (a run created on a worker's subject) is
refused by every fold."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from maze import MaClient, task
from maze.core.clock import now_ms
from maze.events import subjects
from maze.events.blobs import BlobStore
from maze.events.codec import encode_events
from maze.events.logs import LogLine, encode_batch
from maze.events.nodes import NodeLost
from maze.events.runs import LeaderElected, RunCreated
from maze.events.store import connect, jetstream
from maze.events.tasks import AttemptStarted, AttemptSucceeded
from maze.head.lease import KEY
from maze.head.nats_auth import JS_API_PREFIX
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


def _head_url(head: HeadProcess) -> str:
    password = msgspec.json.decode((head.data_dir / "nats-users.json").read_bytes())["head"]
    return f"nats://maze-head:{password}@127.0.0.1:{head.nats_port}"


async def _as_worker(url: str, node: str = "node-one") -> nats.NATS:
    """Connected as node `node`'s worker is: its account's JetStream API prefix, its inbox."""
    return await connect(
        [url], "test-worker", js_api_prefix=JS_API_PREFIX, inbox_prefix=subjects.worker_inbox(node)
    )


async def _what_heads_see(head: HeadProcess) -> dict[str, object]:
    """The head account's streams and lease, as the head sees them."""
    nc = await nats.connect(_head_url(head))
    try:
        js = nc.jetstream()
        seen: dict[str, object] = {}
        for stream in (subjects.RUNS_STREAM, subjects.NODES_STREAM, subjects.WORK_STREAM):
            info = await js.stream_info(stream)
            seen[stream] = (info.state.messages, info.state.last_seq)
        lease = await (await js.key_value(subjects.LEADER_BUCKET)).get(KEY)
        holder = msgspec.msgpack.decode(lease.value or b"")  # renewed all along: who and which epoch
        seen["lease"] = (holder["head_id"], holder["epoch"])
        seen["consumers"] = sorted(c.name for c in await js.consumers_info(subjects.WORK_STREAM))
        return seen
    finally:
        await nc.close()


def test_a_workers_credentials_cannot_create_runs_purge_or_read_other_work(head: HeadProcess) -> None:
    """A worker's account imports only its own part of the head's: what it tries beyond that
    fails or goes nowhere, and nothing of the head's changes (checked from the head's side)."""
    url = _worker_url(head, "node-one")
    _worker_url(head, "node-two")  # another node, whose work the first must not see
    created = RunCreated(run_id="run_forged", workflow_id="w", at_ms=now_ms(), tasks=[])

    async def create_run(nc: nats.NATS) -> None:
        await jetstream(nc, 1).publish(subjects.run_subject("run_forged"), encode_events([created]))

    async def purge(nc: nats.NATS) -> None:
        await jetstream(nc, 1).purge_stream(subjects.RUNS_STREAM)

    async def delete(nc: nats.NATS) -> None:
        await jetstream(nc, 1).delete_stream(subjects.WORK_STREAM)

    async def others_work(nc: nats.NATS) -> None:
        config = ConsumerConfig(
            durable_name="worker-node-two", filter_subject=subjects.work_subject("node-two")
        )
        await jetstream(nc, 1).add_consumer(subjects.WORK_STREAM, config)

    async def pull_others_work(nc: nats.NATS) -> None:
        await nc.request(
            f"{JS_API_PREFIX}.CONSUMER.MSG.NEXT.{subjects.WORK_STREAM}.worker-node-two", b"1", timeout=1
        )

    async def own_consumer_pushing_onto_the_heads_subject(nc: nats.NATS) -> None:
        config = ConsumerConfig(
            name="worker-node-one",
            durable_name="worker-node-one",
            filter_subject=subjects.work_subject("node-one"),
            deliver_subject=subjects.run_subject("run_pushed"),
        )
        await jetstream(nc, 1).add_consumer(subjects.WORK_STREAM, config)

    async def blob_consumer(nc: nats.NATS) -> None:
        await jetstream(nc, 1).add_consumer(
            subjects.BLOB_STREAM, ConsumerConfig(deliver_subject=subjects.run_subject("run_pushed"))
        )

    async def read_the_log(nc: nats.NATS) -> None:
        await jetstream(nc, 1).get_msg(subjects.RUNS_STREAM, 1)

    async def write_a_workspace(nc: nats.NATS) -> None:  # people's files: only heads write them
        await jetstream(nc, 1).publish(f"$KV.{subjects.WORKSPACE_BUCKET}.ws.forged", b"x")

    before = asyncio.run(_what_heads_see(head))
    for attempt in (
        create_run,
        purge,
        delete,
        others_work,
        pull_others_work,
        own_consumer_pushing_onto_the_heads_subject,
        blob_consumer,
        read_the_log,
        write_a_workspace,
    ):

        async def run(attempt=attempt) -> None:  # type: ignore[no-untyped-def]
            nc = await _as_worker(url)
            try:
                with pytest.raises(Exception):  # noqa: B017 (no responders, a timeout, JetStream not enabled)
                    await attempt(nc)
            finally:
                await nc.close()

        asyncio.run(run())

    async def listen(subject: str, publish_as_head: str) -> list[bytes]:
        """What a worker subscribed to `subject` hears while the head publishes there."""
        heard: list[bytes] = []

        async def on_msg(msg: Msg) -> None:
            heard.append(msg.data)

        nc = await _as_worker(url)
        head_nc = await nats.connect(_head_url(head))
        try:
            await nc.subscribe(subject, cb=on_msg)
            await nc.flush()
            await head_nc.publish(publish_as_head, b"secret")
            await head_nc.flush()
            await asyncio.sleep(0.5)
            return heard
        finally:
            await nc.close()
            await head_nc.close()

    assert asyncio.run(listen(subjects.work_subject("node-two"), "maze.test.other-work")) == []
    assert asyncio.run(listen("_INBOX.someone-elses-reply", "_INBOX.someone-elses-reply")) == []
    after = asyncio.run(_what_heads_see(head))
    assert after == before, (before, after)
    # nor what the head records about its own node: that comes on its work subject
    assert (
        asyncio.run(listen(subjects.node_head_subject("node-one"), subjects.node_head_subject("node-one")))
        == []
    )
    assert httpx.get(f"{head.url}/runs/run_forged", timeout=10).status_code == 404

    async def what_it_may_do() -> None:
        # the control: the same connection does what a worker does, so the refusals above are
        # the actions' own, not a connection that can do nothing
        nc = await _as_worker(url)
        try:
            js = jetstream(nc, 5)
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


def test_no_reply_subject_a_worker_names_reaches_the_heads_subjects(head: HeadProcess) -> None:
    """NATS checks a publish's subject, never its reply subject, and JetStream answers go to the
    reply subject from inside the server. A worker asking for bytes it stored (a forged event), or
    for an ack, with the reply onto a head subject, the lease key or another node's subjects: the
    answer goes back into its own account, and nothing of the head's changes."""
    url = _worker_url(head, "node-one")
    _worker_url(head, "node-two")
    forged = encode_events([RunCreated(run_id="run_by_reply", workflow_id="w", at_ms=now_ms(), tasks=[])])
    targets = [
        subjects.run_subject("run_by_reply"),
        subjects.LEADER_SUBJECT,
        f"$KV.{subjects.LEADER_BUCKET}.{KEY}",
        f"$KV.{subjects.CONTROLLER_BUCKET}.snapshot",
        subjects.work_subject("node-two"),
        subjects.node_subject("node-two"),
        subjects.report_subject("run_by_reply", "node-two"),
        subjects.node_head_subject("node-one"),
    ]

    async def attack() -> None:
        nc = await _as_worker(url)
        try:
            js = jetstream(nc, 5)
            ack = await js.publish(f"$O.{subjects.BLOB_BUCKET}.C.forged", forged)
            direct = f"{JS_API_PREFIX}.DIRECT.GET.{subjects.BLOB_STREAM}"
            for target in targets:
                await nc.publish(direct, msgspec.json.encode({"seq": ack.seq}), reply=target)
                await nc.publish(f"$KV.{subjects.HEARTBEAT_BUCKET}.node-one", b"x", reply=target)
                await nc.publish(subjects.report_subject("run_x", "node-one"), b"x", reply=target)
            await nc.flush()
            await asyncio.sleep(1.0)
        finally:
            await nc.close()

    before = asyncio.run(_what_heads_see(head))
    asyncio.run(attack())
    after = asyncio.run(_what_heads_see(head))
    runs_before, runs_after = before.pop(subjects.RUNS_STREAM), after.pop(subjects.RUNS_STREAM)
    assert after == before, (before, after)
    # the runs stream took the three reports on its own subject, as it should, and nothing else
    assert runs_after[0] == runs_before[0] + len(targets), (runs_before, runs_after)  # type: ignore[index]
    assert httpx.get(f"{head.url}/runs/run_by_reply", timeout=10).status_code == 404
    assert _leader_of(head) is not None


def _leader_of(head: HeadProcess) -> object:
    return httpx.get(f"{head.url}/cluster/resources", timeout=10).json().get("leader")


def test_a_worker_cannot_speak_for_the_head_or_another_node_on_its_node_subject(head: HeadProcess) -> None:
    """Its node subject takes its own sessions only: a run created there, a leadership, or another
    node's session is refused by every reader."""
    url = _worker_url(head, "node-one")
    forged = [
        RunCreated(run_id="run_on_node_subject", workflow_id="w", at_ms=now_ms(), tasks=[]),
        LeaderElected(head_id="evil", epoch=1_000_000, at_ms=now_ms()),
        NodeLost(node_id="node-two", session="s", at_ms=now_ms(), reason="forged"),
    ]

    def refused() -> int:
        decoding = httpx.get(f"{head.url}/cluster/diagnostics", timeout=10).json()["controller"]["decoding"]
        return int(decoding["refused_events"])

    before = refused()

    async def write() -> None:
        nc = await _as_worker(url)
        try:
            for event in forged:
                await jetstream(nc, 5).publish(subjects.node_subject("node-one"), encode_events([event]))
        finally:
            await nc.close()

    asyncio.run(write())
    from tests.helpers import wait_until

    wait_until(lambda: refused() >= before + len(forged), timeout=30)
    assert httpx.get(f"{head.url}/runs/run_on_node_subject", timeout=10).status_code == 404
    leader = httpx.get(f"{head.url}/cluster/resources", timeout=10).json()["leader"]
    assert leader["head_id"] != "evil" and int(leader["epoch"]) < 1_000_000, leader


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
    (end,) = [e["seq"] for e in shown if e["type"] == "run.finished"]
    assert all(e["seq"] < end for e in refusals), "the garbage came while the run was live"
    assert not any("malformed" in e for e in shown)


def test_the_heads_local_worker_runs_with_a_workers_credentials(head: HeadProcess, tmp_path: Path) -> None:
    users = msgspec.json.decode((head.data_dir / "nats-users.json").read_bytes())
    assert any(node.endswith(f"-head-{head.port}") for node in users["workers"]), users["workers"].keys()
    client = MaClient(head.url)
    wf = client.create_workflow()
    first = wf.add_task(ping, inputs={"x": 2})
    wf.add_task(ping, inputs={"x": first.outputs["x"]})
    assert wf.show_results(wf.run())["state"] == "succeeded"


def test_a_worker_whose_work_consumer_is_deleted_gets_it_back_and_runs_on(head: HeadProcess) -> None:
    """A consumer gone while its worker stays connected (deleted by hand, its stream recreated):
    the worker's pulls are answered with errors, not work; it has the head make the consumer
    again, after a backoff, and takes work again."""

    async def delete_consumers() -> list[str]:
        nc = await nats.connect(_head_url(head))
        try:
            js = nc.jetstream()
            names = [c.name for c in await js.consumers_info(subjects.WORK_STREAM)]
            for name in names:
                await js.delete_consumer(subjects.WORK_STREAM, name)
            return names
        finally:
            await nc.close()

    assert asyncio.run(delete_consumers()), "the head's local worker has a consumer to lose"
    wf = MaClient(head.url).create_workflow()
    wf.add_task(ping, inputs={"x": 7})
    assert wf.show_results(wf.run())["state"] == "succeeded"


def test_a_worker_cannot_take_the_message_ids_of_the_heads_decisions(head: HeadProcess) -> None:
    """JetStream deduplicates message ids across a whole stream: a worker that stored, on its own
    subject, the id the head would give the run's end would have the head's end dropped as a
    duplicate (and the run never end). The heads salt their ids with a secret no worker reads."""
    url = _worker_url(head, "node-one")
    epoch = int(httpx.get(f"{head.url}/cluster/resources", timeout=10).json()["leader"]["epoch"])
    client = MaClient(head.url)
    wf = client.create_workflow()
    wf.add_task(nap, inputs={"seconds": 1.5})
    run_id = wf.run()

    async def squat() -> None:
        nc = await _as_worker(url)
        try:
            js = jetstream(nc, 5)
            for guess in (f"{run_id}/run.finished/e{epoch}", f"{run_id}/run.finished"):
                ack = await js.publish(
                    subjects.report_subject(run_id, "node-one"), b"\x90", headers={"Nats-Msg-Id": guess}
                )
                assert not ack.duplicate, "stored before the head's end"
        finally:
            await nc.close()

    asyncio.run(squat())
    assert wf.show_results(run_id)["state"] == "succeeded"


def test_a_worker_writes_log_lines_as_its_own_node_only(head: HeadProcess) -> None:
    """A worker's lines on another node's log subject go nowhere (its account imports its own only); those on its own show as its
    node's, whatever they claim: every reader takes the node from the subject."""
    url = _worker_url(head, "node-one")
    client = MaClient(head.url)
    wf = client.create_workflow()
    wf.add_task(ping, inputs={"x": 3})
    run_id = wf.run()
    assert wf.show_results(run_id)["state"] == "succeeded"
    line = LogLine(attempt=1, stream="stdout", at_ms=now_ms(), text="written by node-one")

    async def as_node_two(nc: nats.NATS) -> None:
        await nc.jetstream(timeout=1).publish(
            subjects.log_subject(run_id, "node-two", "t"), encode_batch([line])
        )

    async def outside_the_log_subjects(nc: nats.NATS) -> None:
        await nc.jetstream(timeout=1).publish(f"maze.log.{run_id}.node-one", encode_batch([line]))

    for attempt in (as_node_two, outside_the_log_subjects):

        async def run(attempt=attempt) -> None:  # type: ignore[no-untyped-def]
            nc = await _as_worker(url)
            try:
                with pytest.raises(Exception):  # noqa: B017 (nothing of the head's answers there)
                    await attempt(nc)
            finally:
                await nc.close()

        asyncio.run(run())

    async def as_itself() -> None:
        nc = await _as_worker(url)
        try:
            await nc.jetstream(timeout=5).publish(
                subjects.log_subject(run_id, "node-one", "t"), encode_batch([line])
            )
        finally:
            await nc.close()

    asyncio.run(as_itself())
    shown = client.get_run_logs(run_id, tail=None)
    assert [(x["node_id"], x["task_id"], x["line"]) for x in shown] == [
        ("node-one", "t", "written by node-one")
    ]


def test_a_workers_report_on_an_attempt_placed_elsewhere_changes_nothing_and_shows_refused(
    head: HeadProcess,
) -> None:
    """Node one's credentials let it write reports naming itself on any run; on an attempt placed
    on another node such a report is no report: not for the task, not for that attempt's
    reservation, not for the results the SDK reads, and the history shows it refused."""
    url = _worker_url(head, "node-one")
    client = MaClient(head.url)
    wf = client.create_workflow()
    slow = wf.add_task(nap, inputs={"seconds": 3.0})
    run_id = wf.run()
    from tests.helpers import wait_until

    wait_until(lambda: client.get_run_task(run_id, slow.task_id)["state"] == "running", timeout=30)
    placed_on = client.get_run_task(run_id, slow.task_id)["node_id"]
    assert placed_on and placed_on != "node-one"

    def committed() -> float:
        nodes = httpx.get(f"{head.url}/cluster/resources", timeout=10).json()["nodes"]
        return float(next(n for n in nodes if n["node_id"] == placed_on)["cpu"]["committed"])

    assert committed() >= 1.0
    forged = AttemptSucceeded(
        run_id=run_id,
        task_id=slow.task_id,
        attempt=1,
        node_id="node-one",
        at_ms=now_ms(),
        result=msgspec.msgpack.encode({"slept": msgspec.msgpack.encode("FORGED")}),
    )

    async def forge() -> None:
        nc = await _as_worker(url)
        try:
            await jetstream(nc, 5).publish(
                subjects.report_subject(run_id, "node-one"), encode_events([forged])
            )
        finally:
            await nc.close()

    asyncio.run(forge())
    time.sleep(0.5)
    assert client.get_run_task(run_id, slow.task_id)["state"] == "running"
    assert committed() >= 1.0, "the attempt's reservation stands"
    fresh = MaClient(head.url).create_workflow()
    assert fresh.show_results(run_id)["state"] == "succeeded"
    assert fresh.get_task_result(run_id, slow.task_id) == {"slept": 3.0}
    shown = client.get_run_events(run_id)
    refused = [e for e in shown if e.get("refused") and e["type"] == "attempt.succeeded"]
    assert len(refused) == 1 and "placed on" in refused[0]["refused"], refused
    succeeded = [e for e in shown if e["type"] == "attempt.succeeded" and "refused" not in e]
    assert [e["node_id"] for e in succeeded] == [placed_on]
    later = [e for e in client.get_run_events(run_id, after=refused[0]["seq"] - 1) if e.get("refused")]
    assert [e["seq"] for e in later] == [refused[0]["seq"]], "a page from the middle judges it alike"


def test_a_frozen_worker_declared_lost_is_told_on_its_work_subject_and_rejoins(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A worker's account imports no stream of the head's: the head tells it a session was
    declared lost on its work subject, which it pulls. Frozen past the liveness timeout (SIGSTOP),
    then thawed, it hears that and registers a new session."""
    import signal

    from tests.helpers import WorkerProcess, wait_until

    root = tmp_path_factory.mktemp("frozen")
    head = HeadProcess(root / "head", extra=["--liveness-timeout", "2", "--no-local-worker"])
    head.start()
    worker = WorkerProcess(head, "frozen-one", ["--heartbeat-interval", "0.5", "--cpus", "1"], root)
    try:
        worker.start()
        first = worker.alive_session()
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGSTOP)
        wait_until(lambda: worker.alive_session() is None, timeout=60)  # declared lost
        worker.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: (s := worker.alive_session()) is not None and s != first, timeout=60)
        wf = MaClient(head.url).create_workflow()
        wf.add_task(ping, inputs={"x": 5})
        assert wf.show_results(wf.run())["state"] == "succeeded"
        assert "told on its work subject" in worker.log(), worker.log()[-2000:]
    finally:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGCONT)
        worker.stop()
        head.stop()
