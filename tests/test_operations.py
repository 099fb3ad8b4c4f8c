"""Run operations against a real head (embedded NATS, its local worker): cancel a run with running
and queued tasks (a running task's own child process dies too), cancel during a retry wait, a
run-level timeout, and retries, whole or of the failed tasks only."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from maze import MaClient, task
from maze.core.errors import Conflict, ValidationError
from tests.helpers import HeadProcess, wait_until


@task
def spawn_and_wait(pid_file: str = "", seconds: float = 60.0):
    import subprocess
    import time

    child = subprocess.Popen(["sleep", str(seconds)])  # a process of the task's own
    escaped = subprocess.Popen(["sleep", str(seconds)], start_new_session=True)  # a session of its own
    # a daemon: its parent (sh) exits at once, leaving it orphaned, in a session of its own
    daemon = subprocess.run(
        ["sh", "-c", f"sleep {seconds} >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        start_new_session=True,
        check=True,
    )
    with open(pid_file, "w") as out:
        out.write(f"{child.pid} {escaped.pid} {daemon.stdout.strip()}")
    time.sleep(seconds)
    return {"done": True}


@task
def sleeper(seconds: float = 60.0):
    import time

    time.sleep(seconds)
    return {"slept": seconds}


@task(max_retries=3, retry_backoff_seconds=60.0)
def always_fails(x: int = 0):
    raise ValueError(f"failing on purpose ({x})")


@task
def count_and_pass(counter: str = "", value: int = 0):
    with open(counter, "a") as out:
        out.write("ran\n")
    return {"value": value}


@task
def fails_until(flag: str = "", value: int = 0):
    import os

    if not os.path.exists(flag):
        raise RuntimeError("not yet")
    return {"value": value + 1}


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    proc = HeadProcess(tmp_path_factory.mktemp("ops") / "head", extra=["--cpus", "2"])
    proc.start()
    yield proc
    proc.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes (its parent may not have reaped it yet)
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def _every_attempt_ended(client: MaClient, run_id: str) -> None:
    events = client.get_run_events(run_id)
    placed = {(e["task_id"], e["attempt"]) for e in events if e["type"] == "attempt.placed"}
    ends = ("attempt.succeeded", "attempt.failed", "attempt.rejected", "attempt.lost")
    ended = collections.Counter((e["task_id"], e["attempt"]) for e in events if e["type"] in ends)
    assert placed and all(ended[a] >= 1 for a in placed), (placed, ended)


def test_cancel_withdraws_queued_work_and_kills_running_tasks_with_their_children(
    head: HeadProcess, tmp_path: Path
) -> None:
    client = MaClient(head.url)
    wf = client.create_workflow()
    pid_file = tmp_path / "child.pid"
    wf.add_task(spawn_and_wait, inputs={"pid_file": str(pid_file), "seconds": 120.0})
    wf.add_task(sleeper, inputs={"seconds": 120.0})
    queued = [wf.add_task(sleeper, inputs={"seconds": 120.0}) for _ in range(2)]  # 2 CPUs: these wait
    run_id = wf.run()
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=30)
    children = [int(p) for p in pid_file.read_text().split()]
    assert len(children) == 3 and all(_alive(c) for c in children)
    wait_until(lambda: client.get_run(run_id)["progress"].get("running", 0) == 2, timeout=30)

    answer = client.cancel_run(run_id, reason="no longer needed")
    assert answer["state"] == "cancelled", answer
    # the task's own child, one in a session of its own and an orphaned daemon went with it
    wait_until(lambda: not any(_alive(c) for c in children), timeout=5)
    run = client.get_run(run_id)
    assert run["state"] == "cancelled" and "no longer needed" in run["error"]["message"]
    states = {t["task_id"]: t["state"] for t in client.get_run_tasks(run_id)}
    assert set(states.values()) == {"cancelled"}, states
    assert all(states[q.task_id] == "cancelled" for q in queued)
    _every_attempt_ended(client, run_id)
    with pytest.raises(Conflict, match="already ended cancelled"):
        client.cancel_run(run_id)
    # nothing leaked: the node's two CPUs take two tasks at once again
    again = client.create_workflow()
    for _ in range(2):
        again.add_task(sleeper, inputs={"seconds": 0.5})
    assert again.show_results(again.run())["state"] == "succeeded"
    resources = client.http.get("/cluster/resources")
    for node in resources["nodes"]:
        assert node["cpu"]["committed"] == 0, node


def test_cancel_during_a_retry_wait_and_a_finished_run_is_a_conflict(head: HeadProcess) -> None:
    client = MaClient(head.url)
    wf = client.create_workflow()
    failing = wf.add_task(always_fails, inputs={"x": 1})
    run_id = wf.run()
    wait_until(lambda: client.get_run_task(run_id, failing.task_id)["state"] == "retry_wait", timeout=30)
    assert client.cancel_run(run_id)["state"] == "cancelled"
    task_row = client.get_run_task(run_id, failing.task_id)
    assert task_row["state"] == "cancelled"
    done = client.create_workflow()
    done.add_task(sleeper, inputs={"seconds": 0.0})
    finished = done.run()
    assert done.show_results(finished)["state"] == "succeeded"
    with pytest.raises(Conflict, match="already ended succeeded"):
        client.cancel_run(finished)


def test_a_run_past_its_timeout_ends_timed_out_and_its_tasks_are_killed(
    head: HeadProcess, tmp_path: Path
) -> None:
    client = MaClient(head.url)
    wf = client.create_workflow()
    pid_file = tmp_path / "child.pid"
    wf.add_task(spawn_and_wait, inputs={"pid_file": str(pid_file), "seconds": 120.0})
    run_id = wf.run(timeout_seconds=2.0)
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=30)
    children = [int(p) for p in pid_file.read_text().split()]
    wait_until(lambda: client.get_run(run_id)["state"] == "timed_out", timeout=20)
    run = client.get_run(run_id)
    assert run["error"]["error_type"] == "timeout" and "2s" in run["error"]["message"]
    assert run["timeout_seconds"] == 2.0
    wait_until(lambda: not any(_alive(c) for c in children), timeout=5)
    _every_attempt_ended(client, run_id)
    with pytest.raises(ValidationError, match="timeout_seconds"):
        wf.run(timeout_seconds=-1)


def test_retry_runs_the_same_definition_again_and_failed_only_keeps_what_succeeded(
    head: HeadProcess, tmp_path: Path
) -> None:
    client = MaClient(head.url)
    counter, flag = tmp_path / "counter", tmp_path / "flag"
    wf = client.create_workflow()
    first = wf.add_task(count_and_pass, inputs={"counter": str(counter), "value": 41})
    second = wf.add_task(fails_until, inputs={"flag": str(flag), "value": first.outputs["value"]})
    run_id = wf.run()
    assert wf.show_results(run_id)["state"] == "failed"
    assert counter.read_text().count("ran") == 1
    with pytest.raises(Conflict, match="has not ended"):
        running = client.create_workflow()
        running.add_task(sleeper, inputs={"seconds": 30.0})
        live = running.run()
        try:
            client.retry_run(live)
        finally:
            client.cancel_run(live)
    with pytest.raises(ValidationError, match="workspace_dir"):
        client.retry_run(run_id, workspace_dir="/tmp/somewhere")

    flag.write_text("go")
    retried = client.retry_run(run_id, failed_only=True)
    new_id = retried["run_id"]
    assert retried["retry_of"] == run_id and retried["carried"] == 1 and retried["tasks"] == 2
    assert wf.show_results(new_id)["state"] == "succeeded"
    assert counter.read_text().count("ran") == 1, "the task that had succeeded did not run again"
    assert wf.get_task_result(new_id, second.task_id)["value"] == 42  # from the carried result
    tasks = {t["task_id"]: t for t in client.get_run_tasks(new_id)}
    assert tasks[first.task_id]["state"] == "succeeded" and tasks[first.task_id]["attempt"] == 0
    assert client.get_run(new_id)["retry_of"] == run_id
    assert client.get_run(run_id)["retried_by"] == [new_id]

    whole = client.retry_run(run_id)  # everything again, from the CLI's side as well
    assert whole["carried"] == 0
    assert wf.show_results(whole["run_id"])["state"] == "succeeded"
    assert counter.read_text().count("ran") == 2
    assert client.get_run(run_id)["retried_by"] == [new_id, whole["run_id"]]
    out = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "retry", run_id, "--failed-only", "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and f"retries {run_id}" in out.stdout, out.stdout + out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "cancel", run_id, "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "already ended failed" in out.stdout, out.stdout + out.stderr


def test_the_read_models_rebuild_equal_after_cancels_timeouts_and_retries(head: HeadProcess) -> None:
    """Every run above (cancelled, cancelled in a retry wait, timed out, retried whole and failed
    only) folds again from the log into the read models the head holds (DESIGN §6.3)."""
    client = MaClient(head.url)
    kinds = {r["state"] for r in client.list_runs(limit=100)}
    assert {"cancelled", "timed_out", "succeeded", "failed"} <= kinds, kinds
    report = client.http.post("/projections/rebuild")
    assert report["equal"], report


@task
def leaves_processes(pid_file: str = ""):
    import subprocess

    child = subprocess.Popen(["sleep", "300"])  # left running when the task returns
    daemon = subprocess.run(  # orphaned at once, in a session of its own
        ["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        start_new_session=True,
        check=True,
    )
    with open(pid_file, "w") as out:
        out.write(f"{child.pid} {daemon.stdout.strip()}")
    return {"ok": True}


def test_what_a_succeeded_attempt_left_running_is_killed(
    client: MaClient, head: HeadProcess, tmp_path: Path
) -> None:
    """An attempt that returned leaves nothing running that no reservation counts: its task
    process (the subreaper of what its tasks start) kills what is left before the next attempt."""
    pid_file = tmp_path / "pids"
    wf = client.create_workflow()
    wf.add_task(leaves_processes, inputs={"pid_file": str(pid_file)})
    assert wf.show_results(wf.run())["state"] == "succeeded"
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2
    wait_until(lambda: not any(_alive(p) for p in pids), timeout=10)
