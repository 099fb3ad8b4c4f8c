"""HTTP surface: events after a sequence, the live SSE stream, OpenAPI, projection rebuild."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx

from maze import MaClient, task
from maze.sdk.http import OPEN_STREAMS_KEPT
from maze.sdk.messages import events_to_messages
from maze.sdk.stream import OpenedRun
from tests.helpers import HeadProcess


@task
def inc(x: int = 0):
    return {"x": x + 1}


@task
def fails(x: int = 0):
    raise ValueError("nope")


def _run_chain(client: MaClient, n: int = 3) -> tuple[str, list]:
    wf = client.create_workflow()
    tasks = [wf.add_task(inc, inputs={"x": 0})]
    for _ in range(n - 1):
        tasks.append(wf.add_task(inc, inputs={"x": tasks[-1].outputs["x"]}))
    run_id = wf.run()
    assert wf.show_results(run_id)["state"] == "succeeded"
    return run_id, tasks


def test_events_after_sequence(client: MaClient) -> None:
    run_id, tasks = _run_chain(client)
    events = client.get_run_events(run_id)
    assert events[0]["type"] == "run.created" and len(events[0]["tasks"]) == 3
    assert events[-1]["type"] == "run.finished" and events[-1]["state"] == "succeeded"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    per_task = [e["type"] for e in events if e.get("task_id") == tasks[1].task_id]
    assert per_task == ["attempt.placed", "attempt.started", "attempt.succeeded"]
    middle = seqs[len(seqs) // 2]
    later = client.get_run_events(run_id, after=middle)
    assert later == [e for e in events if e["seq"] > middle]
    assert client.get_run_events(run_id, after=seqs[-1]) == []


@task
def naps_then_inc(x: int = 0):
    import time

    time.sleep(0.1)
    return {"x": x + 1}


def test_sse_stream_replays_and_resumes(client: MaClient, head: HeadProcess) -> None:
    # tasks that outlast the run's first message (a chain of no-ops may all start and end inside
    # it: README, early start): the run's history is several messages, to resume between
    wf = client.create_workflow()
    first = wf.add_task(naps_then_inc, inputs={"x": 0})
    wf.add_task(naps_then_inc, inputs={"x": first.outputs["x"]})
    run_id = wf.run()
    assert wf.show_results(run_id)["state"] == "succeeded"
    all_events = client.get_run_events(run_id)
    with httpx.stream("GET", f"{head.url}/runs/{run_id}/stream", timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = "".join(resp.iter_text())
    ids = [int(line[3:].strip()) for line in text.splitlines() if line.startswith("id:")]
    assert ids == sorted({e["seq"] for e in all_events})
    resume_from = ids[1]
    with httpx.stream(
        "GET", f"{head.url}/runs/{run_id}/stream", headers={"Last-Event-ID": str(resume_from)}, timeout=10
    ) as resp:
        text = "".join(resp.iter_text())
    resumed = [int(line[3:].strip()) for line in text.splitlines() if line.startswith("id:")]
    assert resumed == [i for i in ids if i > resume_from]
    assert "event: end" in text


@task
def dozes(x: int = 0):
    import time

    time.sleep(1.5)
    return {"x": x}


def _sse_frames(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    frame: dict[str, str] = {}
    for line in lines:
        if not line:
            if frame:
                yield frame
            frame = {}
            continue
        key, _, value = line.partition(":")
        frame[key] = value.strip()


def test_a_stream_dropped_mid_run_resumes_with_last_event_id(client: MaClient, head: HeadProcess) -> None:
    """What a browser's EventSource does (Playground, issue 17 item 8): the connection drops
    while the run goes on, it reconnects with the last `id` it read, and gets exactly the events
    it missed: none lost, none twice."""
    wf = client.create_workflow()
    first = wf.add_task(inc, inputs={"x": 0})
    slow = wf.add_task(dozes, inputs={"x": first.outputs["x"]})
    wf.add_task(inc, inputs={"x": slow.outputs["x"]})
    run_id = wf.run()
    url = f"{head.url}/runs/{run_id}/stream"
    before: list[dict] = []
    last_id = ""
    with httpx.stream("GET", url, timeout=30) as resp:
        for frame in _sse_frames(resp.iter_lines()):
            assert frame["event"] == "events", frame
            before += json.loads(frame["data"])
            last_id = frame["id"]
            if any(e["type"] == "attempt.started" and e.get("task_id") == slow.task_id for e in before):
                break  # the connection closes here, mid-run
    assert before and not any(e["type"] == "run.finished" for e in before)
    after: list[dict] = []
    ended = False
    with httpx.stream("GET", url, headers={"Last-Event-ID": last_id}, timeout=30) as resp:
        for frame in _sse_frames(resp.iter_lines()):
            if frame["event"] == "end":
                ended = True
                break
            assert int(frame["id"]) > int(last_id)
            after += json.loads(frame["data"])
    assert ended and after[-1]["type"] == "run.finished" and after[-1]["state"] == "succeeded"
    logged = client.get_run_events(run_id)
    assert [(e["seq"], e["type"]) for e in before + after] == [(e["seq"], e["type"]) for e in logged]


def test_task_detail_and_attempts(client: MaClient) -> None:
    run_id, tasks = _run_chain(client, 2)
    detail = client.get_run_task(run_id, tasks[1].task_id)
    assert detail["state"] == "succeeded" and detail["result"] == {"x": 2}
    assert detail["inputs"] == {"x": {"ref": f"{tasks[0].task_id}.output.x"}}
    assert detail["upstream"] == [tasks[0].task_id]
    (attempt,) = detail["attempts"]
    assert attempt["state"] == "succeeded" and attempt["node_id"] and attempt["pid"] > 0
    # the second task of a chain follows the first on its node (maze/head/followers.py)
    assert attempt["reason"].startswith(f"follows {tasks[0].task_id} (attempt 1) on its node")
    (first,) = client.get_run_task(run_id, tasks[0].task_id)["attempts"]
    assert first["reason"].startswith("least-loaded")
    run = client.get_run(run_id)
    assert run["started_at_ms"] <= run["finished_at_ms"]


def test_openapi_schema(head: HeadProcess) -> None:
    schema = httpx.get(f"{head.url}/schema/openapi.json").json()
    for path in (
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/tasks",
        "/runs/{run_id}/tasks/{task_id}",
        "/runs/{run_id}/events",
        "/runs/{run_id}/stream",
        "/cluster/resources",
    ):
        assert path in schema["paths"], path


def test_rebuild_equals_live(client: MaClient, head: HeadProcess) -> None:
    _run_chain(client)
    wf = client.create_workflow()
    wf.add_task(fails, inputs={"x": 1})
    wf.show_results(wf.run())
    report = httpx.post(f"{head.url}/projections/rebuild", timeout=60).json()
    assert report["equal"] is True, report
    assert report["tables"]["runs"]["rows"] >= 2
    assert report["tables"]["tasks"]["rows"] == report["tables"]["tasks"]["rebuilt_rows"] >= 4
    # the live tables now are the rebuilt ones, and queries still answer from them
    runs_after = client.list_runs(limit=1000)
    assert {r["state"] for r in runs_after} >= {"succeeded", "failed"}
    # the CLI command does the same and exits 0 when equal
    cli = subprocess.run(
        [sys.executable, "-m", "maze", "projections", "rebuild", "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "attempts" in cli.stdout


def test_cli_runs_commands(client: MaClient, head: HeadProcess) -> None:
    run_id, _ = _run_chain(client, 2)
    out = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "show", run_id, "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "succeeded" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "show", "run_missing", "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "not found" in bad.stdout
    events = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "events", run_id, "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert events.returncode == 0 and "run.finished" in events.stdout
    assert json.loads(httpx.get(f"{head.url}/health").text)["controller_live"] is True


def test_cli_start_rejects_bad_flags() -> None:
    for args, needle in (
        (["--head", "--worker"], "exactly one of --head or --worker"),
        (["--head", "--node-queue-factor", "0.5"], "--node-queue-factor must be at least 1"),
        # a node is judged by its own interval (any liveness timeout goes), up to what the bucket keeps
        (["--head", "--heartbeat-interval", "50"], "--heartbeat-interval must be > 0 and at most 40"),
        (["--worker", "--addr", "h:1", "--heartbeat-interval", "0"], "--heartbeat-interval must be > 0"),
        (["--head", "--liveness-timeout", "0"], "--liveness-timeout must be > 0"),
        (["--head", "--fsync", "sometimes"], "--fsync must be"),
        (["--worker"], "--worker needs --addr"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "maze", "start", *args], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert needle in out.stdout, (args, out.stdout)


def test_cli_start_on_a_taken_port_fails_with_one_line(tmp_path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "maze",
                "start",
                "--head",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1
    assert out.stdout.strip() == (
        f"error: the API cannot listen on 127.0.0.1:{port} (Address already in use: another head or "
        "server holds it); choose another --port"
    )
    assert out.stderr == ""


def test_cli_runs_watch_follows_a_run_to_its_end(client: MaClient, head: HeadProcess) -> None:
    wf = client.create_workflow()
    t = wf.add_task(inc, inputs={"x": 0})
    for _ in range(3):
        t = wf.add_task(inc, inputs={"x": t.outputs["x"]})
    run_id = wf.run()
    out = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "watch", run_id, "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4/4" in out.stdout and f"run {run_id} succeeded" in out.stdout
    failing = client.create_workflow()
    failing.add_task(fails, inputs={"x": 1})
    bad_run = failing.run()
    out = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "watch", bad_run, "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and f"run {bad_run} failed" in out.stdout
    events = list(client.follow_run_events(run_id))
    assert events[-1]["type"] == "run.finished" and events == client.get_run_events(run_id)


def _sse_events(url: str, params: dict | None = None) -> list[dict]:
    from httpx_sse import connect_sse

    out: list[dict] = []
    with httpx.Client(timeout=10) as http, connect_sse(http, "GET", url, params=params) as source:
        for sse in source.iter_sse():
            if sse.event == "events":
                out += json.loads(sse.data)
    return out


def test_sse_is_served_from_the_heads_memory_as_the_log_has_it(client: MaClient, head: HeadProcess) -> None:
    before = httpx.get(f"{head.url}/cluster/diagnostics").json()["controller"]["run_feeds"]
    run_id, _ = _run_chain(client)
    from_log = client.get_run_events(run_id)
    from_memory = _sse_events(f"{head.url}/runs/{run_id}/stream")
    after = httpx.get(f"{head.url}/cluster/diagnostics").json()["controller"]["run_feeds"]
    assert from_memory == from_log
    # show_results() followed it, and so did this stream: both from the feed, no log read
    assert after["served"] >= before["served"] + 2
    assert after["read_from_log"] == before["read_from_log"]
    resumed = _sse_events(f"{head.url}/runs/{run_id}/stream", {"after": from_log[2]["seq"]})
    assert resumed == [e for e in from_log if e["seq"] > from_log[2]["seq"]]


@task
def naps(x: int = 0):
    import time

    time.sleep(0.3)
    return {"x": x}


def test_an_attempts_start_is_recorded_before_or_with_its_end(client: MaClient) -> None:
    wf = client.create_workflow()
    quick = wf.add_task(inc, inputs={"x": 0})
    slow = wf.add_task(naps, inputs={"x": quick.outputs["x"]})
    run_id = wf.run()
    assert wf.show_results(run_id)["state"] == "succeeded"
    events = [e for e in client.get_run_events(run_id) if e.get("task_id")]
    seq = {(e["task_id"], e["type"]): e["seq"] for e in events}
    # every state is recorded: started (with its pid) then succeeded, in that order. A short
    # attempt's start may share its end's message (bench/latency_hops.py counts how often); a
    # long one's start is stored while it runs.
    for t in (quick, slow):
        kinds = [e["type"] for e in events if e["task_id"] == t.task_id]
        assert kinds == ["attempt.placed", "attempt.started", "attempt.succeeded"]
    assert all(e["pid"] > 0 for e in events if e["type"] == "attempt.started")
    assert seq[(quick.task_id, "attempt.started")] <= seq[(quick.task_id, "attempt.succeeded")]
    assert seq[(slow.task_id, "attempt.started")] < seq[(slow.task_id, "attempt.succeeded")]


def test_results_come_over_one_kept_alive_connection_as_the_log_has_them(head: HeadProcess) -> None:
    client = MaClient(head.url)  # its own pool: the connections counted are this test's
    wf = client.create_workflow()
    wf.add_task(inc, inputs={"x": 0})
    run_id = wf.run()
    from_stream = wf.get_results(run_id, verbose=False)
    from_log = [client.blobs.materialize(e) for e in client.get_run_events(run_id)]
    assert from_stream == events_to_messages(wf.workflow_id, from_log)
    # the stream run() opened, read as events: the log's, each once, in order
    run_id = wf.run()
    assert list(client.follow_run_events(run_id)) == client.get_run_events(run_id)
    for _ in range(50):
        wf.get_results(wf.run(), verbose=False)
    assert client.http.streams.created == 1
    # a kept connection the head closed while idle is left for a new one, the run unharmed
    (idle,) = client.http.streams._idle
    idle.sock.shutdown(socket.SHUT_RDWR)
    messages = wf.get_results(wf.run(), verbose=False)
    assert messages[-1]["data"]["state"] == "succeeded"
    assert client.http.streams.created == 2
    client.close()


def test_a_dropped_stream_resumes_without_gaps_or_repeats(head: HeadProcess) -> None:
    client = MaClient(head.url)
    wf = client.create_workflow()
    quick = wf.add_task(inc, inputs={"x": 0})
    wf.add_task(naps, inputs={"x": quick.outputs["x"]})  # the rest comes 0.3 s after the first frame
    run_id = wf.run()
    opened = client.http.opened.take(run_id)
    assert isinstance(opened, OpenedRun)
    client.http.opened.keep(run_id, opened)
    events = client.follow_run_events(run_id)
    first = next(events)
    assert first["type"] == "run.created"
    assert opened.stream.connection is not None
    opened.stream.connection.sock.shutdown(socket.SHUT_RDWR)  # the connection drops mid-run
    followed = [first, *events]
    assert followed == client.get_run_events(run_id)
    assert followed[-1]["type"] == "run.finished" and followed[-1]["state"] == "succeeded"
    assert client.http.streams.created == 2  # resumed on a new connection (Last-Event-ID)
    client.close()


def test_streams_nobody_reads_are_closed_past_the_few_kept(head: HeadProcess) -> None:
    client = MaClient(head.url)
    wf = client.create_workflow()
    wf.add_task(inc, inputs={"x": 0})
    run_ids = [wf.run() for _ in range(OPEN_STREAMS_KEPT + 2)]
    assert list(client.http.opened._runs) == run_ids[2:]  # the two oldest were closed unread
    for run_id in run_ids:
        assert wf.get_results(run_id, verbose=False)[-1]["data"]["state"] == "succeeded"
    # one connection per submit, and one more for the two closed ones' GET /runs/{id}/stream
    assert client.http.streams.created == OPEN_STREAMS_KEPT + 3
    client.close()


def test_get_run_events_returns_every_event_of_a_run_past_one_page(client: MaClient) -> None:
    """The head answers ~10,000 events a page; the SDK reads every page."""
    wf = client.create_workflow()
    for i in range(4000):
        wf.add_task(inc, inputs={"x": i})
    run_id = wf.run()
    assert wf.show_results(run_id)["state"] == "succeeded"
    events = client.get_run_events(run_id)
    assert len(events) > 10_000
    assert sum(e["type"] == "attempt.succeeded" for e in events) == 4000
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs), "in log order, no page read twice"
    assert events[-1]["type"] == "run.finished"
