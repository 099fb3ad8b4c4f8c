"""Agents: what ReAct decisions are made of.

`openai_llm_task` (an OpenAI-compatible decision task) and `with_settings` (a copy of one with
settings changed), `tool_schema` / `tool_specs` (tool descriptors) and `parse_reply` (a chat
completion read as an action). Imported when first used
(PEP 562), as `maze` does: a task process importing one of them pays for that one only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maze.agents.openai_task import openai_llm_task, with_settings
    from maze.agents.replies import parse_reply
    from maze.agents.tools import tool_schema, tool_specs

_WHERE = {
    "openai_llm_task": "maze.agents.openai_task",
    "parse_reply": "maze.agents.replies",
    "tool_schema": "maze.agents.tools",
    "tool_specs": "maze.agents.tools",
    "with_settings": "maze.agents.openai_task",
}

__all__ = ["openai_llm_task", "parse_reply", "tool_schema", "tool_specs", "with_settings"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'maze.agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
