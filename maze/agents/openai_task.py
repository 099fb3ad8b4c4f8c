"""`openai_llm_task`: a ReAct decision task that asks an OpenAI-compatible chat completions API.

The task runs on a worker like any other: it renders `(prompt, history, tools)` as chat messages
(maze/agents/messages.py), POSTs them to `{base_url}/v1/chat/completions` with the tools' schemas
(maze/agents/tools.py), and reads the reply as an action (maze/agents/replies.py). What travels
with the task is its configuration, never the API key: the key is read from the environment
variable named by `api_key_env` on the worker, when the task runs.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from maze.agents.messages import SYSTEM_PROMPT, openai_tool, render_messages
from maze.agents.replies import parse_reply
from maze.agents.tools import tool_specs
from maze.core.errors import TaskFailure, ValidationError
from maze.sdk.task import task, task_meta

# The error types a decision fails with (the task's structured error, `TaskFailed.error_type`).
LLM_UNAVAILABLE = "llm_unavailable"  # no answer, 5xx, 408: retried by the task's retry policy
LLM_RATE_LIMITED = "llm_rate_limited"  # 429: retried
LLM_BAD_RESPONSE = "llm_bad_response"  # a 2xx whose body is not JSON: retried
LLM_REJECTED = "llm_rejected"  # any other 4xx (a wrong key, model or URL): not retried
LLM_CONFIG_ERROR = "llm_config_error"  # the key's variable is not set on the worker: not retried

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# what API keys start with: a value passed as api_key_env that looks like one is the key itself
_KEY_PREFIXES = ("sk_", "sk-", "gsk_", "xai-", "hf_", "AIza", "pk_", "rk_", "ghp_", "github_pat_")


def looks_like_a_key(name: str) -> bool:
    """Whether `name` (meant as a variable's name) is more likely a key: a key's prefix, or long
    with lower-case letters and digits mixed (variable names are words: OPENAI_API_KEY)."""
    if name.startswith(_KEY_PREFIXES):
        return True
    mixed = any(c.islower() for c in name) and any(c.isdigit() for c in name)
    return len(name) >= 20 and mixed


_ERROR_EXCERPT = 300


class OpenAIDecisionConfig(msgspec.Struct, frozen=True):
    """What an `openai_llm_task` carries to the worker (no key: only the name of its variable)."""

    base_url: str
    model: str
    api_key_env: str | None
    max_tokens: int
    temperature: float
    system_prompt: str | None
    request_timeout: float

    @property
    def endpoint(self) -> str:
        base = self.base_url.rstrip("/")
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def openai_llm_task(
    base_url: str,
    model: str,
    api_key_env: str | None = None,
    max_tokens: int = 1024,
    temperature: float = 0.0,
    *,
    system_prompt: str | None = SYSTEM_PROMPT,
    request_timeout: float = 120.0,
    max_retries: int = 3,
    retry_backoff_seconds: float = 2.0,
    resources: dict[str, Any] | None = None,
) -> Callable[..., dict[str, Any]]:
    """A decision task for `create_react_workflow(llm_task=...)` backed by an OpenAI-compatible
    API (OpenAI, vLLM, llama.cpp server, Ollama, LiteLLM, ...).

    The task takes `(prompt, history, tools, step)` and returns `{"action": ..., "usage": ...}`,
    the action being `{"tool": name, "args": {...}}`, `{"tools": [{"tool", "args"}, ...]}`,
    `{"final": answer}` or `{"malformed": {"raw", "why"}}` (README, "OpenAI-compatible
    decisions"), and `usage` the reply's token counts (or None).

    `base_url`: the server, with or without its trailing `/v1` (`https://api.openai.com/v1` and
    `http://localhost:8001` both work). `api_key_env`: the name of the environment variable that
    holds the key on the workers (sent as `Authorization: Bearer ...`); None sends no key.
    `max_tokens`, `temperature`: sent as such. `system_prompt`: the first message (None: none).
    `request_timeout`: seconds for each HTTP operation; the task's own timeout is that plus 30 s.
    A 429, a 5xx or no answer fail the attempt as retryable (`max_retries` more attempts,
    `retry_backoff_seconds` doubling); another 4xx fails it for good with the server's message."""
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValidationError("openai_llm_task: base_url must be an http:// or https:// URL")
    if not isinstance(model, str) or not model.strip():
        raise ValidationError("openai_llm_task: model must be a non-empty string")
    if api_key_env is not None and (
        not isinstance(api_key_env, str)
        or not _ENV_NAME.fullmatch(api_key_env)
        or looks_like_a_key(api_key_env)
    ):
        # never echo the value: it may be the key itself
        raise ValidationError(
            "openai_llm_task: api_key_env is the NAME of the environment variable holding the key "
            "(e.g. OPENAI_API_KEY), not the key itself"
        )
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValidationError(f"openai_llm_task: max_tokens must be a positive integer, got {max_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise ValidationError(f"openai_llm_task: temperature must be between 0 and 2, got {temperature!r}")
    if not isinstance(request_timeout, int | float) or request_timeout <= 0:
        raise ValidationError(f"openai_llm_task: request_timeout must be > 0, got {request_timeout!r}")
    config = OpenAIDecisionConfig(
        base_url=base_url.rstrip("/"),
        model=model,
        api_key_env=api_key_env,
        max_tokens=max_tokens,
        temperature=float(temperature),
        system_prompt=system_prompt,
        request_timeout=float(request_timeout),
    )

    def openai_decision(prompt: str, history: Any = None, tools: Any = None, step: int = 0) -> dict[str, Any]:
        return decide(config, prompt, history, tools, step)

    decision: Callable[..., dict[str, Any]] = task(
        outputs=["action", "usage"],
        resources=resources or {"cpu": 0.1},
        timeout_seconds=config.request_timeout + 30,
        max_retries=max_retries,
        retry_backoff_seconds=retry_backoff_seconds,
    )(openai_decision)
    decision.__maze_llm_config__ = config  # type: ignore[attr-defined]
    return decision


def with_settings(decision: Callable[..., Any], **changes: Any) -> Callable[..., dict[str, Any]] | None:
    """A copy of an `openai_llm_task` with some settings changed (`max_tokens=` for
    `create_react_workflow(max_tokens=)`, `temperature=`, ...), checked as `openai_llm_task`
    checks them; its retry policy and resources stay. None for a decision task that is not one."""
    config = getattr(decision, "__maze_llm_config__", None)
    if not isinstance(config, OpenAIDecisionConfig):
        return None
    meta = task_meta(decision)
    settings = {field: getattr(config, field) for field in config.__struct_fields__}
    unknown = sorted(set(changes) - set(settings))
    if unknown:
        raise ValidationError(f"openai_llm_task has no setting {unknown[0]!r} (settings: {sorted(settings)})")
    return openai_llm_task(
        **{**settings, **changes},
        max_retries=meta.max_retries,
        retry_backoff_seconds=meta.retry_backoff_seconds,
        resources=dict(meta.resources),
    )


def build_request(
    config: OpenAIDecisionConfig, prompt: str, history: Any, tools: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the request body, the tool descriptors it offers)."""
    specs = tool_specs(tools)
    body: dict[str, Any] = {
        "model": config.model,
        "messages": render_messages(prompt, list(history or []), config.system_prompt),
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
    }
    if specs:
        body["tools"] = [openai_tool(spec) for spec in specs]
    return body, specs


def decide(config: OpenAIDecisionConfig, prompt: str, history: Any, tools: Any, step: int) -> dict[str, Any]:
    """One decision: the request, the reply read as an action (see openai_llm_task)."""
    try:
        body, specs = build_request(config, prompt, history, tools)
    except TypeError as exc:
        raise TaskFailure("invalid_input", f"openai_llm_task step {step}: {exc}") from None
    key = _api_key(config)
    url = config.endpoint
    started = time.monotonic()
    try:
        with httpx.Client(timeout=config.request_timeout) as http:
            response = http.post(url, json=body, headers=chat_headers(key, "maze-openai-decision"))
    except httpx.HTTPError as exc:
        raise transport_failure(url, config.request_timeout, exc, key) from None
    reply = read_reply(config, url, response, key)
    usage = reply.get("usage") if isinstance(reply, dict) else None
    return {
        "action": parse_reply(reply, specs),
        "usage": {**usage, "seconds": round(time.monotonic() - started, 3)}
        if isinstance(usage, dict)
        else None,
    }


def _api_key(config: OpenAIDecisionConfig) -> str | None:
    if config.api_key_env is None:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise TaskFailure(
            LLM_CONFIG_ERROR,
            f"the environment variable {config.api_key_env} (api_key_env) is not set on this "
            "worker: set it where the worker starts",
            retryable=False,
        )
    return key


def chat_headers(key: str | None, agent: str) -> dict[str, str]:
    """A chat completion request's headers (the key as `Authorization: Bearer`, when there is one)."""
    headers = {"content-type": "application/json", "user-agent": agent}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return headers


def transport_failure(url: str, timeout: float, exc: httpx.HTTPError, key: str | None) -> TaskFailure:
    """What a request that got no answer (refused, reset, timed out) fails with: retryable."""
    if isinstance(exc, httpx.TimeoutException):
        return TaskFailure(LLM_UNAVAILABLE, f"POST {url}: no answer within {timeout:g}s", retryable=True)
    return TaskFailure(
        LLM_UNAVAILABLE, _scrub(f"POST {url}: {type(exc).__name__}: {exc}", key), retryable=True
    )


def read_reply(
    config: OpenAIDecisionConfig,
    url: str,
    response: httpx.Response,
    key: str | None,
    no_key_hint: str = "no key was sent: pass api_key_env='NAME_OF_THE_VARIABLE_HOLDING_IT'",
) -> Any:
    """The reply's JSON body; TaskFailure (with the server's message, never the key) for an error
    status or a body that is not JSON. `no_key_hint`: what a 401/403 without a key advises."""
    _raise_for_status(config, url, response, key, no_key_hint)
    try:
        return response.json()
    except ValueError:
        raise TaskFailure(
            LLM_BAD_RESPONSE,
            _scrub(
                f"POST {url} answered {response.status_code} with a body that is not JSON: "
                f"{response.text[:_ERROR_EXCERPT]!r}",
                key,
            ),
            retryable=True,
        ) from None


def _raise_for_status(
    config: OpenAIDecisionConfig, url: str, response: httpx.Response, key: str | None, no_key_hint: str
) -> None:
    status = response.status_code
    if status < 400:
        return
    what = _scrub(f"POST {url} answered {status}: {_server_message(response)}", key)
    if status == 429:
        raise TaskFailure(LLM_RATE_LIMITED, what, retryable=True, status=status)
    if status >= 500 or status == 408:
        raise TaskFailure(LLM_UNAVAILABLE, what, retryable=True, status=status)
    if status in (401, 403):
        hint = f"check the key in ${config.api_key_env}" if config.api_key_env else no_key_hint
        what = f"{what} ({hint})"
    elif status == 404:
        what = f"{what} (check base_url and model {config.model!r})"
    raise TaskFailure(LLM_REJECTED, what, retryable=False, status=status)


def _server_message(response: httpx.Response) -> str:
    """The server's own error message (OpenAI's `{"error": {"message"}}`), else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:_ERROR_EXCERPT] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:_ERROR_EXCERPT]
    if isinstance(error, str):
        return error[:_ERROR_EXCERPT]
    return response.text[:_ERROR_EXCERPT]


def _scrub(text: str, key: str | None) -> str:
    """A message never carries the key, even where a server echoes it."""
    return text.replace(key, "***") if key else text
