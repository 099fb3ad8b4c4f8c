"""Values of any size and kind: code stored once by hash, big results as blobs, anything cloudpickle
can carry passed between tasks, clear errors for what cannot travel, corrupt blobs never used.

The module's NATS server has nats-server's default 1 MB max_payload (tests/helpers.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from maze import MaClient, task
from maze.core.errors import ArtifactError, NotFound, PayloadTooLarge
from maze.events import subjects
from maze.events.blobs import BlobStore
from maze.events.codec import decode_work
from maze.events.work import WorkBatch
from tests.helpers import HeadProcess, NatsServer, WorkerProcess

MB = 1024 * 1024


class Point:
    """A user's own class, defined in the test module."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (other.x, other.y) == (self.x, self.y)


@task
def make_values(n: int = 0):
    return {"point": Point(n, n + 1), "tags": {"a", "b"}, "huge": 2**70 + n, "pair": (n, "x")}


@task
def check_values(point=None, tags=None, huge=None, pair=None):
    return {
        "types": [type(point).__name__, type(tags).__name__, type(huge).__name__, type(pair).__name__],
        "point": point,
        "tags": tags,
        "huge": huge,
        "pair": pair,
    }


@task
def random_bytes(mb: int = 1):
    return {"data": os.urandom(mb * MB)}


@task
def digest(data=None):
    return {"size": len(data), "sha": hashlib.sha256(data).hexdigest()}


@task
def unserializable(x: int = 0):
    return {"ok": x, "lock": threading.Lock()}


@task
def must_never_run(data=None):
    raise AssertionError("a task was given a corrupt blob")


@task
def byte_count(data=None):
    return {"n": len(data)}


def _states(client: MaClient, run_id: str) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in client.get_run_tasks(run_id)}


def test_a_closure_over_3_mb_runs_200_times_with_its_code_stored_once(
    client: MaClient, head: HeadProcess, nats_server: NatsServer, tmp_path: Path
) -> None:
    data = os.urandom(3 * MB)

    # 5 cpus: more than the head's own worker has (4), so every attempt goes to the worker in a
    # process of its own, on its work subject (the head's own worker takes its work in process)
    @task(resources={"cpu": 5})
    def closure(i: int = 0):
        return {"n": len(data) + i}

    wf = client.create_workflow()
    tasks = [wf.add_task(closure, inputs={"i": i}) for i in range(200)]
    remote = WorkerProcess(head, "values-remote", ["--cpus", "5", "--gpus", "none"], tmp_path)
    remote.start()
    try:
        with WorkTap(nats_server.url) as work:
            run_id = wf.run()
            summary = wf.show_results(run_id)
    finally:
        remote.stop()
    assert summary["state"] == "succeeded", summary
    assert {t["node_id"] for t in client.get_run_tasks(run_id)} == {"values-remote"}
    assert [summary["task_results"][t.task_id]["n"] for t in tasks] == [3 * MB + i for i in range(200)]
    created = client.get_run_events(run_id)[0]
    assert created["type"] == "run.created" and created["functions"] == []
    (func_hash,) = {t["func_hash"] for t in created["tasks"]}
    head_resp = httpx.head(f"{head.url}/artifacts/sha256/{func_hash}")
    assert head_resp.status_code == 200 and int(head_resp.headers["content-length"]) > 3 * MB
    sizes = asyncio.run(_largest_messages(nats_server.url))
    assert sizes[subjects.RUNS_STREAM] < 256 * 1024, sizes  # the run's events: code by hash only
    items = [item for _, batch in work.batches for item in batch.items if item.run_id == run_id]
    assert len(items) == 200 and {i.func_hash for i in items} == {func_hash}
    assert all(i.func == b"" for i in items), "work items carry the code's hash, never the code"
    assert max(size for size, _ in work.batches) < 256 * 1024


