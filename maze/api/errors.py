"""One error -> one HTTP answer, in one place: `{"error": {"type", "message", "details"}}`."""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.exceptions import ValidationException as LitestarValidation

from maze.core.errors import MazeError
from maze.events.store import TRANSIENT

log = structlog.get_logger(__name__)


class ErrorDetail(msgspec.Struct):
    """What went wrong. `type` names the error for programs (validation_error, serialization_error,
    blob_missing, unauthorized, not_found, conflict, payload_too_large, resource_unavailable,
    too_many_requests, unavailable, store_full, artifact_error, internal_error, http_error, ...), `message` says
    it to people, and `details` holds what the error is about (a task id, the missing blobs, the
    limit reached...)."""

    type: str
    message: str
    details: dict[str, Any]


class ErrorEnvelope(msgspec.Struct):
    """The body of every error answer, whatever the route or the status."""

    error: ErrorDetail


def _body(error_type: str, message: str, details: object = None) -> dict[str, object]:
    return {"error": {"type": error_type, "message": message, "details": details or {}}}


def maze_error(_: Request[Any, Any, Any], exc: MazeError) -> Response[dict[str, object]]:
    return Response(
        _body(exc.error_type, exc.message, exc.details),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def litestar_validation(_: Request[Any, Any, Any], exc: LitestarValidation) -> Response[dict[str, object]]:
    return Response(_body("validation_error", str(exc.detail), {"extra": exc.extra}), status_code=400)


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, object]]:
    kind = "not_found" if exc.status_code == 404 else "http_error"
    # the exception's headers are part of the answer: `Allow` on a 405 (RFC 9110)
    return Response(_body(kind, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


def event_store_busy(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    """NATS timeouts and stream leader elections pass: 503 tells the client to retry."""
    log.warning("api.event_store_busy", error=repr(exc))
    return Response(
        _body("unavailable", f"the event store did not answer in time ({exc!r}); retry shortly"),
        status_code=503,
    )


def unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, object]]:
    log.exception("api.unexpected_error", error=str(exc))
    return Response(_body("internal_error", f"{type(exc).__name__}: {exc}"), status_code=500)


EXCEPTION_HANDLERS = {
    MazeError: maze_error,
    LitestarValidation: litestar_validation,
    HTTPException: http_error,
    **dict.fromkeys(TRANSIENT, event_store_busy),
    Exception: unexpected,
}
