"""Placement across worker processes of different shapes on one machine (issue 3)."""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterator

import httpx
import pytest

from maze import MaClient, ResourceUnavailable, task
from tests.helpers import HeadProcess, NatsServer, WorkerProcess, wait_until

HB = ["--heartbeat-interval", "0.5"]
SHAPES = {
    "small": ["--cpus", "2", "--memory-mb", "4000", "--gpus", "none"],
    "gpu": ["--cpus", "1", "--memory-mb", "4000", "--gpus", "16GB"],
    "big": ["--cpus", "4", "--memory-mb", "8000", "--gpus", "none"],
}
CAPACITY = {"small": 2, "gpu": 1, "big": 4}


@pytest.fixture(scope="module")
def cluster(nats_server: NatsServer, tmp_path_factory) -> Iterator[HeadProcess]:
    logs = tmp_path_factory.mktemp("cluster")
    head = HeadProcess(
        logs / "head", nats_url=nats_server.url, extra=["--no-local-worker", "--liveness-timeout", "3", *HB]
    )
    head.start()
    workers = [WorkerProcess(head, name, [*shape, *HB], logs) for name, shape in SHAPES.items()]
    for worker in workers:
        worker.start()
    yield head
    for worker in workers:
        worker.stop()
    head.stop()


@task
def where(x: int = 0):
    return {
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cores": sorted(os.sched_getaffinity(0)),
        "pid": os.getpid(),
    }


@task
def span(seconds: float = 0.3):
    start = time.time()
    time.sleep(seconds)
    return {"start": start, "end": time.time()}


def _attempt_node(client: MaClient, run_id: str, task_id: str) -> str:
    return client.get_run_task(run_id, task_id)["attempts"][-1]["node_id"]


def test_cluster_resources_lists_each_shape(cluster: HeadProcess) -> None:
    data = httpx.get(f"{cluster.url}/cluster/resources").json()
    nodes = {n["node_id"]: n for n in data["nodes"]}
    assert {k: nodes[k]["cpu"]["total"] for k in SHAPES} == {"small": 2.0, "gpu": 1.0, "big": 4.0}
    assert nodes["gpu"]["gpus"][0]["total_mem_mb"] == 16384 and nodes["small"]["gpus"] == []
    assert all(nodes[k]["state"] == "alive" and nodes[k]["heartbeat_age_s"] < 3 for k in SHAPES)
    assert data["unregistered_nodes"] == []
    assert data["unregistered_ray_nodes"] == data["unregistered_nodes"]  # the original Maze's name


def test_tasks_land_on_the_node_that_can_hold_them(cluster: HeadProcess) -> None:
    client = MaClient(cluster.url)
    wf = client.create_workflow()
    gpu_task = wf.add_task(task(resources={"cpu": 1, "gpu_mem": 8000})(where), inputs={"x": 1})
    big_task = wf.add_task(task(resources={"cpu": 4})(where), inputs={"x": 2})
    cpu3 = wf.add_task(task(resources={"cpu": 3})(where), inputs={"x": 3})
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded"
    assert _attempt_node(client, run_id, gpu_task.task_id) == "gpu"
    assert summary["task_results"][gpu_task.task_id]["cuda"] == "0"
    assert _attempt_node(client, run_id, big_task.task_id) == "big"
    assert summary["task_results"][big_task.task_id]["cuda"] == ""
    # CPU affinity follows the share: one core for cpu=1, every core of this machine for cpu=4
    assert len(summary["task_results"][gpu_task.task_id]["cores"]) == 1
    assert summary["task_results"][big_task.task_id]["cores"] == sorted(os.sched_getaffinity(0))
    assert _attempt_node(client, run_id, cpu3.task_id) == "big"
    placed = [e for e in client.get_run_events(run_id) if e["type"] == "attempt.placed"]
    gpu_placed = next(e for e in placed if e["task_id"] == gpu_task.task_id)
    assert gpu_placed["gpus"] == [0] and "GPU best fit" in gpu_placed["reason"]


