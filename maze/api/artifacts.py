"""Blob routes: content by sha256 (`maze://artifacts/sha256/<hex>`), streamed both ways, and the
limits that decide what travels inline and what as a blob."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, Response, get, head, post, put
from litestar.params import Parameter
from litestar.response import Stream
from msgspec import Meta, Struct

from maze.api.openapi import BYTES_SCHEMA, Sha256, answers, documented, success
from maze.api.state import HeadState
from maze.api.views import BlobStored, Limits, MissingBlobs
from maze.core.errors import NotFound, RangeNotSatisfiable
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
    return Response(None, headers={"content-length": str(size), "etag": f'"{sha}"', "accept-ranges": "bytes"})


@get(
    "/artifacts/sha256/{sha:str}",
    media_type="application/octet-stream",
    responses=answers(400, 404, 416, 503)
    | success(206, None, "The byte range asked for (`Content-Range` says which)."),
    operation_class=documented(
        content=(200, {"application/octet-stream": BYTES_SCHEMA}),
        partial=(206, {"application/octet-stream": BYTES_SCHEMA}),
    ),
)
async def get_blob(
    sha: Sha256,
    head: HeadState,
    byte_range: Annotated[
        str | None,
        Parameter(
            header="range",
            required=False,
            description="One byte range, `bytes=<first>-<last>`, `bytes=<first>-` or `bytes=-<suffix length>` "
            "(206); one past the end is a 416; anything else is ignored (the whole blob, 200).",
        ),
    ] = None,
) -> Response[bytes] | Stream:
    """The blob's bytes, checked against the hash before they are sent (a corrupt blob is a 500
    `artifact_error`). Blobs above 8 MB are streamed and checked as they pass: a corrupt one is
    cut short before its last chunk. Clients check the hash too. With a `Range`, the blob is still
    read through and checked as it passes (its last piece held back until it matches), and only
    the range is sent."""
    size = await head.blobs.size_of(sha)
    if size is None:
        raise NotFound(f"blob {URI_PREFIX}{sha} is not in the blob store", sha256=sha)
    headers = {"etag": f'"{sha}"', "accept-ranges": "bytes"}
    span = parse_range(byte_range, size) if byte_range else None
    if span is not None:
        first, last = span
        return Stream(
            in_range(head.blobs.stream(sha), first, last),
            status_code=206,
            media_type="application/octet-stream",
            headers={
                **headers,
                "content-length": str(last - first + 1),
                "content-range": f"bytes {first}-{last}/{size}",
            },
        )
    if size <= WHOLE_BLOB_BYTES:
        return Response(await head.blobs.get(sha), media_type="application/octet-stream", headers=headers)
    return Stream(
        head.blobs.stream(sha),
        media_type="application/octet-stream",
        headers={**headers, "content-length": str(size)},
    )


RANGE_RE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")


def parse_range(given: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of one `Range: bytes=...` (RFC 9110 §14.1.2), or None to send the whole
    (a header that is no single byte range is ignored, as the RFC allows). Raises
    RangeNotSatisfiable for one that starts past the end."""
    found = RANGE_RE.fullmatch(given.strip())
    if found is None or found.group(1) == found.group(2) == "":
        return None
    first_s, last_s = found.groups()
    if first_s == "":  # the last N bytes
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"range {given!r} asks for no bytes of {size}", size=size)
        return max(0, size - suffix), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None  # not a valid range: ignored
    if first >= size:
        raise RangeNotSatisfiable(
            f"range {given!r} starts past the end of the blob ({size} bytes)", size=size
        )
    last = int(last_s) if last_s else size - 1
    return first, min(last, size - 1)


async def in_range(chunks: AsyncIterator[bytes], first: int, last: int) -> AsyncIterator[bytes]:
    """The bytes first..last of a checked stream of chunks. The whole stream is read (its hash is
    checked at its end) and the range's last piece held until then: a corrupt blob's range is
    cut short, never sent whole."""
    pos = 0
    held: bytes | None = None
    async for chunk in chunks:
        start, pos = pos, pos + len(chunk)
        if pos <= first or start > last:
            continue
        piece = chunk[max(first - start, 0) : min(last + 1, pos) - start]
        if held is not None:
            yield held
        held = piece
    if held is not None:
        yield held


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
