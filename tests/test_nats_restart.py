"""The operator's nats-server killed -9 and started again (same port, same store) under a head and
a worker that both stay up: its file streams (the log) come back, the streams kept in memory (the
work stream, the heartbeat bucket) do not, and the head makes those again (maze/head/stream_keeper.py).
Work then reaches the worker again, what was lost with the old work stream is sent again from the
log, and the worker is not declared lost for the beats the old bucket took with it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maze import MaClient, task
from tests.helpers import HeadProcess, NatsServer, WorkerProcess, wait_until


@task
def inc(x: int = 0, wait: float = 0.0):
    import time as _t

    _t.sleep(wait)
    return {"x": x + 1}


HEAD = ["--no-local-worker", "--liveness-timeout", "3", "--lease-seconds", "1", "--heartbeat-interval", "0.5"]


@pytest.fixture(params=[1, 2], ids=["one-head", "two-heads"])
def cluster(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[NatsServer, HeadProcess, WorkerProcess]]:
    """No worker in the heads: every attempt goes through the work stream to the other process.
    With two heads, either may be the one that makes the streams again: both controllers must
    hear of it (the leader's decides)."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    heads = [
        HeadProcess(tmp_path / f"head{i}", nats_url=server.url, extra=HEAD) for i in range(request.param)
    ]
    for head in heads:
        head.start()
    worker = WorkerProcess(heads[0], "outside", ["--cpus", "2", "--heartbeat-interval", "0.5"], tmp_path)
    worker.start()
    yield server, heads[0], worker
    worker.stop()
    for head in heads:
        head.stop()
    server.stop()


def _chain(client: MaClient, n: int, wait: float) -> str:
    wf = client.create_workflow()
    t = wf.add_task(inc, inputs={"x": 0, "wait": wait})
    for _ in range(n - 1):
        t = wf.add_task(inc, inputs={"x": t.outputs["x"], "wait": wait})
    return wf.run()


def test_a_nats_server_restarted_under_a_head_and_a_worker_loses_nothing(
    cluster: tuple[NatsServer, HeadProcess, WorkerProcess],
) -> None:
    server, head, worker = cluster
    client = MaClient(head.url)
    session = worker.alive_session()
    # more beats before the kill than the new bucket holds within a liveness timeout (3 s): a head
    # that judged the new bucket's revisions by the old one's would drop them, and lose the node
    time.sleep(6)
    before = _chain(client, 6, 0.5)  # running when the server dies
    wait_until(lambda: client.get_run(before)["state"] == "running", timeout=30)
    assert server.proc is not None
    server.proc.kill()  # kill -9: the memory streams go with it
    server.proc.wait()
    server.start()
    after = _chain(client, 3, 0.0)  # accepted once the server is back
    assert client.wait_run(before, timeout=120)["state"] == "succeeded"
    assert client.wait_run(after, timeout=120)["state"] == "succeeded"
    results = [client.get_run_task(after, t["task_id"])["result"]["x"] for t in client.get_run_tasks(after)]
    assert sorted(results) == [1, 2, 3]
    # the worker kept its session: not declared lost for the beats the old bucket lost
    assert worker.alive_session() == session
    nodes = client.get_run_events(after)  # (and its runs' attempts ran on it)
    assert {e["node_id"] for e in nodes if e["type"] == "attempt.placed"} == {"outside"}
    assert "streams.memory_streams_made_again" in head.log_path.read_text()
    time.sleep(4)  # more than a liveness timeout after the restart: the worker is still not lost
    assert worker.alive_session() == session
    report = httpx.post(f"{head.url}/projections/rebuild", timeout=120).json()
    assert report["equal"] is True, report
