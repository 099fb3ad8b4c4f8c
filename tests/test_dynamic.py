"""Dynamic runs against a real head (embedded NATS, its local worker): the README's example, appends
with references (edges), wait_for_task's result and error, refused appends that record nothing,
finalize / cancel / timeout, max_tasks, idempotent appends, the run history, and rebuilt read models."""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from maze import MaClient, task
from maze.core.errors import Conflict, ResourceUnavailable, TaskFailed, ValidationError
from maze.sdk.serialize import pickle_function
from tests.helpers import HeadProcess, wait_until


@task(resources={"cpu": 1, "cpu_mem": 128, "gpu": 0, "gpu_mem": 0})
def summarize(topic: str = ""):
    return {"summary": f"Maze can build workflows dynamically for {topic}."}


@task
def shout(text: str = ""):
    return {"text": text.upper()}


@task
def add(a: int = 0, b: int = 0):
    return {"sum": a + b}


@task
def broken(x: int = 0):
    raise ValueError(f"broken on purpose ({x})")


@task
def touch(path: str = "", seconds: float = 0.0):
    import time

    with open(path, "a") as out:
        out.write("ran\n")
    time.sleep(seconds)
    return {"path": path}


@task
def sleeper(seconds: float = 60.0):
    import time

    time.sleep(seconds)
    return {"slept": seconds}


@task(resources={"cpu": 64})
def too_big():
    return {}


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    proc = HeadProcess(tmp_path_factory.mktemp("dyn") / "head", extra=["--cpus", "2"])
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def client(head: HeadProcess) -> MaClient:
    return MaClient(head.url)


def _types(client: MaClient, run_id: str) -> collections.Counter[str]:
    return collections.Counter(e["type"] for e in client.get_run_events(run_id))


def test_readme_dynamic_example(head: HeadProcess, capsys: pytest.CaptureFixture[str]) -> None:
    # the README's "Dynamic runs" example, as written there (the head's URL aside)
    client = MaClient(head.url)
    run = client.create_dynamic_run(max_tasks=10, timeout_seconds=600)
    summary = run.append_task(summarize, inputs={"topic": "agent runtime"})
    loud = run.append_task(shout, inputs={"text": summary.outputs["summary"]})
    print(run.wait_for_task(loud))
    run.finalize({"status": "done"})
    print(run.status()["state"])

    out = capsys.readouterr().out
    assert "{'text': 'MAZE CAN BUILD WORKFLOWS DYNAMICALLY FOR AGENT RUNTIME.'}" in out
    assert out.strip().endswith("succeeded")
    snapshot = client.get_run(run.run_id)
    assert snapshot["kind"] == "dynamic" and snapshot["max_tasks"] == 10
    assert snapshot["task_count"] == 2 and snapshot["tasks_succeeded"] == 2
    assert snapshot["result_summary"]["result"] == {"status": "done"}
    tasks = client.get_run_tasks(run.run_id)
    assert [t["task_id"] for t in tasks] == [summary.task_id, loud.task_id]
    assert tasks[1]["upstream"] == [summary.task_id]
    assert _types(client, run.run_id)["task.appended"] == 2


def test_edges_wait_and_fan_in(client: MaClient, tmp_path: Path) -> None:
    run = client.create_dynamic_run(max_tasks=10, timeout_seconds=120)
    marker = tmp_path / "slow"
    slow = run.append_task(touch, inputs={"path": str(marker), "seconds": 1.0})
    one = run.append_task(add, inputs={"a": 1, "b": 2})
    # waits for `slow` without reading it, and reads `one`
    two = run.append_task(add, inputs={"a": one.outputs["sum"], "b": 10}, after=[slow])
    fan = run.append_task(add, inputs={"a": two.outputs["sum"], "b": one.outputs["sum"]})
    assert run.wait_for_task(fan) == {"sum": 16}
    rows = {t["task_id"]: t for t in client.get_run_tasks(run.run_id)}
    assert rows[two.task_id]["started_at_ms"] >= rows[slow.task_id]["finished_at_ms"]
    # a task appended after its upstream finished reads the kept result
    late = run.append_task(add, inputs={"a": one.outputs["sum"], "b": 100})
    assert run.wait_for_task(late) == {"sum": 103}
    # the run stays open while every task is done
    time.sleep(0.3)
    assert client.get_run(run.run_id)["state"] == "running"
    assert run.finalize(42)["state"] == "succeeded"


