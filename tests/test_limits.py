"""Limits against abuse: an oversize body and a flood of live streams are refused (413, 429) while
a normal client keeps working, and nothing already accepted is lost."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maze import MaClient, task
from tests.helpers import HeadProcess, wait_until


@task
def nap(seconds: float = 0.0):
    import time

    time.sleep(seconds)
    return {"slept": seconds}


@task
def measure(text: str = ""):
    return {"n": len(text)}


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    proc = HeadProcess(tmp_path_factory.mktemp("limits") / "head")
    proc.env = {"MAZE_MAX_STREAMS_PER_CLIENT": "3", "MAZE_MAX_SUBMIT_BYTES": "3000000"}
    proc.start()
    yield proc
    proc.stop()


def test_an_oversize_body_is_refused_and_the_head_goes_on(head: HeadProcess) -> None:
    big = b"[" + b"0," * (33 * 1024 * 1024) + b"0]"  # ~66 MB: past the 64 MB a body may have
    resp = httpx.post(
        f"{head.url}/artifacts/missing",
        content=big,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert resp.status_code == 413, resp.text[:300]
    client = MaClient(head.url)
    wf = client.create_workflow()
    wf.add_task(nap, inputs={"seconds": 0.0})
    assert wf.show_results(wf.run())["state"] == "succeeded"


def test_a_flood_of_streams_is_refused_past_the_limit_while_the_rest_works(
    head: HeadProcess, tmp_path: Path
) -> None:
    client = MaClient(head.url)
    wf = client.create_workflow()
    wf.add_task(nap, inputs={"seconds": 3.0})
    run_id = wf.run()
    wf.clear_cache()
    client.http.opened.close()  # the stream run() opened: the slots below are the test's own
    held: list[httpx.Response] = []
    http = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
    try:
        for _ in range(3):
            resp = http.send(http.build_request("GET", f"{head.url}/runs/{run_id}/stream"), stream=True)
            assert resp.status_code == 200
            held.append(resp)
        refused = httpx.get(f"{head.url}/runs/{run_id}/stream", timeout=10)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["type"] == "too_many_requests"
        # a normal client's reads and submits go on meanwhile
        assert client.get_run(run_id)["run_id"] == run_id
        plain = httpx.post(
            f"{head.url}/runs",
            content=b'{"tasks": []}',
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert plain.status_code == 400  # judged on its own merits, not refused for the streams
        # the SDK's run() submits all the same (without its stream, which it cannot have now)
        later = client.create_workflow()
        later.add_task(nap, inputs={"seconds": 0.0})
        later_id = later.run()
    finally:
        for resp in held:
            resp.close()
        http.close()
    # and its results come once a stream fits again
    assert later.show_results(later_id)["state"] == "succeeded"

    def a_stream_fits_again() -> bool:
        with httpx.stream("GET", f"{head.url}/runs/{run_id}/stream", timeout=10) as resp:
            return resp.status_code == 200

    wait_until(a_stream_fits_again, timeout=30)
    # and the run itself went on: nothing accepted was lost
    wait_until(lambda: client.get_run(run_id)["state"] == "succeeded", timeout=30)


def test_submissions_past_the_bytes_read_at_once_wait_their_turn(head: HeadProcess) -> None:
    """A slow 2.5 MB upload holds 2.5 MB of the 3 MB the head reads at once: a 1 MB submit is
    refused with 429 before its body is read; the SDK waits its turn and submits, once the upload
    has gone."""
    slow = socket.create_connection(("127.0.0.1", head.port))
    slow.sendall(
        b"POST /runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2500000\r\n\r\n" + b" " * 1000
    )
    try:

        def refused() -> bool:
            resp = httpx.post(
                f"{head.url}/runs", content=b" " * 1_000_000, headers={"content-type": "application/json"}
            )
            if resp.status_code != 429:
                return False
            error = resp.json()["error"]
            return error["details"]["limit"] == "submit_bytes" and "retry shortly" in error["message"]

        wait_until(refused, timeout=10)  # once the head has the slow request's headers
        small = httpx.post(f"{head.url}/runs", content=b"{}", headers={"content-type": "application/json"})
        assert small.status_code == 400, small.text  # a small one still goes through (and is bad)
        threading.Timer(1.0, slow.close).start()
        began = time.monotonic()
        client = MaClient(head.url)
        wf = client.create_workflow()
        for _ in range(4):  # ~800 KB of body: values under 256 KB ride in it (over, they are blobs)
            wf.add_task(measure, inputs={"text": "x" * 200_000})
        assert wf.show_results(wf.run())["state"] == "succeeded"
        assert time.monotonic() - began >= 0.9, "it waited for the upload to go"
    finally:
        slow.close()
