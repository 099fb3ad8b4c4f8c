"""The reply parser and the message rendering of openai_llm_task: pure, no cluster, no server."""

from __future__ import annotations

import json
from typing import Any

from maze.agents import parse_reply, tool_schema
from maze.agents.messages import SYSTEM_PROMPT, render_messages
from maze.agents.replies import RAW_LIMIT


def multiply(a: int, b: int) -> dict[str, int]:
    """Multiply two integers."""
    return {"result": a * b}


def search(query: str, limit: int = 5) -> dict[str, Any]:
    """Search the notes."""
    return {"hits": []}


TOOLS = [tool_schema(multiply), tool_schema(search)]


def reply(
    content: str | None = None, calls: list[tuple[str, Any]] | None = None, finish: str = "stop"
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {
                "id": f"c{i}",
                "type": "function",
                "function": {"name": n, "arguments": a if isinstance(a, str) else json.dumps(a)},
            }
            for i, (n, a) in enumerate(calls)
        ]
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}


def test_one_tool_call() -> None:
    assert parse_reply(reply(calls=[("multiply", {"a": 18, "b": 7})]), TOOLS) == {
        "tool": "multiply",
        "args": {"a": 18, "b": 7},
    }


def test_several_tool_calls_are_parallel_tools() -> None:
    action = parse_reply(reply(calls=[("multiply", {"a": 1, "b": 2}), ("search", {"query": "x"})]), TOOLS)
    assert action == {
        "tools": [
            {"tool": "multiply", "args": {"a": 1, "b": 2}},
            {"tool": "search", "args": {"query": "x"}},
        ]
    }


def test_empty_arguments_string_is_no_arguments() -> None:
    def now() -> dict[str, str]:
        return {}

    assert parse_reply(reply(calls=[("now", "")]), [tool_schema(now)]) == {"tool": "now", "args": {}}


def test_plain_text_is_the_final_answer() -> None:
    assert parse_reply(reply("  The answer is 126.\n"), TOOLS) == {"final": "The answer is 126."}
    # code in a final answer is not an action
    text = "Use this:\n```python\nprint(1)\n```"
    assert parse_reply(reply(text), TOOLS) == {"final": text}


def test_content_json_actions() -> None:
    assert parse_reply(reply('{"action": {"final": {"value": 126}}}'), TOOLS) == {"final": {"value": 126}}
    assert parse_reply(reply('{"action": {"tool": "search", "args": {"query": "q"}}}'), TOOLS) == {
        "tool": "search",
        "args": {"query": "q"},
    }
    # the action itself, without the "action" wrapper
    assert parse_reply(reply('{"tool": "multiply", "args": {"a": 2, "b": 3}}'), TOOLS) == {
        "tool": "multiply",
        "args": {"a": 2, "b": 3},
    }
    parallel = '{"action": {"tools": [{"tool": "search", "args": {"query": "a"}}, {"tool": "search", "args": {"query": "b"}}]}}'
    assert parse_reply(reply(parallel), TOOLS) == {
        "tools": [{"tool": "search", "args": {"query": "a"}}, {"tool": "search", "args": {"query": "b"}}]
    }


def test_fenced_json_block() -> None:
    text = 'I will multiply.\n```json\n{"action": {"tool": "multiply", "args": {"a": 18, "b": 7}}}\n```\n'
    assert parse_reply(reply(text), TOOLS) == {"tool": "multiply", "args": {"a": 18, "b": 7}}
    unlabeled = '```\n{"action": {"final": "done"}}\n```'
    assert parse_reply(reply(unlabeled), TOOLS) == {"final": "done"}


def why(action: dict[str, Any]) -> str:
    assert set(action) == {"malformed"}, action
    assert set(action["malformed"]) == {"raw", "why"}
    return str(action["malformed"]["why"])


