"""A process that knew a head's log at an address, and then meets another log there (a cluster made
again at the same address; in a test suite, a port used again): its reads are not held back by what
it knew of the old log. It had been: every read asked `min_seq` past the new log's end and got 409
(four tests failed so in one full run, when a module's head took a port an earlier module's had)."""

from __future__ import annotations

import httpx
import pytest

from maze import MaClient, task
from maze.core.errors import Conflict
from tests.helpers import HeadProcess


@task
def inc(x: int = 0):
    return {"x": x + 1}


PAST = 10**9  # what the process knew: far past the end of this head's log


def test_a_new_log_at_a_known_address_is_read_as_it_is(head: HeadProcess) -> None:
    client = MaClient(head.url)
    client.http.note_seen(PAST)  # as if an earlier head at this URL had a longer log
    wf = client.create_workflow()
    node = wf.add_task(inc, inputs={"x": 1})
    run_id = wf.run()
    assert client.wait_run(run_id, timeout=60)["state"] == "succeeded"  # GET /runs/{id}
    messages = wf.get_results(run_id, verbose=False)  # the run's stream
    assert [m["data"]["result"] for m in messages if m["type"] == "finish_task"] == [{"x": 2}]
    assert client.get_run_tasks(run_id)[0]["task_id"] == node.task_id
    seen = client.http.session.seen_seq
    assert 0 < seen < PAST, "it knows the new log now"

    # a min_seq the caller gives is the caller's: past the end, it is still the head's 409
    with pytest.raises(Conflict, match="past the end of the event log"):
        client.http.get(f"/runs/{run_id}", min_seq=PAST)
    assert httpx.get(f"{head.url}/runs/{run_id}", params={"min_seq": PAST}).status_code == 409
