"""Several heads on one NATS: exactly one run controller decides (a lease with an epoch). Killed,
the leader is replaced within about two lease periods; the new one carries on from the log, and a
deposed leader's late writes are refused by every fold."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import nats
import pytest

from maze import MaClient, task
from maze.core.clock import now_ms
from maze.events import subjects
from maze.events.codec import decode_events, encode_value
from maze.events.nodes import NodeLost
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import Resources
from maze.events.store import EventStore
from maze.events.tasks import AttemptPlaced
from maze.events.work import WorkBatch, WorkItem
from tests.helpers import HeadProcess, NatsServer, WorkerProcess, wait_until

LEASE = ["--lease-seconds", "1", "--heartbeat-interval", "0.5", "--liveness-timeout", "5"]


@task
def step(i: int = 0, wait: float = 0.0):
    import time as _t

    _t.sleep(wait)
    return {"i": i}


def _leader(head: HeadProcess) -> dict[str, object]:
    view: dict[str, object] = httpx.get(f"{head.url}/cluster/resources", timeout=10).json()["leader"]
    return view


def _deciding(head: HeadProcess) -> bool:
    try:
        return bool(_leader(head)["this_head"])
    except (httpx.HTTPError, KeyError):
        return False


@pytest.fixture
def two_heads(
    nats_server: NatsServer, tmp_path: Path
) -> Iterator[tuple[HeadProcess, HeadProcess, WorkerProcess]]:
    first = HeadProcess(tmp_path / "a", nats_url=nats_server.url, extra=["--no-local-worker", *LEASE])
    second = HeadProcess(tmp_path / "b", nats_url=nats_server.url, extra=["--no-local-worker", *LEASE])
    first.start()
    wait_until(lambda: _deciding(first), timeout=30)
    second.start()
    worker = WorkerProcess(
        first,
        "fo-worker",
        ["--cpus", "2", "--gpus", "none", "--agent", "--heartbeat-interval", "0.5"],
        tmp_path,
    )
    worker.start()
    yield first, second, worker
    worker.stop()
    for head in (first, second):
        if head.proc is not None and head.proc.poll() is None:
            head.stop()


def _chain_run(client: MaClient, n: int, wait: float) -> tuple[str, list[str]]:
    wf = client.create_workflow()
    t = wf.add_task(step, inputs={"i": 0, "wait": wait})
    ids = [t.task_id]
    for _ in range(1, n):
        t = wf.add_task(step, inputs={"i": t.outputs["i"], "wait": wait})
        ids.append(t.task_id)
    return wf.run(), ids


def _each_succeeded_once(client: MaClient, run_id: str, task_ids: list[str]) -> None:
    wait_until(lambda: client.get_run(run_id)["state"] in ("succeeded", "failed"), timeout=90)
    assert client.get_run(run_id)["state"] == "succeeded"
    events = client.get_run_events(run_id)
    succeeded = collections.Counter(e["task_id"] for e in events if e["type"] == "attempt.succeeded")
    assert succeeded == dict.fromkeys(task_ids, 1), succeeded


def test_the_standby_takes_over_when_the_leader_is_killed_and_back_again(
    two_heads: tuple[HeadProcess, HeadProcess, WorkerProcess],
) -> None:
    first, second, _ = two_heads
    assert _deciding(first) and not _deciding(second)
    assert _leader(second)["head_id"] == _leader(first)["head_id"], "both see who leads"
    epoch = int(_leader(first)["epoch"])  # type: ignore[call-overload]
    # a chain: each next task is placed by the controller, so the run needs one that decides
    run_id, ids = _chain_run(MaClient(second.url), 6, 0.4)  # submitted to the standby: commands are events
    time.sleep(1.0)
    first.kill9()
    killed = time.monotonic()
    wait_until(lambda: _deciding(second), timeout=10)
    took = time.monotonic() - killed
    assert took < 2 * 1.0 + 1.0, f"took over in {took:.1f} s"  # two lease periods, and a poll
    assert int(_leader(second)["epoch"]) > epoch  # type: ignore[call-overload]
    _each_succeeded_once(MaClient(second.url), run_id, ids)
    # and the other way round: the first head back (a standby now), the second killed
    first.start()
    assert not _deciding(first)
    run_id, ids = _chain_run(MaClient(first.url), 6, 0.4)
    time.sleep(1.0)
    second.kill9()
    wait_until(lambda: _deciding(first), timeout=10)
    _each_succeeded_once(MaClient(first.url), run_id, ids)


def test_a_deposed_leaders_late_write_is_refused(
    two_heads: tuple[HeadProcess, HeadProcess, WorkerProcess], nats_server: NatsServer
) -> None:
    first, second, _ = two_heads
    old_epoch = int(_leader(first)["epoch"])  # type: ignore[call-overload]
    client = MaClient(second.url)
    run_id, ids = _chain_run(client, 3, 1.0)
    first.kill9()
    wait_until(lambda: _deciding(second), timeout=10)

    async def late_write() -> None:
        nc = await nats.connect(nats_server.url)
        try:  # what the deposed leader could still have had in flight: ending the run
            late = RunFinished(run_id=run_id, at_ms=now_ms(), state="failed", epoch=old_epoch)
            await EventStore(nc).publish(subjects.run_subject(run_id), [late])
        finally:
            await nc.close()

    asyncio.run(late_write())
    _each_succeeded_once(client, run_id, ids)  # it did not end the run: it went on, and succeeded
    diagnostics = httpx.get(f"{second.url}/cluster/diagnostics", timeout=10).json()
    assert diagnostics["controller"]["leadership"]["fenced"] >= 1
    # the history shows it as refused, never as the run's end, read from the log or live alike
    shown = client.get_run_events(run_id)
    assert not any(e["type"] == "run.finished" and e.get("state") == "failed" for e in shown)
    refused = [e for e in shown if e["type"] == "run.finished" and "refused" in e]
    assert len(refused) == 1 and f"epoch {old_epoch}" in refused[0]["refused"], refused
    assert [e["state"] for e in shown if e["type"] == "run.finished" and "refused" not in e] == ["succeeded"]
    streamed = list(client.follow_run_events(run_id))  # the stream did not end at the refused one
    assert [e for e in streamed if "refused" in e] == refused
    # and the SDK's readers of history skip it: the original Maze messages, the result summary
    messages = client.create_workflow().get_results(run_id, verbose=False)
    assert [m["data"]["state"] for m in messages if m["type"] == "finish_workflow"] == ["succeeded"]
    assert sorted(m["data"]["task_id"] for m in messages if m["type"] == "finish_task") == sorted(ids)


def _worker_session(head: HeadProcess, node_id: str) -> tuple[str, str]:
    nodes = httpx.get(f"{head.url}/cluster/resources", timeout=10).json()["nodes"]
    found = [(str(n["state"]), str(n["session"])) for n in nodes if n["node_id"] == node_id]
    assert len(found) == 1, nodes
    return found[0]


def _depose_first(two_heads: tuple[HeadProcess, HeadProcess, WorkerProcess]) -> tuple[int, str]:
    """The first head, leading, killed -9 and the second deciding: the first's epoch, and the
    worker's session (alive)."""
    first, second, worker = two_heads
    old_epoch = int(_leader(first)["epoch"])  # type: ignore[call-overload]
    first.kill9()
    wait_until(lambda: _deciding(second), timeout=10)
    state, session = _worker_session(second, worker.node_id)
    assert state == "alive"
    return old_epoch, session


