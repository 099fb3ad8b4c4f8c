"""Tasks from a prompt (the Playground's "generate a task"): what the head asks an LLM and how it
reads the answer. Pure functions: the request itself goes through maze/agents/openai_task.py's
client code, the route is maze/api/task_generation.py.

The model is told how Maze's `@task` decorator works and to answer with one Python code block; the
code is then read with the workflow builder's AST reader (maze/core/task_source.py), never run on
the head. A first answer that does not parse, or defines no `@task` function, gets one repair turn
that quotes the error.
"""

from __future__ import annotations

import ast
import re
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from maze.core.errors import ValidationError

MAX_PROMPT_CHARS = 8 * 1024
LLM_TIMEOUT_MAX_S = 600.0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

SYSTEM_PROMPT = """You write Python task functions for Maze, a distributed task runtime.

A task is a top-level function decorated with `@task` (`from maze import task`). Two styles:

1. Keyword arguments (preferred): the function's parameters are its inputs.

    from maze import task

    @task(outputs=["upper"], data_types={"text": "str", "upper": "str"}, resources={"cpu": 1, "cpu_mem": 128})
    def uppercase(text: str = ""):
        \"\"\"Upper-cases the text.\"\"\"
        return {"upper": text.upper()}

2. One `params` dict, with the inputs and outputs declared:

    @task(inputs=["text"], outputs=["result"], data_types={"text": "str", "result": "str"})
    def shout(params):
        return {"result": params["text"].upper() + "!"}

Rules:
- Every task returns a dict whose keys are its outputs (declare them in `outputs=`).
- `data_types` maps inputs and outputs to one of: str, int, float, bool, list, dict.
- `resources` is a dict literal: cpu (cores, may be fractional), cpu_mem (MB), gpu (count), gpu_mem (MB).
  Optional: `timeout_seconds=`, `max_retries=`.
- Every decorator argument must be a literal (numbers, strings, lists, dicts): no variables or calls.
- Use only the Python standard library unless the user names a package.
- Files: a task reads and writes files by paths relative to its current directory (the workspace).
- Give each task a docstring that says what it does.

Answer with exactly one ```python code block holding the whole module (imports included), and
nothing else."""

HOW_TO_CONFIGURE = (
    "start the head with --llm-base-url URL --llm-model NAME (an OpenAI-compatible endpoint, e.g. "
    "https://api.openai.com/v1 or http://localhost:11434/v1), the API key from the environment "
    "variable named by --llm-api-key-env (e.g. --llm-api-key-env OPENAI_API_KEY); or set "
    "MAZE_LLM_BASE_URL, MAZE_LLM_MODEL and MAZE_LLM_API_KEY_ENV"
)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def first_messages(prompt: str) -> list[dict[str, Any]]:
    """The conversation's first turn: the system prompt and the user's description."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]


def repair_messages(messages: list[dict[str, Any]], answer: str, error: str) -> list[dict[str, Any]]:
    """The conversation with the model's answer and what was wrong with it (the repair turn)."""
    return [
        *messages,
        {"role": "assistant", "content": answer},
        {
            "role": "user",
            "content": f"That code cannot be used: {error}\nAnswer again with the whole corrected "
            "module in one ```python code block.",
        },
    ]


def reply_text(reply: Any) -> str | None:
    """The assistant's text in a chat completion (None when it has none)."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) and content.strip() else None


def extract_code(text: str) -> tuple[str, list[dict[str, Any]]]:
    """The Python source in a model's answer and notes on how it was found: the first fenced
    block tagged python (else the first fenced block), or the whole text when there is none."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    if not blocks:
        return text.strip() + "\n", [
            {
                "code": "no_code_block",
                "message": "the answer had no ``` code block: all of it was read as code",
            }
        ]
    python = [body for lang, body in blocks if lang in ("python", "py", "python3")]
    chosen = python[0] if python else blocks[0][1]
    notes = []
    if len(blocks) > 1:
        notes.append(
            {
                "code": "several_code_blocks",
                "message": f"the answer had {len(blocks)} code blocks: the first Python one was used",
            }
        )
    return chosen.rstrip() + "\n", notes


def outside_imports(source: str, prompt: str) -> list[dict[str, Any]]:
    """A note per imported top-level module that is neither the standard library nor `maze`,
    unless the prompt names it: the worker may not have it installed."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top != "maze" and top not in sys.stdlib_module_names and top not in prompt:
                found.setdefault(top, node.lineno)
    return [
        {
            "code": "non_stdlib_import",
            "message": f"imports {name!r}, which is not in the standard library: the worker must have it installed",
            "line": line,
        }
        for name, line in found.items()
    ]


def default_file(task_names: list[str]) -> str:
    """A task file name for generated code: its first task's name (`generated.py` if it will not do)."""
    name = task_names[0] if task_names else "generated"
    return f"{name[:60]}.py" if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,59}", name) else "generated.py"


def check_llm_settings(base_url: str, model: str, api_key_env: str, timeout_s: float) -> None:
    """ValidationError for settings the head cannot start with (a flag's name in the message);
    none at all (no endpoint) is fine."""
    from maze.agents.openai_task import looks_like_a_key

    if not base_url and not model and not api_key_env:
        return
    if not base_url or not model:
        raise ValidationError(
            "--llm-base-url and --llm-model go together (MAZE_LLM_BASE_URL, MAZE_LLM_MODEL)"
        )
    if not base_url.startswith(("http://", "https://")):
        raise ValidationError("--llm-base-url must be an http:// or https:// URL")
    if api_key_env and (not _ENV_NAME.fullmatch(api_key_env) or looks_like_a_key(api_key_env)):
        # never echo the value: it may be the key itself
        raise ValidationError(
            "--llm-api-key-env is the NAME of the environment variable holding the key (e.g. "
            "OPENAI_API_KEY), not the key itself"
        )
    if not 0 < timeout_s <= LLM_TIMEOUT_MAX_S:
        raise ValidationError(f"--llm-timeout must be > 0 and at most {LLM_TIMEOUT_MAX_S:g} seconds")


def shown_url(url: str) -> str:
    """A URL without its user, password, query or fragment: what answers and logs may show."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url.split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
    where = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, where, parts.path, "", ""))
