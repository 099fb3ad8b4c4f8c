"""The workflow builder's API (README "Workflow builder") against a real head with its local
worker on a real nats-server: workspace task files read without running them, saved workflows,
validation problems on nodes and edges, and graphs run as ordinary runs whose workspace tasks run
from their source on the worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from maze import MaClient
from maze.api.builder import SavedWorkflow
from maze.core.errors import NotFound, ValidationError
from tests.helpers import HeadProcess, wait_until
from tests.llm_server import ScriptedLLM, completion

TASKS_PY = '''"""My tasks."""
from maze import task


@task(inputs=["text"], outputs=["result"], data_types={"text": "str", "result": "str"})
def shout(params):
    """Upper-cases the text."""
    return {"result": params["text"].upper() + "!"}


@task(resources={"cpu": 1, "cpu_mem": 64}, timeout_seconds=30, data_types={"n": "int", "doubled": "int"})
def double(n: int, label: str = "x"):
    return {"doubled": n * 2, "label": label}


@task
def explode(reason: str = "no reason"):
    detail = f"exploded: {reason}"
    raise RuntimeError(detail)
'''


def _put_tasks(head: HeadProcess, workspace: str, file: str, source: str) -> httpx.Response:
    return httpx.put(
        f"{head.url}/workspaces/{workspace}/tasks/{file}",
        content=source.encode(),
        headers={"content-type": "text/x-python"},
        timeout=30,
    )


def _wait_run(client: MaClient, run_id: str) -> dict[str, Any]:
    wait_until(lambda: client.get_run(run_id)["state"] not in ("created", "running"), timeout=90)
    return client.get_run(run_id)


def _node(node_id: str, task: str, **given: Any) -> dict[str, Any]:
    return {"id": node_id, "task": task, **given}


def _edge(source: str, out: str, target: str, into: str) -> dict[str, Any]:
    return {"source": source, "source_handle": out, "target": target, "target_handle": into}


def test_a_task_file_is_read_without_running_it_and_listed(head: HeadProcess) -> None:
    resp = _put_tasks(head, "ws-parse", "my_tasks.py", TASKS_PY)
    assert resp.status_code == 201, resp.text
    tasks = {t["name"]: t for t in resp.json()["tasks"]}
    assert list(tasks) == ["shout", "double", "explode"]
    shout = tasks["shout"]
    assert shout["ref"] == "workspace:my_tasks.py:shout"
    assert shout["call_style"] == "params"
    assert shout["inputs"] == ["text"] and shout["required_inputs"] == ["text"]
    assert shout["outputs"] == ["result"]
    assert shout["data_types"] == {"text": "str", "result": "str"}
    assert shout["description"] == "Upper-cases the text."
    double = tasks["double"]
    assert double["call_style"] == "kwargs"
    assert double["inputs"] == ["n", "label"] and double["required_inputs"] == ["n"]
    assert double["defaults"] == {"label": "x"}
    assert double["outputs"] == ["doubled", "label"]  # read from its return statement
    assert double["resources"] == {"cpu": 1.0, "cpu_mem": 64, "gpu": 0.0, "gpu_mem": 0}
    assert double["timeout_seconds"] == 30.0
    assert double["line"] == 12 and double["file"] == "my_tasks.py"
    # replaced: 200; listed; its source for the editor
    assert _put_tasks(head, "ws-parse", "my_tasks.py", TASKS_PY).status_code == 200
    listed = httpx.get(f"{head.url}/workspaces/ws-parse/tasks").json()
    assert [f["file"] for f in listed] == ["my_tasks.py"]
    assert [t["name"] for t in listed[0]["tasks"]] == ["shout", "double", "explode"]
    assert listed[0]["error"] is None
    source = httpx.get(f"{head.url}/workspaces/ws-parse/tasks/my_tasks.py").json()
    assert source["source"] == TASKS_PY
    # a workspace without task files lists none
    assert httpx.get(f"{head.url}/workspaces/ws-none/tasks").json() == []


def test_the_head_never_runs_the_source(head: HeadProcess, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = f'from pathlib import Path\nPath({str(marker)!r}).write_text("ran")\n\n' + TASKS_PY
    assert _put_tasks(head, "ws-parse", "side_effect.py", source).status_code == 201
    assert httpx.get(f"{head.url}/workspaces/ws-parse/tasks").status_code == 200
    assert not marker.exists()


@pytest.mark.parametrize(
    ("source", "line", "column", "words"),
    [
        ("from maze import task\n\n@task\ndef f(x:\n    return {}\n", 4, None, "syntax error"),
        (
            "from maze import task\n\nINPUTS = ['a']\n\n@task(inputs=INPUTS)\ndef f(params):\n    return {}\n",
            5,
            14,
            "literal",
        ),
        (
            "from maze import task\n\n@task(resources={'cpu': -1})\ndef f():\n    return {}\n",
            3,
            2,
            "negative",
        ),
        (
            "from maze import task\n\n@task(data_types={'x': 'tensor'})\ndef f(x):\n    return {}\n",
            3,
            2,
            "tensor",
        ),
        ("from maze import task\n\n@task\ndef f(*args):\n    return {}\n", 4, 1, "*args"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_with_its_line_and_column(
    head: HeadProcess, source: str, line: int, column: int | None, words: str
) -> None:
    if column is None:  # a syntax error: where Python itself places it
        with pytest.raises(SyntaxError) as raised:
            compile(source, "bad.py", "exec")
        column = raised.value.offset
    resp = _put_tasks(head, "ws-bad", "bad.py", source)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "validation_error"
    assert error["details"]["line"] == line and error["details"]["column"] == column, error
    assert words in error["message"] and "bad.py" in error["message"]
    assert httpx.get(f"{head.url}/workspaces/ws-bad/tasks").json() == []  # nothing stored
    # the editor's check, without storing
    parsed = httpx.post(
        f"{head.url}/playground/tasks/parse", params={"file": "bad.py"}, content=source.encode()
    )
    assert parsed.status_code == 400 and parsed.json()["error"]["details"]["line"] == line


def test_parse_only_answers_the_tasks(head: HeadProcess) -> None:
    resp = httpx.post(f"{head.url}/playground/tasks/parse", content=TASKS_PY.encode())
    assert resp.status_code == 200, resp.text
    assert [t["ref"] for t in resp.json()["tasks"]] == [
        "workspace:tasks.py:shout",
        "workspace:tasks.py:double",
        "workspace:tasks.py:explode",
    ]


def test_the_catalog_lists_the_builtin_blocks(head: HeadProcess) -> None:
    catalog = httpx.get(f"{head.url}/playground/catalog").json()
    tasks = {t["ref"]: t for t in catalog["builtin_tasks"]}
    assert set(tasks) == {"builtin:read_file", "builtin:write_file", "builtin:exec_code"}
    assert tasks["builtin:write_file"]["inputs"] == ["path", "content"]
    assert tasks["builtin:write_file"]["outputs"] == ["path", "bytes"]
    assert tasks["builtin:read_file"]["required_inputs"] == ["path"]
    assert tasks["builtin:exec_code"]["resources"]["sandbox"] is True
    (react,) = catalog["builtin_workflows"]
    assert react["ref"] == "builtin:react" and "max_tokens" in react["inputs"]
    assert react["timeout_seconds"] == 120.0
    assert catalog["data_types"] == ["str", "int", "float", "bool", "list", "dict"]


def test_save_load_list_delete(head: HeadProcess) -> None:
    graph = {
        "nodes": [
            _node(
                "w",
                "builtin:write_file",
                inputs={"path": "a.txt", "content": "hi"},
                position={"x": 10, "y": 20},
            ),
            _node("r", "builtin:read_file"),
        ],
        "edges": [_edge("w", "path", "r", "path")],
    }
    put = httpx.put(f"{head.url}/workflows/copy-file", json={"graph": graph, "description": "copy"})
    assert put.status_code == 201, put.text
    saved = put.json()
    assert saved["name"] == "copy-file" and saved["graph"]["nodes"][0]["position"] == {"x": 10.0, "y": 20.0}
    assert httpx.put(f"{head.url}/workflows/copy-file", json={"graph": graph}).status_code == 200
    got = httpx.get(f"{head.url}/workflows/copy-file").json()
    assert got["graph"]["edges"] == [{**graph["edges"][0], "id": ""}]
    listed = httpx.get(f"{head.url}/workflows").json()
    assert {
        k: v for k, v in next(w for w in listed if w["name"] == "copy-file").items() if k != "saved_ms"
    } == {"name": "copy-file", "description": "", "nodes": 2, "edges": 1, "workspace": None}
    # the workspace it was built in is kept with it (and listed), a bad workspace name refused
    put = httpx.put(f"{head.url}/workflows/copy-file", json={"graph": graph, "workspace": "rude"})
    assert put.status_code == 200 and put.json()["workspace"] == "rude"
    assert httpx.get(f"{head.url}/workflows/copy-file").json()["workspace"] == "rude"
    listed = httpx.get(f"{head.url}/workflows").json()
    assert next(w for w in listed if w["name"] == "copy-file")["workspace"] == "rude"
    bad_ws = httpx.put(f"{head.url}/workflows/copy-file", json={"graph": graph, "workspace": "../x"})
    assert bad_ws.status_code == 400 and bad_ws.json()["error"]["type"] == "validation_error"
    deleted = httpx.delete(f"{head.url}/workflows/copy-file")
    assert deleted.status_code == 200 and deleted.json()["name"] == "copy-file"
    for resp in (
        httpx.get(f"{head.url}/workflows/copy-file"),
        httpx.delete(f"{head.url}/workflows/copy-file"),
    ):
        assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found"
    bad_name = httpx.put(f"{head.url}/workflows/-bad", json={"graph": graph})
    assert bad_name.status_code == 400
    too_big = {
        "nodes": [
            _node(f"n{i}", "builtin:read_file", label="x" * 200, inputs={"path": "p" * 1000})
            for i in range(400)
        ]
    }
    resp = httpx.put(f"{head.url}/workflows/big", json={"graph": too_big})
    assert resp.status_code == 413 and resp.json()["error"]["type"] == "payload_too_large"
    assert httpx.get(f"{head.url}/workflows/big").status_code == 404


def test_a_workflow_saved_before_workspaces_were_kept_loads_with_none() -> None:
    old = b'{"name":"old","description":"","graph":{"nodes":[],"edges":[]},"saved_ms":1}'
    assert msgspec.json.decode(old, type=SavedWorkflow).workspace is None


def _problems(
    head: HeadProcess, graph: dict[str, Any], workspace: str | None = "ws-parse"
) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"graph": graph}
    if workspace:
        body["workspace"] = workspace
    resp = httpx.post(f"{head.url}/workflows/validate", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["valid"] == (not answer["problems"])
    return [{k: v for k, v in p.items() if v not in (None, [])} for p in answer["problems"]]


def test_each_validation_problem_is_on_its_node_edge_and_handle(head: HeadProcess) -> None:
    assert _put_tasks(head, "ws-parse", "my_tasks.py", TASKS_PY).status_code in (200, 201)
    shout, double = "workspace:my_tasks.py:shout", "workspace:my_tasks.py:double"
    # a graph that can run
    ok = {
        "nodes": [
            _node("a", shout, inputs={"text": "hi"}),
            _node("b", "builtin:write_file", inputs={"path": "o.txt"}),
        ],
        "edges": [_edge("a", "result", "b", "content")],
    }
    assert _problems(head, ok) == []
    # a cycle, naming its nodes
    cycle = {
        "nodes": [_node("a", shout), _node("b", shout)],
        "edges": [_edge("a", "result", "b", "text"), _edge("b", "result", "a", "text")],
    }
    (problem,) = _problems(head, cycle)
    assert problem["code"] == "cycle" and set(problem["nodes"]) == {"a", "b"}
    # a required input neither wired nor given
    (problem,) = _problems(head, {"nodes": [_node("a", double)]})
    assert problem == {"code": "missing_input", "message": problem["message"], "node": "a", "handle": "n"}
    # an edge between incompatible data types: str -> int
    mismatch = {
        "nodes": [_node("a", shout, inputs={"text": "hi"}), _node("b", double)],
        "edges": [{**_edge("a", "result", "b", "n"), "id": "e1"}],
    }
    (problem,) = _problems(head, mismatch)
    assert problem["code"] == "type_mismatch" and problem["edge"] == 0 and problem["edge_id"] == "e1"
    assert problem["node"] == "b" and problem["handle"] == "n"
    # a literal of the wrong type
    (problem,) = _problems(head, {"nodes": [_node("a", double, inputs={"n": "two"})]})
    assert (problem["code"], problem["handle"]) == ("type_mismatch", "n")
    # unknown task, unknown handles, unknown node
    (problem,) = _problems(head, {"nodes": [_node("a", "workspace:my_tasks.py:nope")]})
    assert problem["code"] == "unknown_task" and problem["node"] == "a"
    (problem,) = _problems(head, {"nodes": [_node("a", shout)]}, workspace=None)  # no workspace: unknown
    assert problem["code"] == "unknown_task"
    handles = {
        "nodes": [
            _node("a", shout, inputs={"text": "hi", "colour": 1}),
            _node("b", "builtin:write_file", inputs={"path": "p"}),
        ],
        "edges": [_edge("a", "nothing", "b", "content"), _edge("a", "result", "zz", "content")],
    }
    found = {(p["code"], p.get("handle"), p.get("edge")) for p in _problems(head, handles)}
    assert found == {
        ("unknown_handle", "colour", None),
        ("unknown_handle", "nothing", 0),
        ("unknown_node", None, 1),
    }
    # resources no node can hold: the placer's own check (POST /runs's 422)
    (problem,) = _problems(
        head, {"nodes": [_node("a", shout, inputs={"text": "x"}, resources={"cpu": 1000})]}
    )
    assert (
        problem["code"] == "unplaceable"
        and problem["node"] == "a"
        and "no node can ever hold" in problem["message"]
    )
    (problem,) = _problems(head, {"nodes": [_node("a", shout, inputs={"text": "x"}, resources={"cpu": -1})]})
    assert problem["code"] == "bad_resources"
    # wired twice, wired and given a value
    twice = {
        "nodes": [
            _node("a", shout, inputs={"text": "x"}),
            _node("b", shout, inputs={"text": "y"}),
            _node("c", shout),
        ],
        "edges": [
            _edge("a", "result", "c", "text"),
            _edge("b", "result", "c", "text"),
            _edge("a", "result", "b", "text"),
        ],
    }
    codes = sorted(p["code"] for p in _problems(head, twice))
    assert codes == ["wired_and_set", "wired_twice"]
    # a ReAct node runs alone
    react = {
        "nodes": [
            _node("r", "builtin:react", inputs={"prompt": "p", "base_url": "http://x", "model": "m"}),
            _node("a", shout, inputs={"text": "x"}),
        ]
    }
    assert [p["code"] for p in _problems(head, react)] == ["react_not_alone"]
    assert [p["code"] for p in _problems(head, {"nodes": []})] == ["empty"]
    # a saved workflow by name; an unknown name is a 404
    httpx.put(f"{head.url}/workflows/cyclic", json={"graph": cycle}).raise_for_status()
    by_name = httpx.post(
        f"{head.url}/workflows/validate", json={"name": "cyclic", "workspace": "ws-parse"}
    ).json()
    assert [p["code"] for p in by_name["problems"]] == ["cycle"]
    assert httpx.post(f"{head.url}/workflows/validate", json={"name": "nope"}).status_code == 404
    both = httpx.post(f"{head.url}/workflows/validate", json={"name": "cyclic", "graph": cycle})
    assert both.status_code == 400


def test_a_graph_that_does_not_validate_is_refused_with_its_problems(
    head: HeadProcess, client: MaClient
) -> None:
    before = len(client.list_runs(limit=500))
    resp = httpx.post(
        f"{head.url}/workflows/run", json={"graph": {"nodes": [_node("a", "builtin:read_file")]}}, timeout=30
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert [p["code"] for p in error["details"]["problems"]] == ["missing_input"]
    big = {"nodes": [_node("a", "builtin:read_file", inputs={"path": "x"}, resources={"cpu": 1000})]}
    resp = httpx.post(f"{head.url}/workflows/run", json={"graph": big}, timeout=30)
    assert resp.status_code == 422 and resp.json()["error"]["type"] == "resource_unavailable"
    assert len(client.list_runs(limit=500)) == before  # nothing recorded


def test_a_workspace_task_then_write_file_then_read_file_runs(head: HeadProcess, client: MaClient) -> None:
    assert _put_tasks(head, "ws-run", "my_tasks.py", TASKS_PY).status_code == 201
    upload = httpx.put(f"{head.url}/workspaces/ws-run/files/notes/hello.txt", content=b"from the workspace")
    assert upload.status_code == 201
    graph = {
        "nodes": [
            _node("shout", "workspace:my_tasks.py:shout", inputs={"text": "hello maze"}, label="Shout"),
            _node("write", "builtin:write_file", inputs={"path": "out/shout.txt"}),
            _node("read", "builtin:read_file"),
            _node("seen", "builtin:read_file", inputs={"path": "notes/hello.txt"}),
        ],
        "edges": [_edge("shout", "result", "write", "content"), _edge("write", "path", "read", "path")],
    }
    httpx.put(f"{head.url}/workflows/shout-file", json={"graph": graph}).raise_for_status()
    resp = httpx.post(
        f"{head.url}/workflows/run", json={"name": "shout-file", "workspace": "ws-run"}, timeout=60
    )
    assert resp.status_code == 201, resp.text
    made = resp.json()
    assert made["kind"] == "static" and made["tasks"] == 4 and made["workflow_id"] == "shout-file"
    run = _wait_run(client, made["run_id"])
    assert run["state"] == "succeeded", run
    assert run["kind"] == "static"
    tasks = {t["task_id"]: t for t in client.get_run_tasks(made["run_id"])}
    assert set(tasks) == {"shout", "write", "read", "seen"}
    assert tasks["shout"]["name"] == "Shout"
    results = client.get_run(made["run_id"])
    assert results["state"] == "succeeded"
    detail = client.get_run_task(made["run_id"], "read")
    assert detail["result"]["content"] == "HELLO MAZE!"
    assert client.get_run_task(made["run_id"], "write")["result"] == {"path": "out/shout.txt", "bytes": 11}
    assert client.get_run_task(made["run_id"], "seen")["result"]["content"] == "from the workspace"
    # the task file itself is not staged for the run's tasks
    hidden = {
        "nodes": [_node("look", "builtin:read_file", inputs={"path": ".maze/tasks/my_tasks.py"})],
    }
    resp = httpx.post(f"{head.url}/workflows/run", json={"graph": hidden, "workspace": "ws-run"}, timeout=60)
    run = _wait_run(client, resp.json()["run_id"])
    assert run["state"] == "failed"
    # it is in the one run history
    assert made["run_id"] in {r["run_id"] for r in client.list_runs(limit=500)}


def test_a_failing_workspace_task_names_the_users_file_and_line(head: HeadProcess, client: MaClient) -> None:
    assert _put_tasks(head, "ws-fail", "my_tasks.py", TASKS_PY).status_code == 201
    graph = {"nodes": [_node("boom", "workspace:my_tasks.py:explode", inputs={"reason": "on purpose"})]}
    resp = httpx.post(f"{head.url}/workflows/run", json={"graph": graph, "workspace": "ws-fail"}, timeout=60)
    assert resp.status_code == 201, resp.text
    run = _wait_run(client, resp.json()["run_id"])
    assert run["state"] == "failed"
    error = client.get_run_task(resp.json()["run_id"], "boom")["error"]
    assert error["error_type"] == "user_code"
    assert error["message"] == "RuntimeError: exploded: on purpose"
    assert 'File "my_tasks.py", line 19, in explode' in error["traceback"], error["traceback"]
    assert "raise RuntimeError(detail)" in error["traceback"]  # the line itself, from the source


def test_a_react_node_becomes_a_react_run(head: HeadProcess, client: MaClient) -> None:
    """The ReAct template runs as a run of kind `react`: its Max Tokens reach the model, its one
    timeout is the Task Timeout, and its tools act on the named workspace's files."""
    httpx.put(
        f"{head.url}/workspaces/ws-agent/files/question.txt", content=b"What is six times seven?"
    ).raise_for_status()
    llm = ScriptedLLM().start()
    try:
        llm.load(
            completion(tool_calls=[("read_file", {"path": "question.txt"})]),
            completion("42"),
        )
        node = _node(
            "agent",
            "builtin:react",
            inputs={
                "prompt": "Answer the question in question.txt",
                "base_url": llm.base_url,
                "model": "scripted",
                "max_tokens": 77,
                "max_steps": 3,
                "tools": ["read_file", "write_file"],
            },
            timeout_seconds=45,
        )
        resp = httpx.post(
            f"{head.url}/workflows/run",
            json={"graph": {"nodes": [node]}, "workspace": "ws-agent"},
            timeout=60,
        )
        assert resp.status_code == 201, resp.text
        made = resp.json()
        assert made["kind"] == "react"
        run = _wait_run(client, made["run_id"])
        assert run["state"] == "succeeded", run
        assert run["kind"] == "react"
        trace = client.get_agent_trace(made["run_id"])
        assert trace["final"] == "42", trace
        sent = llm.requests[0].body
        assert sent["max_tokens"] == 77
        assert sorted(t["function"]["name"] for t in sent["tools"]) == ["read_file", "write_file"]
        observed = json.dumps(llm.requests[1].body["messages"])
        assert "What is six times seven?" in observed  # the tool read the workspace's file
        (created,) = [e for e in client.get_run_events(made["run_id"]) if e["type"] == "run.created"]
        agent = created["agent"]
        assert agent["task_timeout"] == 45.0 and agent["max_tokens"] == 77
        assert [t["name"] for t in agent["tools"]] == ["read_file", "write_file"]
    finally:
        llm.stop()


