"""Workspaces and artifacts across machines (issue 15): two workers with separate work
directories, no shared path; the downstream task reads the file the upstream one wrote."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from maze import MaClient, task
from tests.helpers import HeadProcess, NatsServer, WorkerProcess

HB = ["--heartbeat-interval", "0.5"]


@pytest.fixture(scope="module")
def two_workers(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    logs = tmp_path_factory.mktemp("artifacts")
    head = HeadProcess(logs / "head", nats_url=nats_server.url, extra=["--no-local-worker", *HB])
    head.start()
    # "up" is the only node with a GPU, "down" the only one with 3 GB: each task has one home
    shapes = {
        "up": ["--cpus", "1", "--memory-mb", "1000", "--gpus", "8GB"],
        "down": ["--cpus", "1", "--memory-mb", "4000", "--gpus", "none"],
    }
    workers = [
        WorkerProcess(head, name, [*shape, *HB, "--work-dir", str(logs / f"work-{name}")], logs)
        for name, shape in shapes.items()
    ]
    for worker in workers:
        worker.start()
    yield head
    for worker in workers:
        worker.stop()
    head.stop()


@task(resources={"gpu": 1})
def produce(n: int = 0):
    text = Path("input.csv").read_text()  # staged from the workspace, by relative path
    Path("out").mkdir(exist_ok=True)
    Path("out/result.txt").write_text(f"{text.strip()}|{n}\n")
    Path("out/copy.csv").write_text(text)  # the same content as input.csv: stored once
    return {"cwd": os.getcwd()}


@task(resources={"cpu_mem": 3000})
def consume(after: str = ""):
    return {
        "result": Path("out/result.txt").read_text(),
        "input": Path("input.csv").read_text(),
        "nested": Path("data/nested.json").read_text(),
        "cwd": os.getcwd(),
    }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_downstream_on_another_worker_reads_the_upstream_file(
    two_workers: HeadProcess, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    (workspace / "data").mkdir(parents=True)
    (workspace / "input.csv").write_text("a,b\n1,2\n")
    (workspace / "data" / "nested.json").write_text('{"k": 1}')
    client = MaClient(two_workers.url)
    wf = client.create_workflow()
    up = wf.add_task(produce, inputs={"n": 7})
    down = wf.add_task(consume, inputs={"after": up.outputs["cwd"]})
    run_id = wf.run(workspace_dir=str(workspace), artifact_mode=True)
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded", summary
    tasks = {t["task_id"]: t for t in client.get_run_tasks(run_id)}
    assert tasks[up.task_id]["node_id"] == "up" and tasks[down.task_id]["node_id"] == "down"
    outputs = wf.get_task_result(run_id, down.task_id)
    assert outputs is not None
    assert outputs["result"] == "a,b\n1,2|7\n"
    assert outputs["input"] == "a,b\n1,2\n"
    assert outputs["nested"] == '{"k": 1}'
    up_result = wf.get_task_result(run_id, up.task_id)
    assert up_result is not None
    up_dir = up_result["cwd"]
    # each attempt ran in its own directory under its own worker's work root
    assert f"work-up/{run_id}/{up.task_id}/1" in up_dir
    assert f"work-down/{run_id}/{down.task_id}/1" in outputs["cwd"]

    registered = [e for e in client.get_run_events(run_id) if e["type"] == "artifact.registered"]
    by_path = {(e["task_id"], e["path"]): e for e in registered}
    result_bytes = b"a,b\n1,2|7\n"
    assert set(by_path) == {(up.task_id, "out/result.txt"), (up.task_id, "out/copy.csv")}
    assert by_path[(up.task_id, "out/result.txt")]["sha256"] == _sha(result_bytes)
    assert by_path[(up.task_id, "out/result.txt")]["size"] == len(result_bytes)
    assert by_path[(up.task_id, "out/result.txt")]["node_id"] == "up"
    assert by_path[(up.task_id, "out/result.txt")]["attempt"] == 1
    # out/copy.csv has input.csv's content: one blob for both
    assert by_path[(up.task_id, "out/copy.csv")]["sha256"] == _sha(b"a,b\n1,2\n")
    # the downstream task changed nothing: it registered nothing (staged files are not its own)
    assert not any(e["task_id"] == down.task_id for e in registered)
