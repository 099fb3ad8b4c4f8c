"""ReAct runs against a real head (embedded NATS, its local worker): the README's example, repair
of a malformed decision, the built-in file tools and exec_code in the run's workspace, skills,
compaction, max_steps, parallel tool calls, cancel, the trace (API, SDK, CLI), refused input, and
a head kill -9 in the middle of a run."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from maze import MaClient, exec_code, load_skill, read_file, task, write_file
from maze.core.errors import Conflict, NotFound, RunFailed, ValidationError
from tests.helpers import HeadProcess, wait_until


@task
def decide(prompt: str, history: list, tools: dict, step: int):
    if not history:
        return {"action": {"tool": "multiply", "args": {"a": 18, "b": 7}}}
    result = history[-1]["observation"]["result"]["result"]
    return {"action": {"final": f"The answer is {result}."}}


@task
def multiply(a: int, b: int):
    return {"result": a * b}


@task
def calculator(expression: str):
    """Evaluate an arithmetic expression of numbers and + - * /."""
    allowed = set("0123456789+-*/(). ")
    if not set(expression) <= allowed:
        raise ValueError(f"not arithmetic: {expression!r}")
    return {"value": eval(expression)}


@task
def repairing_decide(prompt: str, history: list, tools: dict, step: int):
    if step == 1:
        return {"action": {"tool": "web_search", "args": {"query": prompt}}}  # no such tool
    if step == 2:
        assert "unknown tool 'web_search'" in history[-1]["observation"]["repair"]
        return {"action": {"tool": "calculator", "args": {"expression": "6 * 7"}}}
    return {"action": {"final": history[-1]["observation"]["result"]["value"]}}


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    proc = HeadProcess(tmp_path_factory.mktemp("react") / "head", extra=["--cpus", "2"])
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def client(head: HeadProcess) -> MaClient:
    return MaClient(head.url)


def _running(client: MaClient, run_id: str, task_id: str) -> bool:
    try:
        return client.get_run_task(run_id, task_id)["state"] == "running"
    except NotFound:  # not appended yet
        return False


def _events(client: MaClient, run_id: str) -> list[dict]:
    return client.get_run_events(run_id)


def test_readme_example(client: MaClient) -> None:
    react = client.create_react_workflow(
        llm_task=decide,
        tools=[multiply],
        max_steps=3,
    )
    answer = react.run("Use the calculator to compute 18 * 7.")
    assert answer == "The answer is 126."
    run = client.get_run(client.list_runs(kind="react", limit=1)[0]["run_id"])
    assert run["kind"] == "react" and run["state"] == "succeeded"
    assert run["result_summary"]["result"] == "The answer is 126."
    trace = client.get_agent_trace(run["run_id"])
    assert trace["state"] == "succeeded" and trace["final"] == "The answer is 126."
    assert [s["decision"]["kind"] for s in trace["steps"]] == ["tool", "final"]
    call = trace["steps"][0]["tool_calls"][0]
    assert call["tool"] == "multiply" and call["args"] == {"a": 18, "b": 7}
    assert call["task"]["state"] == "succeeded"
    assert trace["steps"][0]["observations"][0]["observation"] == {"result": {"result": 126}}
    tasks = client.get_run_tasks(run["run_id"])
    assert sorted(t["task_id"] for t in tasks) == ["s1-call0-multiply", "s1-decide", "s2-decide"]


def test_local_repair_then_calculator_then_final(client: MaClient) -> None:
    react = client.create_react_workflow(llm_task=repairing_decide, tools=[calculator], max_steps=5)
    run_id = react.run_async("What is 6 * 7?")
    final = client.wait_run(run_id, timeout=60)
    assert final["state"] == "succeeded"
    trace = client.get_agent_trace(run_id)
    assert trace["final"] == 42
    kinds = [s["decision"]["kind"] for s in trace["steps"]]
    assert kinds == ["invalid", "tool", "final"]
    assert "unknown tool 'web_search'" in trace["steps"][0]["repair"]
    assert "calculator" in trace["steps"][0]["repair"]  # it names the tools there are
    types = [e["type"] for e in _events(client, run_id) if e["type"].startswith("agent.")]
    assert types == [
        "agent.decision",
        "agent.repair",
        "agent.decision",
        "agent.tool_call",
        "agent.observation",
        "agent.decision",
        "agent.final",
    ]


@task
def malformed_decide(prompt: str, history: list, tools: dict, step: int):
    answers = {
        1: {"action": "{not json"},  # an LLM's broken JSON
        2: {"action": ["a", "list"]},
        3: {"action": {"tool": "calculator", "args": {"expr": "1+1"}}},  # bad args
        4: {"nothing": True},
        5: {"action": '{"action": {"final": "recovered"}}'},  # a whole decision as JSON text
    }
    return answers[step]


def test_malformed_decisions_are_repairs(client: MaClient) -> None:
    react = client.create_react_workflow(llm_task=malformed_decide, tools=[calculator], max_steps=5)
    assert react.run("anything") == "recovered"
    trace = client.get_agent_trace(client.list_runs(kind="react", limit=1)[0]["run_id"])
    repairs = [s.get("repair", "") for s in trace["steps"][:4]]
    assert "not valid JSON" in repairs[0]
    assert "is a list" in repairs[1]
    assert (
        "missing argument(s) ['expression']" in repairs[2] and "unexpected argument(s) ['expr']" in repairs[2]
    )
    assert "no 'action'" in repairs[3]


@task
def looping_decide(prompt: str, history: list, tools: dict, step: int):
    return {"action": {"tool": "multiply", "args": {"a": step, "b": 2}}}


def test_max_steps_ends_failed_with_partial_trace(client: MaClient) -> None:
    react = client.create_react_workflow(llm_task=looping_decide, tools=[multiply], max_steps=2)
    with pytest.raises(RunFailed) as caught:
        react.run("never ends")
    assert caught.value.details["state"] == "failed"
    assert caught.value.details["error"]["error_type"] == "max_steps_exceeded"
    trace = client.get_agent_trace(caught.value.details["run_id"])
    assert trace["state"] == "failed" and trace["error"]["error_type"] == "max_steps_exceeded"
    assert [s["step"] for s in trace["steps"]] == [1, 2]
    assert trace["steps"][0]["observations"][0]["observation"]["result"] == {"result": 2}
    assert "tool_calls" not in trace["steps"][1]  # the last decision's tools never ran


@task
def stamp_a(label: str = "a"):
    import time

    began = time.time()
    time.sleep(0.5)
    return {"label": label, "began": began, "ended": time.time()}


@task
def stamp_b(label: str = "b"):
    import time

    began = time.time()
    time.sleep(0.5)
    return {"label": label, "began": began, "ended": time.time()}


@task
def parallel_decide(prompt: str, history: list, tools: dict, step: int):
    if step == 1:
        return {
            "action": {
                "tools": [{"tool": "stamp_a", "args": {}}, {"tool": "stamp_b", "args": {"label": "B"}}]
            }
        }
    return {"action": {"final": [h["observation"]["result"] for h in history]}}


def test_parallel_tool_calls_overlap(client: MaClient) -> None:
    react = client.create_react_workflow(llm_task=parallel_decide, tools=[stamp_a, stamp_b], max_steps=2)
    results = react.run("two at once")
    assert [r["label"] for r in results] == ["a", "B"]
    assert max(r["began"] for r in results) < min(r["ended"] for r in results), results


@task
def files_decide(prompt: str, history: list, tools: dict, step: int):
    plan = {
        1: {"tool": "write_file", "args": {"path": "notes/plan.txt", "content": "step one"}},
        2: {"tool": "read_file", "args": {"path": "notes/plan.txt"}},
        3: {"tool": "read_file", "args": {"path": "../../etc/passwd"}},
        4: {"tool": "write_file", "args": {"path": "/tmp/escape.txt", "content": "x"}},
        5: {"tool": "read_file", "args": {"path": "given.txt"}},
    }
    if step in plan:
        return {"action": plan[step]}
    return {"action": {"final": [h["observation"] for h in history]}}


def test_file_tools_in_the_workspace_and_escapes_refused(client: MaClient, tmp_path: Path) -> None:
    (tmp_path / "given.txt").write_text("from the workspace")
    react = client.create_react_workflow(
        llm_task=files_decide, tools=[read_file, write_file], max_steps=6, workspace_dir=str(tmp_path)
    )
    seen = react.run("files")
    assert seen[0]["result"] == {"path": "notes/plan.txt", "bytes": 8}
    assert seen[1]["result"]["content"] == "step one"  # written by the step before, on its way here
    assert seen[2]["error"]["error_type"] == "user_code" and "refused" in seen[2]["error"]["message"]
    assert "absolute" in seen[3]["error"]["message"] or "refused" in seen[3]["error"]["message"]
    assert seen[4]["result"]["content"] == "from the workspace"
    assert not Path("/tmp/escape.txt").exists()


@task
def exec_decide(prompt: str, history: list, tools: dict, step: int):
    if step == 1:
        return {
            "action": {
                "tool": "exec_code",
                "args": {"code": "open('made.txt', 'w').write('42')\nprint('hi')"},
            }
        }
    if step == 2:
        return {"action": {"tool": "read_file", "args": {"path": "made.txt"}}}
    if step == 3:
        return {"action": {"tool": "exec_code", "args": {"code": "import time\ntime.sleep(60)"}}}
    return {"action": {"final": [h["observation"] for h in history]}}


def _sandbox_available(client: MaClient) -> bool:
    nodes = client.http.get("/cluster/resources")["nodes"]
    return any((n.get("sandbox") or {}).get("available") for n in nodes)


def test_exec_code_in_the_workspace_and_its_timeout(client: MaClient) -> None:
    if not _sandbox_available(client):
        pytest.skip("no node here can sandbox (bubblewrap)")
    react = client.create_react_workflow(
        llm_task=exec_decide, tools=[exec_code, read_file], max_steps=4, task_timeout=3
    )
    began = time.monotonic()
    seen = react.run("code")
    ran, read, slow = seen
    assert ran["result"]["stdout"] == "hi\n" and ran["result"]["exit_code"] == 0
    assert read["result"]["content"] == "42"  # the sandbox's file is an artifact later steps see
    assert slow["result"]["timed_out"] is True and slow["result"]["exit_code"] == -9  # task_timeout: 3 s
    assert "timeout of 3s" in slow["result"]["stderr"]
    assert time.monotonic() - began < 45


@task
def skill_decide(prompt: str, history: list, tools: dict, step: int):
    catalog = tools["read_skill_file"]["skills"]
    if step == 1:
        assert catalog == [{"name": "data-analysis", "description": "How to analyse CSV data."}]
        return {
            "action": {
                "tool": "read_skill_file",
                "args": {"skill_name": "data-analysis", "file_name": "reference.md"},
            }
        }
    if step == 2:
        return {
            "action": {
                "tool": "read_skill_file",
                "args": {"skill_name": "data-analysis", "file_name": "../x.md"},
            }
        }
    return {"action": {"final": [h["observation"] for h in history]}}


def test_skill_catalog_and_read_skill_file(client: MaClient, tmp_path: Path) -> None:
    folder = tmp_path / "skills" / "data-analysis"
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(
        "---\nname: data-analysis\ndescription: How to analyse CSV data.\n---\nUse pandas.\n"
    )
    (folder / "reference.md").write_text("Columns are comma separated.")
    (tmp_path / "skills" / "x.md").write_text("outside the skill")
    skills = [load_skill(folder)]
    react = client.create_react_workflow(llm_task=skill_decide, tools=[multiply], skills=skills, max_steps=3)
    read, escaped = react.run("analyse")
    assert read["result"]["content"] == "Columns are comma separated."
    assert "error" in escaped and "refused" in escaped["error"]["message"]


def test_load_skill_refuses_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"no SKILL\.md"):
        load_skill(tmp_path)
    (tmp_path / "SKILL.md").write_text("no front matter")
    with pytest.raises(ValidationError, match="front matter"):
        load_skill(tmp_path)
    (tmp_path / "SKILL.md").write_text("---\nname: bad name!\ndescription: x\n---\n")
    with pytest.raises(ValidationError, match="'name'"):
        load_skill(tmp_path)
    (tmp_path / "SKILL.md").write_text("---\nname: ok\n---\n")
    with pytest.raises(ValidationError, match="'description'"):
        load_skill(tmp_path)


@task
def long_output(size: int = 20000):
    return {"text": "x" * (size // 2) + "y" * (size // 2), "size": size}


@task
def compact_decide(prompt: str, history: list, tools: dict, step: int):
    if step == 1:
        return {"action": {"tool": "long_output", "args": {"size": 20000}}}
    return {"action": {"final": history[-1]["observation"]}}


def test_long_observation_is_compacted_and_kept_whole(client: MaClient) -> None:
    react = client.create_react_workflow(llm_task=compact_decide, tools=[long_output], max_steps=2)
    seen = react.run("long")
    text = seen["result"]["text"]
    assert len(text) < 1200 and text.startswith("x" * 600) and text.endswith("y" * 200)
    assert "characters compacted" in text and seen["result"]["size"] == 20000
    sha = seen["compacted"]["sha256"]
    assert seen["compacted"]["keys"] == ["text"] and seen["compacted"]["chars"] > 20000
    whole = client.blobs.fetch(sha)
    assert hashlib.sha256(whole).hexdigest() == sha
    assert json.loads(whole) == {"size": 20000, "text": "x" * 10000 + "y" * 10000}
    run_id = client.list_runs(kind="react", limit=1)[0]["run_id"]
    compactions = [e for e in _events(client, run_id) if e["type"] == "agent.compaction"]
    assert [c["sha256"] for c in compactions] == [sha]


@task
def big_value(size: int):
    return {"blob": "v" * size}


@task
def paging_decide(prompt: str, history: list, tools: dict, step: int):
    if step == 1:
        return {"action": {"tool": "read_file", "args": {"path": "big.txt"}}}
    if step == 2:
        offset = history[-1]["observation"]["result"]["next_offset"]
        return {"action": {"tool": "read_file", "args": {"path": "big.txt", "offset": offset, "limit": 10}}}
    if step == 3:
        return {"action": {"tool": "big_value", "args": {"size": 300_000}}}
    return {"action": {"final": [h["observation"] for h in history]}}


def test_large_results_stay_visible_to_the_agent(client: MaClient, tmp_path: Path) -> None:
    """read_file returns 64 KiB at most (under the inline value limit), with where to go on; a
    tool's value over that limit is shown as a note naming its blob, not a bare descriptor."""
    (tmp_path / "big.txt").write_text("a" * 65536 + "0123456789" + "b" * 300_000)
    react = client.create_react_workflow(
        llm_task=paging_decide, tools=[read_file, big_value], max_steps=4, workspace_dir=str(tmp_path)
    )
    first, second, third = react.run("page")
    head = first["result"]
    assert head["truncated"] is True and head["next_offset"] == 65536 and head["size"] == 365546
    assert isinstance(head["content"], str) and "characters compacted" in head["content"]
    assert head["content"].startswith("a" * 600) and first["compacted"]["keys"] == ["content"]
    assert second["result"]["content"] == "0123456789" and second["result"]["next_offset"] == 65546
    note = third["result"]["blob"]
    assert note.startswith("…[a value of ") and "too large to show" in note
    sha = note.split("maze://artifacts/sha256/")[1][:64]
    assert msgspec.msgpack.decode(client.blobs.fetch(sha)) == "v" * 300_000