def test_malformed_replies_never_raise() -> None:
    broken = '{"action": {"tool": "multiply", "args": {"a": 18,'
    action = parse_reply(reply(broken), TOOLS)
    assert why(action).startswith("not valid JSON")
    assert action["malformed"]["raw"] == broken
    assert why(parse_reply(reply("```json\n{nope}\n```"), TOOLS)).startswith("not valid JSON")
    assert why(parse_reply(reply('{"answer": 1}'), TOOLS)).startswith("the JSON holds no action")
    assert why(parse_reply(reply("[1, 2]"), TOOLS)).startswith("the JSON holds no action")
    assert why(parse_reply(reply('{"action": {"tool": "divide", "args": {}}}'), TOOLS)) == (
        "unknown tool 'divide' (tools: multiply, search)"
    )
    assert why(parse_reply(reply(calls=[("divide", {"a": 1})]), TOOLS)).startswith("unknown tool 'divide'")
    assert why(parse_reply(reply(calls=[("multiply", {"a": 1})]), TOOLS)) == (
        "tool 'multiply': missing required argument 'b'"
    )
    assert why(parse_reply(reply(calls=[("multiply", "{'a': 1}")]), TOOLS)).startswith(
        "the arguments of 'multiply' are not valid JSON"
    )
    assert why(parse_reply(reply(calls=[("multiply", "[1, 2]")]), TOOLS)) == (
        "the arguments of 'multiply' must be a JSON object"
    )
    assert why(parse_reply(reply('{"action": {"tool": "multiply", "final": 1}}'), TOOLS)) == (
        "an action holds exactly one of tool, tools, final"
    )
    assert why(parse_reply(reply('{"action": {"tools": []}}'), TOOLS)).startswith("tools must be a non-empty")
    assert why(parse_reply(reply('{"action": {"tool": "search", "args": {"query": 3}}}'), TOOLS)) == (
        "tool 'search': argument 'query' should be string, got integer"
    )
    assert why(parse_reply(reply(""), TOOLS)).startswith("an empty reply")
    assert why(parse_reply(reply(None), TOOLS)).startswith("an empty reply")
    assert why(parse_reply({"error": "x"}, TOOLS)) == "the reply has no choices"
    assert why(parse_reply([], TOOLS)) == "the reply is not a JSON object"
    assert (
        why(parse_reply({"choices": [{"finish_reason": "stop"}]}, TOOLS))
        == "the reply's choice has no message"
    )
    # a model calling a tool when none were offered
    assert why(parse_reply(reply(calls=[("multiply", {"a": 1, "b": 2})]), [])).startswith(
        "unknown tool 'multiply' (tools: none)"
    )


def test_cut_at_max_tokens_is_malformed() -> None:
    action = parse_reply(reply('{"action": {"final": "The answer is', finish="length"), TOOLS)
    assert why(action) == "max_tokens"
    assert action["malformed"]["raw"] == '{"action": {"final": "The answer is'
    # even a complete-looking tool call: its arguments may be cut
    assert (
        why(parse_reply(reply(calls=[("multiply", {"a": 1, "b": 2})], finish="length"), TOOLS))
        == "max_tokens"
    )
    assert why(parse_reply(reply("filtered", finish="content_filter"), TOOLS)) == "content_filter"


def test_raw_is_bounded() -> None:
    action = parse_reply(reply("{" + "x" * (RAW_LIMIT * 2)), TOOLS)
    assert len(action["malformed"]["raw"]) == RAW_LIMIT