def test_a_deposed_leaders_late_node_lost_is_refused_and_the_node_stays(
    two_heads: tuple[HeadProcess, HeadProcess, WorkerProcess], nats_server: NatsServer
) -> None:
    """A node.lost is a decision too: written by a deposed leader after the new one recorded its
    leadership (in the nodes stream as well), it is refused; the node keeps its session."""
    _, second, worker = two_heads
    old_epoch, session = _depose_first(two_heads)
    fenced_before = httpx.get(f"{second.url}/cluster/diagnostics", timeout=10).json()["controller"][
        "leadership"
    ]["fenced"]

    async def late_write() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            late = NodeLost(node_id=worker.node_id, session=session, at_ms=now_ms(), epoch=old_epoch)
            await EventStore(nc).publish(subjects.node_head_subject(worker.node_id), [late])
        finally:
            await nc.close()

    asyncio.run(late_write())
    wait_until(
        lambda: (
            httpx.get(f"{second.url}/cluster/diagnostics", timeout=10).json()["controller"]["leadership"][
                "fenced"
            ]
            > fenced_before
        ),
        timeout=10,
    )
    time.sleep(3)  # six heartbeats: a node taken for lost would have been told, and rejoined
    assert _worker_session(second, worker.node_id) == ("alive", session)
    wf = MaClient(second.url).create_workflow()
    wf.add_task(step, inputs={"i": 7})
    assert wf.show_results(wf.run())["state"] == "succeeded"
    # the read models (whose node rows /cluster/resources shows) refuse it alike, rebuilt or live
    report = httpx.post(f"{second.url}/projections/rebuild", timeout=120).json()
    assert report["equal"] is True, report
    assert _worker_session(second, worker.node_id) == ("alive", session)


@task(resources={"cpu": 2})
def whole_node(i: int = 0, wait: float = 0.0):
    import time as _t

    _t.sleep(wait)
    return {"i": i}


