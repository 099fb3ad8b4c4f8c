"""History you can search: `GET /runs` filters, sort orders and cursor pagination over 1,000 runs
read through a real head, the result summary of `GET /runs/{id}`, `MaClient.wait_run`, and the CLI.

The 1,000 runs are written straight to the event store (a run.created and its run.finished in one
message, so the controller decides nothing about them) on a head of their own without workers;
everything read back goes the real way: the projector folds them from the log and the API answers
from the read models' process."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maze import MaClient, task
from maze.core.errors import NotFound, ValidationError, WaitTimeout
from maze.events import subjects
from maze.events.codec import encode_value
from maze.events.runs import RunCreated, RunFinished
from maze.events.specs import InputRef, TaskSpec
from maze.events.store import EventStore
from maze.events.tasks import AttemptPlaced, AttemptStarted, AttemptSucceeded
from maze.projections.fold import create_run, fold_run_event
from maze.projections.run_search import (
    ISO_PATTERN,
    KIND_PATTERN,
    MAX_SEARCH_CHARS,
    MAX_TIME_MS,
    ORDERS,
    SORTS,
    STATE_PATTERN,
    UNFINISHED,
    RunQuery,
    encode_cursor,
)
from maze.projections.run_summary import NAMES_MAX_CHARS, SUMMARY_TASKS, SUMMARY_VALUE_CHARS
from tests.helpers import HeadProcess, NatsServer

RUNS = 1000
BASE_MS = 1_600_000_000_000  # 2020-09-13: long before any run the tests submit for real
KINDS = ("static", "dynamic", "react")
FINAL_STATES = ("succeeded", "failed", "cancelled", "timed_out")
TOPICS = ("Invoice Parsing", "nightly-ETL", "embed_docs", "Summarize")
STEPS = ("fetch", "Clean Up", "score", "Write-Report")


@dataclass
class Recorded:
    run_id: str
    workflow_id: str
    kind: str
    state: str
    created_at_ms: int
    finished_at_ms: int | None
    run_seq: int
    words: tuple[str, ...]  # the names a search should find it by


def _spec(task_id: str, name: str, func_name: str) -> TaskSpec:
    return TaskSpec(
        task_id=task_id,
        name=name,
        func_name=func_name,
        func_hash="0" * 64,
        call_style="kwargs",
        inputs={},
        outputs=None,
    )


def _history_messages() -> list[tuple[str, list, dict]]:
    """1,000 runs: created three to a millisecond (ties broken by log order), finished at times
    that tie too, 20 not finished; stored in shuffled order, so log order is not created order."""
    rng = random.Random(14)
    out = []
    for i in range(RUNS):
        run_id = f"run_hist{i:04d}{rng.getrandbits(32):08x}"
        topic = TOPICS[i % len(TOPICS)]
        step = STEPS[(i // 4) % len(STEPS)]
        workflow_id = f"{topic} #{i}"
        created = BASE_MS + (i // 3) * 1000
        kind = KINDS[i % 3]
        tasks = [
            _spec("a", step, f"fn_{step.lower().replace(' ', '_').replace('-', '_')}"),
            _spec("b", "tail", "tail"),
        ]
        events: list = [
            RunCreated(run_id=run_id, workflow_id=workflow_id, at_ms=created, tasks=tasks, kind=kind)
        ]
        meta = {
            "run_id": run_id,
            "workflow_id": workflow_id,
            "kind": kind,
            "created_at_ms": created,
            "words": (topic, step, "fn_" + step.lower().replace(" ", "_").replace("-", "_")),
        }
        if i % 50 == 7:
            meta.update(state="created", finished_at_ms=None)  # no worker anywhere: it stays so
        else:
            state = FINAL_STATES[(i // 7) % len(FINAL_STATES)]
            finished = created + rng.choice((5, 500, 5000, 90_000))
            events.append(RunFinished(run_id=run_id, at_ms=finished, state=state))
            meta.update(state=state, finished_at_ms=finished)
        out.append((run_id, events, meta))
    rng.shuffle(out)
    return out


async def _write(url: str) -> list[Recorded]:
    nc = await nats.connect(url)
    try:
        store = EventStore(nc)
        messages = _history_messages()
        acks = await store.publish_many([(subjects.run_subject(r), events) for r, events, _ in messages])
        return [Recorded(run_seq=ack.seq, **meta) for (_, _, meta), ack in zip(messages, acks, strict=True)]
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HeadProcess, list[Recorded], int]]:
    """A head without workers whose history holds the 1,000 runs, folded by its read models."""
    server = NatsServer(tmp_path_factory.mktemp("archive-nats"))
    server.start()
    head = HeadProcess(tmp_path_factory.mktemp("archive"), nats_url=server.url, extra=["--no-local-worker"])
    head.start()
    try:
        recorded = asyncio.run(_write(server.url))
        last = max(r.run_seq for r in recorded)
        # read-your-writes: answered once the read models have folded the last of them
        httpx.get(f"{head.url}/runs", params={"limit": 1, "min_seq": last}, timeout=60).raise_for_status()
        yield head, recorded, last
    finally:
        code = head.stop()
        server.stop()
        assert code == 0, head.log()


def _key(run: Recorded, sort: str) -> int:
    if sort == "created":
        return run.created_at_ms
    return UNFINISHED if run.finished_at_ms is None else run.finished_at_ms


def _expected(
    recorded: list[Recorded], sort: str = "created", order: str = "desc", **match: object
) -> list[str]:
    def keep(run: Recorded) -> bool:
        if "states" in match and run.state not in match["states"]:  # type: ignore[operator]
            return False
        if "kinds" in match and run.kind not in match["kinds"]:  # type: ignore[operator]
            return False
        if "after" in match and run.created_at_ms < match["after"]:  # type: ignore[operator]
            return False
        if "before" in match and run.created_at_ms >= match["before"]:  # type: ignore[operator]
            return False
        if "text" in match:
            text = str(match["text"]).lower()
            return any(text in w.lower() for w in (run.workflow_id, *run.words, "tail"))
        return True

    ordered = sorted((r for r in recorded if keep(r)), key=lambda r: (_key(r, sort), r.run_seq))
    return [r.run_id for r in (ordered[::-1] if order == "desc" else ordered)]


def _walk(url: str, page: int, **params: object) -> tuple[list[str], int]:
    """Every run a cursor walk visits, in order, and how many pages it took."""
    ids: list[str] = []
    pages = 0
    query = {"limit": page, **params}
    while True:
        resp = httpx.get(f"{url}/runs", params=query, timeout=30)
        resp.raise_for_status()
        pages += 1
        batch = resp.json()
        assert len(batch) <= page
        ids += [r["run_id"] for r in batch]
        cursor = resp.headers.get("x-next-cursor")
        if not cursor:
            assert "link" not in resp.headers
            return ids, pages
        assert len(batch) == page, "a page with a next one is full"
        assert resp.headers["link"].endswith('; rel="next"') and f"cursor={cursor}" in resp.headers["link"]
        query = {**query, "cursor": cursor}


# ---- cursor pagination over 1,000 runs ----------------------------------------------------------
@pytest.mark.parametrize(
    ("sort", "order"), [("created", "desc"), ("created", "asc"), ("finished", "desc"), ("finished", "asc")]
)
def test_a_cursor_walk_visits_every_run_once_in_order(archive, sort: str, order: str) -> None:
    head, recorded, _ = archive
    ids, pages = _walk(head.url, 64, sort=sort, order=order)
    assert len(ids) == len(set(ids)) == RUNS
    assert ids == _expected(recorded, sort, order)
    assert pages == -(-RUNS // 64)


def test_the_default_order_is_newest_first_and_unfinished_runs_lead_by_finish_time(archive) -> None:
    head, recorded, _ = archive
    first = httpx.get(f"{head.url}/runs", params={"limit": 5}).json()
    assert [r["run_id"] for r in first] == _expected(recorded)[:5]
    by_finish = httpx.get(f"{head.url}/runs", params={"limit": 25, "sort": "finished"}).json()
    unfinished = [r for r in recorded if r.finished_at_ms is None]
    assert len(unfinished) == 20
    assert {r["state"] for r in by_finish[:20]} == {"created"} and by_finish[20]["state"] != "created"
    # the list shape old clients know, without the search text or the result summary
    assert {"run_id", "workflow_id", "kind", "state", "created_at_ms", "finished_at_ms", "progress"} <= set(
        first[0]
    )
    assert "names" not in first[0] and "result_summary" not in first[0]


def test_each_filter_alone(archive) -> None:
    head, recorded, _ = archive
    cases = [
        ({"state": "failed"}, {"states": {"failed"}}),
        ({"state": "created"}, {"states": {"created"}}),
        ({"kind": "react"}, {"kinds": {"react"}}),
        ({"created_after": BASE_MS + 200_000}, {"after": BASE_MS + 200_000}),
        ({"created_before": BASE_MS + 100_000}, {"before": BASE_MS + 100_000}),
        ({"search": "invoice"}, {"text": "invoice"}),
        ({"search": "CLEAN up"}, {"text": "clean up"}),  # any case, a space inside a name
        ({"search": "fn_write_report"}, {"text": "fn_write_report"}),  # a function's name
        ({"search": "#77"}, {"text": "#77"}),  # in the workflow id
        ({"search": "no such name"}, {"text": "no such name"}),
    ]
    for params, match in cases:
        ids, _ = _walk(head.url, 100, **params)
        expected = _expected(recorded, **match)
        assert ids == expected, params
        assert 0 < len(expected) < RUNS or params["search"] == "no such name", params  # type: ignore[index]


def test_filters_combine_and_take_several_values(archive) -> None:
    head, recorded, _ = archive
    after = datetime.fromtimestamp((BASE_MS + 50_000) / 1000, tz=UTC).isoformat()
    before = datetime.fromtimestamp((BASE_MS + 300_000) / 1000, tz=UTC).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )  # naive: UTC
    params = {
        "state": "succeeded,timed_out",
        "kind": "static,dynamic",
        "created_after": after,
        "created_before": before,
        "search": "summarize",
    }
    match = {
        "states": {"succeeded", "timed_out"},
        "kinds": {"static", "dynamic"},
        "after": BASE_MS + 50_000,
        "before": BASE_MS + 300_000,
        "text": "summarize",
    }
    for sort, order in (("created", "desc"), ("finished", "asc")):
        ids, pages = _walk(head.url, 7, sort=sort, order=order, **params)
        assert ids == _expected(recorded, sort, order, **match)
        assert len(ids) > 14 and pages >= 3


def test_the_sdk_pages_with_the_cursor_and_keeps_its_old_call_forms(archive) -> None:
    head, recorded, _ = archive
    client = MaClient(head.url)
    try:
        old = client.list_runs(limit=5, state="failed")  # the older positional and keyword forms
        assert (
            isinstance(old, list) and [r["run_id"] for r in old] == _expected(recorded, states={"failed"})[:5]
        )
        assert [r["run_id"] for r in client.list_runs(5, None, 5)] == _expected(recorded)[5:10]
        page = client.list_runs(limit=50, state=["cancelled", "created"], kind=("react",))
        rest = client.list_runs(
            limit=300, state=["cancelled", "created"], kind=("react",), cursor=page.next_cursor
        )
        assert page.next_cursor and rest.next_cursor is None
        expected = _expected(recorded, states={"cancelled", "created"}, kinds={"react"})
        assert [r["run_id"] for r in [*page, *rest]] == expected
        since = datetime.fromtimestamp((BASE_MS + 30_000) / 1000, tz=UTC)
        walked = [
            r["run_id"]
            for r in client.iter_runs(
                page_size=33, created_after=since, sort="finished", order="asc", search="etl"
            )
        ]
        assert walked == _expected(recorded, "finished", "asc", after=BASE_MS + 30_000, text="etl")
    finally:
        client.close()


def test_bad_filters_and_cursors_are_400_with_the_error_envelope(archive) -> None:
    head, _, _ = archive
    good = httpx.get(f"{head.url}/runs", params={"limit": 2}).headers["x-next-cursor"]
    bad = [
        {"limit": 0},
        {"limit": 1001},
        {"offset": -1},
        {"state": "bogus"},
        {"state": "failed,bogus"},
        {"state": ",,"},
        {"kind": " , "},
        {"state": ","},
        {"kind": "no spaces"},
        {"created_after": "yesterday"},
        {"created_before": "-5"},
        {"created_after": BASE_MS + 10, "created_before": BASE_MS},
        {"search": "x" * 201},
        {"sort": "name"},
        {"order": "up"},
        {"cursor": "not a cursor"},
        {"cursor": base64.urlsafe_b64encode(msgspec.msgpack.encode([1, "created", "desc"])).decode()},
        {"cursor": good, "sort": "finished"},
        {"cursor": good, "order": "asc"},
        {"cursor": good, "offset": 3},
    ]
    for params in bad:
        resp = httpx.get(f"{head.url}/runs", params=params)
        assert resp.status_code == 400, (params, resp.text)
        error = resp.json()["error"]
        assert error["type"] == "validation_error" and error["message"], params
    with pytest.raises(ValidationError, match="cursor"):
        MaClient(head.url).list_runs(cursor="garbage!")


def test_history_rebuilt_from_the_log_equals_the_live_one(archive) -> None:
    head, _, _ = archive
    resp = httpx.post(f"{head.url}/projections/rebuild", timeout=300)
    report = resp.json()
    assert resp.status_code == 200 and report["equal"], report
    assert report["tables"]["runs"]["rows"] == RUNS


# ---- the result summary, wait_run and the CLI, on runs a real worker runs -----------------------
@task
def produce(n: int = 0):
    return {"n": n}


@task
def big_outputs(n: int = 0):
    return {"text": "x" * 1000, "n": n, "blob": b"\x01" * 300_000, "pairs": {1, 2}, "short": [n, n]}


@task
def plain(n: int = 0):
    return {"double": 2 * n}


@task
def wait_for_file(path: str = ""):
    import os as _os
    import time as _time

    while not _os.path.exists(path):  # the test creates it once it has seen the wait time out
        _time.sleep(0.01)
    return {"done": True}


def test_get_run_summarizes_the_final_tasks_outputs(client: MaClient) -> None:
    wf = client.create_workflow()
    first = wf.add_task(produce, inputs={"n": 3})
    sink_a = wf.add_task(big_outputs, inputs={"n": first.outputs["n"]})
    sink_b = wf.add_task(plain, inputs={"n": first.outputs["n"]})
    run_id = wf.run()
    run = client.wait_run(run_id, timeout=120)
    assert run["state"] == "succeeded"
    summary = run["result_summary"]
    assert summary["sink_tasks"] == 2 and summary["truncated"] is True  # `text` was cut
    by_task = {t["task_id"]: t for t in summary["tasks"]}
    assert [t["task_id"] for t in summary["tasks"]] == [sink_a.task_id, sink_b.task_id]  # submission order
    outputs = by_task[sink_a.task_id]["outputs"]
    assert outputs["n"] == 3 and outputs["short"] == [3, 3]
    assert outputs["text"] == {
        "__maze_value__": "truncated",
        "type": "str",
        "size": 1000,
        "preview": "x" * SUMMARY_VALUE_CHARS,
    }
    assert outputs["blob"]["__maze_value__"] == "blob" and outputs["blob"]["uri"].startswith(
        "maze://artifacts/"
    )
    assert outputs["pairs"]["__maze_value__"] == "pickle" and outputs["pairs"]["type"] == "set"
    assert by_task[sink_b.task_id] == {
        "task_id": sink_b.task_id,
        "name": "plain",
        "state": "succeeded",
        "outputs": {"double": 6},
    }
    assert "names" not in run
    assert client.load_value(outputs["blob"]) == b"\x01" * 300_000  # a descriptor the client can load
    listed = client.list_runs(search=wf.workflow_id)
    assert [r["run_id"] for r in listed] == [run_id] and "result_summary" not in listed[0]
    assert [
        r["run_id"] for r in client.list_runs(search="BIG_OUTPUTS", created_after=run["created_at_ms"])
    ] == [run_id]


def test_wait_run_follows_the_run_and_times_out_without_ending_it(client: MaClient, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wf = client.create_workflow()
    wf.add_task(wait_for_file, inputs={"path": str(gate)})
    run_id = wf.run()
    began = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        client.wait_run(run_id, timeout=0.5)
    waited = time.monotonic() - began
    assert isinstance(caught.value, TimeoutError) and run_id in str(caught.value)
    assert 0.5 <= waited < 30, waited  # it waited its time, and gave up rather than hang
    assert client.get_run(run_id)["state"] in ("created", "running"), "a timed-out wait leaves the run be"
    gate.touch()
    run = client.wait_run(run_id, timeout=120)
    assert run["state"] == "succeeded" and run["finished_at_ms"] is not None
    assert run["result_summary"]["tasks"][0]["outputs"] == {"done": True}
    assert client.wait_run(run_id, timeout=0.001) == run, "a finished run's snapshot, at once"
    with pytest.raises(NotFound):
        client.wait_run("run_neverwas", timeout=5)


def test_cli_runs_list_filters_pages_and_never_cuts_run_ids(client: MaClient, head: HeadProcess) -> None:
    tag = f"clitag{os.getpid()}"
    run_ids = []
    for _ in range(3):
        wf = client.create_workflow()
        wf.add_task(plain, inputs={"n": 1}, task_name=f"{tag} step")
        run_ids.append(wf.run())
    for run_id in run_ids:
        client.wait_run(run_id, timeout=120)
    env = {**os.environ, "COLUMNS": "60", "PYTHONPATH": str(Path(__file__).parent.parent)}
    base = [sys.executable, "-m", "maze", "runs", "list", "--server-url", head.url]

    def cli(*args: str) -> str:
        done = subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = cli("--search", tag.upper(), "--state", "succeeded", "--since", "1h", "--limit", "2")
    shown = sorted((r for r in run_ids if r in out), key=out.index)
    assert shown == run_ids[::-1][:2], out  # whole ids, newest first, in a 60-column terminal
    cursor = out.split("more: --cursor ")[1].split()[0]
    rest = cli("--search", tag, "--state", "succeeded", "--limit", "2", "--cursor", cursor)
    assert [r for r in run_ids if r in rest] == [run_ids[0]] and "more:" not in rest
    assert [
        r for r in run_ids if r in cli("--search", tag, "--sort", "finished", "--order", "asc")
    ] == run_ids
    assert all(r not in cli("--search", tag, "--until", "2021-01-01") for r in run_ids)
    failed = subprocess.run([*base, "--sort", "bogus"], capture_output=True, text=True, env=env, timeout=60)
    assert failed.returncode == 1 and "sort" in failed.stdout + failed.stderr


# ---- the fold's side: names and the summary's rules, no head -------------------------------------
def _summary_run(sinks: int, keys: int) -> dict:
    root = TaskSpec(
        task_id="root",
        name="root",
        func_name="f",
        func_hash="h",
        call_style="kwargs",
        inputs={},
        outputs=None,
    )
    leaves = [
        TaskSpec(
            task_id=f"leaf{i:02d}",
            name=f"Leaf {i}",
            func_name="g",
            func_hash="h",
            call_style="kwargs",
            inputs={"x": InputRef(task_id="root", key="x")},
            outputs=None,
        )
        for i in range(sinks)
    ]
    model = create_run(RunCreated(run_id="r", workflow_id="W", at_ms=1, tasks=[root, *leaves[::-1]]), 1)
    for spec in [root, *leaves]:
        common = {"run_id": "r", "task_id": spec.task_id, "attempt": 1, "node_id": "n", "at_ms": 2}
        result = {"x": 1} if spec is root else {f"k{j:02d}": j for j in range(keys)}
        for event in (
            AttemptPlaced(**common),
            AttemptStarted(**common),
            AttemptSucceeded(**common, result=encode_value(result)),
        ):
            fold_run_event(model, event)
    fold_run_event(model, RunFinished(run_id="r", at_ms=3, state="succeeded"))
    assert model.run.result_summary is not None
    return {"names": model.run.names, "summary": msgspec.json.decode(model.run.result_summary)}


def test_the_summary_lists_at_most_ten_sinks_in_submission_order_and_says_what_it_cut() -> None:
    small = _summary_run(sinks=3, keys=2)["summary"]
    assert small == {
        "sink_tasks": 3,
        "truncated": False,
        "tasks": [
            {
                "task_id": f"leaf{i:02d}",
                "name": f"Leaf {i}",
                "state": "succeeded",
                "outputs": {"k00": 0, "k01": 1},
            }
            for i in (2, 1, 0)  # submitted in reverse: the order they were given in
        ],
    }
    big = _summary_run(sinks=SUMMARY_TASKS + 2, keys=25)["summary"]
    assert big["sink_tasks"] == SUMMARY_TASKS + 2 and big["truncated"] is True
    assert len(big["tasks"]) == SUMMARY_TASKS and len(big["tasks"][0]["outputs"]) == 20


def test_names_are_searchable_text_sorted_and_bounded() -> None:
    names = _summary_run(sinks=3, keys=1)["names"]
    assert names == "w\nf\ng\nleaf 0\nleaf 1\nleaf 2\nroot"
    many = [
        TaskSpec(
            task_id=f"t{i}",
            name=f"Step\n{i:05d}",
            func_name="f",
            func_hash="h",
            call_style="kwargs",
            inputs={},
            outputs=None,
        )
        for i in range(2000)
    ]
    run = create_run(RunCreated(run_id="r", workflow_id="W", at_ms=1, tasks=many), 1).run
    assert NAMES_MAX_CHARS <= len(run.names) < NAMES_MAX_CHARS + 20
    assert run.names.split("\n")[:3] == ["w", "f", "step 00000"]


def test_a_cursor_carries_the_sort_it_was_made_for() -> None:
    query = RunQuery.parse(sort="finished", order="asc")
    cursor = encode_cursor(query, {"created_at_ms": 5, "finished_at_ms": None, "run_seq": 9})
    again = RunQuery.parse(sort="finished", order="asc", cursor=cursor)
    assert (again.after_key, again.after_seq) == (UNFINISHED, 9)
    with pytest.raises(ValidationError, match="sort=finished order=asc"):
        RunQuery.parse(cursor=cursor)


# The document's patterns for `GET /runs` (maze/api/runs.py) say what the route accepts:
# tests/test_openapi_contract.py cannot hold the route to them (its cursor and the order of
# `created_after` and `created_before` are rules no parameter's schema can say, so a 400 there is
# allowed, tests/schemathesis.toml), these do.
@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    state=st.from_regex(STATE_PATTERN, fullmatch=True),
    kind=st.from_regex(KIND_PATTERN, fullmatch=True),
    at=st.one_of(
        st.integers(0, MAX_TIME_MS).map(str), st.from_regex(ISO_PATTERN, fullmatch=True), st.just("")
    ),
    search=st.text(max_size=MAX_SEARCH_CHARS),
    sort=st.sampled_from([*SORTS, ""]),
    order=st.sampled_from([*ORDERS, ""]),
)
def test_every_filter_the_document_allows_is_accepted(
    state: str, kind: str, at: str, search: str, sort: str, order: str
) -> None:
    RunQuery.parse(state=state, kind=kind, created_after=at, search=search, sort=sort, order=order)
    RunQuery.parse(created_before=at)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    text=st.one_of(
        st.text(),
        st.lists(st.sampled_from(["failed", "static", "x", " ", ",", "\n", "a b"]), max_size=50).map("".join),
    )
)
def test_a_list_the_document_does_not_allow_is_refused(text: str) -> None:
    for name, pattern in (("state", STATE_PATTERN), ("kind", KIND_PATTERN)):
        if re.search(pattern, text):
            RunQuery.parse(**{name: text})
        else:
            with pytest.raises(ValidationError):
                RunQuery.parse(**{name: text})


def test_times_are_ascii_digits_or_iso_8601() -> None:
    """'¹'.isdigit() is true and int('¹') raises: it was a 500 (found by Schemathesis)."""
    for bad in ("¹", "٣", "--5", "-5", "+5", "1.5", str(MAX_TIME_MS + 1)):
        with pytest.raises(ValidationError):
            RunQuery.parse(created_after=bad)
    assert RunQuery.parse(created_after="2024-02-29").created_after == 1_709_164_800_000
    assert RunQuery.parse(created_after="007").created_after == 7
    # the bound is on the text as given ('İ' lowercases to two characters), as the document says
    RunQuery.parse(search="İ" * MAX_SEARCH_CHARS)
    with pytest.raises(ValidationError, match="200"):
        RunQuery.parse(search=" " * (MAX_SEARCH_CHARS + 1))


def test_the_bounded_query_answers_as_a_plain_top_n_would(tmp_path: Path, monkeypatch) -> None:
    """The page query's bound (`max(key, n)`, run_search.py) is only a shortcut: for any filter,
    sort, order, cursor and offset it must give what ORDER BY ... LIMIT gives alone."""
    from maze.projections import db, queries, run_search
    from maze.projections.folder import Folder

    conn = db.open_db(tmp_path / "history.duckdb")
    folder = Folder(conn)
    batch = [(subjects.RUNS_STREAM, seq, events) for seq, (_, events, _) in enumerate(_history_messages(), 1)]
    folder.commit(*folder.fold(batch))
    cur = db.cursor(conn)
    rng = random.Random(5)
    for _ in range(60):
        params: dict = {
            "limit": rng.choice((1, 7, 50)),
            "sort": rng.choice(("created", "finished")),
            "order": rng.choice(("desc", "asc")),
        }
        if rng.random() < 0.4:
            params["state"] = ",".join(rng.sample(("created", *FINAL_STATES), 2))
        if rng.random() < 0.3:
            params["search"] = rng.choice(("etl", "clean", "#1", "tail", "nothing at all"))
        if rng.random() < 0.3:
            params["created_after"] = BASE_MS + rng.randrange(0, 300_000)
        if rng.random() < 0.3:
            params["offset"] = rng.randrange(0, 400)
        query = RunQuery.parse(**params)
        if rng.random() < 0.5:
            _, cursor = queries.search(cur, query)
            if cursor is None:
                continue
            query = RunQuery.parse(**{**params, "offset": 0, "cursor": cursor})
        bounded = queries.search(cur, query)
        monkeypatch.setattr(run_search, "MAX_BOUNDED", 0)
        plain = queries.search(cur, query)
        monkeypatch.undo()
        assert bounded == plain, params


def test_the_projector_keeps_the_newest_finished_runs_that_fit_and_every_active_one(tmp_path: Path) -> None:
    """The projector's cache of runs (rows in memory; the rest is read back from DuckDB) keeps
    every active run and, newest first, the finished runs whose rows fit its bound. It counts
    sizes as runs are committed instead of walking the whole cache per batch: checked here
    against that walk."""
    from collections import OrderedDict

    from maze.projections import db
    from maze.projections.folder import Folder

    limit = 25
    folder = Folder(db.open_db(tmp_path / "cache.duckdb"), finished_rows=limit)
    walked: OrderedDict[str, tuple[bool, int]] = OrderedDict()  # the walk's view: (finished, rows)
    rng = random.Random(3)
    created: set[str] = set()
    ended: set[str] = set()
    evicted = 0
    for seq in range(1, 301):
        batch = []
        # sorted: a set's order of strings changes with the process's hash seed, and so would
        # the random draws that follow it
        for run_id in sorted({f"run_{rng.randrange(40)}" for _ in range(rng.randint(1, 3))}):
            events: list = []
            if run_id not in created:
                created.add(run_id)
                tasks = [_spec(f"t{i}", "n", "f") for i in range(rng.randint(1, 4))]
                events.append(RunCreated(run_id=run_id, workflow_id="w", at_ms=seq, tasks=tasks))
            if rng.random() < 0.5 and run_id not in ("run_0", "run_1", "run_2"):  # these stay active
                events.append(RunFinished(run_id=run_id, at_ms=seq, state="succeeded"))
                ended.add(run_id)
            batch.append((subjects.RUNS_STREAM, seq, events))
        models, nodes, positions = folder.fold(
            [(s, q, [e for _, _, es in batch for e in es]) for s, q, _ in batch[:1]]
        )
        folder.commit(models, nodes, positions)
        for model in models:
            walked[model.run.run_id] = (model.finished, model.size)
            walked.move_to_end(model.run.run_id)
        kept = 0
        for run_id in reversed(list(walked)):  # the walk the projector did before, newest first
            finished, size = walked[run_id]
            if finished:
                kept += size
                if kept > limit:
                    del walked[run_id]
                    evicted += 1
        assert list(folder.cache) == list(walked), seq
        assert set(folder.run_rows) == set(folder.cache)
    active = {r for r, m in folder.cache.items() if not m.finished}
    assert evicted > 20 and active == created - ended and {"run_0", "run_1", "run_2"} <= active
