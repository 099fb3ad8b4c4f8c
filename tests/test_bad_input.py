"""Every bad input gets a clear error and appends nothing."""

from __future__ import annotations

import hashlib
import threading
import time

import cloudpickle
import httpx
import msgspec
import pytest

from maze import MaClient, ResourceUnavailable, SerializationError, ValidationError, task
from tests.helpers import HeadProcess, wait_until


@task
def echo(text: str = ""):
    return {"text": text}


@task
def needs(text: str):
    return {"text": text}


@task
def not_a_dict(text: str = ""):
    return [text]


def _fn_blob() -> tuple[str, bytes]:
    blob = cloudpickle.dumps(echo)
    return hashlib.sha256(blob).hexdigest(), blob


def _post(head: HeadProcess, tasks: list[dict], **extra) -> httpx.Response:
    digest, blob = _fn_blob()
    for t in tasks:
        t.setdefault("func_hash", digest)
        t.setdefault("func_name", "echo")
    body = {"tasks": tasks, "functions": {digest: blob}, **extra}
    return httpx.post(
        f"{head.url}/runs",
        content=msgspec.msgpack.encode(body),
        headers={"content-type": "application/msgpack"},
    )


FINAL = {"succeeded", "failed", "cancelled", "timed_out"}


def _settled_last_seq(head: HeadProcess, client: MaClient) -> int:
    """The runs stream's position once every earlier run has ended and the projection is still
    (an earlier test may have left a run finishing in the background)."""

    def quiet() -> tuple[int] | None:
        first = httpx.get(f"{head.url}/health").json()["projection_positions"].get("MAZE_RUNS", 0)
        if any(r["state"] not in FINAL for r in client.list_runs(limit=1000)):
            return None
        time.sleep(0.3)
        second = httpx.get(f"{head.url}/health").json()["projection_positions"].get("MAZE_RUNS", 0)
        return (int(second),) if second == first else None

    return int(wait_until(quiet, timeout=30)[0])


@pytest.fixture
def nothing_appended(head: HeadProcess, client: MaClient):
    seq_before = _settled_last_seq(head, client)
    runs_before = len(client.list_runs(limit=1000))
    yield
    assert _settled_last_seq(head, client) == seq_before
    assert len(client.list_runs(limit=1000)) == runs_before


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["type"] and error["message"]
    return error


def test_cycle_rejected_by_sdk_and_api(client: MaClient, head: HeadProcess, nothing_appended) -> None:
    wf = client.create_workflow()
    a = wf.add_task(echo, inputs={"text": "a"})
    b = wf.add_task(echo, inputs={"text": a.outputs["text"]})
    with pytest.raises(ValidationError, match="cycle"):
        wf.add_edge(b, a)
    resp = _post(
        head,
        [
            {"task_id": "a", "inputs": {"text": {"ref": "b.output.text"}}},
            {"task_id": "b", "inputs": {"text": {"ref": "a.output.text"}}},
        ],
    )
    assert "cycle" in _error(resp, 400)["message"]


def test_unknown_task_reference(head: HeadProcess, nothing_appended) -> None:
    resp = _post(head, [{"task_id": "a", "inputs": {"text": {"ref": "ghost.output.text"}}}])
    assert "unknown task 'ghost'" in _error(resp, 400)["message"]


def test_unknown_output_key(client: MaClient, head: HeadProcess, nothing_appended) -> None:
    wf = client.create_workflow()
    a = wf.add_task(echo, inputs={"text": "a"})
    with pytest.raises(KeyError, match="no output 'nope'"):
        a.outputs["nope"]
    resp = _post(
        head,
        [
            {"task_id": "a", "inputs": {"text": {"value": "x"}}, "outputs": ["text"]},
            {"task_id": "b", "inputs": {"text": {"ref": "a.output.nope"}}},
        ],
    )
    assert "has no output 'nope'" in _error(resp, 400)["message"]


