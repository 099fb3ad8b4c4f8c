"""Code written for the original Maze, as its docs write it (/work/shared/seeds), and what a new
user tries first, against a real head on a real nats-server."""

from __future__ import annotations

import contextlib
import http.server
import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from maze import MaClient, ValidationError, task
from maze.core.errors import NotAMazeHead, Unreachable
from tests.helpers import free_port, wait_until


@task(["text"], ["result"])
def process_text(params):
    text = params.get("text") or "nothing"
    return {"result": text.upper()}


@task(inputs=["a", "b"], outputs=["sum"])
def add_maybe(params):
    return {"sum": params["a"] + (params.get("b") or 0)}


@task
def first(n: int = 0):
    return {"done": n + 1}


@task
def waits_for_marker(marker: str = "", done: int = 0):
    import time
    from pathlib import Path

    deadline = time.monotonic() + 40
    while not Path(marker).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never let this task finish")
        time.sleep(0.01)
    return {"ok": done}


class _Printed(io.StringIO):
    """stdout as a thread prints it, readable while it does."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


def test_seed_style_tasks_positional_and_inputs_left_out(client: MaClient) -> None:
    workflow = client.create_workflow()
    t1 = workflow.add_task(process_text, inputs={"text": "hello"})
    t2 = workflow.add_task(process_text, inputs={})  # params.get("text"): may be left out
    t3 = workflow.add_task(add_maybe, inputs={"a": 2})
    result = workflow.show_results(workflow.run())
    assert result["workflow_completed"] and not result["has_exception"]
    assert result["task_results"] == {
        t1.task_id: {"result": "HELLO"},
        t2.task_id: {"result": "NOTHING"},
        t3.task_id: {"sum": 2},
    }


def _follow_in_thread(call, marker: Path) -> tuple[_Printed, list]:  # type: ignore[no-untyped-def]
    """Run `call` (which prints) in a thread; once the first task's end is printed, let the second
    task end. Were nothing printed before the run ended, the wait would time out."""
    printed = _Printed()
    answer: list = []

    def follow() -> None:
        with contextlib.redirect_stdout(printed):
            answer.append(call())

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        wait_until(lambda: "finish_task" in printed.text() or "Task completed" in printed.text(), 30)
    finally:
        marker.touch()
        thread.join(60)
    return printed, answer


def test_get_results_and_show_results_print_each_message_as_it_arrives(client: MaClient, tmp_path) -> None:
    for name, call in (
        ("get_results", lambda wf, run_id: wf.get_results(run_id, verbose=True)),
        ("show_results", lambda wf, run_id: wf.show_results(run_id)),
    ):
        marker = tmp_path / name
        wf = client.create_workflow()
        a = wf.add_task(first, inputs={"n": 1})
        wf.add_task(waits_for_marker, inputs={"marker": str(marker), "done": a.outputs["done"]})
        run_id = wf.run()
        printed, answer = _follow_in_thread(lambda wf=wf, run_id=run_id, call=call: call(wf, run_id), marker)
        assert answer, f"{name} did not return"
        text = printed.text()
        if name == "get_results":
            assert [m["type"] for m in answer[0]] == ["start_task", "finish_task"] * 2 + ["finish_workflow"]
            assert text.count("'type': 'finish_task'") == 2
        else:
            assert answer[0]["state"] == "succeeded" and run_id in text


@task(timeout_seconds=1, max_retries=1, retry_on=["timeout"])
def slow_the_first_time(marker: str = ""):
    import time
    from pathlib import Path

    path = Path(marker)
    if not path.exists():
        path.write_text("tried")
        time.sleep(30)  # killed at its timeout
    return {"attempts": 2}


def test_retry_on_timeout_as_the_seeds_write_it(client: MaClient, tmp_path) -> None:
    wf = client.create_workflow()
    t = wf.add_task(slow_the_first_time, inputs={"marker": str(tmp_path / "tried")})
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded" and summary["task_results"][t.task_id] == {"attempts": 2}
    attempts = client.get_run_task(run_id, t.task_id)["attempts"]
    assert [a["state"] for a in attempts] == ["timed_out", "succeeded"]
    created = next(e for e in client.get_run_events(run_id) if e["type"] == "run.created")
    assert created["tasks"][0]["retry"]["retry_on"] == ["timed_out"]  # recorded in one vocabulary


@task
def part(i: int = 0):
    return {"s": f"p{i}"}


@task
def odd_values(size: int = 0):
    return {"blob": bytes(range(256)) * (size // 256), "kinds": {1, 2}}


@task
def join_parts(parts: list | None = None):
    return {"joined": "+".join(parts or [])}


@task
def look_at(shape: dict | None = None):
    shape = shape or {}
    return {
        "named": shape["named"],
        "nested": shape["nested"],
        "lit": shape["lit"],
        "blob_len": len(shape["nested"][1]["blob"]),
        "kinds": sorted(shape["kinds"]),
    }


@task(inputs=["parts"], outputs=["n"])
def count_parts(params):
    return {"n": len(params["parts"])}


def test_fan_in_from_lists_and_dicts_of_outputs(client: MaClient) -> None:
    wf = client.create_workflow()
    ts = [wf.add_task(part, inputs={"i": i}) for i in range(5)]
    joined = wf.add_task(join_parts, inputs={"parts": [t.outputs["s"] for t in ts]})
    counted = wf.add_task(count_parts, inputs={"parts": [t.outputs["s"] for t in ts] + ["literal"]})
    big = wf.add_task(odd_values, inputs={"size": 300_000})  # above the inline limit: a blob
    shape = wf.add_task(
        look_at,
        inputs={
            "shape": {
                "named": {t.task_id[-4:]: t.outputs["s"] for t in ts[:2]},
                "nested": [ts[4].outputs["s"], {"blob": big.outputs["blob"]}, 7],
                "lit": "as is",
                "kinds": big.outputs["kinds"],  # a set: pickled, not plain data
            }
        },
    )
    assert shape.upstream() == {ts[0].task_id, ts[1].task_id, ts[4].task_id, big.task_id}
    assert [e for e in wf.get_graph_info()["edges"] if e[1] == joined.task_id] == sorted(
        [t.task_id, joined.task_id] for t in ts
    )
    run_id = wf.run()
    summary = wf.show_results(run_id)
    assert summary["state"] == "succeeded", summary
    results = summary["task_results"]
    assert results[joined.task_id] == {"joined": "p0+p1+p2+p3+p4"}
    assert results[counted.task_id] == {"n": 6}
    assert results[shape.task_id] == {
        "named": {ts[0].task_id[-4:]: "p0", ts[1].task_id[-4:]: "p1"},
        "nested": [
            "p4",
            {"blob": bytes(range(256)) * (300_000 // 256)},
            7,
        ],
        "lit": "as is",
        "blob_len": 300_000 // 256 * 256,
        "kinds": [1, 2],
    }
    # the run's record describes it: the gathered references, and the read model's inputs and edges
    created = next(e for e in client.get_run_events(run_id) if e["type"] == "run.created")
    recorded = next(t for t in created["tasks"] if t["task_id"] == joined.task_id)["inputs"]["parts"]
    assert recorded["type"] == "gather" and recorded["keys"] is None
    assert [i["task_id"] for i in recorded["items"]] == [t.task_id for t in ts]
    row = client.get_run_task(run_id, shape.task_id)
    assert row["inputs"]["shape"]["gather"]["lit"] == {"value": "as is"}
    assert row["inputs"]["shape"]["gather"]["nested"]["gather"][0] == {"ref": f"{ts[4].task_id}.output.s"}
    assert sorted(row["upstream"]) == sorted(shape.upstream())
    rebuilt = client.http.post("/projections/rebuild", timeout=60)
    assert rebuilt["equal"] is True, rebuilt  # the read models rebuilt from the log: the same


class _NotMaze(http.server.BaseHTTPRequestHandler):
    """Some other web server: 404 for every GET, 501 for every POST (the standard library's)."""

    def do_GET(self) -> None:
        self.send_error(404, "File not found")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotMaze)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maze", *args], capture_output=True, text=True, timeout=120)