def test_the_sdk_saves_checks_and_runs_a_graph(client: MaClient) -> None:
    stored = client.put_workspace_tasks("ws-sdk", "sdk_tasks.py", TASKS_PY)
    assert [t["name"] for t in stored["tasks"]] == ["shout", "double", "explode"]
    assert [f["file"] for f in client.list_workspace_tasks("ws-sdk")] == ["sdk_tasks.py"]
    with pytest.raises(ValidationError) as raised:
        client.put_workspace_tasks("ws-sdk", "broken.py", "def f(:\n")
    assert raised.value.details["line"] == 1
    refs = {t["ref"] for t in client.get_builder_catalog()["builtin_tasks"]}
    assert "builtin:write_file" in refs
    graph = {
        "nodes": [
            _node("a", "workspace:sdk_tasks.py:double", inputs={"n": 21}),
            _node("b", "workspace:sdk_tasks.py:double"),
        ],
        "edges": [_edge("a", "doubled", "b", "n")],
    }
    client.save_workflow("sdk-double", graph, description="twice")
    assert client.get_workflow("sdk-double")["description"] == "twice"
    assert "sdk-double" in {w["name"] for w in client.list_workflows()}
    assert client.validate_workflow(name="sdk-double", workspace="ws-sdk") == {"valid": True, "problems": []}
    run_id = client.run_workflow_graph(name="sdk-double", workspace="ws-sdk")
    assert client.wait_run(run_id, timeout=60)["state"] == "succeeded"
    assert client.get_run_task(run_id, "b")["result"] == {"doubled": 84, "label": "x"}
    with pytest.raises(ValidationError) as raised:
        client.run_workflow_graph(
            {"nodes": [_node("a", "workspace:sdk_tasks.py:double")]}, workspace="ws-sdk"
        )
    assert [p["code"] for p in raised.value.details["problems"]] == ["missing_input"]
    client.delete_workflow("sdk-double")
    with pytest.raises(NotFound):
        client.get_workflow("sdk-double")