def test_missing_required_input(client: MaClient, head: HeadProcess, nothing_appended) -> None:
    wf = client.create_workflow()
    with pytest.raises(ValidationError, match=r"missing required input\(s\) \['text'\]"):
        wf.add_task(needs, inputs={})
    resp = _post(head, [{"task_id": "a", "inputs": {}, "required_inputs": ["text"]}])
    assert "missing required input" in _error(resp, 400)["message"]


def test_unserializable_function(client: MaClient, nothing_appended) -> None:
    lock = threading.Lock()

    @task
    def holds_lock(x: int = 0):
        with lock:
            return {"x": x}

    wf = client.create_workflow()
    with pytest.raises(SerializationError, match=r"holds_lock.*cannot be serialized"):
        wf.add_task(holds_lock, inputs={"x": 1})


def test_unserializable_input_value(client: MaClient, nothing_appended) -> None:
    wf = client.create_workflow()
    with pytest.raises(SerializationError, match=r"input 'text' of echo: a value of type _thread\.lock"):
        wf.add_task(echo, inputs={"text": threading.Lock()})  # object() travels now: cloudpickle


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"cpu": 1, "tpu": 1}, "unknown resource key"),
        ({"cpu": -1}, "must not be negative"),
        ({"gpu_mem": -5}, "must not be negative"),
        ({"cpu": "lots"}, "must be a finite number"),
    ],
)
def test_bad_resources(head: HeadProcess, resources: dict, message: str, nothing_appended) -> None:
    with pytest.raises(ValidationError, match=message):
        task(resources=resources)(lambda text="": {"text": text})
    resp = _post(head, [{"task_id": "a", "inputs": {"text": {"value": "x"}}, "resources": resources}])
    assert message in _error(resp, 400)["message"]


def test_resources_no_node_can_hold(client: MaClient, nothing_appended) -> None:
    @task(resources={"cpu": 64})
    def huge(x: int = 0):
        return {"x": x}

    wf = client.create_workflow()
    wf.add_task(huge, inputs={"x": 1})
    with pytest.raises(ResourceUnavailable, match="needs 64 CPUs, node has 4"):
        wf.run()


def test_malformed_bodies(head: HeadProcess, nothing_appended) -> None:
    assert (
        _error(
            httpx.post(
                f"{head.url}/runs", content=b"{not json", headers={"content-type": "application/json"}
            ),
            400,
        )["type"]
        == "validation_error"
    )
    assert "no tasks" in _error(_post(head, []), 400)["message"]
    resp = _post(head, [{"task_id": "a", "inputs": {}, "surprise": 1}])
    assert "surprise" in _error(resp, 400)["message"]
    resp = _post(head, [{"task_id": "a", "inputs": {"text": {"value": 1}}}, {"task_id": "a", "inputs": {}}])
    assert "duplicate task id" in _error(resp, 400)["message"]
    resp = _post(head, [{"task_id": "a", "func_hash": "0" * 64, "inputs": {}}])
    error = _error(resp, 400)
    assert error["type"] == "blob_missing" and "not in the blob store" in error["message"]
    assert error["details"]["missing"] == ["0" * 64]
    resp = _post(head, [{"task_id": "a", "func_hash": "not-a-hash", "inputs": {}}])
    assert "sha256 hex digest" in _error(resp, 400)["message"]
    resp = _post(head, [{"task_id": "a", "inputs": {"text": {"encoded": b"\xc1"}}}])
    assert "not a valid encoded value" in _error(resp, 400)["message"]
    for bad_run_id in ("run_a.b", "run_*", "run_>", "nope", "run_ x"):
        resp = _post(head, [{"task_id": "a", "inputs": {"text": {"value": "x"}}}], run_id=bad_run_id)
        assert "run_id" in _error(resp, 400)["message"], bad_run_id