def test_a_wrong_url_fails_at_once_with_one_clear_line(other_server: str) -> None:
    nothing = f"127.0.0.1:{free_port()}"  # nothing listens there
    client = MaClient(nothing)  # scheme-less HOST:PORT is taken as http://
    assert client.server_url == f"http://{nothing}"
    # Unreachable, not the Unavailable the retry loops catch: raised on the first refusal
    with pytest.raises(Unreachable, match="connection refused"):
        client.list_runs()
    wf = client.create_workflow()
    wf.add_task(first, inputs={"n": 1})
    with pytest.raises(Unreachable, match="connection refused"):
        wf.run()
    with pytest.raises(Unreachable, match="connection refused"):
        wf.get_results("run_x", verbose=False)
    with pytest.raises(ValidationError, match="expected http://HOST:PORT"):
        MaClient("ftp://somewhere")
    # another web server at that address is named as such
    other = MaClient(other_server)
    with pytest.raises(NotAMazeHead, match="HTTP 404 and is not a Maze head"):
        other.list_runs()
    wf = other.create_workflow()
    wf.add_task(first, inputs={"n": 1})
    with pytest.raises(NotAMazeHead, match="is not a Maze head"):
        wf.run()
    for url, said in ((nothing, "connection refused"), (other_server, "is not a Maze head")):
        out = _cli("runs", "list", "--server-url", url)
        assert out.returncode == 1, out
        lines = out.stdout.strip().splitlines()
        assert len(lines) == 1 and said in lines[0] and "Traceback" not in out.stderr, out


def test_every_answer_of_a_head_says_so_and_host_port_works(head, client: MaClient) -> None:  # type: ignore[no-untyped-def]
    import httpx

    for path in ("/runs", "/nope", "/runs/run_nope"):
        assert httpx.get(f"{head.url}{path}").headers["x-maze-head"], path
    bare = MaClient(f"127.0.0.1:{head.port}")
    wf = bare.create_workflow()
    t = wf.add_task(first, inputs={"n": 1})
    assert wf.show_results(wf.run())["task_results"][t.task_id] == {"done": 2}


