"""Files as task inputs from fsspec URLs (`maze.FileInput`, issue 15): read by the SDK at submit,
stored once by content in the head's blob store, staged by the worker into the attempt's directory
at `inputs/<key>/<name>`; runs with and without a workspace, tasks on two workers with separate
work directories, and the errors (a URL that does not exist, a backend not installed, names that
would leave the directory) raised before anything is submitted."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import fsspec
import httpx
import msgspec
import pytest

from maze import FileInput, MaClient, task
from maze.core.errors import ValidationError
from maze.events.values import StagedFile, wire_file
from tests.helpers import HeadProcess, NatsServer, head_with_two_workers


@pytest.fixture(scope="module")
def two_workers(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    with head_with_two_workers(nats_server.url, tmp_path_factory.mktemp("file-inputs")) as head:
        yield head


@task(resources={"gpu": 1})
def read_on_up(data: str, extra: str = ""):
    return {
        "path": data,
        "type": type(data).__name__,
        "text": Path(data).read_text(),
        "extra": Path(extra).read_text() if extra else "",
        "cwd": os.getcwd(),
    }


@task(resources={"cpu_mem": 3000})
def read_on_down(data: str, before: str = ""):
    text = Path(data).read_text()
    Path("out.txt").write_text(text.upper())  # an artifact when the run has a workspace
    workspace_file = Path("ws.txt").read_text() if Path("ws.txt").exists() else ""
    return {"path": data, "text": text, "ws": workspace_file, "cwd": os.getcwd()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _memory(path: str, data: bytes) -> str:
    with fsspec.open(f"memory://{path}", "wb") as f:
        f.write(data)
    return f"memory://{path}"


def test_memory_and_file_urls_reach_tasks_on_two_workers(two_workers: HeadProcess, tmp_path: Path) -> None:
    local = tmp_path / "local table.csv"
    local.write_bytes(b"x,y\n3,4\n")
    url = _memory("fi/data.csv", b"a,b\n1,2\n")
    client = MaClient(two_workers.url)
    wf = client.create_workflow()
    up = wf.add_task(read_on_up, inputs={"data": FileInput(url), "extra": FileInput(f"file://{local}")})
    down = wf.add_task(
        read_on_down, inputs={"data": FileInput(str(local), name="t.csv"), "before": up.outputs["path"]}
    )
    run_id = wf.run()  # no workspace: file inputs are staged all the same
    assert wf.show_results(run_id)["state"] == "succeeded"
    nodes = {t["task_id"]: t["node_id"] for t in client.get_run_tasks(run_id)}
    assert (nodes[up.task_id], nodes[down.task_id]) == ("up", "down")
    got_up = wf.get_task_result(run_id, up.task_id)
    got_down = wf.get_task_result(run_id, down.task_id)
    assert got_up is not None and got_down is not None
    assert (got_up["path"], got_up["type"]) == ("inputs/data/data.csv", "str")
    assert got_up["text"] == "a,b\n1,2\n" and got_up["extra"] == "x,y\n3,4\n"
    assert got_down["path"] == "inputs/data/t.csv" and got_down["text"] == "x,y\n3,4\n"
    assert f"{run_id}/{up.task_id}/1" in got_up["cwd"] and f"{run_id}/{down.task_id}/1" in got_down["cwd"]
    # the content is in the blob store under its sha256, and the task rows describe the input
    for data in (b"a,b\n1,2\n", b"x,y\n3,4\n"):
        assert httpx.head(f"{two_workers.url}/artifacts/sha256/{_sha(data)}").status_code == 200
    rows = {t["task_id"]: t for t in client.get_run_tasks(run_id)}
    described = rows[up.task_id]["inputs"]["data"]["value"]
    assert described["__maze_value__"] == "file"
    assert (described["path"], described["sha256"], described["source"]) == (
        "inputs/data/data.csv",
        _sha(b"a,b\n1,2\n"),
        url,
    )
    # nothing was registered: a run without a workspace has no artifacts
    assert client.get_run_artifacts(run_id) == []


def test_with_a_workspace_inputs_are_staged_but_not_registered(
    two_workers: HeadProcess, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "ws.txt").write_text("from the workspace")
    url = _memory("fi/with-ws.txt", b"hello file input\n")
    client = MaClient(two_workers.url)
    wf = client.create_workflow()
    down = wf.add_task(read_on_down, inputs={"data": FileInput(url)})
    run_id = wf.run(workspace_dir=str(workspace))
    assert wf.show_results(run_id)["state"] == "succeeded"
    got = wf.get_task_result(run_id, down.task_id)
    assert got is not None
    assert (got["path"], got["text"], got["ws"]) == (
        "inputs/data/with-ws.txt",
        "hello file input\n",
        "from the workspace",
    )
    # the task's own file is an artifact, the staged input is not
    assert [(a["task_id"], a["path"]) for a in client.get_run_artifacts(run_id)] == [
        (down.task_id, "out.txt")
    ]


def test_identical_content_from_two_urls_is_one_blob(two_workers: HeadProcess, tmp_path: Path) -> None:
    data = os.urandom(32 * 1024).hex().encode()  # text: the task reads it as such
    local = tmp_path / "same.bin"
    local.write_bytes(data)
    url = _memory("fi/same.bin", data)
    sha = _sha(data)
    client = MaClient(two_workers.url)
    sent: list[str] = []
    client.http.client.event_hooks["request"].append(
        lambda request: sent.append(f"{request.method} {request.url.path}")
    )
    wf = client.create_workflow()
    wf.add_task(read_on_up, inputs={"data": FileInput(url), "extra": FileInput(f"file://{local}")})
    assert wf.show_results(wf.run())["state"] == "succeeded"
    assert sent.count(f"PUT /artifacts/sha256/{sha}") == 1
    # a second run, from a new client that knows nothing: asked, found stored, not sent again
    again = MaClient(two_workers.url)
    sent2: list[str] = []
    again.http.client.event_hooks["request"].append(lambda r: sent2.append(f"{r.method} {r.url.path}"))
    wf2 = again.create_workflow()
    wf2.add_task(read_on_up, inputs={"data": FileInput(local)})
    assert wf2.show_results(wf2.run())["state"] == "succeeded"
    assert "POST /artifacts/missing" in sent2
    assert not any(s.startswith("PUT /artifacts/") and sha in s for s in sent2)


def test_errors_are_raised_before_anything_is_submitted(two_workers: HeadProcess, tmp_path: Path) -> None:
    client = MaClient(two_workers.url)
    before = len(client.list_runs(limit=1000))
    wf = client.create_workflow()
    wf.add_task(read_on_up, inputs={"data": FileInput("memory://fi/nothing-here.csv")})
    with pytest.raises(ValidationError, match="does not exist"):
        wf.run()
    wf = client.create_workflow()
    wf.add_task(read_on_up, inputs={"data": FileInput(f"file://{tmp_path}/absent.csv")})
    with pytest.raises(ValidationError, match="does not exist"):
        wf.run()
    wf = client.create_workflow()
    wf.add_task(read_on_up, inputs={"data": FileInput(str(tmp_path))})
    with pytest.raises(ValidationError, match="not a file"):
        wf.run()
    try:
        import s3fs  # noqa: F401
    except ImportError:
        wf = client.create_workflow()
        wf.add_task(read_on_up, inputs={"data": FileInput("s3://bucket/data.csv")})
        with pytest.raises(ValidationError, match="s3fs"):
            wf.run()
    assert len(client.list_runs(limit=1000)) == before

    # names that would leave the directory, refused where they are written
    for bad in ("..", ".", "a/b", "a\\b", ""):
        with pytest.raises(ValidationError):
            FileInput("memory://fi/x.csv", name=bad)
    with pytest.raises(ValidationError, match="names no file"):
        FileInput("memory://fi/dir/")
    with pytest.raises(ValidationError, match="whole value"):
        client.create_workflow().add_task(read_on_up, inputs={"data": [FileInput("memory://fi/x.csv")]})


def test_the_head_refuses_a_file_input_that_leaves_the_directory(two_workers: HeadProcess) -> None:
    """A client that builds the wire form itself: the head checks the path and that the content
    is stored, before recording anything."""
    client = MaClient(two_workers.url)
    wf = client.create_workflow()
    t = wf.add_task(read_on_up, inputs={"data": "placeholder"})
    data = b"stored"
    client.blobs.upload({_sha(data): data})
    for path, status, error in (
        ("../escape.txt", 400, "validation_error"),
        ("/etc/passwd", 400, "validation_error"),
        ("inputs/data/ok.txt", 201, None),
    ):
        t._input_forms["data"] = {"encoded": wire_file(StagedFile(path, _sha(data), len(data)))}
        body = {
            "workflow_id": wf.workflow_id,
            "run_id": f"run_{os.urandom(8).hex()}",
            "tasks": [t.submission()],
            "functions": wf.functions,
        }
        resp = httpx.post(
            f"{two_workers.url}/runs",
            content=msgspec.msgpack.encode(body),
            headers={"content-type": "application/msgpack"},
            timeout=30,
        )
        assert resp.status_code == status, resp.text
        if error:
            assert resp.json()["error"]["type"] == error
    # content that is not stored: refused as missing
    t._input_forms["data"] = {"encoded": wire_file(StagedFile("inputs/data/x", "ab" * 32, 3))}
    body = {
        "workflow_id": wf.workflow_id,
        "run_id": f"run_{os.urandom(8).hex()}",
        "tasks": [t.submission()],
        "functions": wf.functions,
    }
    resp = httpx.post(
        f"{two_workers.url}/runs",
        content=msgspec.msgpack.encode(body),
        headers={"content-type": "application/msgpack"},
        timeout=30,
    )
    assert resp.status_code == 400 and "ab" * 32 in resp.text, resp.text
