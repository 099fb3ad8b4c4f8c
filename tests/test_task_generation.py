"""Tasks from a prompt (README "Tasks from a prompt"): a real head asks the scripted
OpenAI-compatible server on loopback (tests/llm_server.py), reads the code without running it,
repairs a bad first answer once, and never shows the API key."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maze import MaClient
from maze.core.errors import GenerationFailed, LLMNotConfigured, LLMUnavailable
from tests.helpers import HeadProcess
from tests.llm_server import Reply, ScriptedLLM, completion

KEY_ENV = "MAZE_TEST_LLM_KEY"
KEY = "sk-maze-test-9f8e7d6c5b4a39281706"
LLM_TIMEOUT_S = 2

WORD_COUNT = '''from maze import task


@task(outputs=["words"], data_types={"text": "str", "words": "int"}, resources={"cpu": 1, "cpu_mem": 64})
def word_count(text: str = ""):
    """Counts the words of the text."""
    return {"words": len(text.split())}
'''


@pytest.fixture(scope="module")
def llm_head(llm: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadProcess]:
    """A head with its own embedded NATS, configured with the scripted endpoint and a key."""
    proc = HeadProcess(
        tmp_path_factory.mktemp("llm-head"),
        extra=[
            "--no-local-worker",
            "--llm-base-url",
            f"{llm.base_url}/v1",
            "--llm-model",
            "scripted-coder",
            "--llm-api-key-env",
            KEY_ENV,
            "--llm-timeout",
            str(LLM_TIMEOUT_S),
        ],
    )
    proc.env = {KEY_ENV: KEY}
    proc.start()
    yield proc
    code = proc.stop()
    assert code == 0, proc.log()


def _generate(head: HeadProcess, **body: object) -> httpx.Response:
    return httpx.post(f"{head.url}/playground/tasks/generate", json=body, timeout=30)


def test_the_config_names_model_url_and_variable_never_the_key(
    llm_head: HeadProcess, llm: ScriptedLLM
) -> None:
    resp = httpx.get(f"{llm_head.url}/playground/llm", timeout=10)
    assert resp.status_code == 200
    config = resp.json()
    assert config["configured"] is True
    assert config["model"] == "scripted-coder"
    assert config["base_url"] == f"{llm.base_url}/v1"
    assert config["api_key_env"] == KEY_ENV
    assert config["timeout_s"] == LLM_TIMEOUT_S
    assert "--llm-base-url" in config["how_to_configure"]
    assert KEY not in resp.text


def test_a_generated_task_is_parsed_and_not_stored(llm_head: HeadProcess, llm: ScriptedLLM) -> None:
    llm.load(completion(f"Here is the task:\n\n```python\n{WORD_COUNT}```\nIt counts words."))
    resp = _generate(llm_head, prompt="Count the words of a text")
    assert resp.status_code == 200, resp.text
    made = resp.json()
    assert made["file"] == "word_count.py"
    assert made["source"] == WORD_COUNT
    assert made["model"] == "scripted-coder" and made["turns"] == 1 and made["problems"] == []
    (info,) = made["tasks"]
    assert info["ref"] == "workspace:word_count.py:word_count"
    assert info["inputs"] == ["text"] and info["outputs"] == ["words"]
    assert info["data_types"] == {"text": "str", "words": "int"}
    assert info["resources"]["cpu"] == 1
    # what the endpoint was asked: the system prompt, the user's words, the key from the head's env
    (asked,) = llm.requests
    assert asked.path == "/v1/chat/completions"
    assert asked.headers["authorization"] == f"Bearer {KEY}"
    assert asked.body["model"] == "scripted-coder"
    system, user = asked.body["messages"]
    assert system["role"] == "system" and "@task" in system["content"] and "data_types" in system["content"]
    assert user == {"role": "user", "content": "Count the words of a text"}
    # nothing was stored: the workspace has no task file until the editor PUTs it
    assert httpx.get(f"{llm_head.url}/workspaces/gen/tasks", timeout=10).json() == []
    put = httpx.put(
        f"{llm_head.url}/workspaces/gen/tasks/{made['file']}",
        content=made["source"].encode(),
        headers={"content-type": "text/x-python"},
        timeout=10,
    )
    assert put.status_code == 201, put.text
    assert put.json()["tasks"] == made["tasks"]


def test_the_sdk_generates_for_a_named_file_and_notes_what_to_review(
    llm_head: HeadProcess, llm: ScriptedLLM
) -> None:
    source = "import numpy\nfrom maze import task\n\n@task\ndef mean(values: list):\n    return {'mean': float(numpy.mean(values))}\n"
    llm.load(completion(f"```python\n{source}```\n```python\nprint('usage')\n```"))
    client = MaClient(llm_head.url)
    made = client.generate_task("Average a list of numbers", file="stats.py")
    assert made["file"] == "stats.py"
    assert [t["ref"] for t in made["tasks"]] == ["workspace:stats.py:mean"]
    assert made["tasks"][0]["outputs"] == ["mean"]
    codes = {p["code"]: p for p in made["problems"]}
    assert set(codes) == {"several_code_blocks", "non_stdlib_import"}
    assert codes["non_stdlib_import"]["line"] == 1 and "numpy" in codes["non_stdlib_import"]["message"]
    assert client.get_llm_config()["model"] == "scripted-coder"
    client.close()


def test_a_first_answer_that_does_not_parse_is_repaired(llm_head: HeadProcess, llm: ScriptedLLM) -> None:
    broken = "from maze import task\n\n@task\ndef word_count(text:\n    return {}\n"
    llm.load(completion(f"```python\n{broken}```"), completion(f"```python\n{WORD_COUNT}```"))
    resp = _generate(llm_head, prompt="Count the words of a text")
    assert resp.status_code == 200, resp.text
    made = resp.json()
    assert made["turns"] == 2 and [t["name"] for t in made["tasks"]] == ["word_count"]
    assert [p["code"] for p in made["problems"]] == ["repaired"]
    # the second request carried the first answer and the parse error, with its line
    first, second = llm.requests
    assert second.body["messages"][:2] == first.body["messages"]
    assistant, repair = second.body["messages"][2:]
    assert assistant == {"role": "assistant", "content": f"```python\n{broken}```"}
    assert repair["role"] == "user"
    assert "syntax error" in repair["content"] and "line 4" in repair["content"]


def test_two_unusable_answers_are_a_422_with_the_text_and_the_error(
    llm_head: HeadProcess, llm: ScriptedLLM
) -> None:
    llm.load(completion("Sorry, I cannot write code today."), completion("```python\nprint('no task')\n```"))
    resp = _generate(llm_head, prompt="Count the words of a text")
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["type"] == "generation_failed"
    assert "no @task function" in error["message"]
    assert error["details"]["text"] == "```python\nprint('no task')\n```"
    assert "no @task function" in error["details"]["error"]["message"]
    assert error["details"]["turns"] == 2
    # the repair turn quoted the first answer's syntax error
    assert "syntax error" in llm.requests[1].body["messages"][-1]["content"]
    llm.load(completion("```python\ndef f(:\n```"), completion("```python\ndef f(:\n```"))
    with pytest.raises(GenerationFailed) as caught:
        MaClient(llm_head.url).generate_task("anything")
    assert caught.value.details["error"]["line"] == 1 and caught.value.details["error"]["column"]


def test_bad_requests_are_refused_before_the_endpoint_is_asked(
    llm_head: HeadProcess, llm: ScriptedLLM
) -> None:
    llm.load()
    for body in (
        {"prompt": ""},
        {"prompt": "   "},
        {"prompt": "x" * 8193},
        {"prompt": "x", "file": "../a.py"},
        {},
    ):
        resp = httpx.post(f"{llm_head.url}/playground/tasks/generate", json=body, timeout=10)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"]["type"] == "validation_error"
    huge = httpx.post(
        f"{llm_head.url}/playground/tasks/generate",
        content=b'{"prompt": "' + b"x" * 70_000 + b'"}',
        timeout=10,
    )
    assert huge.status_code == 413
    assert llm.requests == []


def test_endpoint_failures_are_502_and_the_key_is_never_shown(
    llm_head: HeadProcess, llm: ScriptedLLM
) -> None:
    """Last in the module: it stops the scripted endpoint."""
    # an error status, whose message echoes the key: scrubbed
    llm.load(Reply(500, {"error": {"message": f"overloaded (your key {KEY})"}}))
    resp = _generate(llm_head, prompt="Count the words")
    assert resp.status_code == 502, resp.text
    error = resp.json()["error"]
    assert error["type"] == "llm_unavailable" and "overloaded" in error["message"]
    assert error["details"]["upstream_status"] == 500
    assert KEY not in resp.text
    llm.load(Reply(401, {"error": {"message": "invalid api key"}}))
    resp = _generate(llm_head, prompt="Count the words")
    assert resp.status_code == 502 and f"check the key in ${KEY_ENV}" in resp.json()["error"]["message"]
    # no answer within --llm-timeout
    llm.load(Reply(body=completion("late").body, delay_s=LLM_TIMEOUT_S + 2))
    resp = _generate(llm_head, prompt="Count the words")
    assert resp.status_code == 502, resp.text
    assert f"no answer within {LLM_TIMEOUT_S}s" in resp.json()["error"]["message"]
    # nothing listens there any more
    llm.stop()
    with pytest.raises(LLMUnavailable) as caught:
        MaClient(llm_head.url).generate_task("Count the words")
    assert "ConnectError" in caught.value.message
    log = llm_head.log()
    assert "playground.llm_failed" in log
    assert KEY not in log


def test_a_head_without_an_endpoint_says_how_to_configure_one(head: HeadProcess) -> None:
    config = httpx.get(f"{head.url}/playground/llm", timeout=10).json()
    assert config["configured"] is False and config["model"] is None and config["base_url"] is None
    assert (
        "--llm-base-url" in config["how_to_configure"] and "--llm-api-key-env" in config["how_to_configure"]
    )
    resp = _generate(head, prompt="Count the words")
    assert resp.status_code == 409
    error = resp.json()["error"]
    assert error["type"] == "llm_not_configured"
    assert "--llm-base-url" in error["message"] and "--llm-model" in error["message"]
    assert error["details"]["how_to_configure"] == config["how_to_configure"]
    with pytest.raises(LLMNotConfigured):
        MaClient(head.url).generate_task("Count the words")


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--llm-base-url", "http://127.0.0.1:9/v1"], {}, "go together"),
        (["--llm-base-url", "ftp://x", "--llm-model", "m"], {}, "http:// or https://"),
        (["--llm-base-url", "http://x", "--llm-model", "m", "--llm-api-key-env", KEY], {}, "NAME of the"),
        (
            ["--llm-base-url", "http://x", "--llm-model", "m", "--llm-api-key-env", "NOT_SET_HERE"],
            {},
            "not set",
        ),
        (["--llm-model", "m"], {"MAZE_LLM_TIMEOUT_S": "0", "MAZE_LLM_BASE_URL": "http://x"}, "--llm-timeout"),
    ],
)
def test_bad_llm_flags_stop_the_head_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], words: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "maze", "start", "--head", "--data-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_clean_env(), **env},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    out = (result.stdout + result.stderr).strip()
    assert words in out and len(out.splitlines()) == 1, out
    assert KEY not in out


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAZE_LLM_") and k != "NOT_SET_HERE"}
