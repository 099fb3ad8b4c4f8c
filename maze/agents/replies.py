"""An OpenAI-compatible chat completion, read as a ReAct action. Pure: no I/O, never raises.

The rule, in order (README, "OpenAI-compatible decisions"):
1. `finish_reason == "length"` (the reply was cut at `max_tokens`): malformed, why `max_tokens`.
2. The message's `tool_calls`: one is `{"tool": name, "args": {...}}`, several are `{"tools": [...]}`.
   Each names a known tool and carries a JSON object of arguments that fit its schema.
3. Its `content`, when it is JSON (the whole text, or a ```json fenced block in it, or a fence
   whose content starts with `{`): an object holding `action` (or the action itself: one of
   `tool`, `tools`, `final`), checked as in 2.
4. Any other non-empty content (prose, with no JSON in it) is the final answer: `{"final": text}`.
Anything else is `{"malformed": {"raw": <what the model sent>, "why": <one line>}}`: the ReAct loop
shows `why` to the model as a repair observation instead of failing the run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from maze.agents.tools import args_problem

RAW_LIMIT = 4000  # characters of a malformed reply kept in `raw`
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n(.*?)```", re.DOTALL)
_ACTION_KEYS = ("tool", "tools", "final")


def malformed(raw: Any, why: str) -> dict[str, Any]:
    text = raw if isinstance(raw, str) else json.dumps(raw, default=str)
    return {"malformed": {"raw": text[:RAW_LIMIT], "why": why}}


def parse_reply(body: Any, tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The action a chat completion asks for (one of `tool`, `tools`, `final`, `malformed`);
    `tools` are the descriptors sent with the request (maze/agents/tools.py `tool_specs`)."""
    if not isinstance(body, Mapping):
        return malformed(body, "the reply is not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return malformed(body, "the reply has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        return malformed(body, "the reply's choice has no message")
    content = message.get("content")
    calls = message.get("tool_calls")
    finish = choice.get("finish_reason")
    if finish == "length":
        return malformed(content or calls or "", "max_tokens")
    if finish == "content_filter":
        return malformed(content or "", "content_filter")
    if calls:
        return parse_tool_calls(calls, tools)
    if not isinstance(content, str) or not content.strip():
        return malformed(content or "", "an empty reply: no tool call and no content")
    return parse_content(content, tools)


def parse_tool_calls(calls: Any, tools: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenAI `tool_calls` as `{"tool": ...}` (one) or `{"tools": [...]}` (several)."""
    if not isinstance(calls, list):
        return malformed(calls, "tool_calls is not a list")
    out: list[dict[str, Any]] = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            return malformed(calls, "a tool call has no function name")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            if not arguments.strip():
                arguments = "{}"
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as exc:
                return malformed(calls, f"the arguments of {function['name']!r} are not valid JSON: {exc}")
        elif arguments is None:
            arguments = {}
        call_or_why = _tool_call(function["name"], arguments, tools)
        if isinstance(call_or_why, str):
            return malformed(calls, call_or_why)
        out.append(call_or_why)
    if not out:
        return malformed(calls, "tool_calls is empty")
    return out[0] if len(out) == 1 else {"tools": out}


def parse_content(content: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
    """A message's text: JSON holding an action, or prose (the final answer)."""
    text = content.strip()
    candidate: str | None = None
    if text.startswith(("{", "[")):
        candidate = text
    else:
        for label, block in _FENCE.findall(text):
            if label.lower() == "json" or (not label and block.strip().startswith("{")):
                candidate = block.strip()
                break
    if candidate is None:
        return {"final": text}
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as exc:
        return malformed(content, f"not valid JSON: {exc}")
    if isinstance(value, Mapping) and "action" in value:
        value = value["action"]
    elif not (isinstance(value, Mapping) and any(k in value for k in _ACTION_KEYS)):
        return malformed(content, 'the JSON holds no action: {"action": {"tool"|"tools"|"final": ...}}')
    return parse_action(value, tools, content)


def parse_action(action: Any, tools: list[dict[str, Any]], raw: Any) -> dict[str, Any]:
    """An action object a model wrote as JSON, checked: exactly one of `tool` (with `args`),
    `tools` (a non-empty list of those) or `final`."""
    if not isinstance(action, Mapping):
        return malformed(raw, "the action is not a JSON object")
    keys = [k for k in _ACTION_KEYS if k in action]
    if len(keys) != 1:
        return malformed(raw, "an action holds exactly one of tool, tools, final")
    if keys[0] == "final":
        return {"final": action["final"]}
    if keys[0] == "tool":
        call = _tool_call(action["tool"], action.get("args", {}), tools)
        return malformed(raw, call) if isinstance(call, str) else call
    many = action["tools"]
    if not isinstance(many, list) or not many:
        return malformed(raw, "tools must be a non-empty list of {tool, args}")
    out = []
    for item in many:
        if not isinstance(item, Mapping):
            return malformed(raw, "each entry of tools is an object {tool, args}")
        call = _tool_call(item.get("tool"), item.get("args", {}), tools)
        if isinstance(call, str):
            return malformed(raw, call)
        out.append(call)
    return {"tools": out}


def _tool_call(name: Any, args: Any, tools: list[dict[str, Any]]) -> dict[str, Any] | str:
    """`{"tool", "args"}`, or why it cannot be used."""
    if not isinstance(name, str) or not name:
        return "a tool call names no tool"
    spec = next((t for t in tools if t["name"] == name), None)
    if spec is None:
        known = ", ".join(t["name"] for t in tools) or "none"
        return f"unknown tool {name!r} (tools: {known})"
    if not isinstance(args, Mapping):
        return f"the arguments of {name!r} must be a JSON object"
    problem = args_problem(spec.get("parameters") or {}, args)
    if problem is not None:
        return f"tool {name!r}: {problem}"
    return {"tool": name, "args": dict(args)}