async def _first_message(nats_url: str, run_id: str) -> RunCreated:
    nc = await nats.connect(nats_url)
    try:
        msg = await nc.jetstream().get_msg(
            subjects.RUNS_STREAM, seq=1, subject=subjects.run_subject(run_id), next=True
        )
        created = decode_events(msg.data)[0]
        assert isinstance(created, RunCreated)
        return created
    finally:
        await nc.close()


@pytest.mark.parametrize("fenced_wait", [0.0, 7.0], ids=["ended-before", "still-running"])
def test_a_deposed_leaders_placement_taken_by_a_node_gives_way_to_the_logs_own(
    two_heads: tuple[HeadProcess, HeadProcess, WorkerProcess], nats_server: NatsServer, fenced_wait: float
) -> None:
    """A deposed leader that does not know it yet places an attempt (refused by every fold) and
    sends its work, which the node takes and runs. The new leader, whose log has no such attempt,
    places the same attempt number on the same node: the node does not drop that work as seen (the
    run would wait for ever), it rejects it (it names a later leadership), and the task is placed
    again under the next number, whose reports no earlier ones can shadow. What the deposed
    leader's attempt reports changes nothing, whether it ended before or runs on."""
    _, second, worker = two_heads
    old_epoch, session = _depose_first(two_heads)
    # `last` waits 4 s for `held` (its input; asking for more CPU, it is placed after it). Its own
    # attempt takes 0.1 s: its start and end travel apart, as the deposed one's did
    wf = MaClient(second.url).create_workflow()
    held = wf.add_task(step, inputs={"i": 7, "wait": 4.0})
    last = wf.add_task(whole_node, inputs={"i": held.outputs["i"], "wait": 0.1})
    run_id = wf.run()
    created = asyncio.run(_first_message(nats_server.url, run_id))
    spec = next(s for s in created.tasks if s.task_id == last.task_id)

    async def deposed_leader_places_it() -> None:
        nc = await nats.connect(nats_server.url)
        try:  # its placement (refused: an older leadership), then its work, which the node takes
            placed = AttemptPlaced(
                run_id=run_id,
                task_id=last.task_id,
                attempt=1,
                node_id=worker.node_id,
                at_ms=now_ms(),
                session=session,
                epoch=old_epoch,
            )
            await EventStore(nc).publish(subjects.run_subject(run_id), [placed])
            inputs = {"i": msgspec.Raw(encode_value(99)), "wait": msgspec.Raw(encode_value(fenced_wait))}
            item = WorkItem(
                run_id=run_id,
                task_id=last.task_id,
                attempt=1,
                func_name=spec.func_name,
                func_hash=spec.func_hash,
                call_style=spec.call_style,
                inputs=encode_value(inputs),
                outputs=spec.outputs,
                resources=Resources(cpu=1.0),  # (it fits beside the first: it starts at once)
                session=session,
                epoch=old_epoch,
            )
            batch = msgspec.msgpack.encode(WorkBatch(items=[item]))
            await nc.jetstream().publish(
                subjects.work_subject(worker.node_id), batch, headers={"Nats-Msg-Id": f"deposed-{run_id}"}
            )
        finally:
            await nc.close()

    asyncio.run(deposed_leader_places_it())
    client = MaClient(second.url)
    wait_until(lambda: client.get_run(run_id)["state"] in ("succeeded", "failed"), timeout=60)
    assert client.get_run(run_id)["state"] == "succeeded"
    events = [e for e in client.get_run_events(run_id) if e.get("task_id") in (None, last.task_id)]
    placed = [e for e in events if e["type"] == "attempt.placed"]
    assert [("refused" in e, e.get("attempt")) for e in placed] == [(True, None), (False, 1), (False, 2)], (
        placed
    )
    rejected = [e for e in events if e["type"] == "attempt.rejected"]
    assert [(e["attempt"], e["placed_epoch"]) for e in rejected] == [(1, placed[1]["epoch"])], rejected
    assert f"earlier leadership's placement (epoch {old_epoch})" in rejected[0]["reason"]
    # the log's placement succeeded once; the deposed one's attempt (1) may have reported its end
    # too (before the log's placement, or after its rejection): it counted for nothing
    succeeded = [e["attempt"] for e in events if e["type"] == "attempt.succeeded"]
    assert succeeded.count(2) == 1 and set(succeeded) <= {1, 2}, succeeded
    # what ran for the log's placement is the log's task (i=7), not the deposed leader's (i=99)
    shown = client.get_run_task(run_id, last.task_id)
    assert (shown["result"], shown["attempt"]) == ({"i": 7}, 2), shown
    report = httpx.post(f"{second.url}/projections/rebuild", timeout=120).json()
    assert report["equal"] is True, report
