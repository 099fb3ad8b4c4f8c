"""Tasks from a prompt: the Playground asks the head to write `@task` code from a description.

The head asks the OpenAI-compatible endpoint it was started with (`--llm-base-url`,
`--llm-model`, the key from the environment variable named by `--llm-api-key-env`) through
maze/agents/openai_task.py's client code, reads the answer's code with the builder's AST reader
(never runs it), gives the model one repair turn when it does not parse, and answers the source
and its tasks. Nothing is stored: the editor shows the code for review, and
`PUT /workspaces/{ws}/tasks/{file}` stores it.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Annotated, Any

import httpx
import structlog
from litestar import Request, get, post
from msgspec import Meta, Struct

from maze.agents.openai_task import (
    LLM_UNAVAILABLE,
    OpenAIDecisionConfig,
    chat_headers,
    read_reply,
    transport_failure,
)
from maze.agents.task_writer import (
    HOW_TO_CONFIGURE,
    MAX_PROMPT_CHARS,
    default_file,
    extract_code,
    first_messages,
    outside_imports,
    repair_messages,
    reply_text,
    shown_url,
)
from maze.api.dynamic import _decode
from maze.api.openapi import answers, documented
from maze.api.state import HeadState
from maze.api.workspace_tasks import TASK_FILE_PATTERN, WORKSPACE_REF
from maze.core.errors import GenerationFailed, LLMNotConfigured, LLMUnavailable, TaskFailure, ValidationError
from maze.core.settings import Settings
from maze.core.task_source import TaskInfo, parse_tasks

MAX_BODY_BYTES = 64 * 1024
MAX_TOKENS = 4096  # of generated code per turn
TEMPERATURE = 0.2
TURNS = 2  # the first answer and one repair
_MODEL_TEXT_KEPT = 16 * 1024  # of the model's text in a 422's details
log = structlog.get_logger(__name__)


class LLMConfig(Struct):
    """Whether this head can write tasks from a prompt, and with what. `base_url` without
    credentials or query; `api_key_env` the NAME of the head's variable holding the key (never the
    key); `how_to_configure` what to do when `configured` is false (or to change it)."""

    configured: bool
    model: str | None
    base_url: str | None
    api_key_env: str | None
    timeout_s: float
    how_to_configure: str


class GenerateTasks(Struct, forbid_unknown_fields=True):
    """What the task should do, in words; `file`: the task file name to write it for (default:
    the first task's name, `.py`)."""

    prompt: Annotated[str, Meta(min_length=1, max_length=MAX_PROMPT_CHARS)]
    file: Annotated[str, Meta(pattern=TASK_FILE_PATTERN)] | None = None


class GenerationNote(Struct, omit_defaults=True):
    """Something to review before storing the code: `non_stdlib_import` (with its `line`),
    `no_code_block`, `several_code_blocks`, `repaired` (the first answer's error)."""

    code: str
    message: str
    line: int | None = None


class GeneratedTasks(Struct):
    """Generated code, not stored: `source` and the `tasks` it defines, read as
    `PUT /workspaces/{ws}/tasks/{file}` will read it; `turns` 2 when the first answer was repaired."""

    file: str
    source: str
    tasks: list[TaskInfo]
    model: str
    turns: int
    problems: list[GenerationNote]


def _config(settings: Settings) -> OpenAIDecisionConfig | None:
    if not settings.llm_base_url or not settings.llm_model:
        return None
    return OpenAIDecisionConfig(
        base_url=settings.llm_base_url.rstrip("/"),
        model=settings.llm_model,
        api_key_env=settings.llm_api_key_env or None,
        max_tokens=MAX_TOKENS,
        temperature=TEMPERATURE,
        system_prompt=None,
        request_timeout=settings.llm_timeout_s,
    )


@get("/playground/llm", responses=answers())
async def get_llm_config(head: HeadState) -> LLMConfig:
    """The LLM endpoint the Playground's "tasks from a prompt" uses, or how to configure one."""
    settings = head.settings
    config = _config(settings)
    return LLMConfig(
        configured=config is not None,
        model=config.model if config else None,
        base_url=shown_url(config.base_url) if config else None,
        api_key_env=config.api_key_env if config else None,
        timeout_s=settings.llm_timeout_s,
        how_to_configure=HOW_TO_CONFIGURE,
    )


async def _ask(config: OpenAIDecisionConfig, messages: list[dict[str, Any]], key: str | None) -> str | None:
    """One chat completion's text; LLMUnavailable when none came (the message never holds the key
    or the URL's credentials)."""
    url = config.endpoint
    body = {
        "model": config.model,
        "messages": messages,
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
    }
    try:
        try:
            async with (
                httpx.AsyncClient(timeout=config.request_timeout) as http,
                asyncio.timeout(config.request_timeout),
            ):
                response = await http.post(url, json=body, headers=chat_headers(key, "maze-task-generator"))
        except httpx.HTTPError as exc:
            raise transport_failure(url, config.request_timeout, exc, key) from None
        except TimeoutError:
            raise TaskFailure(
                LLM_UNAVAILABLE, f"POST {url}: no answer within {config.request_timeout:g}s", retryable=True
            ) from None
        reply = read_reply(
            config,
            url,
            response,
            key,
            no_key_hint="no key was sent: start the head with --llm-api-key-env NAME_OF_THE_VARIABLE_HOLDING_IT",
        )
    except TaskFailure as exc:
        shown = exc.message.replace(url, shown_url(url))
        log.warning("playground.llm_failed", model=config.model, error_type=exc.error_type, message=shown)
        details: dict[str, Any] = {"reason": exc.error_type, "model": config.model}
        if "status" in exc.details:
            details["upstream_status"] = exc.details["status"]
        raise LLMUnavailable(f"the LLM endpoint failed: {shown}", **details) from None
    return reply_text(reply)


def _read(source: str, file: str) -> list[TaskInfo]:
    """The source's tasks as the builder reads them; ValidationError when there are none."""
    tasks = parse_tasks(source, file, f"{WORKSPACE_REF}{file}:")
    if not tasks:
        raise ValidationError(
            f"{file} defines no @task function (decorate a top-level function with @task from maze)",
            file=file,
        )
    return tasks


@post(
    "/playground/tasks/generate",
    status_code=200,
    request_max_body_size=MAX_BODY_BYTES,
    responses=answers(400, 409, 413, 422, 502),
    operation_class=documented(body=GenerateTasks),
)
async def generate_tasks(request: Request[Any, Any, Any], head: HeadState) -> GeneratedTasks:
    """Write `@task` code from a description with the head's LLM endpoint, read it without running
    it, and answer it for review (nothing is stored: `PUT /workspaces/{ws}/tasks/{file}` stores
    it). An answer that does not parse, or defines no task, gets one repair turn quoting the error;
    a second such answer is a 422 `generation_failed` whose `details` hold the model's `text` and
    the `error` (`message`, `line`, `column`). 409 `llm_not_configured`: the head has no endpoint (the message says how to
    configure one); 502 `llm_unavailable`: the endpoint did not answer within the head's
    `--llm-timeout`, could not be reached, or answered an error. Prompts: 8,192 characters at most."""
    body: GenerateTasks = _decode(
        await request.body(), request.headers.get("content-type", ""), GenerateTasks
    )
    if not body.prompt.strip():
        raise ValidationError("prompt is empty: describe the task in words")
    config = _config(head.settings)
    if config is None:
        raise LLMNotConfigured(
            f"this head has no LLM endpoint for tasks from a prompt: {HOW_TO_CONFIGURE}",
            how_to_configure=HOW_TO_CONFIGURE,
        )
    key = os.environ.get(config.api_key_env) if config.api_key_env else None
    if config.api_key_env and not key:
        raise LLMNotConfigured(
            f"the environment variable {config.api_key_env} (--llm-api-key-env) is not set in the "
            "head's environment: set it where the head starts",
            how_to_configure=HOW_TO_CONFIGURE,
        )
    started = time.monotonic()
    messages = first_messages(body.prompt)
    problems: list[GenerationNote] = []
    for turn in range(1, TURNS + 1):
        answer = await _ask(config, messages, key)
        text = answer or ""
        if answer is None:
            error = "the answer had no text (send the code in a ```python block)"
            parse_error: dict[str, Any] = {"message": error}
        else:
            source, notes = extract_code(text)
            try:
                tasks = await asyncio.to_thread(_read, source, body.file or "generated.py")
                file = body.file or default_file([t.name for t in tasks])
                if file != "generated.py" and body.file is None:  # the refs name the file
                    tasks = await asyncio.to_thread(_read, source, file)
            except ValidationError as exc:
                error = exc.message
                parse_error = {"message": error, **exc.details}
            else:
                problems += [GenerationNote(**n) for n in [*notes, *outside_imports(source, body.prompt)]]
                log.info(
                    "playground.tasks_generated",
                    model=config.model,
                    turns=turn,
                    tasks=len(tasks),
                    seconds=round(time.monotonic() - started, 3),
                )
                return GeneratedTasks(file, source, tasks, config.model, turn, problems)
        if turn < TURNS:
            problems.append(GenerationNote("repaired", f"the first answer could not be used: {error}"))
            messages = repair_messages(messages, text, error)
    log.warning("playground.generation_failed", model=config.model, error=error)
    raise GenerationFailed(
        f"the model's code could not be used after {TURNS} tries: {error}",
        text=text[:_MODEL_TEXT_KEPT],
        error=parse_error,
        model=config.model,
        turns=TURNS,
    )