def test_concurrency_never_exceeds_capacity(cluster: HeadProcess) -> None:
    client = MaClient(cluster.url)
    wf = client.create_workflow()
    one = task(resources={"cpu": 1})(span)
    two = task(resources={"cpu": 2})(span)
    tasks = [(wf.add_task(one, inputs={"seconds": 0.4}), 1) for _ in range(14)]
    tasks += [(wf.add_task(two, inputs={"seconds": 0.4}), 2) for _ in range(4)]
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded"
    by_node = collections.defaultdict(list)
    for t, cpu in tasks:
        result = summary["task_results"][t.task_id]
        by_node[_attempt_node(client, run_id, t.task_id)].append((result["start"], result["end"], cpu))
    assert len(by_node) >= 2, "work should spread over several nodes"
    for node, spans in by_node.items():
        for start, _, _ in spans:
            in_flight = sum(cpu for s, e, cpu in spans if s <= start < e)
            assert in_flight <= CAPACITY[node], (node, in_flight, spans)


def test_task_no_node_can_hold_is_rejected(cluster: HeadProcess) -> None:
    client = MaClient(cluster.url)
    for resources, needle in (({"cpu": 8}, "needs 8 CPUs"), ({"gpu_mem": 32000}, r"GPU\(s\) with 32000 MB")):
        wf = client.create_workflow()
        wf.add_task(task(resources=resources)(where), inputs={"x": 1})
        with pytest.raises(ResourceUnavailable, match=needle) as info:
            wf.run()
        assert info.value.status_code == 422
        for node in SHAPES:
            assert node in str(info.value)


def test_big_task_waits_without_blocking_small_ones(cluster: HeadProcess) -> None:
    client = MaClient(cluster.url)
    hog = client.create_workflow()
    hog.add_task(task(resources={"cpu": 1, "gpu_mem": 12000})(span), inputs={"seconds": 3.0})
    hog_run = hog.run()
    wait_until(lambda: client.get_run(hog_run)["state"] == "running")
    wf = client.create_workflow()
    big = wf.add_task(task(resources={"cpu": 1, "gpu_mem": 8000})(span), inputs={"seconds": 0.1})
    smalls = [wf.add_task(task(resources={"cpu": 1})(span), inputs={"seconds": 0.2}) for _ in range(6)]
    run_id = wf.run()

    def big_pending_reason():
        t = next(t for t in client.get_run_tasks(run_id) if t["task_id"] == big.task_id)
        return t["state"] == "pending" and t["pending_reason"]

    reason = wait_until(big_pending_reason)
    assert "waiting for free capacity" in reason and "gpu_mem=8000MB" in reason
    queues = httpx.get(f"{cluster.url}/cluster/queues").json()
    assert any(p["task_id"] == big.task_id for p in queues["pending"])
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded"
    small_ends = max(summary["task_results"][s.task_id]["end"] for s in smalls)
    big_start = summary["task_results"][big.task_id]["start"]
    assert small_ends < big_start, "small tasks should finish while the GPU task waits"
    assert hog.show_results(hog_run)["state"] == "succeeded"


