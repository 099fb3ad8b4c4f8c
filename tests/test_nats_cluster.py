"""Maze on a 3-node JetStream cluster (the compose.yaml topology, on loopback): streams replicated
3x keep every run going when one NATS node is killed."""

from __future__ import annotations

import asyncio
import time

from maze import MaClient, task
from tests.helpers import HeadProcess, NatsCluster


@task
def add_one(x: int = 0):
    return {"x": x + 1}


def _chain(client: MaClient, length: int) -> str:
    wf = client.create_workflow()
    t = wf.add_task(add_one, inputs={"x": 0})
    for _ in range(length - 1):
        t = wf.add_task(add_one, inputs={"x": t.outputs["x"]})
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded" and summary["task_results"][t.task_id] == {"x": length}
    return run_id


async def _replicas(url: str) -> set[int]:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        names = [s.config.name for s in await js.streams_info()]
        assert {"MAZE_RUNS", "MAZE_WORK", "MAZE_NODES", "KV_maze-heartbeats"} <= set(names), names
        return {(await js.stream_info(name)).config.num_replicas or 1 for name in names}
    finally:
        await nc.close()


def test_replicated_streams_survive_losing_a_nats_node(tmp_path) -> None:
    """No --replicas: on a 3-server cluster every stream and bucket gets 3 copies by default."""
    cluster = NatsCluster(tmp_path / "nats")
    cluster.start()
    head = HeadProcess(tmp_path / "head", nats_url=",".join(cluster.urls))
    try:
        deadline = time.monotonic() + 60
        while True:  # the JetStream meta leader takes a moment to be elected
            try:
                head.start(timeout=30)
                break
            except (RuntimeError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
        client = MaClient(head.url)
        assert asyncio.run(_replicas(cluster.urls[0])) == {3}
        assert "min(3, servers in the NATS cluster)" in head.log()
        before = _chain(client, 3)
        cluster.kill(2)
        after = _chain(client, 3)
        assert {r["run_id"] for r in client.list_runs(limit=10)} >= {before, after}
        # the run after the kill went as the one before: no attempt failed or was retried. Losing
        # a server can cost the head its lease (a new stream leader is elected meanwhile): then a
        # placement it decided before it stepped down lands fenced, shown refused in the history
        # and folded by nothing, and the head places it again under its new epoch
        kinds = {
            r: [
                (e["type"], e.get("attempt"), e.get("error"))
                for e in client.get_run_events(r)
                if "refused" not in e
            ]
            for r in (before, after)
        }
        assert len(kinds[before]) == len(kinds[after]), kinds
        assert {a for _, a, _ in kinds[after]} <= {None, 1} and all(e is None for _, _, e in kinds[after]), (
            kinds
        )
        # the head restarted while a server is down counts two servers: that takes no copy of
        # the log away (only an explicit --replicas lowers it)
        head.stop()
        head.start(timeout=60)
        assert asyncio.run(_replicas(cluster.urls[0])) == {3}
        _chain(MaClient(head.url), 2)
    finally:
        head.stop()
        cluster.stop()
