"""Unit tests: how the head reads a model's answer for tasks from a prompt (maze/agents/task_writer.py)."""

from __future__ import annotations

import pytest

from maze.agents.task_writer import (
    check_llm_settings,
    default_file,
    extract_code,
    first_messages,
    outside_imports,
    repair_messages,
    reply_text,
    shown_url,
)
from maze.core.errors import ValidationError


def test_the_first_python_block_is_the_code() -> None:
    text = "Intro\n```text\nnot code\n```\n```python\nx = 1\n```\nmore\n```py\ny = 2\n```"
    source, notes = extract_code(text)
    assert source == "x = 1\n"
    assert [n["code"] for n in notes] == ["several_code_blocks"]


def test_an_untagged_block_is_taken_and_an_unclosed_one_runs_to_the_end() -> None:
    assert extract_code("```\nz = 3\n```") == ("z = 3\n", [])
    assert extract_code("```python\nz = 3\n") == ("z = 3\n", [])


def test_an_answer_without_a_block_is_read_whole_with_a_note() -> None:
    source, notes = extract_code("  a = 1\n")
    assert source == "a = 1\n"
    assert [n["code"] for n in notes] == ["no_code_block"]


def test_reply_text() -> None:
    assert reply_text({"choices": [{"message": {"content": "hi"}}]}) == "hi"
    assert (
        reply_text({"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"text": "b"}]}}]})
        == "ab"
    )
    assert reply_text({"choices": [{"message": {"content": "  "}}]}) is None
    assert reply_text({"choices": []}) is None
    assert reply_text("not a reply") is None


def test_imports_outside_the_stdlib_are_noted_unless_the_prompt_names_them() -> None:
    source = "import os, json\nimport numpy as np\nfrom pandas import DataFrame\nfrom . import sibling\nfrom maze import task\n"
    notes = outside_imports(source, "use pandas")
    assert [(n["code"], n["line"]) for n in notes] == [("non_stdlib_import", 2)]
    assert "numpy" in notes[0]["message"]
    assert outside_imports("def f(:", "") == []


def test_the_repair_turn_quotes_the_answer_and_the_error() -> None:
    first = first_messages("count words")
    assert first[0]["role"] == "system" and "@task" in first[0]["content"]
    assert first[1] == {"role": "user", "content": "count words"}
    again = repair_messages(first, "bad", "line 2: syntax error")
    assert again[:2] == first
    assert again[2] == {"role": "assistant", "content": "bad"}
    assert again[3]["role"] == "user" and "line 2: syntax error" in again[3]["content"]


def test_default_file() -> None:
    assert default_file(["word_count", "other"]) == "word_count.py"
    assert default_file([]) == "generated.py"
    assert default_file(["x" * 80]) == "generated.py"


def test_shown_url_drops_credentials_query_and_fragment() -> None:
    assert shown_url("https://user:pw@api.example.com/v1?key=secret#x") == "https://api.example.com/v1"
    assert shown_url("http://localhost:11434/v1") == "http://localhost:11434/v1"
    assert shown_url("http://h?token=1") == "http://h"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("http://x", "", "", 60.0), "go together"),
        (("", "", "OPENAI_API_KEY", 60.0), "go together"),
        (("x.com", "m", "", 60.0), "http://"),
        (("http://x", "m", "sk-abcdef0123456789abcdef", 60.0), "NAME"),
        (("http://x", "m", "1BAD", 60.0), "NAME"),
        (("http://x", "m", "", 0.0), "--llm-timeout"),
        (("http://x", "m", "", 601.0), "--llm-timeout"),
    ],
)
def test_llm_settings_refused(args: tuple[str, str, str, float], words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_llm_settings(*args)
    assert words in caught.value.message
    assert "sk-abcdef" not in caught.value.message


def test_llm_settings_accepted() -> None:
    check_llm_settings("", "", "", 60.0)
    check_llm_settings("https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY", 60.0)