class WorkTap:
    """Sees every work message as it is published (a plain NATS subscription beside the stream)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.batches: list[tuple[int, WorkBatch]] = []
        self.ready = threading.Event()
        self.stop = threading.Event()

    def __enter__(self) -> WorkTap:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    async def _listen(self) -> None:
        nc = await nats.connect(self.url)

        async def seen(msg: Msg) -> None:
            self.batches.append((len(msg.data), decode_work(msg.data)))

        await nc.subscribe("maze.work.>", cb=seen)
        await nc.flush()
        self.ready.set()
        while not self.stop.is_set():
            await asyncio.sleep(0.05)
        await nc.close()


async def _largest_messages(url: str) -> dict[str, int]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        out = {}
        for stream in (subjects.RUNS_STREAM, subjects.WORK_STREAM):
            info = await js.stream_info(stream)
            largest = 0
            for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(stream, seq)
                except nats.js.errors.NotFoundError:
                    continue  # work messages are removed once pulled
                largest = max(largest, len(msg.data or b""))
            out[stream] = largest
        return out
    finally:
        await nc.close()


def test_a_20_mb_result_is_passed_downstream(client: MaClient) -> None:
    wf = client.create_workflow()
    up = wf.add_task(random_bytes, inputs={"mb": 20})
    down = wf.add_task(digest, inputs={"data": up.outputs["data"]})
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded", summary
    produced = summary["task_results"][up.task_id]["data"]  # the SDK fetched and checked the blob
    assert isinstance(produced, bytes) and len(produced) == 20 * MB
    assert summary["task_results"][down.task_id] == {
        "size": 20 * MB,
        "sha": hashlib.sha256(produced).hexdigest(),
    }
    row = client.get_run_task(run_id, up.task_id)["result"]["data"]
    assert row["__maze_value__"] == "blob" and row["size"] == 20 * MB + 5  # msgpack bin32 header
    assert row["uri"] == "maze://artifacts/sha256/" + row["sha256"]
    assert client.load_value(row) == produced


def test_values_of_any_kind_pass_between_tasks(client: MaClient) -> None:
    @task
    def local_class_value(point=None):
        class Local:  # defined inside the task: only by value can it travel
            def __init__(self, v: object) -> None:
                self.v = v

        return {"local": Local(point)}

    wf = client.create_workflow()
    made = wf.add_task(make_values, inputs={"n": 7})
    checked = wf.add_task(
        check_values, inputs={k: made.outputs[k] for k in ("point", "tags", "huge", "pair")}
    )
    wf.add_task(local_class_value, inputs={"point": made.outputs["point"]})
    given = wf.add_task(
        check_values, inputs={"point": Point(1, 2), "tags": {3}, "huge": -(2**80), "pair": (1,)}
    )
    summary = wf.show_results(wf.run())
    assert summary["state"] == "succeeded", summary
    out = summary["task_results"][checked.task_id]
    assert out["types"] == ["Point", "set", "int", "tuple"]
    assert out["point"] == Point(7, 8) and out["tags"] == {"a", "b"}
    assert out["huge"] == 2**70 + 7 and out["pair"] == (7, "x")
    assert summary["task_results"][given.task_id]["huge"] == -(2**80)
    assert summary["task_results"][given.task_id]["tags"] == {3}


@task
def numpy_arrays(n: int = 0):
    import numpy as np

    return {"small": np.arange(n), "large": np.ones((512, 512))}  # 2 MB: pickled, then a blob


@task
def numpy_sum(small=None, large=None):
    import numpy as np

    assert isinstance(small, np.ndarray) and isinstance(large, np.ndarray)
    return {"total": float(small.sum() + large.sum()), "dtype": str(large.dtype)}


def test_numpy_arrays_travel_inline_and_as_blobs(client: MaClient) -> None:
    np = pytest.importorskip("numpy")  # in the test extra; a worker without numpy could not run these
    wf = client.create_workflow()
    made = wf.add_task(numpy_arrays, inputs={"n": 10})
    summed = wf.add_task(numpy_sum, inputs={"small": made.outputs["small"], "large": made.outputs["large"]})
    given = wf.add_task(numpy_sum, inputs={"small": np.arange(3), "large": np.zeros((600, 600))})
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded", summary
    assert summary["task_results"][summed.task_id] == {"total": 45.0 + 512 * 512, "dtype": "float64"}
    assert summary["task_results"][given.task_id]["total"] == 3.0
    produced = summary["task_results"][made.task_id]
    assert isinstance(produced["large"], np.ndarray) and produced["large"].shape == (512, 512)
    row = client.get_run_task(run_id, made.task_id)["result"]
    assert row["small"]["__maze_value__"] == "pickle" and row["small"]["type"] == "numpy.ndarray"
    assert row["large"]["__maze_value__"] == "blob" and row["large"]["codec"] == "pickle"


def test_an_unserializable_output_fails_naming_its_key_and_type(client: MaClient) -> None:
    wf = client.create_workflow()
    t = wf.add_task(unserializable, inputs={"x": 1})
    summary = wf.show_results(wf.run())
    assert summary["state"] == "failed" and summary["exception_tasks"] == [t.task_id]
    run_id = wf.list_cached_runs()[0]
    error = client.get_run_task(run_id, t.task_id)["error"]
    assert error["error_type"] == "serialization_error"
    assert "output 'lock'" in error["message"] and "_thread.lock" in error["message"]
    assert error["traceback"], "the cause is in the error itself, not only in the head's log"


def test_artifacts_api_checks_hashes_and_streams(head: HeadProcess, client: MaClient) -> None:
    content = os.urandom(12 * MB)  # above the head's whole-blob size: streamed
    sha = hashlib.sha256(content).hexdigest()
    wrong = httpx.put(f"{head.url}/artifacts/sha256/{'0' * 64}", content=content[:1000])
    assert wrong.status_code == 400 and "hashes to sha256" in wrong.json()["error"]["message"]
    assert httpx.head(f"{head.url}/artifacts/sha256/{'0' * 64}").status_code == 404
    put = httpx.put(f"{head.url}/artifacts/sha256/{sha}", content=content, timeout=60)
    assert put.status_code == 201 and put.json()["size"] == len(content)
    again = httpx.put(f"{head.url}/artifacts/sha256/{sha}", content=content, timeout=60)
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["size"] == len(content)
    # stored already or not, a body that is not this content is refused (it once got a 200)
    for body in (b"", content[:1000]):
        refused = httpx.put(f"{head.url}/artifacts/sha256/{sha}", content=body, timeout=60)
        assert refused.status_code == 400 and refused.json()["error"]["details"]["expected"] == sha
    assert client.fetch_blob(sha) == content
    missing = httpx.post(f"{head.url}/artifacts/missing", json={"sha256": [sha, "1" * 64]}).json()
    assert missing == {"missing": ["1" * 64]}
    assert httpx.get(f"{head.url}/artifacts/sha256/nothex").status_code == 400
    assert httpx.get(f"{head.url}/artifacts/sha256/{'2' * 64}").status_code == 404


def test_a_corrupt_blob_is_detected_by_its_hash_and_never_used(
    client: MaClient, head: HeadProcess, nats_server: NatsServer
) -> None:
    value = os.urandom(300 * 1024)  # above the inline limit: the SDK refers to it as a blob
    sha = hashlib.sha256(msgspec.msgpack.encode(value)).hexdigest()
    asyncio.run(_plant(nats_server.url, f"sha256/{sha}", b"not the bytes that hash to the name"))
    wf = client.create_workflow()
    victim = wf.add_task(must_never_run, inputs={"data": value})
    summary = wf.show_results(wf.run())
    assert summary["state"] == "failed"
    run_id = wf.list_cached_runs()[0]
    error = client.get_run_task(run_id, victim.task_id)["error"]
    assert error["error_type"] == "artifact_error", error  # user_code would mean the task ran
    assert "corrupt" in error["message"] and sha in error["message"]
    # found corrupt, it was removed (the head knows at once: 404 like any blob not stored); a
    # client that stores the value again repairs it
    with pytest.raises(NotFound):
        client.fetch_blob(sha)
    again = MaClient(head.url).create_workflow()
    size = again.add_task(byte_count, inputs={"data": value})
    assert again.show_results(again.run())["state"] == "succeeded"
    assert again.get_task_result(again.list_cached_runs()[0], size.task_id)["n"] == len(value)
    assert client.fetch_blob(sha) == msgspec.msgpack.encode(value)


async def _plant(url: str, name: str, content: bytes) -> None:
    """Store `content` under blob `name` without checking its hash: a corrupt blob, as a disk or
    a careless writer could leave one."""
    nc = await nats.connect(url)
    try:

        async def chunks() -> AsyncIterator[bytes]:
            yield content

        store = BlobStore(nc, 1024 * 1024)
        await store._write_once(name.removeprefix("sha256/"), chunks(), verify=False)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def small_cap_head(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HeadProcess]:
    """A head whose blob store takes 2 MB at most, on its own NATS server."""
    server = NatsServer(tmp_path_factory.mktemp("nats-cap"))
    server.start()
    proc = HeadProcess(
        tmp_path_factory.mktemp("head-cap"),
        nats_url=server.url,
        extra=["--cpus", "2", "--blob-max-mb", "2", "--inline-value-kb", "64"],
    )
    proc.start()
    yield proc
    code = proc.stop()
    server.stop()
    assert code == 0, proc.log()


def test_a_value_above_the_blob_cap_fails_with_payload_too_large(small_cap_head: HeadProcess) -> None:
    client = MaClient(small_cap_head.url)
    wf = client.create_workflow()
    big = wf.add_task(random_bytes, inputs={"mb": 3})
    summary = wf.show_results(wf.run())
    assert summary["state"] == "failed"
    run_id = wf.list_cached_runs()[0]
    error = client.get_run_task(run_id, big.task_id)["error"]
    assert error["error_type"] == "payload_too_large", error
    assert f"is {3 * MB + 5} bytes" in error["message"]  # msgpack's bin32 header: 5 bytes
    assert f"limit of {2 * MB} bytes" in error["message"]
    assert [a["state"] for a in client.get_run_task(run_id, big.task_id)["attempts"]] == ["failed"]
    # an input above the cap is refused by the SDK, naming the input
    with pytest.raises(PayloadTooLarge, match="input 'data'"):
        client.create_workflow().add_task(digest, inputs={"data": b"x" * (3 * MB)})
    # and the head keeps serving: a value between the inline limit and the cap goes through
    wf = client.create_workflow()
    up = wf.add_task(random_bytes, inputs={"mb": 1})
    down = wf.add_task(digest, inputs={"data": up.outputs["data"]})
    summary = wf.show_results(wf.run())
    assert summary["state"] == "succeeded", summary
    assert summary["task_results"][down.task_id]["size"] == MB


def test_the_sdk_checks_a_fetched_blob_against_its_hash() -> None:
    """The SDK's own check, against an HTTP server that answers with the wrong bytes (the head
    refuses a corrupt blob itself, so this check is what catches corruption on the way)."""
    import http.server

    good = b"the bytes the name promises"
    sha = hashlib.sha256(good).hexdigest()

    class WrongBytes(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"other bytes"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WrongBytes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = MaClient(f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(ArtifactError, match="arrived corrupt"):
            client.fetch_blob(sha)
    finally:
        server.shutdown()


async def test_a_process_following_removals_knows_a_blob_is_gone(nats_server: NatsServer) -> None:
    """The head answers "is this code stored?" from memory; a removal by any other process (the
    tombstone of a blob found corrupt) reaches that memory as it is published."""
    from maze.events.blobs import BlobStore
    from maze.events.store import ensure_streams

    follower_nc, other_nc = await nats.connect(nats_server.url), await nats.connect(nats_server.url)
    try:
        await ensure_streams(follower_nc.jetstream())
        follower, other = BlobStore(follower_nc, 64 * MB), BlobStore(other_nc, 64 * MB)
        await follower.follow_removals()
        content = os.urandom(1000)
        sha, _ = await other.put(content)
        assert await follower.missing([sha, "3" * 64]) == ["3" * 64]
        await other.delete(sha)
        for _ in range(100):  # the tombstone is a message like any other: seen within moments
            if await follower.missing([sha]) == [sha]:
                break
            await asyncio.sleep(0.01)
        assert await follower.missing([sha]) == [sha]
        await other.put(content)  # stored again: found again (asked, then remembered)
        assert await follower.missing([sha]) == []
    finally:
        await follower_nc.close()
        await other_nc.close()


async def test_a_blob_read_from_the_stream_leader_alone_is_the_same(nats_server: NatsServer) -> None:
    """The path a read takes when a lagging replica answers a direct get with 404: the remaining
    chunks one stream-leader get each, in order."""
    from maze.events.blobs import chunk_subject
    from maze.events.store import ensure_streams

    nc = await nats.connect(nats_server.url)
    try:
        await ensure_streams(nc.jetstream())
        store = BlobStore(nc, 1 << 24)
        store.chunk_bytes = 64 * 1024
        data = os.urandom(300_000)  # 5 chunks
        sha, _ = await store.put(data)
        info = await store.info(sha)
        assert info is not None and info["chunks"] == 5
        chunks = [c async for c in store._chunks_from_leader(chunk_subject(info["nuid"]), 1, info["chunks"])]
        assert b"".join(chunks) == data
    finally:
        await nc.close()
