"""Sending work within max_payload: byte-bounded batches, inputs spilled to the blob store, a clear
payload_too_large when nothing can make an item fit; and the controller end to end on a real
nats-server (1 MB max_payload): code by hash, incomplete submissions failed."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import msgspec
import nats
import pytest

from maze.core.clock import now_ms
from maze.core.errors import PayloadTooLarge
from maze.core.settings import Settings
from maze.events import subjects, values
from maze.events.blobs import BlobStore
from maze.events.codec import decode_events, decode_work, encode_events
from maze.events.nodes import NodeJoined, NodeLeft
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import InputRef, InputValue, NodeCapacity, Resources, TaskError, TaskSpec
from maze.events.store import EventStore, ensure_streams, payload_budget
from maze.events.tasks import AttemptSucceeded
from maze.events.values import ext_code
from maze.events.work import WorkBatch, WorkItem
from maze.head.controller import RunController
from maze.head.dispatch import (
    CodeUploader,
    batch_msg_id,
    batch_payload,
    encode_item,
    fit_item,
    item_limit,
    pack_batches,
)
from tests.helpers import NatsServer

_enc = msgspec.msgpack.Encoder()


def work(task_id: str, **inputs: bytes) -> WorkItem:
    return WorkItem(
        run_id="r",
        task_id=task_id,
        attempt=1,
        func_name="f",
        func_hash="c" * 64,
        call_style="kwargs",
        inputs=_enc.encode({k: msgspec.Raw(v) for k, v in inputs.items()}),
        outputs=None,
        resources=Resources(),
    )


# ---- pure: batches ----------------------------------------------------------------------------------
def test_work_batches_are_bounded_by_bytes_and_by_count() -> None:
    budget = 256 * 1024
    small = [work(f"s{i}", x=_enc.encode(i)) for i in range(600)]  # ~250 bytes each: 256 a batch
    big = [work(f"b{i}", x=_enc.encode(os.urandom(100_000))) for i in range(5)]  # 2 a batch
    items = small[:300] + big + small[300:]
    encoded = [encode_item(i) for i in items]
    parts = pack_batches([len(e) for e in encoded], budget)
    assert [i for part in parts for i in part] == list(range(len(items))), "every item once, in order"
    assert all(len(part) <= 256 for part in parts)
    for part in parts:
        payload = batch_payload([encoded[i] for i in part])
        assert len(payload) <= budget
        assert decode_work(payload) == WorkBatch(items=[items[i] for i in part])
    assert max(len(p) for p in parts) == 256 and min(len(p) for p in parts) <= 3
    with pytest.raises(PayloadTooLarge):
        pack_batches([budget], budget)


def test_ext_code_names_the_extension_at_the_top_of_a_value() -> None:
    ref = values.blob_ref_for("pickle", b"x" * 10, "T")
    assert ext_code(values.wire_blob(ref)) == values.EXT_BLOB
    assert ext_code(values.wire_from_content("pickle", b"p" * 300, "T")) == values.EXT_PICKLE
    assert ext_code(values.wire_from_content("pickle", b"p" * 70_000, "T")) == values.EXT_PICKLE
    assert ext_code(_enc.encode({"a": 1})) is None and ext_code(_enc.encode(b"\xd4")) is None


# ---- real nats-server and blob store ----------------------------------------------------------------
@pytest.fixture
async def blobs(nats_server: NatsServer):  # type: ignore[no-untyped-def]
    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream())
    try:
        yield BlobStore(nc, max_blob_bytes=4 * 1024 * 1024)
    finally:
        await nc.close()


async def test_the_largest_inputs_are_spilled_until_the_item_fits(blobs: BlobStore) -> None:
    limit = item_limit(payload_budget(blobs.nc))  # a 1 MB server
    huge = os.urandom(700_000)
    pickle_bytes = os.urandom(650_000)
    medium = _enc.encode(os.urandom(400_000))
    pickled = values.wire_from_content("pickle", pickle_bytes, "numpy.ndarray")
    item = work("t", medium=medium, huge=_enc.encode(huge), pickled=pickled, small=_enc.encode("inline"))
    encoded = encode_item(item)
    assert len(encoded) > limit
    fitted = await fit_item(item, encoded, limit, blobs)
    assert not isinstance(fitted, TaskError)
    new_item, new_encoded = fitted
    assert len(new_encoded) <= limit and new_encoded == encode_item(new_item)
    wires = {k: bytes(v) for k, v in values.decode_map_raw(new_item.inputs).items()}
    assert list(wires) == ["medium", "huge", "pickled", "small"], "same inputs, same order"
    assert wires["medium"] == medium and wires["small"] == _enc.encode("inline"), "the smaller stay inline"
    huge_ref = values.blob_ref(values.decode_opaque(wires["huge"]))
    pickled_ref = values.blob_ref(values.decode_opaque(wires["pickled"]))
    assert huge_ref is not None and huge_ref.codec == "msgpack"
    assert await blobs.get(huge_ref.sha256) == _enc.encode(huge), "the value's msgpack, by sha256"
    assert pickled_ref is not None and (pickled_ref.codec, pickled_ref.type_name) == (
        "pickle",
        "numpy.ndarray",
    )
    assert await blobs.get(pickled_ref.sha256) == pickle_bytes, "the pickle itself, not its wrapper"
    small = work("s", x=_enc.encode(1))
    assert await fit_item(small, encode_item(small), limit, blobs) == (small, encode_item(small))


async def test_a_value_above_the_blob_limit_fails_the_attempt_with_sizes(blobs: BlobStore) -> None:
    store = BlobStore(blobs.nc, max_blob_bytes=100_000)
    item = work("t", big=_enc.encode(b"z" * 300_000))
    error = await fit_item(item, encode_item(item), 200_000, store)
    assert isinstance(error, TaskError) and error.error_type == "payload_too_large"
    assert not error.retryable and "'big'" in error.message and "100000 bytes" in error.message


async def test_an_item_that_cannot_fit_even_spilled_fails_with_sizes(blobs: BlobStore) -> None:
    many = {f"k{i}": _enc.encode(i) for i in range(5_000)}  # each far smaller than a blob reference
    item = work("t", **many)
    error = await fit_item(item, encode_item(item), 10_000, blobs)
    assert isinstance(error, TaskError) and error.error_type == "payload_too_large"
    assert "10000 bytes" in error.message and str(len(encode_item(item))) in error.message


async def test_inline_code_is_stored_once(blobs: BlobStore) -> None:
    code = os.urandom(5_000)
    sha = values.sha256_hex(code)
    uploader = CodeUploader(blobs)
    assert await uploader.ensure({sha: code}) == {}
    assert sha in uploader.stored and await blobs.get(sha) == code
    uploader.blobs = None  # type: ignore[assignment]  # a second ensure must not touch the store
    assert await uploader.ensure({sha: code}) == {}


# ---- the controller on NATS ---------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def running_controller(url: str, settings: Settings):  # type: ignore[no-untyped-def]
    nc = await nats.connect(url)
    await ensure_streams(nc.jetstream())
    controller = RunController(nc, EventStore(nc), settings)
    controller.start()
    try:
        await asyncio.wait_for(controller.caught_up.wait(), 30)
        yield controller
    finally:
        await controller.stop()
        await nc.close()


async def _next_run_event(sub: nats.js.JetStreamContext.PushSubscription, kind: type) -> object:
    while True:
        msg = await sub.next_msg(timeout=20)
        for event in decode_events(msg.data):
            if isinstance(event, kind):
                return event


async def test_controller_sends_code_by_hash_for_a_run_that_carried_it(nats_server: NatsServer) -> None:
    code = os.urandom(3_000)
    sha = values.sha256_hex(code)
    async with (
        running_controller(nats_server.url, Settings()) as controller,
        fake_node(controller) as (node, sub),
    ):
        spec = TaskSpec(
            task_id="a",
            name="a",
            func_name="f",
            func_hash=sha,
            call_style="kwargs",
            inputs={"x": InputValue(data=_enc.encode(1))},
            outputs=None,
        )
        run = RunCreated(
            run_id=f"legacy-{node}", workflow_id="w", at_ms=0, tasks=[spec], functions={sha: code}
        )
        await controller.store.publish(subjects.run_subject(run.run_id), [run])
        [item] = await _work(sub, run.run_id, 1)
        assert (item.task_id, item.func_hash, item.func) == ("a", sha, b"")
        assert await controller.blobs.get(sha) == code, "the code was put into the blob store first"


async def test_controller_fails_an_incomplete_submission_after_the_grace_period(
    nats_server: NatsServer,
) -> None:
    run_id = f"partial-{os.urandom(4).hex()}"
    async with running_controller(nats_server.url, Settings(submission_grace_s=0.5)) as controller:
        js = controller.nc.jetstream()
        sub = await js.subscribe(subjects.run_subject(run_id))
        first = RunCreated(
            run_id=run_id,
            workflow_id="w",
            at_ms=now_ms(),
            tasks=[],
            task_count=3,
            chunks=2,
        )
        await js.publish(subjects.run_subject(run_id), encode_events([first]))
        ended = await _next_run_event(sub, RunFinished)
        assert isinstance(ended, RunFinished) and ended.state == "failed"
        assert ended.error is not None and ended.error.error_type == "incomplete_submission"
        assert "only 0 of 3 tasks were recorded" in ended.error.message
        # the controller's own decision takes effect when it comes back from the log
        for _ in range(500):
            if run_id in controller.done_runs:
                break
            await asyncio.sleep(0.01)
        assert run_id in controller.done_runs


@contextlib.asynccontextmanager
async def fake_node(controller: RunController):  # type: ignore[no-untyped-def]
    """A node that joins (no worker behind it: the test reads its work) and leaves at the end, so
    that the controllers of later tests, replaying history, place nothing on it."""
    node = f"fake-{os.urandom(4).hex()}"
    js = controller.nc.jetstream()
    sub = await js.pull_subscribe(subjects.work_subject(node), durable=None, stream=subjects.WORK_STREAM)
    capacity = NodeCapacity(cpus=8, memory_mb=1000)
    joined = NodeJoined(node_id=node, session="s", at_ms=0, hostname="h", ip="127.0.0.1", capacity=capacity)
    await controller.store.publish(subjects.node_subject(node), [joined])
    try:
        yield node, sub
    finally:
        left = NodeLeft(node_id=node, session="s", at_ms=now_ms())
        await controller.store.publish(subjects.node_subject(node), [left])


async def _work(sub: nats.js.JetStreamContext.PullSubscription, run_id: str, count: int) -> list[WorkItem]:
    """The next `count` work items of one run (other runs' work, retried from history, skipped)."""
    got: list[WorkItem] = []
    while len(got) < count:
        for msg in await sub.fetch(1, timeout=20):
            got += [i for i in decode_work(msg.data).items if i.run_id == run_id]
    return got


def _spec(task_id: str, reads: tuple[str, ...] = ()) -> TaskSpec:
    inputs: dict[str, InputRef | InputValue] = {f"in_{u}": InputRef(task_id=u, key="x") for u in reads}
    return TaskSpec(
        task_id=task_id,
        name=task_id,
        func_name="f",
        func_hash="c" * 64,
        call_style="kwargs",
        inputs=inputs,
        outputs=None,
    )


async def _run_with_big_upstream_results(controller: RunController, node: str, sub: Any) -> str:
    """Three tasks each returning 400 KB (each result fits an event), and a task reading all three
    (its work would be 1.2 MB on a 1 MB server). Returns the run id."""
    run_id = f"big-inputs-{node}"
    specs = [_spec("a"), _spec("b"), _spec("c"), _spec("d", reads=("a", "b", "c"))]
    created = RunCreated(run_id=run_id, workflow_id="w", at_ms=now_ms(), tasks=specs)
    await controller.store.publish(subjects.run_subject(run_id), [created])
    for item in await _work(sub, run_id, 3):
        result = _enc.encode({"x": msgspec.Raw(_enc.encode(os.urandom(400_000)))})
        done = AttemptSucceeded(
            run_id=run_id, task_id=item.task_id, attempt=1, node_id=node, at_ms=now_ms(), result=result
        )
        await controller.store.publish(subjects.run_subject(run_id), [done])
    return run_id


async def test_controller_spills_inputs_too_large_for_one_work_message(nats_server: NatsServer) -> None:
    async with (
        running_controller(nats_server.url, Settings()) as controller,
        fake_node(controller) as (node, sub),
    ):
        run_id = await _run_with_big_upstream_results(controller, node, sub)
        [reader] = await _work(sub, run_id, 1)
        assert reader.task_id == "d"
        wires = values.decode_map_raw(reader.inputs)
        spilled = [k for k, w in wires.items() if ext_code(bytes(w)) == values.EXT_BLOB]
        assert len(spilled) == 1, "the largest input went to the blob store, the others stay inline"
        assert len(encode_item(reader)) <= item_limit(controller.budget)


async def test_controller_fails_work_that_cannot_fit_with_payload_too_large(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        tiny_blobs = BlobStore(nc, max_blob_bytes=100_000)  # no 400 KB value can be spilled
        await ensure_streams(nc.jetstream())
        controller = RunController(nc, EventStore(nc), Settings(), blobs=tiny_blobs)
        controller.start()
        await asyncio.wait_for(controller.caught_up.wait(), 30)
        try:
            async with fake_node(controller) as (node, work_sub):
                run_id = await _run_with_big_upstream_results(controller, node, work_sub)
                sub = await nc.jetstream().subscribe(subjects.run_subject(run_id))
                ended = await _next_run_event(sub, RunFinished)
            assert isinstance(ended, RunFinished) and ended.state == "failed" and ended.failed_task_id == "d"
            assert ended.error is not None and ended.error.error_type == "payload_too_large"
            assert "100000 bytes" in ended.error.message and ended.error.origin == "controller"
        finally:
            await controller.stop()
    finally:
        await nc.close()


async def test_a_work_stream_on_file_from_an_older_version_is_recreated_in_memory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Work is transport (sent again from the log), kept in memory; a stream's storage cannot be
    changed in place, so a work stream made on file by an older version is made again."""
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    from maze.events import subjects
    from tests.helpers import NatsServer

    server = NatsServer(tmp_path / "nats")
    server.start()
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=subjects.WORK_STREAM,
                subjects=[subjects.WORK_SUBJECTS],
                storage=StorageType.FILE,
                retention=RetentionPolicy.WORK_QUEUE,
            )
        )
        await ensure_streams(js)
        info = await js.stream_info(subjects.WORK_STREAM)
        assert info.config.storage == StorageType.MEMORY
        await ensure_streams(js)  # and again: nothing to change, nothing recreated
        assert (await js.stream_info(subjects.WORK_STREAM)).config.storage == StorageType.MEMORY
    finally:
        await nc.close()
        server.stop()


def test_work_message_ids_tell_placements_of_one_attempt_number_apart() -> None:
    """JetStream drops a message whose id it has seen: the same attempt number placed on another
    node session, or by another leadership, is other work, never a duplicate."""
    one = msgspec.structs.replace(work("a"), session="s1")
    assert batch_msg_id([one], 3) == batch_msg_id([one], 3)
    assert batch_msg_id([one], 3) != batch_msg_id([msgspec.structs.replace(one, session="s2")], 3)
    assert batch_msg_id([one], 3) != batch_msg_id([one], 4)
