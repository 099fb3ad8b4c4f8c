"""Blob routes: content by sha256 (`maze://artifacts/sha256/<hex>`), streamed both ways, and the
limits that decide what travels inline and what as a blob."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get, head, post, put
from litestar.response import Stream
from msgspec import Meta, Struct

from maze.api.openapi import BYTES_SCHEMA, Sha256, answers, documented, success
from maze.api.state import HeadState
from maze.api.views import BlobStored, Limits, MissingBlobs
from maze.core.errors import NotFound
from maze.events.blobs import HEX_RE
from maze.events.values import URI_PREFIX

MAX_MISSING_QUERY = 10_000
WHOLE_BLOB_BYTES = 8 * 1024 * 1024


class MissingQuery(Struct, forbid_unknown_fields=True):
    sha256: Annotated[
        list[Annotated[str, Meta(pattern=HEX_RE.pattern)]],
        Meta(max_length=MAX_MISSING_QUERY, description="sha256 hex digests, 10,000 at most"),
    ]


@put(
    "/artifacts/sha256/{sha:str}",
    status_code=201,
    request_max_body_size=None,
    responses=answers(400, 413, 503) | success(200, BlobStored, "Stored already: nothing was written."),
    operation_class=documented(
        raw_body={"application/octet-stream": BYTES_SCHEMA},
        body_description="The content; it must hash to `sha`. At most the blob cap (`GET /cluster/limits`).",
    ),
)
async def put_blob(sha: Sha256, request: Request[Any, Any, Any], head: HeadState) -> Response[BlobStored]:
    """Store the body under its sha256. The content is hashed as it streams in; a body that does
    not hash to `sha` is rejected (400) with nothing stored. Storing content that is already
    stored is a 200 and stores nothing."""
    if request.content_length is not None:
        head.blobs.check_size(request.content_length, "the upload")
    size, created = await head.blobs.put_stream(request.stream(), sha)
    body = BlobStored(sha256=sha, size=size, uri=URI_PREFIX + sha, created=created)
    return Response(body, status_code=201 if created else 200)


@head(
    "/artifacts/sha256/{sha:str}",
    responses=answers(400, 503) | success(404, None, "Not stored."),
    operation_class=documented(bodiless=True),
)
async def blob_exists(sha: Sha256, head: HeadState) -> Response[None]:
    """Whether the blob is stored (200, with its size as Content-Length) or not (404). HEAD
    answers carry no body."""
    size = await head.blobs.size_of(sha)
    if size is None:
        return Response(None, status_code=404)
    return Response(None, headers={"content-length": str(size), "etag": f'"{sha}"'})


@get(
    "/artifacts/sha256/{sha:str}",
    media_type="application/octet-stream",
    responses=answers(400, 404, 503),
    operation_class=documented(content=(200, {"application/octet-stream": BYTES_SCHEMA})),
)
async def get_blob(sha: Sha256, head: HeadState) -> Response[bytes] | Stream:
    """The blob's bytes, checked against the hash before they are sent (a corrupt blob is a 500
    `artifact_error`). Blobs above 8 MB are streamed and checked as they pass: a corrupt one is
    cut short before its last chunk. Clients check the hash too."""
    size = await head.blobs.size_of(sha)
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


@post(
    "/artifacts/missing",
    status_code=200,
    responses=answers(400, 413, 503),
    # msgspec's schema of the body: Litestar's drops the digests' pattern
    operation_class=documented(body=MissingQuery),
)
async def missing_blobs(data: MissingQuery, head: HeadState) -> MissingBlobs:
    """Which of these sha256 digests the blob store does not have (upload those before a run
    that refers to them)."""
    return MissingBlobs(missing=await head.blobs.missing(sorted(set(data.sha256))))


@get("/cluster/limits", responses=answers())
async def limits(head: HeadState) -> Limits:
    """Size limits: values above `inline_value_bytes` travel as blobs, blobs above
    `blob_max_bytes` are refused (`payload_too_large`), what an attempt prints past
    `log_cap_bytes` is cut, and no message exceeds the event store's `max_payload_bytes`."""
    value_limits = head.settings.limits
    return Limits(
        inline_value_bytes=value_limits.inline_bytes,
        blob_max_bytes=value_limits.blob_max_bytes,
        max_payload_bytes=head.max_payload,
        event_budget_bytes=head.budget,
        log_cap_bytes=value_limits.log_cap_bytes,
    )