def test_kill_worker_mid_task_retries_elsewhere(cluster: HeadProcess, tmp_path) -> None:
    doomed = WorkerProcess(cluster, "doomed", ["--cpus", "8", "--gpus", "none", *HB], tmp_path)
    doomed.start()
    client = MaClient(cluster.url)
    wf = client.create_workflow()
    long_task = wf.add_task(task(resources={"cpu": 6})(span), inputs={"seconds": 2.0})
    run_id = wf.run()
    wait_until(lambda: client.get_run_task(run_id, long_task.task_id)["state"] == "running")
    doomed.kill9()  # mid-task (a rescue started first might only join once the task is over)
    rescue = WorkerProcess(cluster, "rescue", ["--cpus", "8", "--gpus", "none", *HB], tmp_path)
    rescue.start()
    try:
        summary = MaClient(cluster.url).create_workflow().show_results(run_id)
        assert summary["state"] == "succeeded"
        detail = client.get_run_task(run_id, long_task.task_id)
        assert [(a["attempt"], a["node_id"], a["state"]) for a in detail["attempts"]] == [
            (1, "doomed", "failed"),
            (2, "rescue", "succeeded"),
        ]
        assert detail["attempts"][0]["error"]["error_type"] == "node_lost"
        events = client.get_run_events(run_id)
        kinds = [e["type"] for e in events if e.get("task_id") == long_task.task_id]
        assert kinds == [
            "attempt.placed",
            "attempt.started",
            "attempt.lost",  # after its start in the log: a node_lost failure, retried
            "retry.scheduled",
            "attempt.placed",
            "attempt.started",
            "attempt.succeeded",
        ]
        nodes = {n["node_id"]: n for n in httpx.get(f"{cluster.url}/cluster/resources").json()["nodes"]}
        assert nodes["doomed"]["state"] == "lost"
    finally:
        rescue.stop()


def test_agent_reregisters_after_head_restart(tmp_path) -> None:
    head = HeadProcess(tmp_path / "head", extra=["--no-local-worker", "--liveness-timeout", "3", *HB])
    head.start()
    agent = WorkerProcess(head, "agent", ["--cpus", "2", "--gpus", "none", "--agent", *HB], tmp_path)
    agent.start()
    try:
        first_session = agent.alive_session()
        # the head comes back with its history intact: the worker's session is still registered
        head.stop()
        head.start()
        assert wait_until(agent.alive_session, timeout=30) == first_session
        # the head comes back with an empty store (its NATS replaced): the agent registers again
        head.stop()
        import shutil

        shutil.rmtree(head.data_dir / "jetstream")
        (head.data_dir / "readmodels.duckdb").unlink()
        head.start()
        second_session = wait_until(agent.alive_session, timeout=30)
        assert second_session != first_session
        client = MaClient(head.url)
        wf = client.create_workflow()
        t = wf.add_task(where, inputs={"x": 1})
        run_id = wf.run()
        assert wf.show_results(run_id)["state"] == "succeeded"
        assert _attempt_node(client, run_id, t.task_id) == "agent"
        assert "re-registered" in agent.log()
    finally:
        agent.stop()
        head.stop()


def test_cluster_cli_commands(cluster: HeadProcess) -> None:
    import subprocess
    import sys

    def cli(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "maze", "cluster", *args, "--server-url", cluster.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    resources = cli("resources")
    for node in SHAPES:
        assert node in resources
    assert "16.0G" in resources  # the declared card
    assert "resource class" in cli("queues")
    join = cli("join-command")
    assert "maze start --worker --addr" in join and f":{cluster.port} --agent" in join
    assert "lost: none" in cli("reconcile-workers")


def test_worker_with_the_readmes_long_heartbeat_interval_is_not_lost(cluster: HeadProcess, tmp_path) -> None:
    """The original README's `maze start --worker --addr … --agent --heartbeat-interval 20`, on a
    head whose liveness timeout (3 s here) is far shorter: the node is judged by its own interval."""
    slow = WorkerProcess(
        cluster,
        "slow-beats",
        ["--cpus", "0.1", "--gpus", "none", "--agent", "--heartbeat-interval", "20"],
        tmp_path,
    )
    slow.start()
    try:
        session = slow.alive_session()

        def node() -> dict:
            nodes = httpx.get(f"{cluster.url}/cluster/resources", timeout=5).json()["nodes"]
            return next(n for n in nodes if n["node_id"] == "slow-beats")

        assert node()["heartbeat_interval_s"] == 20 and node()["liveness_timeout_s"] == 60
        # silent for longer than the head's liveness timeout (and a controller tick) since its last beat
        wait_until(lambda: (node()["heartbeat_age_s"] or 0) > 4 or node()["state"] != "alive", timeout=30)
        seen = node()
        assert seen["state"] == "alive" and seen["session"] == session, seen
    finally:
        slow.stop()