@task
def slow_tool(seconds: float = 60.0):
    import time

    time.sleep(seconds)
    return {"slept": seconds}


@task
def slow_decide(prompt: str, history: list, tools: dict, step: int):
    if step == 1:
        return {"action": {"tool": "slow_tool", "args": {"seconds": float(prompt)}}}
    return {"action": {"final": history[-1]["observation"]["result"]["slept"]}}


def test_cancel_a_react_run(client: MaClient) -> None:
    react = client.create_react_workflow(llm_task=slow_decide, tools=[slow_tool], max_steps=3)
    run_id = react.run_async("60")
    wait_until(lambda: _running(client, run_id, "s1-call0-slow_tool"), timeout=30)
    assert client.cancel_run(run_id, reason="enough")["state"] == "cancelled"
    assert client.get_run_task(run_id, "s1-call0-slow_tool")["state"] == "cancelled"
    trace = client.get_agent_trace(run_id)
    assert trace["state"] == "cancelled" and len(trace["steps"]) == 1 and trace["final"] is None
    time.sleep(0.5)  # nothing is appended after the end
    assert len(client.get_run_tasks(run_id)) == 2


def test_client_cannot_append_or_finalize_a_react_run(client: MaClient) -> None:
    react = client.create_react_workflow(llm_task=slow_decide, tools=[slow_tool], max_steps=3)
    run_id = react.run_async("30")
    wait_until(lambda: _running(client, run_id, "s1-call0-slow_tool"), timeout=30)
    with pytest.raises(Conflict, match="ReAct run"):
        client.http.post(f"/runs/{run_id}/finalize", json={"result": 1})
    with pytest.raises(Conflict, match="ReAct run"):
        client.http.post(f"/runs/{run_id}/tasks", json={"tasks": [{"task_id": "x", "func_hash": "0" * 64}]})
    client.cancel_run(run_id)
    with pytest.raises(Conflict, match="react run"):  # ended: still not retried
        client.http.post(f"/runs/{run_id}/retry", json={})