def test_render_messages() -> None:
    history = [
        {
            "step": 0,
            "action": {"tool": "multiply", "args": {"a": 18, "b": 7}},
            "observation": {"result": {"result": 126}},
        },
        {
            "step": 1,
            "action": {
                "tools": [
                    {"tool": "search", "args": {"query": "a"}},
                    {"tool": "search", "args": {"query": "b"}},
                ]
            },
            "observation": [{"result": {"hits": [1]}}, {"error": "boom"}],
        },
        {"step": 2, "action": {"malformed": {"raw": "{oops", "why": "not valid JSON"}}, "observation": None},
        {
            "step": 3,
            "action": {"tools": [{"tool": "search", "args": {}}, {"tool": "search", "args": {}}]},
            "observation": {"x": 1},
        },
        "a note",
    ]
    messages = render_messages("Compute 18 * 7.", history)
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert messages[1] == {"role": "user", "content": "Compute 18 * 7."}
    assert messages[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_0_0",
                "type": "function",
                "function": {"name": "multiply", "arguments": '{"a": 18, "b": 7}'},
            }
        ],
    }
    assert messages[3] == {
        "role": "tool",
        "tool_call_id": "call_0_0",
        "content": '{"result": {"result": 126}}',
    }
    assert [c["id"] for c in messages[4]["tool_calls"]] == ["call_1_0", "call_1_1"]
    assert messages[5] == {"role": "tool", "tool_call_id": "call_1_0", "content": '{"result": {"hits": [1]}}'}
    assert messages[6] == {"role": "tool", "tool_call_id": "call_1_1", "content": '{"error": "boom"}'}
    assert messages[7] == {"role": "assistant", "content": "{oops"}
    assert messages[8]["role"] == "user"
    assert messages[8]["content"].startswith("Your previous reply could not be used: not valid JSON.")
    assert [m.get("content") for m in messages[10:12]] == ['{"x": 1}', "(see above)"]
    assert messages[12] == {"role": "user", "content": "a note"}
    assert len(messages) == 13
    assert render_messages("p", [], None) == [{"role": "user", "content": "p"}]


def test_a_steps_parallel_calls_render_as_one_assistant_message_with_distinct_ids() -> None:
    """A ReAct run's history has one entry per call of a step (each with its `call` index): a chat
    model sees them as it sent them, one assistant message with every call, then each result."""
    from maze.agents.messages import render_messages

    history = [
        {
            "step": 0,
            "call": 0,
            "action": {"tool": "add", "args": {"a": 1}},
            "observation": {"result": {"x": 1}},
        },
        {
            "step": 0,
            "call": 1,
            "action": {"tool": "mul", "args": {"a": 2}},
            "observation": {"result": {"x": 2}},
        },
        {"step": 1, "action": {"tool": "add", "args": {"a": 3}}, "observation": {"result": {"x": 3}}},
    ]
    messages = render_messages("p", history, system_prompt=None)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "assistant", "tool"]
    ids = [c["id"] for c in messages[1]["tool_calls"]]
    assert ids == ["call_0_0", "call_0_1"]
    assert [messages[2]["tool_call_id"], messages[3]["tool_call_id"]] == ids
    assert [c["function"]["name"] for c in messages[1]["tool_calls"]] == ["add", "mul"]
    assert messages[4]["tool_calls"][0]["id"] == "call_1_0"


def test_a_react_repair_renders_its_reason_once() -> None:
    """The driver's repair of a malformed reply (maze/head/agent.py), as a chat model is shown it:
    the reason once, not prefixed twice nor repeated as the observation."""
    from maze.agents.messages import render_messages
    from maze.events.codec import decode_value, encode_value
    from maze.head.agent import parse_action
    from maze.head.agent_state import repair_entry

    why = "not valid JSON: Expecting value"
    result = {"action": encode_value({"malformed": {"raw": "{oops", "why": why}})}
    parsed = parse_action(result, None)  # type: ignore[arg-type]
    assert parsed.kind == "invalid" and parsed.message == why and parsed.raw == "{oops"
    entry = decode_value(repair_entry(1, parsed.message, parsed.raw))
    messages = render_messages("p", [entry], system_prompt=None)
    assert messages[1] == {"role": "assistant", "content": "{oops"}
    assert messages[2] == {
        "role": "user",
        "content": f"Your previous reply could not be used: {why}. "
        "Reply again with a valid tool call or final answer.",
    }
