"""The error hierarchy. Each type maps to one HTTP status in maze.api.errors."""

from __future__ import annotations

from typing import Any


class MazeError(Exception):
    """Base of every error Maze raises on purpose."""

    error_type = "maze_error"
    status_code = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.error_type, "message": self.message, "details": self.details}


class ValidationError(MazeError, ValueError):
    error_type = "validation_error"
    status_code = 400


class SerializationError(ValidationError):
    error_type = "serialization_error"


class NotFound(MazeError, ValueError):
    error_type = "not_found"
    status_code = 404


class Conflict(MazeError):
    error_type = "conflict"
    status_code = 409


class ResourceUnavailable(MazeError):
    error_type = "resource_unavailable"
    status_code = 422


class PayloadTooLarge(MazeError):
    error_type = "payload_too_large"
    status_code = 413


class BlobMissing(ValidationError):
    """A referenced blob (function code or a value) is not in the blob store: upload it first."""

    error_type = "blob_missing"


class RunFailed(MazeError):
    """A run the SDK waited on for its result (`client.exec_code`) ended without one; `details`
    carry its `run_id` and the task's `error`."""

    error_type = "run_failed"
    status_code = 500


class TaskFailed(MazeError):
    """A task a client waited on (`DynamicRun.wait_for_task`) failed for good, or will never run:
    raised by the SDK with the task's structured error. `error_type` is the task's (`user_code`,
    `timed_out`, `cancelled`, `upstream_failed`, ...), and `message`, `traceback`,
    `exception_type`, `retryable`, `origin`, `node_id`, `attempt` are its envelope's fields
    (also in `details`, with `run_id` and `task_id`)."""

    error_type = "task_failed"
    status_code = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.error_type = str(details.get("error_type") or "task_failed")
        self.run_id: str | None = details.get("run_id")
        self.task_id: str | None = details.get("task_id")
        self.traceback: str | None = details.get("traceback")
        self.exception_type: str | None = details.get("exception_type")
        self.retryable = bool(details.get("retryable", False))
        self.origin: str | None = details.get("origin")
        self.node_id: str | None = details.get("node_id")
        self.attempt: int | None = details.get("attempt")


class ArtifactError(MazeError):
    """A stored blob cannot be used: missing where it must exist, or its content does not hash to
    its name (corrupt). Never used when this is raised."""

    error_type = "artifact_error"
    status_code = 500


class RangeNotSatisfiable(MazeError):
    """A `Range` request past the end of the content; `headers` go with the answer."""

    error_type = "range_not_satisfiable"
    status_code = 416

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message, size=size)
        self.headers = {"content-range": f"bytes */{size}"}


class TaskFailure(MazeError):
    """Raised by task code that fails with an error type of its own choosing (instead of
    `user_code`) and says whether another attempt could help: the attempt fails with exactly that
    `error_type`, `message` and `retryable` (e.g. `environment_error`, not retryable, for an app
    whose node has no conda). Never sent by the head."""

    status_code = 500

    def __init__(self, error_type: str, message: str, retryable: bool = False, **details: Any) -> None:
        super().__init__(message, **details)
        self.error_type = error_type
        self.retryable = retryable


class Unavailable(MazeError):
    """The event store or another dependency cannot be reached right now."""

    error_type = "unavailable"
    status_code = 503


class StoreFull(Unavailable):
    """The event store has no room left: JetStream refused a write for its storage limits (the
    server's `max_file_store`, an account's). Nothing of that write was recorded; it is taken once
    the operator gives the store room (what was accepted before waits for it, nothing is lost).
    Internal writers wait and repeat it, as for any Unavailable."""

    error_type = "store_full"


class TooManyRequests(MazeError):
    """A bound on what one client (or all) may hold at once was reached: retry later."""

    error_type = "too_many_requests"
    status_code = 429


class Unauthorized(MazeError):
    """The call carries no API token, or a wrong one."""

    error_type = "unauthorized"
    status_code = 401


class Unreachable(Unavailable):
    """Nothing answers at the server URL (connection refused, unknown host, no route): a wrong URL,
    or a head that is not running. The SDK raises it at once, without retrying, until a server has
    answered at that URL once (after that, a refusal is a head restarting: waited for, and what
    is raised when the wait is over is Unavailable)."""

    error_type = "unreachable"
    status_code = 503


class NotAMazeHead(MazeError):
    """Something answers at the server URL, but it is not a Maze head (its answers lack the
    `X-Maze-Head` header every answer of a head carries): a wrong port or path, say."""

    error_type = "not_a_maze_head"
    status_code = 502


class LLMNotConfigured(Conflict):
    """The head was started without an LLM endpoint (`--llm-base-url`, `--llm-model`): the
    Playground's "tasks from a prompt" cannot ask one. The message says how to configure it."""

    error_type = "llm_not_configured"


class LLMUnavailable(MazeError):
    """The head's LLM endpoint did not answer in time, could not be reached, or answered an error
    status (its message, never the API key, is in this one's)."""

    error_type = "llm_unavailable"
    status_code = 502


class GenerationFailed(MazeError):
    """The LLM's code did not parse, or defined no `@task` function, even after a repair turn:
    `details` hold the model's last text and the parse error."""

    error_type = "generation_failed"
    status_code = 422


class WaitTimeout(MazeError, TimeoutError):
    """A client's wait (`MaClient.wait_run(timeout=...)`) ran out before the run ended: the run goes
    on. Raised by the SDK only, never sent by the head; catch it as TimeoutError too."""

    error_type = "wait_timeout"
    status_code = 408


ERROR_TYPES: dict[str, type[MazeError]] = {
    cls.error_type: cls
    for cls in (
        RangeNotSatisfiable,
        ValidationError,
        SerializationError,
        NotFound,
        Conflict,
        ResourceUnavailable,
        PayloadTooLarge,
        BlobMissing,
        ArtifactError,
        Unavailable,
        StoreFull,
        Unauthorized,
        TooManyRequests,
        LLMNotConfigured,
        LLMUnavailable,
        GenerationFailed,
    )
}