def test_bad_input_is_refused(client: MaClient) -> None:
    with pytest.raises(ValidationError, match="max_steps"):
        client.create_react_workflow(llm_task=decide, tools=[multiply], max_steps=0)
    with pytest.raises(ValidationError, match="task_timeout"):
        client.create_react_workflow(llm_task=decide, tools=[multiply], task_timeout=-1)
    with pytest.raises(ValidationError, match="distinct"):
        client.create_react_workflow(llm_task=decide, tools=[multiply, multiply])

    @task
    def needs_more(prompt: str, history: list, tools: dict, step: int, secret: str):
        return {"action": {"final": 1}}

    with pytest.raises(ValidationError, match="secret"):
        client.create_react_workflow(llm_task=needs_more, tools=[multiply]).run_async("x")
    body = {"prompt": "x", "decide": {"task_id": "d", "func_hash": "z"}, "tools": []}
    with pytest.raises(ValidationError):
        client.http.post("/runs/react", json=body)
    assert client.http.get(f"/runs/{client.list_runs(limit=1)[0]['run_id']}/trace")["run_id"]


def test_cli_runs_trace(client: MaClient, head: HeadProcess) -> None:
    react = client.create_react_workflow(llm_task=decide, tools=[multiply], max_steps=3)
    react.run("x")
    run_id = client.list_runs(kind="react", limit=1)[0]["run_id"]
    done = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "trace", run_id, "--server-url", head.url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["final"] == "The answer is 126."
    shown = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "trace", run_id, "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "multiply" in shown.stdout and "The answer is 126." in shown.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "trace", "run_nope", "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "error" in missing.stdout + missing.stderr