def test_non_dict_return_is_a_structured_task_error(client: MaClient) -> None:
    wf = client.create_workflow()
    t = wf.add_task(not_a_dict, inputs={"text": "x"})
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "failed" and summary["exception_tasks"] == [t.task_id]
    task_row = client.get_run_task(run_id, t.task_id)
    assert task_row["state"] == "failed"
    assert task_row["error"]["error_type"] == "invalid_result"
    assert "returned list, expected a dict" in task_row["error"]["message"]
    assert [a["state"] for a in task_row["attempts"]] == ["failed"]


def test_unknown_run_is_404(client: MaClient, head: HeadProcess) -> None:
    assert _error(httpx.get(f"{head.url}/runs/run_nope"), 404)["type"] == "not_found"
    assert _error(httpx.get(f"{head.url}/runs/run_nope/tasks"), 404)["type"] == "not_found"
    assert _error(httpx.get(f"{head.url}/runs/run_nope/events"), 404)["type"] == "not_found"
    assert _error(httpx.get(f"{head.url}/runs?limit=0"), 400)["type"] == "validation_error"
    assert _error(httpx.get(f"{head.url}/runs?state=bogus"), 400)["type"] == "validation_error"
    wf = client.create_workflow()
    with pytest.raises(ValueError, match="not found"):
        wf.get_results("run_nope", verbose=False)


def test_resubmitting_a_run_id_is_idempotent_and_another_dag_under_it_conflicts(head: HeadProcess) -> None:
    body = [{"task_id": "a", "inputs": {"text": {"value": "once"}}}]
    first = _post(head, [dict(t) for t in body], run_id="run_idempotent_1")
    again = _post(head, [dict(t) for t in body], run_id="run_idempotent_1")
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    assert first.json()["seq"] == again.json()["seq"]
    other = _post(head, [{"task_id": "b", "inputs": {"text": {"value": "other"}}}], run_id="run_idempotent_1")
    assert "already exists" in _error(other, 409)["message"]
    events = httpx.get(f"{head.url}/runs/run_idempotent_1/events").json()["events"]
    assert sum(e["type"] == "run.created" for e in events) == 1
    assert [t["task_id"] for t in events[0]["tasks"]] == ["a"]


def test_references_gathered_in_lists_and_dicts_are_checked_like_any_reference(
    client: MaClient, head: HeadProcess, nothing_appended
) -> None:
    wf = client.create_workflow()
    first = wf.add_task(echo, inputs={"text": "a"})
    with pytest.raises(ValidationError, match=r"in a list or a dict, not in a tuple"):
        wf.add_task(echo, inputs={"text": (first.outputs["text"], "b")})
    other = client.create_workflow().add_task(echo, inputs={"text": "z"})
    with pytest.raises(ValidationError, match="not in this workflow"):
        wf.add_task(echo, inputs={"text": {"x": [other.outputs["text"]]}})
    gather = {"gather": [{"value": "x"}, {"gather": {"k": {"ref": "ghost.output.text"}}}]}
    resp = _post(head, [{"task_id": "a", "inputs": {"text": gather}}])
    assert "input 'text'[1]['k']: refers to unknown task 'ghost'" in _error(resp, 400)["message"]
    resp = _post(
        head,
        [
            {"task_id": "a", "inputs": {"text": {"value": "x"}}, "outputs": ["text"]},
            {"task_id": "b", "inputs": {"text": {"gather": [{"ref": "a.output.nope"}]}}},
        ],
    )
    assert "has no output 'nope'" in _error(resp, 400)["message"]
    resp = _post(
        head,
        [
            {"task_id": "a", "inputs": {"text": {"gather": [{"ref": "b.output.text"}]}}},
            {"task_id": "b", "inputs": {"text": {"gather": {"k": {"ref": "a.output.text"}}}}},
        ],
    )
    assert "cycle" in _error(resp, 400)["message"]
    resp = _post(head, [{"task_id": "a", "inputs": {"text": {"gather": "nope"}}}])
    assert "'gather' takes a list or a dict" in _error(resp, 400)["message"]
