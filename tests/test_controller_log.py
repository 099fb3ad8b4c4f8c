"""The controller against the real log: malformed and unknown events are reported, never dropped
in silence; a start from a snapshot folds to the same state, and decides the same, as a start from
sequence 1; a stop leaves a snapshot from which the next start replays nothing."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import nats

from maze import MaClient, task
from maze.core.clock import now_ms
from maze.core.settings import Settings
from maze.events import subjects
from maze.events.codec import decode_events, encode_events
from maze.events.nodes import NodeJoined
from maze.events.runs import RunCreated
from maze.events.specs import InputValue, NodeCapacity, TaskSpec
from maze.events.store import EventStore, ensure_streams, subscribe_ordered
from maze.events.tasks import AttemptPlaced, AttemptStarted, AttemptSucceeded
from maze.head.controller import RunController
from maze.head.scheduler import Scheduler
from maze.head.snapshot import fingerprint, restore
from tests.helpers import HeadProcess, NatsServer, wait_until


@task
def nap(seconds: float = 0.0):
    import time

    time.sleep(seconds)
    return {"slept": seconds}


def test_a_malformed_event_is_reported_and_ends_its_run(
    client: MaClient, head: HeadProcess, nats_server: NatsServer
) -> None:
    wf = client.create_workflow()
    wf.add_task(nap, inputs={"seconds": 30.0})
    run_id = wf.run()

    async def write_bad() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            bad = msgspec.msgpack.encode(
                [
                    {"type": "from.a.newer.version", "run_id": run_id},
                    {"type": "attempt.succeeded", "run_id": run_id, "task_id": 7, "attempt": "one"},
                ]
            )
            await nc.jetstream().publish(subjects.run_subject(run_id), bad)
        finally:
            await nc.close()

    asyncio.run(write_bad())
    wait_until(lambda: client.get_run(run_id)["state"] == "failed", timeout=30)
    run = client.get_run(run_id)
    assert run["error"]["error_type"] == "controller_error"
    assert "malformed attempt.succeeded" in run["error"]["message"], run["error"]
    diagnostics = httpx.get(f"{head.url}/cluster/diagnostics").json()
    decoding = diagnostics["controller"]["decoding"]
    assert decoding["unknown_event_types"].get("from.a.newer.version", 0) >= 1
    assert decoding["malformed_events"] >= 1
    [bad] = [m for m in decoding["recent_malformed"] if m["subject"] == subjects.run_subject(run_id)]
    assert bad["type"] == "attempt.succeeded" and bad["stream"] == subjects.RUNS_STREAM and bad["seq"] > 0
    shown = [e for e in client.get_run_events(run_id) if e.get("malformed") or e.get("unknown_type")]
    assert {e["type"] for e in shown} == {"attempt.succeeded", "from.a.newer.version"}, "shown, not hidden"


# ---- snapshots, against a real nats-server -----------------------------------------------------
def _spec(i: int) -> TaskSpec:
    return TaskSpec(
        task_id=f"t{i}",
        name="t",
        func_name="f",
        func_hash="c" * 64,
        call_style="kwargs",
        inputs={"x": InputValue(data=msgspec.msgpack.encode(i))},
        outputs=None,
    )


async def _fold_log(nc: nats.NATS, core: Scheduler, positions: dict[str, int]) -> dict[str, int]:
    """Fold what the streams hold after `positions`, as the controller does at start."""
    js = nc.jetstream()
    for stream, subject in (
        (subjects.RUNS_STREAM, subjects.RUN_SUBJECTS),
        (subjects.NODES_STREAM, subjects.NODE_SUBJECTS),
    ):
        last = (await js.stream_info(stream)).state.last_seq
        if positions[stream] >= last:
            continue
        sub = await subscribe_ordered(js, subject, positions[stream] + 1)
        try:
            while positions[stream] < last:
                msg = await sub.next_msg(timeout=10)
                positions[stream] = msg.metadata.sequence.stream
                for event in decode_events(msg.data):
                    core.apply_from(stream, event)
        finally:
            await sub.unsubscribe()
    return positions


async def test_a_start_from_a_snapshot_decides_as_a_start_from_sequence_one(tmp_path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    nc = await nats.connect(server.url)
    try:
        await ensure_streams(nc.jetstream())
        store = EventStore(nc)
        capacity = NodeCapacity(cpus=2.0, memory_mb=1000)
        joined = NodeJoined(
            node_id="n", session="s", at_ms=0, hostname="h", ip="127.0.0.1", capacity=capacity
        )
        await store.publish(subjects.node_subject("n"), [joined])
        created = RunCreated(
            run_id="run_snap", workflow_id="w", at_ms=now_ms(), tasks=[_spec(i) for i in range(6)]
        )
        await store.publish(subjects.run_subject("run_snap"), [created])
        settings = Settings(snapshot_interval_s=3600)
        first = RunController(nc, store, settings)
        first.start()
        await asyncio.wait_for(first.caught_up.wait(), 20)
        # the controller places what fits (2 CPUs, queue factor 16: all six); a fake worker ends two
        placed = await wait_for_events(nc, "run_snap", AttemptPlaced, 6)
        for p in placed[:2]:
            common = {
                "run_id": p.run_id,
                "task_id": p.task_id,
                "attempt": p.attempt,
                "node_id": "n",
                "at_ms": now_ms(),
            }
            await store.publish(
                subjects.run_subject("run_snap"),
                [AttemptStarted(**common), AttemptSucceeded(**common, result=msgspec.msgpack.encode({}))],
            )
        await wait_until_async(lambda: first.core.runs["run_snap"].remaining == 4)
        await first.stop()  # leaves a snapshot
        at_stop = dict(first.positions)
        # more history after the snapshot: a third task runs
        common = {
            "run_id": "run_snap",
            "task_id": placed[2].task_id,
            "attempt": 1,
            "node_id": "n",
            "at_ms": now_ms(),
        }
        await store.publish(subjects.run_subject("run_snap"), [AttemptStarted(**common)])

        state = await first.snapshots.load()
        assert state is not None and state.positions == at_stop
        from_snapshot = restore(state, settings.node_queue_factor, 600_000, 5_000)
        await _fold_log(nc, from_snapshot, dict(state.positions))
        from_one = Scheduler(settings.node_queue_factor, 600_000, 5_000)
        await _fold_log(nc, from_one, {subjects.RUNS_STREAM: 0, subjects.NODES_STREAM: 0})
        assert fingerprint(from_snapshot) == fingerprint(from_one)
        for core in (from_snapshot, from_one):
            core.went_live(10**13)
        a, b = from_snapshot.decide(10**13), from_one.decide(10**13)
        assert encode_events(a.events) == encode_events(b.events)
        assert {n: [i.key for i in items] for n, items in a.resend.items()} == {
            n: [i.key for i in items] for n, items in b.resend.items()
        }
        assert len(a.resend["n"]) == 3, "the three placed, never started attempts are sent again"

        # a controller started now replays only what followed the snapshot
        second = RunController(nc, store, settings)
        second.start()
        await asyncio.wait_for(second.caught_up.wait(), 20)
        assert second.started_from == at_stop
        assert second.positions[subjects.RUNS_STREAM] == at_stop[subjects.RUNS_STREAM] + 1
        await second.stop()
    finally:
        await nc.close()
        server.stop()


async def wait_for_events(nc: nats.NATS, run_id: str, kind: type, count: int) -> list:  # type: ignore[type-arg]
    sub = await subscribe_ordered(nc.jetstream(), subjects.run_subject(run_id), 1)
    found: list = []  # type: ignore[type-arg]
    try:
        while len(found) < count:
            msg = await sub.next_msg(timeout=20)
            found += [e for e in decode_events(msg.data) if isinstance(e, kind)]
    finally:
        await sub.unsubscribe()
    return found


async def wait_until_async(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)


async def test_a_lagging_heartbeat_watch_does_not_declare_a_beating_node_lost(
    nats_server: NatsServer,
) -> None:
    """Liveness judges by the beats its watch delivered; a session that looks stale is confirmed
    against the bucket first. A beat stored after the last one seen (the watch lagged, as it does
    while a NATS node fails over) clears it; a session with no newer beat is declared lost."""
    from maze.events.nodes import Heartbeat
    from maze.events.store import heartbeat_bucket
    from maze.head.liveness import Liveness
    from maze.head.placer import NodeView

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        kv = await heartbeat_bucket(js)
        # (a session is judged by its own interval too: this one declares a tiny one)
        beat = Heartbeat(node_id="lag-node", session="s1", at_ms=now_ms(), interval_s=0.001)
        revision = await kv.put("lag-node", msgspec.msgpack.encode(beat))
        liveness = Liveness(timeout_s=0.01)  # every session looks stale at once
        # a beat naming this node under another node's key vouches for nothing
        assert liveness._saw(msgspec.msgpack.encode(beat), revision, "other-node") is None
        assert liveness.foreign == 1 and "lag-node" not in liveness.heartbeats
        liveness._saw(msgspec.msgpack.encode(beat), revision, "lag-node")  # what the watch delivered
        node = NodeView("lag-node", "s1", "h", "127.0.0.1", NodeCapacity(cpus=1, memory_mb=100))
        await asyncio.sleep(0.05)
        stale = liveness.stale([node], now_ms())
        assert [e.node_id for e in stale] == ["lag-node"]
        # the node beat again, but the watch has not delivered it: alive
        await kv.put("lag-node", msgspec.msgpack.encode(beat))
        assert await liveness.confirm(js, stale) == []
        assert liveness.unconfirmed == 1
        # nothing newer since: lost
        await asyncio.sleep(0.05)
        stale = liveness.stale([node], now_ms())
        assert [e.node_id for e in await liveness.confirm(js, stale)] == ["lag-node"]
        # a node the bucket never heard of is lost too
        other = NodeView("never-beat", "s9", "h", "127.0.0.1", NodeCapacity(cpus=1, memory_mb=100))
        stale = liveness.stale([other], now_ms())
        assert [e.node_id for e in await liveness.confirm(js, stale)] == ["never-beat"]
    finally:
        await nc.close()


async def test_a_session_that_missed_its_loss_is_told_again(
    head: HeadProcess, nats_server: NatsServer
) -> None:
    """A worker declared lost while it was cut off never hears its `node.lost` (workers hear it as
    it is published) and goes on beating with its dead session, waiting for work that never comes.
    The controller sees beats of a session the log says is over and tells it again."""
    from maze.events.nodes import Heartbeat, NodeLost
    from maze.events.store import heartbeat_bucket

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        store = EventStore(nc)
        told: asyncio.Queue[NodeLost] = asyncio.Queue()

        async def on_node(msg: nats.aio.msg.Msg) -> None:
            for event in decode_events(msg.data):
                if isinstance(event, NodeLost) and event.reason == "session_already_ended":
                    told.put_nowait(event)

        await nc.subscribe(subjects.node_head_subject("zombie"), cb=on_node)  # where the head tells it
        capacity = NodeCapacity(cpus=1, memory_mb=100)
        await store.publish(
            subjects.node_subject("zombie"),
            [
                NodeJoined(
                    node_id="zombie",
                    session="z1",
                    at_ms=now_ms(),
                    hostname="h",
                    ip="127.0.0.1",
                    capacity=capacity,
                )
            ],
        )
        await store.publish(
            subjects.node_head_subject("zombie"),
            [NodeLost(node_id="zombie", session="z1", at_ms=now_ms(), reason="heartbeat_timeout")],
        )
        kv = await heartbeat_bucket(js)
        for _ in range(100):  # the session beats on, as a worker that never heard would
            await kv.put(
                "zombie", msgspec.msgpack.encode(Heartbeat(node_id="zombie", session="z1", at_ms=now_ms()))
            )
            try:
                event = await asyncio.wait_for(told.get(), 0.2)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("the ended session was never told again")
        assert (event.node_id, event.session) == ("zombie", "z1")
        assert told.empty(), "told once, not on every beat"
    finally:
        await nc.close()
