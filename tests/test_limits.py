"""Limits against abuse: an oversize body and a flood of live streams are refused (413, 429) while
a normal client keeps working, and nothing already accepted is lost."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    proc = HeadProcess(tmp_path_factory.mktemp("limits") / "head")
    proc.env = {"MAZE_MAX_STREAMS_PER_CLIENT": "3"}
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