def test_head_kill9_mid_run_completes_without_a_duplicated_step(tmp_path: Path) -> None:
    from tests.helpers import wait_port_free

    head = HeadProcess(tmp_path / "head", extra=["--cpus", "2"])
    head.start()
    try:
        client = MaClient(head.url)
        react = client.create_react_workflow(llm_task=slow_decide, tools=[slow_tool], max_steps=3)
        run_id = react.run_async("3")
        wait_until(lambda: _running(client, run_id, "s1-call0-slow_tool"), timeout=30)
        head.kill9()
        wait_port_free(head.port)
        wait_port_free(head.nats_port)
        head.start()
        final = client.wait_run(run_id, timeout=120)
        assert final["state"] == "succeeded", final
        trace = client.get_agent_trace(run_id)
        assert trace["final"] == 3.0
        assert [s["step"] for s in trace["steps"]] == [1, 2]
        events = client.get_run_events(run_id)
        per_step = collections.Counter(
            (e["type"], e.get("step")) for e in events if e["type"].startswith("agent.")
        )
        assert all(n == 1 for n in per_step.values()), per_step
        assert per_step[("agent.decision", 1)] == per_step[("agent.decision", 2)] == 1
        appended = [t["task_id"] for e in events if e["type"] == "task.appended" for t in e["tasks"]]
        assert sorted(appended) == ["s1-call0-slow_tool", "s1-decide", "s2-decide"]
        succeeded = collections.Counter(e["task_id"] for e in events if e["type"] == "attempt.succeeded")
        assert set(succeeded) == {"s1-decide", "s1-call0-slow_tool", "s2-decide"}
        assert all(n == 1 for n in succeeded.values()), succeeded
        assert sum(1 for e in events if e["type"] == "run.finished") == 1
    finally:
        head.stop()


