"""Workspaces and artifacts across machines (issue 15): two workers with separate work
directories, no shared path; the downstream task reads the file the upstream one wrote."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maze import MaClient, task
from tests.helpers import HeadProcess, NatsServer, head_with_two_workers


@pytest.fixture(scope="module")
def two_workers(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    with head_with_two_workers(nats_server.url, tmp_path_factory.mktemp("artifacts")) as head:
        yield head


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

    # the read model, the SDK and the CLI list the same files
    listed = client.get_run_artifacts(run_id)
    assert [(a["task_id"], a["path"], a["size"], a["sha256"]) for a in listed] == [
        (up.task_id, "out/copy.csv", 8, _sha(b"a,b\n1,2\n")),
        (up.task_id, "out/result.txt", len(result_bytes), _sha(result_bytes)),
    ]
    assert listed[1]["uri"] == f"maze://artifacts/sha256/{_sha(result_bytes)}"
    shown = _maze("artifacts", "list", run_id, "--server-url", two_workers.url)
    assert shown.returncode == 0, shown.stderr
    assert "out/result.txt" in shown.stdout and _sha(result_bytes)[:12] in shown.stdout
    dest = tmp_path / "got" / "result.txt"
    got = _maze(
        "artifacts", "get", run_id, "out/result.txt", "-o", str(dest), "--server-url", two_workers.url
    )
    assert got.returncode == 0, got.stderr
    assert dest.read_bytes() == result_bytes
    saved = client.download_artifact(run_id, "out/copy.csv", tmp_path / "copy.csv")
    assert saved.read_bytes() == b"a,b\n1,2\n"
    # paths that leave the directory are refused before anything is asked or written
    for bad in ("../etc/passwd", "/etc/passwd", "out/../../x", "out//result.txt"):
        refused = _maze("artifacts", "get", run_id, bad, "--server-url", two_workers.url)
        assert refused.returncode != 0 and "path" in (refused.stdout + refused.stderr)
    missing = _maze("artifacts", "get", run_id, "out/none.txt", "--server-url", two_workers.url)
    assert missing.returncode != 0 and "no artifact" in (missing.stdout + missing.stderr)
    # the artifacts read model rebuilt from the log equals the live one
    report = httpx.post(f"{two_workers.url}/projections/rebuild", timeout=60).json()
    assert report["equal"] is True, report
    assert report["tables"]["artifacts"]["rows"] == report["tables"]["artifacts"]["rebuilt_rows"] >= 2
    assert client.get_run_artifacts(run_id) == listed


def _maze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maze", *args], capture_output=True, text=True, timeout=120)


def test_identical_content_is_stored_once(two_workers: HeadProcess, tmp_path: Path) -> None:
    """Two runs of the same workspace: the second uploads nothing (the head has every content)."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "input.csv").write_text("same\n")
    (workspace / "twin.csv").write_text("same\n")
    client = MaClient(two_workers.url)
    metas, chunks = _blob_count(two_workers)
    runs = []
    for _ in range(2):
        wf = client.create_workflow()
        wf.add_task(produce, inputs={"n": 1})
        run_id = wf.run(workspace_dir=str(workspace))
        assert wf.show_results(run_id)["state"] == "succeeded"
        runs.append(client.get_run_artifacts(run_id))
    for listed in runs:
        assert [(a["path"], a["sha256"]) for a in listed] == [
            ("out/copy.csv", _sha(b"same\n")),
            ("out/result.txt", _sha(b"same|1\n")),
        ]
    new_metas, new_chunks = _blob_count(two_workers)
    # input.csv = twin.csv = out/copy.csv in both runs: one blob; one manifest (the same files);
    # out/result.txt (the same in both runs); and the task's code unless an earlier test stored
    # it. Each written once: one set of chunks per blob (content written twice would leave a
    # second chunk subject)
    assert new_metas - metas in (3, 4), (metas, new_metas)
    assert new_chunks - chunks == new_metas - metas


def _blob_count(head: HeadProcess) -> tuple[int, int]:
    import asyncio

    import nats

    async def count() -> tuple[int, int]:
        nc = await nats.connect(head.nats_url)
        try:
            js = nc.jetstream()
            metas = await js.stream_info("OBJ_maze-artifacts", subjects_filter="$O.maze-artifacts.M.>")
            chunks = await js.stream_info("OBJ_maze-artifacts", subjects_filter="$O.maze-artifacts.C.>")
            return len(metas.state.subjects or {}), len(chunks.state.subjects or {})
        finally:
            await nc.close()

    return asyncio.run(count())


