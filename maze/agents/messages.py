"""A decision's inputs rendered as an OpenAI chat completion request. Pure.

History entries (what the ReAct loop passes as `history`, oldest first) are read as
`{"action": <an action this task returned>, "observation": <what came of it>}`:
- a `tool` action becomes an assistant message with one `tool_calls` entry and a `tool` message
  holding the observation as JSON;
- a `tools` action becomes one assistant message with a call per tool and a `tool` message per
  call; the observation is then a list with one entry per call (or `{"results": [...]}`), and
  anything else is shown whole after the first call, the others answered "(see above)";
- a `malformed` action becomes the assistant's raw reply and a user message saying why it could
  not be used (and the observation, if any), asking for a valid reply;
- a `final` action, or an entry of any other shape, becomes a user message holding its JSON.
Call ids are `call_<step>_<n>` (the step is the entry's `step`, else its index).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

SYSTEM_PROMPT = (
    "You are an agent that solves the user's task step by step with the tools provided. "
    "At each step either call one or more tools, or give the final answer. "
    "Prefer the tool-calling interface. Without it, reply with JSON only: "
    '{"action": {"tool": "<name>", "args": {...}}}, '
    '{"action": {"tools": [{"tool": "<name>", "args": {...}}, ...]}} for several tools at once, or '
    '{"action": {"final": "<answer>"}}. '
    "A reply in plain text, without tool calls or JSON, is taken as the final answer."
)


def openai_tool(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A descriptor `{"name", "description", "parameters"}` as an OpenAI `tools` entry."""
    function: dict[str, Any] = {"name": spec["name"], "parameters": spec["parameters"]}
    if spec.get("description"):
        function["description"] = spec["description"]
    return {"type": "function", "function": function}


def render_messages(
    prompt: str, history: list[Any], system_prompt: str | None = SYSTEM_PROMPT
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": str(prompt)})
    entries = list(history or [])
    index = 0
    while index < len(entries):
        group = _parallel_group(entries, index)
        if len(group) > 1:  # one step's parallel calls (a ReAct run's history has an entry each)
            messages.extend(_group_messages(group))
            index += len(group)
            continue
        messages.extend(_entry_messages(index, entries[index]))
        index += 1
    return messages


def _parallel_group(entries: list[Any], start: int) -> list[Mapping[str, Any]]:
    """The entries from `start` that are calls of one step (each with its `call` index)."""
    first = entries[start]
    if not isinstance(first, Mapping) or "call" not in first or "step" not in first:
        return [first]
    group = [first]
    for entry in entries[start + 1 :]:
        if not (isinstance(entry, Mapping) and entry.get("step") == first["step"] and "call" in entry):
            break
        if not isinstance(entry.get("action"), Mapping) or "tool" not in entry["action"]:
            break
        group.append(entry)
    return (
        group
        if all(isinstance(e.get("action"), Mapping) and "tool" in e["action"] for e in group)
        else [first]
    )


def _group_messages(group: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One assistant message with every call of the step, then each call's result: as a chat
    model sent them (distinct ids, `call_<step>_<call>`)."""
    ids = [f"call_{e['step']}_{e['call']}" for e in group]
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": str(e["action"].get("tool")),
                    "arguments": _json(e["action"].get("args") or {}),
                },
            }
            for call_id, e in zip(ids, group, strict=True)
        ],
    }
    results = [_per_call(e.get("observation"), 1)[0] for e in group]
    return [
        assistant,
        *({"role": "tool", "tool_call_id": i, "content": r} for i, r in zip(ids, results, strict=True)),
    ]


def _entry_messages(index: int, entry: Any) -> list[dict[str, Any]]:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("action"), Mapping):
        return [{"role": "user", "content": _json(entry)}]
    action = entry["action"]
    step = entry.get("step", index)
    observation = entry.get("observation")
    if "tool" in action or "tools" in action:
        calls = [action] if "tool" in action else list(action.get("tools") or [])
        ids = [f"call_{step}_{n}" for n in range(len(calls))]
        assistant = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": str(call.get("tool")), "arguments": _json(call.get("args") or {})},
                }
                for call_id, call in zip(ids, calls, strict=True)
            ],
        }
        results = _per_call(observation, len(calls))
        return [
            assistant,
            *({"role": "tool", "tool_call_id": i, "content": r} for i, r in zip(ids, results, strict=True)),
        ]
    if "malformed" in action:
        bad = action["malformed"] if isinstance(action["malformed"], Mapping) else {}
        why = bad.get("why", "malformed")
        text = f"Your previous reply could not be used: {why}."
        if observation is not None and observation != {"repair": why}:  # a ReAct repair says it once
            text += f" {_json(observation)}"
        text += " Reply again with a valid tool call or final answer."
        return [
            {"role": "assistant", "content": str(bad.get("raw", ""))},
            {"role": "user", "content": text},
        ]
    return [{"role": "user", "content": _json(entry)}]


def _per_call(observation: Any, count: int) -> list[str]:
    if count == 1:
        return [_json(observation)]
    if isinstance(observation, Mapping) and isinstance(observation.get("results"), list):
        observation = observation["results"]
    if isinstance(observation, list) and len(observation) == count:
        return [_json(o) for o in observation]
    return [_json(observation), *["(see above)"] * (count - 1)]


def _json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)