@task
def boom(value: int = 0):
    raise RuntimeError(f"boom at {value}")


def _cli_at(columns: int, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "maze", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_cli_run_ids_whole_prefixes_everywhere_and_why_tasks_did_not_run(
    head, client: MaClient, capsys
) -> None:  # type: ignore[no-untyped-def]
    wf = client.create_workflow()
    a = wf.add_task(first, inputs={"n": 1})
    failing = wf.add_task(boom, inputs={"value": a.outputs["done"]})
    never = wf.add_task(first, inputs={"n": failing.outputs["done"]})
    run_id = wf.run()
    summary = wf.show_results(run_id)
    printed = capsys.readouterr().out
    assert summary["state"] == "failed" and summary["cancelled_tasks"] == [never.task_id]
    assert f"⊘ Task cancelled: first ({never.task_id[:13]})" in printed and run_id in printed
    url = ["--server-url", head.url]
    listed = _cli_at(70, "runs", "list", "--limit", "1000", *url)
    assert listed.returncode == 0 and run_id in listed.stdout, listed.stdout  # whole in a narrow terminal
    prefix = run_id[: len("run_") + 12]
    shown = _cli_at(300, "runs", "show", prefix, *url)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert run_id in shown.stdout and all(t.task_id in shown.stdout for t in (a, failing, never))
    assert shown.stdout.count("RuntimeError: boom at 2") == 1, shown.stdout  # the error once
    assert "[user_code] RuntimeError: boom at 2 (attempt 1 on " in shown.stdout
    assert f"[cancelled] not run: the run ended failed (task {failing.task_id} failed)" in shown.stdout
    for args in (("runs", "events", prefix[len("run_") :]), ("runs", "watch", prefix)):
        out = _cli_at(300, *args, *url)
        assert run_id in out.stdout, (args, out.stdout, out.stderr)  # (watch exits 1: the run failed)
    another = client.create_workflow()
    another.add_task(first, inputs={"n": 0})
    another.get_results(another.run(), verbose=False)
    ambiguous = _cli_at(300, "runs", "show", "run_", *url)  # the beginning of every run id
    assert ambiguous.returncode == 1 and "is the beginning of several run ids" in ambiguous.stdout
    none = _cli_at(300, "runs", "show", "run_zzzz", *url)
    assert none.returncode == 1 and "run 'run_zzzz' not found (no run id starts with it)" in none.stdout
    assert client.resolve_run_id(run_id) == run_id == client.resolve_run_id(prefix)


@task(resources={"cpu": 1})
def held(marker: str = "", i: int = 0):
    import time
    from pathlib import Path

    deadline = time.monotonic() + 60
    while not Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"i": i}


def test_cluster_queues_shows_queued_and_running_apart(head, client: MaClient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import httpx

    marker = tmp_path / "go"
    wf = client.create_workflow()
    for i in range(6):  # 4 CPUs: 4 run, 2 wait on the node for a free CPU
        wf.add_task(held, inputs={"marker": str(marker), "i": i})
    run_id = wf.run()
    cls = "cpu=1,cpu_mem=0,gpu=0,gpu_mem=0"
    try:

        def split() -> dict | None:
            counts = httpx.get(f"{head.url}/cluster/queues").json()["by_resource_class"].get(cls, {})
            return counts if (counts.get("running"), counts.get("queued")) == (4, 2) else None

        wait_until(split, timeout=60)
        out = _cli_at(200, "cluster", "queues", "--server-url", head.url)
        assert out.returncode == 0, out.stdout + out.stderr
        header = next(line for line in out.stdout.splitlines() if "resource class" in line)
        assert [c.strip() for c in header.strip("┃│ ").split("┃")][1:] == ["pending", "queued", "running"]
        row = next(line for line in out.stdout.splitlines() if cls in line)
        assert [c.strip() for c in row.strip("┃│ ").split("│")][1:] == ["0", "2", "4"], row
    finally:
        marker.touch()
    assert wf.show_results(run_id)["state"] == "succeeded"


def test_a_task_traceback_names_the_users_file_and_line(client: MaClient) -> None:
    wf = client.create_workflow()
    t = wf.add_task(boom, inputs={"value": 5})
    messages = wf.get_results(wf.run(), verbose=False)
    [failure] = [m["data"] for m in messages if m["type"] == "task_exception"]
    assert failure["task_id"] == t.task_id
    source = Path(__file__).read_text().splitlines()
    line = source.index('    raise RuntimeError(f"boom at {value}")') + 1
    assert f'File "{__file__}", line {line}, in boom' in failure["result"], failure["result"]
    assert 'raise RuntimeError(f"boom at {value}")' in failure["result"]  # the file is on this worker
    assert "<dynamic-code>" not in failure["result"]
