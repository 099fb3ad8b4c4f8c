"""Blob routes: content by sha256 (`maze://artifacts/sha256/<hex>`), streamed both ways, and the
limits that decide what travels inline and what as a blob."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, head, post, put
from litestar.response import Stream
from msgspec import Struct

from maze.api.state import HeadState
from maze.core.errors import NotFound, ValidationError
from maze.events.blobs import check_hex
from maze.events.values import URI_PREFIX

MAX_MISSING_QUERY = 10_000
WHOLE_BLOB_BYTES = 8 * 1024 * 1024


class MissingQuery(Struct, forbid_unknown_fields=True):
    sha256: list[str]


@put("/artifacts/sha256/{sha:str}", status_code=201, request_max_body_size=None)
async def put_blob(sha: str, request: Request[Any, Any, Any], head: HeadState) -> Response[dict[str, Any]]:
    """Store the body under its sha256. The content is hashed as it streams in; a body that does
    not hash to `sha` is rejected (400) with nothing stored. Storing content that is already
    stored is a 200 and stores nothing."""
    check_hex(sha)
    if request.content_length is not None:
        head.blobs.check_size(request.content_length, "the upload")
    size, created = await head.blobs.put_stream(request.stream(), sha)
    body = {"sha256": sha, "size": size, "uri": URI_PREFIX + sha, "created": created}
    return Response(body, status_code=201 if created else 200)


@head("/artifacts/sha256/{sha:str}")
async def blob_exists(sha: str, head: HeadState) -> Response[None]:
    size = await head.blobs.size_of(check_hex(sha))
    if size is None:
        return Response(None, status_code=404)
    return Response(None, headers={"content-length": str(size), "etag": f'"{sha}"'})


@get("/artifacts/sha256/{sha:str}")
async def get_blob(sha: str, head: HeadState) -> Response[bytes] | Stream:
    """The blob's bytes, checked against the hash before they are sent (a corrupt blob is a 500
    `artifact_error`). Blobs above 8 MB are streamed and checked as they pass: a corrupt one is
    cut short before its last chunk. Clients check the hash too."""
    size = await head.blobs.size_of(check_hex(sha))
    if size is None:
        raise NotFound(f"blob {URI_PREFIX}{sha} is not in the blob store", sha256=sha)
    if size <= WHOLE_BLOB_BYTES:
        return Response(
            await head.blobs.get(sha),
            media_type="application/octet-stream",
            headers={"etag": f'"{sha}"'},
        )
    return Stream(
        head.blobs.stream(sha),
        media_type="application/octet-stream",
        headers={"content-length": str(size), "etag": f'"{sha}"'},
    )


@post("/artifacts/missing", status_code=200)
async def missing_blobs(data: MissingQuery, head: HeadState) -> dict[str, list[str]]:
    """Which of these sha256 digests the blob store does not have (upload those before a run
    that refers to them)."""
    if len(data.sha256) > MAX_MISSING_QUERY:
        raise ValidationError(f"ask about {MAX_MISSING_QUERY} digests at most per request")
    for sha in data.sha256:
        check_hex(sha)
    return {"missing": await head.blobs.missing(sorted(set(data.sha256)))}


@get("/cluster/limits")
async def limits(head: HeadState) -> dict[str, int]:
    """Size limits: values above `inline_value_bytes` travel as blobs, blobs above
    `blob_max_bytes` are refused (`payload_too_large`), what an attempt prints past
    `log_cap_bytes` is cut, and no message exceeds the event store's `max_payload_bytes`."""
    value_limits = head.settings.limits
    return {
        "inline_value_bytes": value_limits.inline_bytes,
        "blob_max_bytes": value_limits.blob_max_bytes,
        "log_cap_bytes": value_limits.log_cap_bytes,
        "max_payload_bytes": head.max_payload,
        "event_budget_bytes": head.budget,
    }