def test_the_offline_repair_example_runs(head: HeadProcess) -> None:
    example = Path(__file__).parent.parent / "examples" / "react_workflow" / "local_repair_demo.py"
    done = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MAZE_SERVER_URL": head.url},
    )
    assert done.returncode == 0, done.stderr
    assert "repair: unknown tool 'web_search'" in done.stdout
    assert done.stdout.strip().endswith("final (succeeded): 18 * 7 = 126")


def test_rebuilt_read_models_are_equal_and_maze_runs_show_says_react(
    client: MaClient, head: HeadProcess
) -> None:
    import httpx

    react = client.create_react_workflow(llm_task=repairing_decide, tools=[calculator], max_steps=5)
    run_id = react.run_async("What is 6 * 7?")
    assert client.wait_run(run_id, timeout=60)["state"] == "succeeded"
    shown = subprocess.run(
        [sys.executable, "-m", "maze", "runs", "show", run_id, "--server-url", head.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "kind=react" in shown.stdout, shown
    before = (client.get_run(run_id), client.get_run_tasks(run_id), client.get_agent_trace(run_id))
    report = httpx.post(f"{head.url}/projections/rebuild", timeout=120).json()
    assert report["equal"] is True, report
    assert (client.get_run(run_id), client.get_run_tasks(run_id), client.get_agent_trace(run_id)) == before


@task
def long_history_decide(prompt: str, history: list, tools: dict, step: int):
    if step <= 24:
        return {"action": {"tool": "long_output", "args": {"size": 3500}}}
    return {
        "action": {"final": [len(history), sum(len(h["observation"]["result"]["text"]) for h in history)]}
    }


def test_a_long_history_reaches_the_decision_through_the_blob_store(client: MaClient) -> None:
    react = client.create_react_workflow(llm_task=long_history_decide, tools=[long_output], max_steps=25)
    assert react.run("long history") == [24, 24 * 3500]  # ~90 KB of history, past the inline bound
    run_id = client.list_runs(kind="react", limit=1)[0]["run_id"]
    last = client.get_run_task(run_id, "s25-decide")
    assert last["inputs"]["history"]["value"]["__maze_value__"] == "blob"