def test_wait_for_task_raises_the_structured_error_and_the_run_goes_on(client: MaClient) -> None:
    run = client.create_dynamic_run(max_tasks=10, timeout_seconds=120)
    bad = run.append_task(broken, inputs={"x": 7})
    with pytest.raises(TaskFailed) as caught:
        run.wait_for_task(bad, timeout=30)
    err = caught.value
    assert err.error_type == "user_code" and "broken on purpose (7)" in err.message
    assert err.exception_type == "ValueError" and "raise ValueError" in (err.traceback or "")
    assert err.task_id == bad.task_id and err.run_id == run.run_id
    # a task that reads the failed one can never run: said, not waited for
    child = run.append_task(shout, inputs={"text": bad.outputs["anything"]})
    with pytest.raises(TaskFailed) as upstream:
        run.wait_for_task(child, timeout=30)
    assert upstream.value.error_type == "upstream_failed"
    ok = run.append_task(add, inputs={"a": 1})
    assert run.wait_for_task(ok, timeout=30) == {"sum": 1}
    assert client.get_run(run.run_id)["state"] == "running"
    run.cancel()


def test_bad_appends_are_refused_and_record_nothing(client: MaClient, head: HeadProcess) -> None:
    run = client.create_dynamic_run(max_tasks=3, timeout_seconds=120)
    first = run.append_task(add, inputs={"a": 1})
    before = _types(client, run.run_id)["task.appended"]
    with pytest.raises(ValidationError, match="unknown task"):
        run.append_task(add, after=["task_nope"])
    with pytest.raises(ValidationError, match="unknown task"):
        run.append_task(add, inputs={"a": first.outputs["sum"]}, after=["task_missing"])
    # a reference to a task the run does not hold, sent over HTTP
    func_hash, code = pickle_function(add)
    body = {
        "tasks": [{"task_id": "t_x", "func_hash": func_hash, "inputs": {"a": {"ref": "t_nope.output.sum"}}}],
        "functions": {func_hash: code},
    }
    resp = httpx.post(
        f"{head.url}/runs/{run.run_id}/tasks",
        content=msgspec.msgpack.encode(body),
        headers={"content-type": "application/msgpack"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "validation_error", resp.text
    # a task that names itself in `after`
    body["tasks"][0]["inputs"] = {}
    body["tasks"][0]["after"] = ["t_x"]
    resp = httpx.post(
        f"{head.url}/runs/{run.run_id}/tasks",
        content=msgspec.msgpack.encode(body),
        headers={"content-type": "application/msgpack"},
    )
    assert resp.status_code == 400, resp.text
    with pytest.raises(ResourceUnavailable):
        run.append_task(too_big)
    assert _types(client, run.run_id)["task.appended"] == before
    assert client.get_run(run.run_id)["task_count"] == 1
    # max_tasks: 3 in all
    run.append_task(add, inputs={"a": 2})
    run.append_task(add, inputs={"a": 3})
    with pytest.raises(Conflict, match="max_tasks=3"):
        run.append_task(add, inputs={"a": 4})
    assert _types(client, run.run_id)["task.appended"] == before + 2
    run.finalize()
    with pytest.raises(Conflict):
        run.append_task(add, inputs={"a": 5})
    with pytest.raises(Conflict):
        run.finalize()
    assert client.get_run(run.run_id)["task_count"] == 3


def test_append_to_a_static_run_is_a_conflict(client: MaClient) -> None:
    wf = client.create_workflow()
    wf.add_task(add, inputs={"a": 1})
    run_id = wf.run()
    func_hash, code = pickle_function(add)
    with pytest.raises(Conflict):
        client.http.post(
            f"/runs/{run_id}/tasks",
            content=msgspec.msgpack.encode(
                {"tasks": [{"task_id": "t1", "func_hash": func_hash}], "functions": {func_hash: code}}
            ),
            headers={"content-type": "application/msgpack"},
        )


def test_timeout_without_finalize_ends_timed_out(client: MaClient) -> None:
    run = client.create_dynamic_run(max_tasks=5, timeout_seconds=2)
    done = run.append_task(add, inputs={"a": 1})
    assert run.wait_for_task(done) == {"sum": 1}
    final = client.wait_run(run.run_id, timeout=30)
    assert final["state"] == "timed_out" and final["error"]["error_type"] == "timeout"
    with pytest.raises(Conflict):
        run.append_task(add, inputs={"a": 2})


def test_cancel_kills_the_running_task(client: MaClient, tmp_path: Path) -> None:
    run = client.create_dynamic_run(max_tasks=5, timeout_seconds=120)
    long = run.append_task(sleeper, inputs={"seconds": 120.0})
    wait_until(lambda: client.get_run_task(run.run_id, long.task_id)["state"] == "running", timeout=30)
    assert run.cancel(reason="enough")["state"] == "cancelled"
    row = client.get_run_task(run.run_id, long.task_id)
    assert row["state"] == "cancelled"
    with pytest.raises(TaskFailed) as caught:
        run.wait_for_task(long, timeout=10)
    assert caught.value.error_type == "cancelled"
    assert client.get_run(run.run_id)["state"] == "cancelled"
    with pytest.raises(Conflict):
        run.append_task(add)


def test_finalize_stops_running_tasks(client: MaClient) -> None:
    run = client.create_dynamic_run(max_tasks=5)
    long = run.append_task(sleeper, inputs={"seconds": 120.0})
    wait_until(lambda: client.get_run_task(run.run_id, long.task_id)["state"] == "running", timeout=30)
    assert run.finalize({"answer": 1})["state"] == "succeeded"
    assert client.get_run_task(run.run_id, long.task_id)["state"] == "cancelled"
    assert client.get_run(run.run_id)["result_summary"]["result"] == {"answer": 1}


def test_append_sent_again_is_one_task(client: MaClient, tmp_path: Path) -> None:
    run = client.create_dynamic_run(max_tasks=5, timeout_seconds=120)
    counter = tmp_path / "count"
    t = run.append_task(touch, inputs={"path": str(counter)})
    body = {"tasks": [t.submission()], "functions": {}}
    again = client.http.post(
        f"/runs/{run.run_id}/tasks",
        content=msgspec.msgpack.encode(body),
        headers={"content-type": "application/msgpack"},
    )
    assert again["duplicate"] is True and again["task_count"] == 1
    run.wait_for_task(t)
    # the same task id with another definition is a conflict
    body["tasks"][0]["inputs"] = {"path": {"value": "elsewhere"}}
    with pytest.raises(Conflict, match="taken"):
        client.http.post(
            f"/runs/{run.run_id}/tasks",
            content=msgspec.msgpack.encode(body),
            headers={"content-type": "application/msgpack"},
        )
    run.finalize()
    assert counter.read_text() == "ran\n"
    assert client.get_run(run.run_id)["task_count"] == 1
    assert _types(client, run.run_id)["task.appended"] == 1


def test_history_lists_dynamic_runs_and_rebuild_is_equal(client: MaClient, head: HeadProcess) -> None:
    run = client.create_dynamic_run(max_tasks=5, timeout_seconds=120)
    t = run.append_task(add, inputs={"a": 5})
    run.wait_for_task(t)
    run.finalize({"ok": True})
    listed = client.list_runs(limit=100, kind="dynamic")
    assert run.run_id in {r["run_id"] for r in listed}
    assert {r["kind"] for r in listed} == {"dynamic"}
    shown = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "show", run.run_id, "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "dynamic" in shown.stdout and t.task_id[:8] in shown.stdout, shown
    before = (client.get_run(run.run_id), client.get_run_tasks(run.run_id))
    events = client.get_run_events(run.run_id)
    report = httpx.post(f"{head.url}/projections/rebuild", timeout=120).json()
    assert report["equal"] is True, report
    after = (client.get_run(run.run_id), client.get_run_tasks(run.run_id))
    assert after == before
    assert client.get_run_events(run.run_id) == events


def test_live_stream_follows_the_run_to_its_end(client: MaClient) -> None:
    run = client.create_dynamic_run(max_tasks=5, timeout_seconds=120)
    t = run.append_task(add, inputs={"a": 2, "b": 3})
    run.wait_for_task(t)
    run.finalize("done")
    types = [e["type"] for e in run.stream_events()]
    assert types[0] == "run.created" and types[-1] == "run.finished"
    assert "task.appended" in types and "attempt.succeeded" in types
    seq = run.get_events()[0]["seq"]
    assert [e["type"] for e in run.get_events(after=seq)] == types[1:]


@task
def slow_add(a: int = 0, seconds: float = 1.5):
    import time

    time.sleep(seconds)
    return {"sum": a + 1}


def test_head_restart_and_kill9_mid_run(tmp_path: Path) -> None:
    """A graceful restart (the run restored from the controller's snapshot), then a kill -9 with a
    task running and an append sent while the head is down: the run goes on and completes, each
    task succeeded exactly once."""
    from tests.helpers import wait_port_free

    head = HeadProcess(tmp_path / "head", extra=["--cpus", "2"])  # embedded NATS, fixed ports
    head.start()
    try:
        client = MaClient(head.url)
        run = client.create_dynamic_run(max_tasks=10, timeout_seconds=300)
        first = run.append_task(slow_add, inputs={"a": 1, "seconds": 0.1})
        assert run.wait_for_task(first) == {"sum": 2}
        head.stop()  # a snapshot at stop carries the open dynamic run
        head.start()
        second = run.append_task(slow_add, inputs={"a": first.outputs["sum"], "seconds": 3.0})
        wait_until(lambda: client.get_run_task(run.run_id, second.task_id)["state"] == "running", timeout=30)
        head.kill9()
        wait_port_free(head.port)
        wait_port_free(head.nats_port)
        # appended while the head is down: the SDK sends it again until the head answers
        import threading

        third: list[object] = []
        appender = threading.Thread(
            target=lambda: third.append(run.append_task(slow_add, inputs={"a": second.outputs["sum"]}))
        )
        appender.start()
        time.sleep(0.5)
        head.start()
        appender.join(timeout=90)
        assert third, "the append sent during the restart did not complete"
        last = third[0]
        assert run.wait_for_task(last, timeout=60) == {"sum": 4}  # type: ignore[arg-type]
        assert run.finalize({"done": True})["state"] == "succeeded"
        events = client.get_run_events(run.run_id)
        succeeded = collections.Counter(e["task_id"] for e in events if e["type"] == "attempt.succeeded")
        assert succeeded == {first.task_id: 1, second.task_id: 1, last.task_id: 1}, succeeded  # type: ignore[attr-defined]
        assert any(e["type"] == "attempt.lost" and e["task_id"] == second.task_id for e in events)
        assert sum(1 for e in events if e["type"] == "task.appended") == 3
        assert sum(1 for e in events if e["type"] == "run.finished") == 1
        snapshot = client.get_run(run.run_id)
        assert snapshot["state"] == "succeeded" and snapshot["task_count"] == 3
    finally:
        head.stop()


def test_the_same_append_sent_twice_at_once_is_one_task_and_two_successes(
    client: MaClient, head: HeadProcess
) -> None:
    """A client retrying an append while the first is still being handled: both are answered as
    taken (one 201, one 200 duplicate), one task.appended is recorded."""
    import threading

    import httpx
    import msgspec

    headers = {"content-type": "application/msgpack"}
    if client.http.token:
        headers["Authorization"] = f"Bearer {client.http.token}"
    for trial in range(4):
        run = client.create_dynamic_run(max_tasks=10, timeout_seconds=120)
        t = run._wf.add_task(add, inputs={"a": trial, "b": 1})
        body = msgspec.msgpack.encode(
            {"tasks": [t.submission()], "functions": {t.func_hash: run._wf.functions[t.func_hash]}}
        )
        codes: list[int] = [0, 0]

        def send(i: int, run_id: str = run.run_id, body: bytes = body, codes: list[int] = codes) -> None:
            codes[i] = httpx.post(
                f"{head.url}/runs/{run_id}/tasks", content=body, headers=headers, timeout=30
            ).status_code

        threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert sorted(codes) in ([200, 201], [201, 201]), (trial, codes)
        assert _types(client, run.run_id)["task.appended"] == 1
        run.cancel()


def test_a_ready_tasks_placement_travels_in_its_appends_message(client: MaClient) -> None:
    """One write per append: a task whose inputs are all there is placed in the message of its
    `task.appended` (the same stream sequence); one that reads a running task waits and is placed
    by the controller later, in a message of its own."""
    run = client.create_dynamic_run(max_tasks=5, timeout_seconds=120)
    first = run.append_task(add, inputs={"a": 1, "b": 2})
    run.wait_for_task(first)
    second = run.append_task(add, inputs={"a": first.outputs["sum"], "b": 1})
    slow = run.append_task(sleeper, inputs={"seconds": 0.5})
    waits = run.append_task(add, inputs={"a": slow.outputs["slept"], "b": 1})
    assert run.wait_for_task(second) == {"sum": 4} and run.wait_for_task(waits) == {"sum": 1.5}
    run.finalize("done")
    events = client.get_run_events(run.run_id)
    appended_at = [e["seq"] for e in events if e["type"] == "task.appended"]
    placed_at = {e["task_id"]: e["seq"] for e in events if e["type"] == "attempt.placed"}
    assert placed_at[first.task_id] == appended_at[0]
    assert placed_at[second.task_id] == appended_at[1]
    assert placed_at[slow.task_id] == appended_at[2]
    assert placed_at[waits.task_id] > appended_at[3], "placed once `slow` succeeded, not with its append"


def test_an_append_racing_a_finalize_never_runs_past_the_runs_end(client: MaClient, tmp_path: Path) -> None:
    """An append and a finalize sent at once, many times: whichever the log takes first, a task
    that was taken ends before (or with) the run, and one that ran was answered as taken."""
    import concurrent.futures

    for i in range(15):
        run = client.create_dynamic_run(max_tasks=5, timeout_seconds=120)
        marker = tmp_path / f"ran-{i}"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            appending = pool.submit(run.append_task, touch, {"path": str(marker), "seconds": 1.0})
            time.sleep(0.001 * (i % 4))
            finalizing = pool.submit(run.finalize, "done")
            try:
                appended = appending.result()
            except Conflict:
                appended = None
            finalizing.result()
        time.sleep(1.5)  # what a node reports late comes in meanwhile
        events = client.get_run_events(run.run_id)
        types = [e["type"] for e in events]
        end = types.index("run.finished")
        # a node may still report a start it made before it heard of the end, never a success
        assert "attempt.succeeded" not in types[end:], types
        if appended is None:
            assert "attempt.started" not in types, types
        assert client.get_run(run.run_id)["state"] in ("succeeded", "cancelled"), events
        tasks = client.get_run_tasks(run.run_id)
        assert all(t["state"] in ("succeeded", "cancelled") for t in tasks), tasks
