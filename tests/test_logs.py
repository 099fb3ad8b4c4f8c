"""Task logs: what a task (and every process it starts) prints reaches the `MAZE_LOGS` stream line by
line, in order and attributed to its attempt; past the per-attempt cap it is cut with a marker while
the head stays healthy; it outlives a head restart; and it can be read as a tail, in pages, live
over SSE, from the SDK and the CLI. Real heads, workers and nats-server throughout."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from maze import MaClient, task
from maze.api import log_reader
from maze.events import subjects
from maze.events.logs import LogLine, encode_batch, split_cursor
from maze.events.store import ensure_streams
from maze.head.nats_server import nats_server_binary
from tests.helpers import HeadProcess, NatsServer, WorkerProcess, _accepts, free_port, wait_until

# ---- tasks ------------------------------------------------------------------------------------


@task
def chatty(n: int = 0):
    import sys

    for i in range(n):  # even lines to stdout, odd ones to stderr
        print(f"line {i}", file=sys.stderr if i % 2 else sys.stdout)
    return {"n": n}


@task
def spawns(tag: str = ""):
    import os
    import subprocess

    print(f"{tag} from python")
    subprocess.run(["sh", "-c", f"echo {tag} from sh; echo {tag} from sh to stderr >&2"], check=True)
    os.system(f"echo {tag} from os.system")
    print(f"{tag} without a line break", end="")
    return {"tag": tag}


@task
def leaves_a_process_behind(tag: str = ""):
    import subprocess

    # would outlive the attempt: its task process kills it before the next attempt runs there
    subprocess.Popen(["sh", "-c", f"sleep 1; echo {tag} printed late"])
    return {"tag": tag}


@task
def prints_while_the_next_runs(tag: str = "", after: str = ""):
    import time

    print(f"{tag} starts")
    time.sleep(2.0)  # the process left behind by the task before prints meanwhile
    print(f"{tag} ends")
    return {"tag": tag}


@task
def floods(megabytes: int = 0):
    import os

    line = b"y" * 99 + b"\n"
    block = line * 10_486  # ~1 MiB of 100-byte lines
    for _ in range(megabytes):
        os.write(1, block)
    return {"megabytes": megabytes}


@task
def waits_for(gate: str = "", lines: int = 0):
    import os
    import time

    print("before the gate", flush=True)
    while not os.path.exists(gate):
        time.sleep(0.02)
    for i in range(lines):
        print(f"after the gate {i}")
    return {"lines": lines}


@task
def moves_its_output(tag: str = ""):
    import os

    print(f"{tag} before", flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # its stderr now goes nowhere, and its stdout is gone
    os.close(1)
    return {"tag": tag, "pid": os.getpid()}


@task
def prints_both(tag: str = "", after: str = ""):
    import os
    import sys

    print(f"{tag} out")
    print(f"{tag} err", file=sys.stderr)
    os.system(f"echo {tag} from sh")
    return {"tag": tag, "pid": os.getpid()}


@task
def closes_stderr_and_leaves_a_process(tag: str = ""):
    import os
    import subprocess

    subprocess.Popen(["sleep", "30"])
    os.close(2)
    return {"tag": tag}


@task
def leaves_a_thread_printing(tag: str = ""):
    import threading
    import time

    def later() -> None:
        time.sleep(0.3)
        print(f"{tag} from a thread, after the attempt", flush=True)

    threading.Thread(target=later, daemon=True).start()
    print(f"{tag} returns")
    return {"tag": tag}


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    """A head on its embedded NATS server (its local worker runs with a worker's NATS user) with one
    CPU: one warm task process, which every task of these tests reuses in turn."""
    proc = HeadProcess(tmp_path_factory.mktemp("logs") / "head", extra=["--cpus", "1"])
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture
def client(head: HeadProcess) -> MaClient:
    return MaClient(head.url)


def _run(client: MaClient, fn, **inputs) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    wf = client.create_workflow()
    t = wf.add_task(fn, inputs=inputs)
    run_id = wf.run()
    wf.get_results(run_id, verbose=False)
    return run_id, t.task_id


# ---- what is captured -------------------------------------------------------------------------


def test_ten_thousand_lines_none_lost_and_in_order(client: MaClient) -> None:
    run_id, task_id = _run(client, chatty, n=10_000)
    assert client.get_run(run_id)["state"] == "succeeded"
    lines = client.get_run_logs(run_id, tail=None)
    assert len(lines) == 10_000
    cursors = [line["cursor"] for line in lines]
    assert cursors == sorted(cursors) and len(set(cursors)) == 10_000
    for stream, parity in (("stdout", 0), ("stderr", 1)):
        got = [line["line"] for line in lines if line["stream"] == stream]
        assert got == [f"line {i}" for i in range(parity, 10_000, 2)], f"{stream}: lost or out of order"
    assert {(line["task_id"], line["attempt"]) for line in lines} == {(task_id, 1)}
    assert len({line["node_id"] for line in lines}) == 1 and all(line["at_ms"] > 0 for line in lines)
    # the tail is the end of the same sequence
    tail = client.get_run_logs(run_id, tail=200)
    assert tail == lines[-200:]
    assert client.get_run_logs(run_id, tail=200, task_id=task_id) == lines[-200:]
    assert client.get_run_logs(run_id, tail=200, task_id="task_other") == []
    # paging with `after`, as a client that fetched part of it goes on
    page = httpx.get(
        f"{client.server_url}/runs/{run_id}/logs", params={"after": lines[4_999]["cursor"], "limit": 3}
    ).json()
    assert page["lines"] == lines[5_000:5_003] and page["more"] is True
    assert page["last_cursor"] == lines[5_002]["cursor"]


def test_output_of_child_processes_is_captured(client: MaClient) -> None:
    run_id, _ = _run(client, spawns, tag="kid")
    got = {(line["stream"], line["line"]) for line in client.get_run_logs(run_id, tail=None)}
    assert got == {
        ("stdout", "kid from python"),
        ("stdout", "kid from sh"),
        ("stderr", "kid from sh to stderr"),
        ("stdout", "kid from os.system"),
        ("stdout", "kid without a line break"),
    }


def test_a_process_an_attempt_left_running_prints_nothing_into_the_next(client: MaClient) -> None:
    """The second task runs in the warm process the first used. A process the first left running
    is killed before the second starts (it would use capacity nobody counts), so nothing it would
    have printed lands anywhere, and the second's lines are its own."""
    wf = client.create_workflow()
    first = wf.add_task(leaves_a_process_behind, inputs={"tag": "first"})
    second = wf.add_task(prints_while_the_next_runs, inputs={"tag": "second", "after": first.outputs["tag"]})
    run_id = wf.run()
    wf.get_results(run_id, verbose=False)
    tasks = {t["task_id"]: t for t in client.get_run_tasks(run_id)}
    assert tasks[second.task_id]["state"] == "succeeded"

    assert not [line for line in client.get_run_logs(run_id, tail=None) if "late" in line["line"]], (
        client.get_run_logs(run_id, tail=None)
    )
    seconds = [x["line"] for x in client.get_run_logs(run_id, tail=None, task_id=second.task_id)]
    assert seconds == ["second starts", "second ends"]


def test_a_task_that_closed_or_moved_its_output_leaves_the_next_one_captured(client: MaClient) -> None:
    """The task process keeps its output pipes for its life and puts them on fds 1 and 2 again at
    every attempt: the second task, in the same warm process, is captured whole although the first
    closed fd 1 and sent fd 2 to /dev/null."""
    wf = client.create_workflow()
    first = wf.add_task(moves_its_output, inputs={"tag": "first"})
    second = wf.add_task(prints_both, inputs={"tag": "second", "after": first.outputs["tag"]})
    run_id = wf.run()
    results = {
        m["data"]["task_id"]: m["data"]["result"]
        for m in wf.get_results(run_id, verbose=False)
        if m["type"] == "finish_task"
    }
    assert results[first.task_id]["pid"] == results[second.task_id]["pid"]  # one warm process
    firsts = [x["line"] for x in client.get_run_logs(run_id, tail=None, task_id=first.task_id)]
    assert firsts == ["first before"]
    seconds = {
        (x["stream"], x["line"]) for x in client.get_run_logs(run_id, tail=None, task_id=second.task_id)
    }
    assert seconds == {("stdout", "second out"), ("stderr", "second err"), ("stdout", "second from sh")}


def test_a_task_that_closed_its_stderr_and_left_a_process_still_succeeds_once(client: MaClient) -> None:
    """Its task process kills the process it left before answering, and says so in the attempt's
    stderr lines though the task closed fd 2: the attempt succeeds, first time, and is not run again."""
    run_id, task_id = _run(client, closes_stderr_and_leaves_a_process, tag="closer")
    (row,) = client.get_run_tasks(run_id)
    assert row["state"] == "succeeded" and row["attempt"] == 1, row
    lines = [(x["stream"], x["line"]) for x in client.get_run_logs(run_id, tail=None, task_id=task_id)]
    assert lines == [("stderr", "maze: killed 1 process(es) the attempt left running")]


def test_what_a_thread_prints_after_its_attempt_is_no_task_s_line(
    client: MaClient, head: HeadProcess
) -> None:
    """A thread a task left in its warm process prints while no attempt runs there: the worker
    logs it as the process's own output, and it is never one of the task's lines."""
    tag = f"stray-{time.time_ns()}"
    run_id, task_id = _run(client, leaves_a_thread_printing, tag=tag)
    said = wait_until(
        lambda: [line for line in head.log().splitlines() if f"{tag} from a thread" in line], timeout=10
    )
    assert "worker.task_process_output" in said[0]
    lines = [x["line"] for x in client.get_run_logs(run_id, tail=None, task_id=task_id)]
    assert lines == [f"{tag} returns"]


def test_output_past_the_cap_is_cut_with_a_marker_and_the_head_stays_healthy(
    client: MaClient, head: HeadProcess
) -> None:
    """A task of the head's own local worker prints a gigabyte: the head reads and drops what is past
    the cap (8 MiB per attempt) without holding it, answers meanwhile, and runs the next run."""
    wf = client.create_workflow()
    flood = wf.add_task(floods, inputs={"megabytes": 1024})
    run_id = wf.run()
    answers: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=10) as http:
            while True:  # at least once, while the run goes on
                answers.append(http.get(f"{head.url}/healthz").status_code)
                if stop.wait(0.05):
                    return

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        wf.get_results(run_id, verbose=False)
    finally:
        stop.set()
        prober.join()
    assert client.get_run(run_id)["state"] == "succeeded"
    assert answers and set(answers) == {200}, answers
    lines = client.get_run_logs(run_id, tail=None)
    kept, marker = lines[:-1], lines[-1]
    cap = 8 * 1024 * 1024
    assert all(line["stream"] == "stdout" and line["line"] == "y" * 99 for line in kept)
    assert len(kept) == cap // 100, "lines are kept whole up to the cap"
    written = 1024 * 10_486 * 100
    assert marker["stream"] == "maze" and marker["task_id"] == flood.task_id
    assert f"{written - len(kept) * 100:,} bytes of output past the cap of {cap:,} bytes" in marker["line"]
    # the head is well, and the next run of the same worker prints as usual
    assert httpx.get(f"{head.url}/healthz", timeout=10).status_code == 200
    run2, _ = _run(client, chatty, n=3)
    assert sorted(line["line"] for line in client.get_run_logs(run2)) == ["line 0", "line 1", "line 2"]


