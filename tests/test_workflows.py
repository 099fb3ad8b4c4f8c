"""DAG shapes: diamond, 500-task fan-out/fan-in, failure in a chain, real process parallelism."""

from __future__ import annotations

import os
import time

from maze import MaClient, task


@task
def source(n: int = 0):
    return {"value": n}


@task
def add(a: int = 0, b: int = 0):
    return {"value": a + b}


@task
def double(value: int = 0):
    return {"value": value * 2}


@task
def total(values: list | None = None, **parts):
    return {"value": sum(parts.values())}


@task
def boom(value: int = 0):
    raise RuntimeError(f"boom at {value}")


@task
def sleeper(seconds: float = 0.5):
    started = time.time()
    time.sleep(seconds)
    return {"pid": os.getpid(), "start": started, "end": time.time()}


def test_diamond(client: MaClient) -> None:
    wf = client.create_workflow()
    top = wf.add_task(source, inputs={"n": 3})
    left = wf.add_task(double, inputs={"value": top.outputs["value"]})
    right = wf.add_task(double, inputs={"value": top.outputs["value"]})
    bottom = wf.add_task(add, inputs={"a": left.outputs["value"], "b": right.outputs["value"]})
    summary = wf.show_results(wf.run())
    assert summary["state"] == "succeeded"
    assert summary["task_results"][bottom.task_id] == {"value": 12}


def test_fan_out_fan_in_500(client: MaClient) -> None:
    wf = client.create_workflow()
    leaves = [wf.add_task(source, inputs={"n": i}) for i in range(500)]
    join = wf.add_task(total, inputs={f"p{i}": leaf.outputs["value"] for i, leaf in enumerate(leaves)})
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded"
    assert summary["task_results"][join.task_id] == {"value": sum(range(500))}
    run = client.get_run(run_id)
    assert run["task_count"] == 501 and run["tasks_succeeded"] == 501
    assert run["progress"] == {"succeeded": 501}


def test_exception_in_middle_of_chain(client: MaClient) -> None:
    wf = client.create_workflow()
    first = wf.add_task(source, inputs={"n": 1})
    middle = wf.add_task(boom, inputs={"value": first.outputs["value"]})
    last = wf.add_task(double, inputs={"value": middle.outputs["value"]})
    run_id = wf.run()
    messages = wf.get_results(run_id, verbose=False)
    assert [m["type"] for m in messages] == [
        "start_task",
        "finish_task",
        "start_task",
        "task_exception",
        "finish_workflow",
    ]
    exc = messages[3]["data"]
    assert exc["task_id"] == middle.task_id
    assert "Traceback" in exc["result"] and "RuntimeError: boom at 1" in exc["result"]
    error = exc["error"]
    assert error["error_type"] == "user_code" and error["exception_type"] == "RuntimeError"
    assert error["message"] == "RuntimeError: boom at 1"
    assert error["attempt"] == 1 and error["node_id"] and error["node_ip"] and error["origin"] == "task"
    assert messages[4]["data"]["state"] == "failed"
    run = client.get_run(run_id)
    assert run["state"] == "failed" and run["failed_task_id"] == middle.task_id
    tasks = {t["task_id"]: t for t in client.get_run_tasks(run_id)}
    assert tasks[first.task_id]["state"] == "succeeded"
    assert tasks[middle.task_id]["state"] == "failed"
    assert tasks[last.task_id]["state"] == "cancelled"
    assert tasks[last.task_id]["started_at_ms"] is None
    # placed as the middle task's follower (maze/head/followers.py), recorded lost when the run
    # failed, and never started
    assert [
        (e["type"], e["attempt"]) for e in client.get_run_events(run_id) if e.get("task_id") == last.task_id
    ] == [("attempt.placed", 1), ("attempt.lost", 1)]


def test_independent_tasks_run_at_the_same_time_in_separate_processes(client: MaClient) -> None:
    wf = client.create_workflow()
    tasks = [wf.add_task(sleeper, inputs={"seconds": 1.0}) for _ in range(3)]
    summary = wf.show_results(wf.run())
    spans = [summary["task_results"][t.task_id] for t in tasks]
    assert len({s["pid"] for s in spans}) == 3
    assert os.getpid() not in {s["pid"] for s in spans}
    latest_start = max(s["start"] for s in spans)
    earliest_end = min(s["end"] for s in spans)
    assert latest_start < earliest_end, f"tasks did not overlap: {spans}"


@task(timeout_seconds=1)
def too_slow(seconds: float = 30):
    time.sleep(seconds)
    return {"done": True}


def test_timeout_kills_the_attempt(client: MaClient) -> None:
    wf = client.create_workflow()
    t = wf.add_task(too_slow, inputs={"seconds": 30})
    started = time.monotonic()
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert time.monotonic() - started < 20, "the attempt should be killed at its timeout"
    assert summary["state"] == "failed" and summary["exception_tasks"] == [t.task_id]
    detail = client.get_run_task(run_id, t.task_id)
    assert detail["state"] == "timed_out"
    assert detail["error"]["error_type"] == "timed_out" and "timeout of 1" in detail["error"]["message"]


@task(max_retries=2, retry_backoff_seconds=0.05)
def fails_twice(marker: str = ""):
    from pathlib import Path

    path = Path(marker)
    count = int(path.read_text()) if path.exists() else 0
    path.write_text(str(count + 1))
    if count < 2:
        raise OSError(f"transient failure {count + 1}")
    return {"attempts": count + 1}


def test_retries_until_success(client: MaClient, tmp_path) -> None:
    wf = client.create_workflow()
    t = wf.add_task(fails_twice, inputs={"marker": str(tmp_path / "count")})
    run_id = wf.run()
    messages = wf.get_results(run_id, verbose=False)
    assert [m["type"] for m in messages].count("task_retry") == 2
    assert messages[-2]["type"] == "finish_task" and messages[-2]["data"]["result"] == {"attempts": 3}
    attempts = client.get_run_task(run_id, t.task_id)["attempts"]
    assert [a["state"] for a in attempts] == ["failed", "failed", "succeeded"]
    assert attempts[0]["error"]["error_type"] == "user_code"