def test_workspace_manifest_paths_are_checked_at_submit(two_workers: HeadProcess) -> None:
    """A manifest naming a path outside the directory is refused (400), nothing recorded."""
    import msgspec

    from maze.events.artifacts import FileEntry

    content = b"x"
    sha = _sha(content)
    httpx.put(f"{two_workers.url}/artifacts/sha256/{sha}", content=content).raise_for_status()
    for bad in ("../escape.txt", "/abs.txt", "a/./b", ""):
        manifest = msgspec.msgpack.encode([FileEntry(bad, sha, 1)])
        msha = _sha(manifest)
        httpx.put(f"{two_workers.url}/artifacts/sha256/{msha}", content=manifest).raise_for_status()
        client = MaClient(two_workers.url)
        wf = client.create_workflow()
        wf.add_task(produce, inputs={"n": 1})
        body = {"workflow_id": "w", "tasks": [t.submission() for t in wf.tasks.values()], "workspace": msha}
        body["functions"] = dict(wf.functions)
        resp = httpx.post(
            f"{two_workers.url}/runs",
            content=msgspec.msgpack.encode(body),
            headers={"content-type": "application/msgpack"},
        )
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["type"] == "validation_error"


@task(resources={"cpu_mem": 3000})
def consume_when(flag: str, after: str = ""):
    if not Path(flag).exists():  # fails until the test makes the flag (a host path: one machine)
        raise RuntimeError("not yet")
    return {"result": Path("out/result.txt").read_text(), "extra": Path("extra.txt").read_text()}


def test_a_failed_only_retry_carries_what_the_kept_tasks_made_and_takes_a_new_workspace(
    two_workers: HeadProcess, tmp_path: Path
) -> None:
    """The kept (succeeded) upstream task does not run again: the file it made travels in the
    new run's workspace, so the retried downstream task on the other worker still reads it; and
    `retry_run(workspace_dir=...)` gives the new run that directory's files instead."""
    first_ws, second_ws = tmp_path / "ws1", tmp_path / "ws2"
    for ws, extra in ((first_ws, "old"), (second_ws, "new")):
        ws.mkdir()
        (ws / "input.csv").write_text("x\n")
        (ws / "extra.txt").write_text(extra)
    flag = tmp_path / "flag"
    client = MaClient(two_workers.url)
    wf = client.create_workflow()
    up = wf.add_task(produce, inputs={"n": 3})
    down = wf.add_task(consume_when, inputs={"flag": str(flag), "after": up.outputs["cwd"]})
    run_id = wf.run(workspace_dir=str(first_ws))
    assert wf.show_results(run_id)["state"] == "failed"
    flag.write_text("go")

    kept = client.retry_run(run_id, failed_only=True)
    assert kept["carried"] == 1
    assert wf.show_results(kept["run_id"])["state"] == "succeeded"
    out = wf.get_task_result(kept["run_id"], down.task_id)
    assert out == {"result": "x|3\n", "extra": "old"}, out
    assert [t["state"] for t in client.get_run_tasks(kept["run_id"]) if t["task_id"] == up.task_id] == [
        "succeeded"
    ]

    fresh = client.retry_run(run_id, failed_only=True, workspace_dir=str(second_ws))
    assert wf.show_results(fresh["run_id"])["state"] == "succeeded"
    assert wf.get_task_result(fresh["run_id"], down.task_id) == {"result": "x|3\n", "extra": "new"}
    # a manifest that is not stored is refused over HTTP, nothing recorded
    bad = httpx.post(
        f"{two_workers.url}/runs/{run_id}/retry", json={"workspace": "ab" * 32, "run_id": "run_badws"}
    )
    assert bad.status_code in (400, 404), bad.text
    assert httpx.get(f"{two_workers.url}/runs/run_badws").status_code == 404


def test_a_corrupted_cache_entry_on_a_worker_is_fetched_again(
    two_workers: HeadProcess, tmp_path: Path
) -> None:
    """The workers' content caches sit on disks tasks can write: staging checks each copy
    against its sha256 and fetches the content again when it does not match."""
    workspace = tmp_path / "ws"
    (workspace / "data").mkdir(parents=True)
    (workspace / "input.csv").write_text("k,v\n5,6\n")
    (workspace / "data" / "nested.json").write_text('{"k": 2}')
    client = MaClient(two_workers.url)

    def run() -> dict:
        wf = client.create_workflow()
        up = wf.add_task(produce, inputs={"n": 1})
        down = wf.add_task(consume, inputs={"after": up.outputs["cwd"]})
        run_id = wf.run(workspace_dir=str(workspace))
        assert wf.show_results(run_id)["state"] == "succeeded"
        out = wf.get_task_result(run_id, down.task_id)
        assert out is not None
        return out

    first = run()
    content = Path(two_workers.data_dir).parent / "work-down" / ".content"
    entries = [p for p in content.iterdir() if p.is_file() and not p.name.endswith(".part")]
    assert entries, list(content.iterdir())
    for entry in entries:
        entry.chmod(0o644)
        entry.write_bytes(b"tampered")
    second = run()
    assert second["input"] == first["input"] == "k,v\n5,6\n"
    assert second["nested"] == '{"k": 2}' and second["result"] == "k,v\n5,6|1\n"
