"""openai_llm_task against a scripted OpenAI-compatible server on loopback (tests/llm_server.py).

First called in this process (a task stays callable as a plain function): what it sends, what it
makes of each kind of reply, how HTTP errors fail. Then run for real by a head and its worker,
which alone holds the API key: a static workflow of one decision, a 429 retried by the task's
retry policy, a 401 failing for good at the first attempt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maze import MaClient, TaskFailed, ValidationError, load_skill, openai_llm_task, task
from maze.agents import tool_schema
from maze.agents.messages import SYSTEM_PROMPT
from maze.agents.openai_task import (
    LLM_CONFIG_ERROR,
    LLM_RATE_LIMITED,
    LLM_REJECTED,
    LLM_UNAVAILABLE,
    with_settings,
)
from maze.core.errors import TaskFailure
from maze.sdk.serialize import pickle_function
from maze.sdk.task import task_meta
from tests.helpers import HeadProcess, NatsServer, free_port
from tests.llm_server import Reply, ScriptedLLM, completion

KEY_ENV = "MAZE_TEST_LLM_KEY"
SECRET = "sk-test-3f9a1c77e2b5-do-not-leak"


@task
def multiply(a: int, b: int) -> dict[str, int]:
    """Multiply two integers.

    Args:
        a: the first factor
        b: the second factor
    """
    return {"result": a * b}


@task
def search(query: str, limit: int = 5) -> dict[str, Any]:
    """Search the notes."""
    return {"hits": [query] * limit}


TOOLS = [tool_schema(multiply), tool_schema(search)]


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


def decide(
    llm: ScriptedLLM, *replies: Reply, history: list[Any] | None = None, **options: Any
) -> dict[str, Any]:
    llm.load(*replies)
    decision = openai_llm_task(base_url=llm.base_url, model="scripted-model", api_key_env=KEY_ENV, **options)
    out = decision(prompt="Compute 18 * 7.", history=history or [], tools=TOOLS, step=len(history or []))
    assert set(out) == {"action", "usage"}
    return out


def test_the_request(llm: ScriptedLLM, keyed: None) -> None:
    history = [
        {
            "step": 0,
            "action": {"tool": "search", "args": {"query": "q"}},
            "observation": {"result": {"hits": []}},
        }
    ]
    out = decide(llm, completion("Done."), history=history, max_tokens=77, temperature=0.3)
    assert out["action"] == {"final": "Done."}
    assert out["usage"]["prompt_tokens"] == 10 and out["usage"]["completion_tokens"] == 5
    [sent] = llm.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.headers["content-type"] == "application/json"
    body = sent.body
    assert body["model"] == "scripted-model"
    assert body["max_tokens"] == 77
    assert body["temperature"] == 0.3
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert body["messages"][1] == {"role": "user", "content": "Compute 18 * 7."}
    assert body["messages"][2]["tool_calls"][0]["function"] == {
        "name": "search",
        "arguments": '{"query": "q"}',
    }
    assert body["messages"][3] == {
        "role": "tool",
        "tool_call_id": "call_0_0",
        "content": '{"result": {"hits": []}}',
    }
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "multiply",
                "description": "Multiply two integers.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "a": {"type": "integer", "description": "the first factor"},
                        "b": {"type": "integer", "description": "the second factor"},
                    },
                    "required": ["a", "b"],
                    "additionalProperties": False,
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search the notes.",
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "default": 5}},
                    "required": ["query"],
                    "additionalProperties": False,
                },
            },
        },
    ]


def test_the_skills_catalog_reaches_the_model(llm: ScriptedLLM) -> None:
    """A ReAct run's catalog (maze/api/react.py) holds the skills at read_skill_file's `skills`:
    the request shows each skill's name and description in that tool's description."""
    from maze.tasks.agent_tools import read_skill_file

    spec = tool_schema(read_skill_file)
    catalog = {
        "read_skill_file": {
            "description": spec["description"],
            "parameters": spec["parameters"],
            "skills": [
                {"name": "data-analysis", "description": "How to analyse CSV data."},
                {"name": "plots", "description": ""},
            ],
        }
    }
    llm.load(completion("Done."))
    decision = openai_llm_task(base_url=llm.base_url, model="scripted-model")
    decision(prompt="p", history=[], tools=catalog, step=1)
    [sent] = llm.requests
    [tool] = sent.body["tools"]
    described = tool["function"]["description"]
    assert described.startswith(spec["description"])
    assert "- data-analysis: How to analyse CSV data." in described
    assert "- plots: (no description)" in described
    assert tool["function"]["parameters"] == spec["parameters"]


def test_each_kind_of_reply(llm: ScriptedLLM, keyed: None) -> None:
    assert decide(llm, completion(tool_calls=[("multiply", {"a": 18, "b": 7})]))["action"] == {
        "tool": "multiply",
        "args": {"a": 18, "b": 7},
    }
    parallel = completion(tool_calls=[("search", {"query": "a"}), ("search", {"query": "b", "limit": 2})])
    assert decide(llm, parallel)["action"] == {
        "tools": [
            {"tool": "search", "args": {"query": "a"}},
            {"tool": "search", "args": {"query": "b", "limit": 2}},
        ]
    }
    assert decide(llm, completion("The answer is 126."))["action"] == {"final": "The answer is 126."}
    fenced = 'Next:\n```json\n{"action": {"tool": "multiply", "args": {"a": 2, "b": 3}}}\n```'
    assert decide(llm, completion(fenced))["action"] == {"tool": "multiply", "args": {"a": 2, "b": 3}}
    broken = '{"action": {"tool": "multiply", "args": {"a": 18'
    action = decide(llm, completion(broken))["action"]
    assert action["malformed"]["raw"] == broken and action["malformed"]["why"].startswith("not valid JSON")
    cut = decide(llm, completion('{"action": {"final": "The answer', finish_reason="length"), max_tokens=8)
    assert cut["action"] == {"malformed": {"raw": '{"action": {"final": "The answer', "why": "max_tokens"}}
    assert llm.requests[0].body["max_tokens"] == 8
    unknown = decide(llm, completion(tool_calls=[("divide", {"a": 1, "b": 2})]))["action"]
    assert unknown["malformed"]["why"] == "unknown tool 'divide' (tools: multiply, search)"


def test_http_errors(llm: ScriptedLLM, keyed: None) -> None:
    with pytest.raises(TaskFailure) as limited:
        decide(llm, Reply(429, {"error": {"message": "Rate limit reached", "type": "requests"}}))
    assert limited.value.error_type == LLM_RATE_LIMITED and limited.value.retryable
    assert "answered 429: Rate limit reached" in limited.value.message
    with pytest.raises(TaskFailure) as down:
        decide(llm, Reply(503, "upstream overloaded"))
    assert down.value.error_type == LLM_UNAVAILABLE and down.value.retryable
    assert "answered 503: upstream overloaded" in down.value.message
    with pytest.raises(TaskFailure) as refused:
        decide(llm, Reply(401, {"error": {"message": "Incorrect API key provided"}}))
    err = refused.value
    assert err.error_type == LLM_REJECTED and not err.retryable
    assert err.message == (
        f"POST {llm.base_url}/v1/chat/completions answered 401: Incorrect API key provided "
        f"(check the key in ${KEY_ENV})"
    )
    with pytest.raises(TaskFailure) as echoed:  # a server echoing the key never gets it into an error
        decide(llm, Reply(400, {"error": {"message": f"bad request from {SECRET}"}}))
    assert SECRET not in echoed.value.message and "***" in echoed.value.message
    with pytest.raises(TaskFailure) as missing:
        decide(llm, Reply(404, {"error": {"message": "The model does not exist"}}))
    assert "check base_url and model 'scripted-model'" in missing.value.message


def test_no_server_and_no_key(llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    decision = openai_llm_task(base_url=llm.base_url, model="m", api_key_env=KEY_ENV)
    with pytest.raises(TaskFailure) as unset:
        decision(prompt="p", history=[], tools=TOOLS, step=0)
    assert unset.value.error_type == LLM_CONFIG_ERROR and not unset.value.retryable
    assert KEY_ENV in unset.value.message
    nowhere = openai_llm_task(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", request_timeout=5)
    with pytest.raises(TaskFailure) as gone:
        nowhere(prompt="p", history=[], tools=TOOLS, step=0)
    assert gone.value.error_type == LLM_UNAVAILABLE and gone.value.retryable
    # without api_key_env no Authorization is sent; a base_url ending in /v1 is not doubled
    llm.load(completion("ok"))
    bare = openai_llm_task(base_url=f"{llm.base_url}/v1/", model="m")
    assert bare(prompt="p")["action"] == {"final": "ok"}
    assert llm.requests[0].path == "/v1/chat/completions"
    assert "authorization" not in llm.requests[0].headers
    assert "tools" not in llm.requests[0].body


def test_bad_configuration_is_refused_at_once() -> None:
    for kwargs, needle in [
        ({"base_url": "127.0.0.1:8000"}, "base_url must be an http"),
        ({"model": ""}, "model must be"),
        ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"temperature": 3}, "temperature must be between 0 and 2"),
        ({"api_key_env": "OPENAI-API-KEY"}, "api_key_env is the NAME"),
    ]:
        args = {"base_url": "http://127.0.0.1:1", "model": "m", **kwargs}
        with pytest.raises(ValidationError, match=needle):
            openai_llm_task(**args)
    with pytest.raises(ValidationError) as leaked:  # the key itself given by mistake: never echoed
        openai_llm_task(base_url="http://127.0.0.1:1", model="m", api_key_env=SECRET)
    assert SECRET not in str(leaked.value)


def test_the_key_never_travels_with_the_task(keyed: None) -> None:
    decision = openai_llm_task(base_url="http://127.0.0.1:1", model="scripted-model", api_key_env=KEY_ENV)
    _, blob = pickle_function(decision)
    assert KEY_ENV.encode() in blob and b"scripted-model" in blob  # the configuration does
    assert SECRET.encode() not in blob
    assert os.environ[KEY_ENV] == SECRET  # it was there to be captured


# ---- run for real: a head, its worker (which alone has the key), the scripted server ----


@pytest.fixture(scope="module")
def llm_head(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    assert KEY_ENV not in os.environ
    proc = HeadProcess(tmp_path_factory.mktemp("head"), nats_url=nats_server.url, extra=["--cpus", "2"])
    proc.env = {KEY_ENV: SECRET}  # the head's local worker, and so each task process, has the key
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.log()
    assert SECRET not in Path(proc.log_path).read_text(errors="replace")


@pytest.fixture
def cluster(llm_head: HeadProcess) -> MaClient:
    return MaClient(llm_head.url)


def test_a_decision_in_a_static_workflow(llm: ScriptedLLM, cluster: MaClient) -> None:
    llm.load(completion(tool_calls=[("multiply", {"a": 18, "b": 7})]))
    decision = openai_llm_task(
        base_url=llm.base_url, model="scripted-model", api_key_env=KEY_ENV, max_tokens=64
    )
    workflow = cluster.create_workflow()
    node = workflow.add_task(
        decision, inputs={"prompt": "Compute 18 * 7.", "history": [], "tools": TOOLS, "step": 0}
    )
    run_id = workflow.run()
    summary = cluster.wait_run(run_id, timeout=60)
    assert summary["state"] == "succeeded", summary
    [row] = cluster.get_run_tasks(run_id)
    assert row["task_id"] == node.task_id
    messages = workflow.get_results(run_id, verbose=False)
    [finished] = [m for m in messages if m["type"] == "finish_task"]
    assert finished["data"]["result"]["action"] == {"tool": "multiply", "args": {"a": 18, "b": 7}}
    [sent] = llm.requests
    assert sent.headers["authorization"] == f"Bearer {SECRET}"  # read on the worker, from its env
    assert sent.body["max_tokens"] == 64 and sent.body["model"] == "scripted-model"
    assert SECRET not in json.dumps(cluster.get_run_events(run_id))


def test_a_rate_limit_is_retried_by_the_task_policy(llm: ScriptedLLM, cluster: MaClient) -> None:
    llm.load(Reply(429, {"error": {"message": "slow down"}}), completion("The answer is 126."))
    decision = openai_llm_task(
        base_url=llm.base_url, model="m", api_key_env=KEY_ENV, max_retries=2, retry_backoff_seconds=0.05
    )
    run = cluster.create_dynamic_run(max_tasks=2, timeout_seconds=120)
    handle = run.append_task(
        decision, inputs={"prompt": "Compute 18 * 7.", "history": [], "tools": TOOLS, "step": 0}
    )
    out = run.wait_for_task(handle, timeout=60)
    assert out["action"] == {"final": "The answer is 126."}
    assert len(llm.requests) == 2
    attempts = cluster.get_run_task(run.run_id, handle.task_id)["attempts"]
    assert [a["state"] for a in attempts] == ["failed", "succeeded"]
    assert attempts[0]["error"]["error_type"] == LLM_RATE_LIMITED
    run.finalize(out["action"]["final"])


def test_a_wrong_key_fails_for_good_at_once(llm: ScriptedLLM, cluster: MaClient) -> None:
    llm.load(Reply(401, {"error": {"message": "Incorrect API key provided"}}), completion("never asked"))
    decision = openai_llm_task(
        base_url=llm.base_url, model="m", api_key_env=KEY_ENV, max_retries=3, retry_backoff_seconds=0.05
    )
    run = cluster.create_dynamic_run(max_tasks=2, timeout_seconds=120)
    handle = run.append_task(decision, inputs={"prompt": "p", "history": [], "tools": TOOLS, "step": 0})
    with pytest.raises(TaskFailed) as caught:
        run.wait_for_task(handle, timeout=60)
    err = caught.value
    assert err.error_type == LLM_REJECTED and err.retryable is False
    assert "answered 401: Incorrect API key provided" in err.message and f"${KEY_ENV}" in err.message
    assert SECRET not in err.message
    assert len(llm.requests) == 1  # max_retries=3, yet no second attempt
    run.cancel()


@task(inputs=["x", "y"], outputs=["sum"], data_types={"x": "int", "y": "int"})
def add_old(params: dict[str, Any]) -> dict[str, Any]:
    """Add two numbers (params style)."""
    return {"sum": params["x"] + params["y"]}


def test_a_react_run_decided_by_openai_llm_task(llm: ScriptedLLM, cluster: MaClient, tmp_path: Path) -> None:
    """A ReAct run on a real head and worker, each decision an openai_llm_task asking the scripted
    server: a malformed reply is repaired, a params-style tool is called by its inputs, two
    parallel calls go back as one assistant message, then the final answer."""
    folder = tmp_path / "data-analysis"
    folder.mkdir()
    (folder / "SKILL.md").write_text(
        "---\nname: data-analysis\ndescription: How to analyse CSV data.\n---\nUse pandas.\n"
    )
    llm.load(
        completion(content="{not json"),
        completion(tool_calls=[("add_old", {"x": 1, "y": 2})]),
        completion(tool_calls=[("multiply", {"a": 18, "b": 7}), ("multiply", {"a": 2, "b": 3})]),
        completion(content="The answer is 126."),
    )
    decision = openai_llm_task(base_url=llm.base_url, model="scripted-model", api_key_env=KEY_ENV)
    react = cluster.create_react_workflow(
        llm_task=decision, tools=[multiply, add_old], skills=[load_skill(folder)], max_steps=5
    )
    run_id = react.run_async("Compute 18 * 7.")
    final = cluster.wait_run(run_id, timeout=120)
    assert final["state"] == "succeeded", final
    trace = cluster.get_agent_trace(run_id)
    assert trace["final"] == "The answer is 126."
    steps = trace["steps"]
    assert [s["decision"]["kind"] for s in steps] == ["invalid", "tool", "tools", "final"]
    assert steps[0]["repair"].startswith("not valid JSON")
    assert [o["observation"] for o in steps[1]["observations"]] == [{"result": {"sum": 3}}]
    assert [o["observation"] for o in steps[2]["observations"]] == [
        {"result": {"result": 126}},
        {"result": {"result": 6}},
    ]

    assert len(llm.requests) == 4
    tools = {t["function"]["name"]: t["function"] for t in llm.requests[0].body["tools"]}
    assert sorted(tools) == ["add_old", "multiply", "read_skill_file"]
    assert tools["add_old"]["parameters"] == {
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        "required": ["x", "y"],
        "additionalProperties": False,
    }
    assert tools["multiply"]["parameters"]["properties"]["a"] == {
        "type": "integer",
        "description": "the first factor",
    }
    assert "- data-analysis: How to analyse CSV data." in tools["read_skill_file"]["description"]

    repaired = llm.requests[1].body["messages"]
    assert repaired[2] == {"role": "assistant", "content": "{not json"}
    assert repaired[3]["role"] == "user"
    assert repaired[3]["content"].startswith("Your previous reply could not be used: not valid JSON")
    assert repaired[3]["content"].count("could not be used") == 1

    last = llm.requests[3].body["messages"]
    calls = [m for m in last if m["role"] == "assistant" and m.get("tool_calls")]
    assert [len(m["tool_calls"]) for m in calls] == [1, 2]  # add_old, then both multiplies at once
    parallel = calls[1]
    ids = [c["id"] for c in parallel["tool_calls"]]
    assert len(set(ids)) == 2
    assert [json.loads(c["function"]["arguments"]) for c in parallel["tool_calls"]] == [
        {"a": 18, "b": 7},
        {"a": 2, "b": 3},
    ]
    at = last.index(parallel)
    assert [(m["role"], m["tool_call_id"]) for m in last[at + 1 : at + 3]] == [("tool", i) for i in ids]
    assert json.loads(last[at + 1]["content"]) == {"result": {"result": 126}}
    assert json.loads(last[at + 2]["content"]) == {"result": {"result": 6}}


def test_with_settings_changes_a_copy() -> None:
    decision = openai_llm_task(
        base_url="http://127.0.0.1:1", model="m", api_key_env=KEY_ENV, max_tokens=100, max_retries=5
    )
    shorter = with_settings(decision, max_tokens=16, temperature=0.5)
    assert shorter is not None
    assert shorter.__maze_llm_config__.max_tokens == 16  # type: ignore[attr-defined]
    assert shorter.__maze_llm_config__.temperature == 0.5  # type: ignore[attr-defined]
    assert shorter.__maze_llm_config__.api_key_env == KEY_ENV  # type: ignore[attr-defined]
    assert decision.__maze_llm_config__.max_tokens == 100  # type: ignore[attr-defined]
    assert task_meta(shorter).max_retries == 5 and task_meta(shorter).resources["cpu"] == 0.1
    with pytest.raises(ValidationError, match="max_tokens must be a positive integer"):
        with_settings(decision, max_tokens=0)
    with pytest.raises(ValidationError, match="no setting 'top_p'"):
        with_settings(decision, top_p=1)
    assert with_settings(multiply, max_tokens=16) is None