# ---- reading ----------------------------------------------------------------------------------


def test_follow_live_over_sse_and_resume(client: MaClient, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wf = client.create_workflow()
    t = wf.add_task(waits_for, inputs={"gate": str(gate), "lines": 50})
    run_id = wf.run()
    followed = client.follow_run_logs(run_id)
    first = next(followed)
    # the task waits at its gate until the test opens it: this line came live, not after the run
    assert first["line"] == "before the gate" and first["task_id"] == t.task_id
    gate.touch()
    rest = list(followed)  # until the run has ended and its lines are all sent
    assert [line["line"] for line in rest] == [f"after the gate {i}" for i in range(50)]
    wf.get_results(run_id, verbose=False)
    assert client.get_run(run_id)["state"] == "succeeded"
    # resumed after a cursor, as after a dropped connection: nothing missed, nothing again
    resumed = list(client.follow_run_logs(run_id, after=rest[9]["cursor"]))
    assert resumed == rest[10:]
    with httpx.stream(
        "GET",
        f"{client.server_url}/runs/{run_id}/logs/stream",
        headers={"Last-Event-ID": str(rest[-2]["cursor"])},
        timeout=30,
    ) as resp:
        body = resp.read().decode()
    assert resp.status_code == 200 and "after the gate 49" in body and "after the gate 48" not in body
    assert body.rstrip().endswith("event: end\ndata: {}")


def test_following_a_task_that_printed_nothing_from_an_early_cursor_ends_with_the_run(
    client: MaClient,
) -> None:
    """`after` below the first batch's cursors (0 to 999,999) read from stream sequence 0, which
    never passed the end of a filter without lines: the stream of an ended run never ended (found by
    Schemathesis, tests/test_openapi_contract.py)."""
    run_id, task_id = _run(client, chatty, n=0)
    for params in ({"task_id": task_id, "after": 0}, {"task_id": "nobody", "after": 1}, {"after": 999_999}):
        with httpx.stream(
            "GET", f"{client.server_url}/runs/{run_id}/logs/stream", params=params, timeout=10
        ) as resp:
            body = resp.read().decode()
        assert resp.status_code == 200 and body == "event: end\ndata: {}\n\n", params
        page = httpx.get(f"{client.server_url}/runs/{run_id}/logs", params=params, timeout=10).json()
        assert page["lines"] == [] and page["more"] is False, params


def test_the_cli_prints_and_follows_a_runs_lines(client: MaClient) -> None:
    run_id, task_id = _run(client, chatty, n=5)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "maze",
            "runs",
            "logs",
            run_id,
            "--tail",
            "2",
            "--server-url",
            client.server_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    last = client.get_run_logs(run_id, tail=2)
    assert out.stdout.splitlines() == [f"{task_id}#1 {x['stream']:<6} {x['line']}" for x in last]
    followed = subprocess.run(
        [
            sys.executable,
            "-m",
            "maze",
            "runs",
            "logs",
            run_id,
            "--tail",
            "0",
            "--follow",
            "--server-url",
            client.server_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert followed.returncode == 0 and followed.stdout == "", "nothing after the last line, and it ends"
    helped = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "logs", "--help"], capture_output=True, text=True, timeout=60
    )
    for option in ("--tail", "--follow", "--task-id", "--server-url"):
        assert option in helped.stdout


def test_bad_log_requests_get_the_error_envelope(client: MaClient) -> None:
    run_id, _ = _run(client, chatty, n=1)
    base = client.server_url
    missing = httpx.get(f"{base}/runs/run_missing/logs", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    missing = httpx.get(f"{base}/runs/run_missing/logs/stream", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    for params in ({"task_id": "a.>"}, {"after": -1}, {"tail": 10_001}, {"limit": 0}):
        bad = httpx.get(f"{base}/runs/{run_id}/logs", params=params, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "validation_error", params
    bad = httpx.get(f"{base}/runs/{run_id}/logs/stream", headers={"Last-Event-ID": "x"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "validation_error"
    schema = httpx.get(f"{base}/schema/openapi.json", timeout=30).json()
    assert {"/runs/{run_id}/logs", "/runs/{run_id}/logs/stream"} <= set(schema["paths"])


def test_the_sdk_names_of_logs() -> None:
    """DESIGN.md §5 and the original SDK: `get_run_logs(run_id, tail=200, task_id=None)`."""
    params = inspect.signature(MaClient.get_run_logs).parameters
    assert list(params) == ["self", "run_id", "tail", "task_id"]
    assert params["tail"].default == 200 and params["task_id"].default is None
    assert list(inspect.signature(MaClient.follow_run_logs).parameters)[:3] == ["self", "run_id", "task_id"]


def test_a_tail_reads_the_last_batches_not_the_run(nats_server: NatsServer) -> None:
    """The reader against a real stream: another run's batches in between, two nodes, two tasks.
    Every tail and page equals the same slice of all the run's lines, and a tail of 200 lines of a
    run of 1,200 batches reads a few dozen messages."""

    async def check() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            run = "run_tailed"
            acks = []
            for b in range(1_200):
                node, task_id = f"n{b % 2}", f"t{b % 3}"
                lines = [LogLine(attempt=1, stream="stdout", at_ms=b, text=f"{b}-{i}") for i in range(50)]
                acks.append(js.publish(subjects.log_subject(run, node, task_id), encode_batch(lines)))
                other = [LogLine(attempt=1, stream="stdout", at_ms=b, text="other")]
                acks.append(js.publish(subjects.log_subject("run_other", node, task_id), encode_batch(other)))
            await asyncio.gather(*acks)
            everything = f"maze.log.{run}.*.*"
            every, more = await log_reader.read_page(nc, everything, -1, 100_000, 1 << 30)
            assert not more and len(every) == 60_000
            assert [x["line"] for x in every[:2]] == ["0-0", "0-1"] and every[-1]["line"] == "1199-49"
            assert [x["node_id"] for x in every[::50]] == [f"n{b % 2}" for b in range(1_200)]
            for tail in (1, 49, 50, 51, 200, 777, 60_000, 70_000):
                assert await log_reader.read_tail(nc, everything, tail) == every[-tail:], tail
            t1 = [x for x in every if x["task_id"] == "t1"]
            assert await log_reader.read_tail(nc, subjects.log_filter(run, "t1"), 120) == t1[-120:]
            after = every[30_000]["cursor"]
            assert await log_reader.read_tail(nc, everything, 100_000, after) == every[30_001:]
            page, more = await log_reader.read_page(nc, everything, after, 75, 1 << 30)
            assert page == every[30_001:30_076] and more
            assert split_cursor(page[0]["cursor"])[1] == 1
            before = log_reader.stats.messages
            await log_reader.read_tail(nc, everything, 200)
            read = log_reader.stats.messages - before
            assert read <= 40, f"a tail of 200 lines read {read} messages"
        finally:
            await nc.close()

    asyncio.run(check())


def test_a_small_store_gets_a_smaller_logs_stream_or_none(tmp_path: Path) -> None:
    """JetStream reserves a stream's max_bytes up front: where 4 GiB does not fit the server's
    store, the logs stream is made smaller, and where nothing fits, the other streams are made all
    the same (a head never fails to start for its task logs)."""

    async def streams_with(store_mb: int) -> dict[str, int]:
        port = free_port()
        conf = tmp_path / f"nats-{store_mb}.conf"
        conf.write_text(
            f'listen: "127.0.0.1:{port}"\n'
            f'jetstream {{ store_dir: "{tmp_path}/js-{store_mb}", max_file_store: {store_mb}MB }}\n'
        )
        server = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: _accepts(port), timeout=15)
            nc = await nats.connect(f"nats://127.0.0.1:{port}")
            try:
                js = nc.jetstream()
                await ensure_streams(js)
                return {s.config.name: s.config.max_bytes for s in await js.streams_info()}
            finally:
                await nc.close()
        finally:
            server.terminate()
            server.wait(timeout=10)

    roomy = asyncio.run(streams_with(300))
    assert roomy[subjects.LOGS_STREAM] == 256 * 1024 * 1024
    cramped = asyncio.run(streams_with(32))
    assert subjects.LOGS_STREAM not in cramped and subjects.RUNS_STREAM in cramped


# ---- durability -------------------------------------------------------------------------------


def test_logs_are_read_after_a_head_restart(tmp_path: Path) -> None:
    """Lines printed on a worker process of its own, read again from a restarted head."""
    head = HeadProcess(tmp_path / "head", extra=["--no-local-worker"])
    head.start()
    worker = WorkerProcess(head, "logger", ["--cpus", "1"], tmp_path)
    try:
        worker.start()
        client = MaClient(head.url)
        run_id, task_id = _run(client, chatty, n=500)
        before = client.get_run_logs(run_id, tail=None)
        assert len(before) == 500 and {line["node_id"] for line in before} == {"logger"}
        worker.stop()
        assert head.stop() == 0, head.log()
        head.start()
        client = MaClient(head.url)
        assert client.get_run_logs(run_id, tail=None) == before
        assert client.get_run_logs(run_id, tail=10, task_id=task_id) == before[-10:]
        assert list(client.follow_run_logs(run_id)) == before, "a finished run's lines, and the end"
    finally:
        worker.stop()
        head.stop()
