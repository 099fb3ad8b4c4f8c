"""The README's examples, run against a real head on a real nats-server."""

from __future__ import annotations

from maze import MaClient, task


@task(resources={"cpu": 1, "cpu_mem": 128, "gpu": 0, "gpu_mem": 0})
def greet(text: str = ""):
    return {"result": f"Hello {text}"}


@task(resources={"cpu": 1, "cpu_mem": 128, "gpu": 0, "gpu_mem": 0})
def uppercase(result: str = ""):
    return {"upper": result.upper()}


@task(inputs=["text"], outputs=["result"])
def process_text(params):
    return {"result": params.get("text").upper()}


def test_quick_start_greet_uppercase(client: MaClient, capsys) -> None:
    workflow = client.create_workflow()
    greeting = workflow.add_task(greet, inputs={"text": "Maze"})
    upper = workflow.add_task(uppercase, inputs={"result": greeting.outputs["result"]})
    run_id = workflow.run()
    summary = workflow.show_results(run_id)
    assert summary["workflow_completed"] is True
    assert summary["has_exception"] is False
    assert summary["exception_tasks"] == []
    assert summary["task_results"][greeting.task_id] == {"result": "Hello Maze"}
    assert summary["task_results"][upper.task_id] == {"upper": "HELLO MAZE"}
    out = capsys.readouterr().out
    assert "Workflow execution completed" in out
    assert "HELLO MAZE" in out


def test_params_style_and_result_messages(client: MaClient) -> None:
    workflow = client.create_workflow()
    t1 = workflow.add_task(process_text, inputs={"text": "hello"})
    run_id = workflow.run()
    messages = workflow.get_results(run_id, verbose=False)
    kinds = [m["type"] for m in messages]
    assert kinds == ["start_task", "finish_task", "finish_workflow"]
    start = messages[0]["data"]
    assert start["workflow_id"] == workflow.workflow_id and start["task_id"] == t1.task_id
    assert start["node_ip"]
    assert messages[1]["data"]["result"] == {"result": "HELLO"}
    # cached: same messages, and the task lookup works from the cache
    assert workflow.get_results(run_id, verbose=False) == messages
    assert workflow.get_task_result(run_id, t1.task_id) == {"result": "HELLO"}
    assert workflow.get_task_result(run_id, "task_unknown") is None
    assert workflow.list_cached_runs() == [run_id]
    workflow.clear_cache(run_id)
    assert workflow.list_cached_runs() == []


def test_same_workflow_runs_twice_independently(client: MaClient) -> None:
    workflow = client.create_workflow()
    t = workflow.add_task(greet, inputs={"text": "again"})
    first, second = workflow.run(), workflow.run()
    assert first != second
    for run_id in (first, second):
        assert workflow.show_results(run_id)["task_results"][t.task_id] == {"result": "Hello again"}
    runs = {r["run_id"]: r for r in client.list_runs(limit=100)}
    assert runs[first]["state"] == runs[second]["state"] == "succeeded"
    assert runs[first]["workflow_id"] == workflow.workflow_id


def test_graph_views(client: MaClient, capsys) -> None:
    workflow = client.create_workflow()
    a = workflow.add_task(greet, inputs={"text": "x"})
    b = workflow.add_task(uppercase, inputs={"result": a.outputs["result"]}, task_name="Shout")
    assert workflow.get_tasks() == [{"id": a.task_id, "name": "greet"}, {"id": b.task_id, "name": "Shout"}]
    assert a.outputs["result"].to_reference_string() == f"{a.task_id}.output.result"
    assert a.outputs.keys() == ["result"]
    mermaid = workflow.get_graph_mermaid()
    assert mermaid.startswith("graph TD") and f"{a.task_id} --> {b.task_id}" in mermaid
    info = workflow.get_graph_info()
    assert info["edges"] == [[a.task_id, b.task_id]]
    assert info["stats"] == {"total_nodes": 2, "total_edges": 1, "max_depth": 2}
    assert info["nodes"][a.task_id]["resources"] == {"cpu": 1.0, "cpu_mem": 128, "gpu": 0.0, "gpu_mem": 0}
    assert info["nodes"][b.task_id]["inputs"] == ["result"] and info["nodes"][b.task_id]["outputs"] == [
        "upper"
    ]
    workflow.print_graph()
    assert "Workflow Structure Visualization" in capsys.readouterr().out


def test_edges_and_delete(client: MaClient) -> None:
    from maze import ValidationError

    workflow = client.create_workflow()
    a = workflow.add_task(greet, inputs={"text": "a"})
    b = workflow.add_task(greet, inputs={"text": "b"})
    c = workflow.add_task(uppercase, inputs={"result": a.outputs["result"]})
    workflow.add_edge(b, c)
    assert workflow.get_graph_info()["stats"]["total_edges"] == 2
    workflow.del_edge(b, c)
    assert workflow.get_graph_info()["edges"] == [[a.task_id, c.task_id]]
    try:
        workflow.del_edge(a, c)
        raise AssertionError("a data edge cannot be deleted")
    except ValidationError as exc:
        assert "carries data" in str(exc)
    try:
        a.delete()
        raise AssertionError("a task that feeds another cannot be deleted")
    except ValidationError as exc:
        assert "feeds" in str(exc)
    b.delete()
    assert [t["id"] for t in workflow.get_tasks()] == [a.task_id, c.task_id]
    summary = workflow.show_results(workflow.run())
    assert summary["task_results"][c.task_id] == {"upper": "HELLO A"}
