"""The OpenAPI document (`/schema/openapi.json`) is the API's contract: every status a route can
answer is declared there, each error with the one envelope of maze/api/errors.py, and
tests/test_openapi_contract.py runs Schemathesis over it against a real head (an answer the
document does not declare, a body that does not fit its schema, a 5xx: each fails it).

How a route declares what it answers:

    @get("/runs/{run_id:str}", responses=answers(400, 404, 409, 503, ok=RunView))
    async def get_run(run_id: RunId, head: HeadState, min_seq: MinSeq = None) -> dict[str, Any]:

- `answers(*statuses)`: the route's own error statuses; every route also gets 401 (a head that
  requires its API token; `token=False` for the open probes) and 500 (a bug, still in the
  envelope). Each status is described once, in ERRORS; a new one is added there.
- `ok=Type` (and `ok_status=` when not 200): the success body, where the signature does not say it
  (read-model rows answered as dicts). A route that builds its answer returns a msgspec Struct of
  maze/api/views.py and Litestar documents it from the signature.
- Parameters carry their bounds (`Parameter(ge=..., le=..., pattern=...)`; the shared ones are
  below): what the document allows, the route must accept, and Litestar refuses the rest with a
  400 in the envelope before the route runs.
- A parameter the route checks itself (to say more than Litestar's 400 would) is shown with
  `Parameter(schema_extra={...})`, which Litestar does not enforce: what it allows, the route must
  accept all the same (`GET /runs`'s filters: maze/projections/run_search.py's patterns).
- What a signature cannot show (a body the route reads itself, optional or not, a second media
  type such as SSE, a route open without the token): `operation_class=documented(...)`.
- An id that becomes a NATS subject token is checked whole (`fullmatch`) as well: a pattern's `$`
  also matches before a final newline.

The docs page of the document is maze/api/docs.py's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, Operation
from litestar.params import Parameter

from maze.api.errors import ErrorEnvelope

# What each error status means on any route; a route adds its own cases in its docstring.
ERRORS: dict[int, str] = {
    400: "Bad input, refused before anything is recorded: `validation_error` (a parameter or body "
    "that does not fit; `details.extra` says which), `serialization_error`, `blob_missing`.",
    401: "`unauthorized`: this head requires its API token (`Authorization: Bearer <token>`) and "
    "the call has none, or a wrong one. Only on a head that requires one (it binds beyond "
    "loopback, or was given `--token`).",
    404: "`not_found`: no such run, task or blob.",
    409: "`conflict`: the request does not fit the log as it is: a run id taken by another "
    "submission, or a `min_seq` past the end of the event log; `llm_not_configured`: the head has no "
    "LLM endpoint (its message says how to configure one).",
    413: "The request body is above this route's limit (`http_error`, `payload_too_large`).",
    416: "`range_not_satisfiable`: the `Range` asked for starts past the end of the content "
    "(`Content-Range: bytes */<size>` says its size).",
    422: "`resource_unavailable`: a task no registered node could ever hold; `generation_failed`: "
    "the LLM's code did not parse even after a repair turn (`details` hold its text and the error).",
    429: "`too_many_requests`: a bound on what clients hold of the head at once (live streams, "
    "submissions being read; `details.limit` names it). Nothing was recorded: retry later.",
    500: "`internal_error`: a bug in the head, still in the envelope (on blob reads also "
    "`artifact_error`: a stored blob that does not match its hash, never sent).",
    502: "`llm_unavailable`: the head's LLM endpoint did not answer in time, could not be reached, "
    "or answered an error (its message says which). Nothing was stored.",
    503: "`unavailable`: the event store or the read models did not answer in time, or are still "
    "catching up (`details` says how far). Nothing was recorded: retry shortly. `store_full`: the "
    "event store has no room left (a JetStream storage limit or the disk); nothing was recorded, "
    "and what was accepted before waits for room, lost by nothing.",
}
EVERY_ROUTE = (401, 500)
SEQ_MAX = 2**53 - 1  # bounds stream sequences and offsets: exact as a JSON number anywhere

# The ids the document's examples use (tests/test_openapi_contract.py records such a run, so that
# the examples reach the routes' success answers)
EXAMPLE_RUN_ID = "run_4f1c2b7e9a3d4c5e8f6a0b1c2d3e4f5a"
# a run the test keeps from ending for a few seconds (its task waits out a retry's backoff), so
# that a cancel's example reaches its 200 (the ended run above gets its 409)
EXAMPLE_LIVE_RUN_ID = "run_9b8a7c6d5e4f4a3b8c2d1e0f9a8b7c6d"
EXAMPLE_TASK_ID = "greet"
EXAMPLE_BLOB = b"Hello Maze"
EXAMPLE_SHA256 = hashlib.sha256(EXAMPLE_BLOB).hexdigest()

# Shared parameter types: the bounds the routes enforce are the ones the document shows.
RUN_ID_PATTERN = r"^run_[A-Za-z0-9_-]{1,124}$"
TASK_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
RunId = Annotated[
    str,
    Parameter(
        pattern=RUN_ID_PATTERN,
        description="A run id: `run_` then letters, digits, `_` or `-`.",
        examples=[Example(value=EXAMPLE_RUN_ID)],
    ),
]
TaskId = Annotated[
    str,
    Parameter(
        pattern=TASK_ID_PATTERN,
        description="A task id, as submitted.",
        examples=[Example(value=EXAMPLE_TASK_ID)],
    ),
]
RunToCancel = Annotated[
    str,
    Parameter(
        pattern=RUN_ID_PATTERN,
        description="A run id: `run_` then letters, digits, `_` or `-`.",
        examples=[Example(value=EXAMPLE_LIVE_RUN_ID), Example(value=EXAMPLE_RUN_ID)],
    ),
]
Sha256 = Annotated[
    str,
    Parameter(
        pattern=r"^[0-9a-f]{64}$",
        description="The content's sha256: 64 lowercase hex digits.",
        examples=[Example(value=EXAMPLE_SHA256)],
    ),
]
After = Annotated[
    int,
    Parameter(
        ge=0,
        le=SEQ_MAX,
        description="Only what follows this stream sequence (the `last_seq` or SSE `id` you have).",
    ),
]
Offset = Annotated[int, Parameter(ge=0, le=SEQ_MAX, description="How many to skip.")]
# an SSE stream's resume point: the `id` of the last event a client read (sent back on reconnect)
LastEventId = Annotated[
    int | None,
    Parameter(
        header="last-event-id",
        ge=0,
        le=SEQ_MAX,
        schema_extra={"minimum": 0},  # Litestar drops a falsy `ge` from an optional's schema
        description="The `id` of the last event read: the stream goes on after it (instead of `after`).",
    ),
]


def answers(
    *statuses: int, ok: Any = None, ok_status: int = 200, description: str = "", token: bool = True
) -> dict[int, ResponseSpec]:
    """A route's `responses`: its error statuses (`statuses`, and EVERY_ROUTE's: without 401 where
    `token` is False, the open probes), each with the error envelope; and with `ok`, the type of
    its `ok_status` answer where the route's signature does not say it."""
    codes = set(statuses) | set(EVERY_ROUTE)
    if not token:
        codes.discard(401)
    unknown = codes - set(ERRORS)
    if unknown:
        raise ValueError(f"undocumented error status(es) {sorted(unknown)}: describe them in ERRORS")
    specs = {
        code: ResponseSpec(ErrorEnvelope, description=ERRORS[code], generate_examples=False)
        for code in sorted(codes)
    }
    if ok is not None:
        specs[ok_status] = ResponseSpec(ok, description=description or "OK", generate_examples=False)
    return specs


def success(status: int, body: Any, description: str = "OK") -> dict[int, ResponseSpec]:
    """One more success answer of a route (merge it into `answers(...)` with `|`)."""
    return {status: ResponseSpec(body, description=description, generate_examples=False)}


@dataclass
class _Documented(Operation):
    """An operation with what Litestar cannot see in the route's signature."""

    extra_request_body: ClassVar[dict[str, Any] | None] = None
    extra_content: ClassVar[list[tuple[str, dict[str, Any], bool]]] = []
    extra_headers: ClassVar[tuple[str, dict[str, Any]] | None] = None
    open_route: ClassVar[bool] = False
    bodiless: ClassVar[bool] = False

    def to_schema(self) -> dict[str, Any]:
        schema = super().to_schema()
        if self.extra_request_body is not None:
            schema["requestBody"] = self.extra_request_body
        for status, content, replace in self.extra_content:
            answer = schema["responses"][status]
            answer["content"] = content if replace else {**answer.get("content", {}), **content}
            if not answer["content"]:
                del answer["content"]  # an answer without a body (HEAD)
        if self.extra_headers is not None:
            status, headers = self.extra_headers
            schema["responses"][status].setdefault("headers", {}).update(headers)
        if self.open_route:
            schema["security"] = []  # open on every head: no token asked
        if self.bodiless:
            for answer in schema["responses"].values():
                answer.pop("content", None)
        return schema


def documented(
    *,
    body: type[msgspec.Struct] | None = None,
    body_media_types: tuple[str, ...] = ("application/json",),
    raw_body: Mapping[str, dict[str, Any]] | None = None,
    body_description: str = "",
    body_required: bool = True,
    content: tuple[int, Mapping[str, dict[str, Any]]] | None = None,
    also: tuple[int, Mapping[str, dict[str, Any]]] | None = None,
    partial: tuple[int, Mapping[str, dict[str, Any]]] | None = None,
    headers: tuple[int, Mapping[str, str]] | None = None,
    open_route: bool = False,
    bodiless: bool = False,
) -> type[Operation]:
    """An `operation_class` declaring what the route's signature does not show:

    - `body`: the request body the route reads itself, a msgspec Struct in each of
      `body_media_types`; `raw_body`: one given as {media type: schema} (e.g. bytes);
      `body_required=False`: the route also takes none (every field has its default);
    - `content`: (status, {media type: schema}), the only media types of that answer (SSE, bytes);
      `also`: one more media type of an answer that has its own (JSON and SSE);
    - `headers`: (status, {name: description}), headers of that answer;
    - `open_route`: the route needs no token on any head (the probes);
    - `bodiless`: no answer has a body (HEAD), its errors included.
    """
    request_body: dict[str, Any] | None = None
    if body is not None:
        schema = inline_schema(body)
        raw_body = dict.fromkeys(body_media_types, schema)
    if raw_body is not None:
        request_body = {
            "required": body_required,
            "description": body_description,
            "content": {media: {"schema": schema} for media, schema in raw_body.items()},
        }
    extra_content = []
    for given, replace in ((content, True), (also, False), (partial, True)):
        if given is not None:
            status, media = given
            extra_content.append((str(status), {m: {"schema": s} for m, s in media.items()}, replace))
    extra_headers = None
    if headers is not None:
        extra_headers = (
            str(headers[0]),
            {name: {"description": text, "schema": {"type": "string"}} for name, text in headers[1].items()},
        )
    return type(
        "DocumentedOperation",
        (_Documented,),
        {
            "extra_request_body": request_body,
            "extra_content": extra_content,
            "extra_headers": extra_headers,
            "open_route": open_route,
            "bodiless": bodiless,
        },
    )


def inline_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON Schema of a msgspec type with its `$defs` inlined (it is used inside an operation,
    where `#/$defs/...` would point at the document's root). Types must not be recursive."""
    schema = msgspec.json.schema(struct)
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_JSON_DATA = {"type": "string", "contentMediaType": "application/json"}


def _sse_schema(description: str, kinds: dict[str, tuple[dict[str, Any], bool]]) -> dict[str, Any]:
    """One server-sent event of a stream, as OpenAPI 3.2 documents events (`itemSchema`; in a 3.1
    document the `schema` of `text/event-stream` describes each event). `kinds`: event name ->
    (the JSON Schema of its `data`, whether it carries an `id`)."""
    one_of: list[dict[str, Any]] = []
    for name, (data, with_id) in kinds.items():
        kind: dict[str, Any] = {
            "properties": {"event": {"const": name}, "data": {**_JSON_DATA, "contentSchema": data}}
        }
        if with_id:
            kind["properties"]["id"] = {"type": "string", "pattern": "^[0-9]+$"}
            kind["required"] = ["id"]
        one_of.append(kind)
    return {
        "type": "object",
        "description": description,
        "required": ["event", "data"],
        "properties": {
            "event": {"enum": list(kinds)},
            "id": {"type": "string"},
            "data": _JSON_DATA,
        },
        "oneOf": one_of,
    }


def sse_event_schema(*, accepted: type[msgspec.Struct] | None = None) -> dict[str, Any]:
    """One server-sent event of a run's stream: `events` frames carry `id` (the stream sequence of
    their last event, for `Last-Event-ID`) and a JSON list of the run's events; `end` closes the
    stream; `accepted` (submit-and-follow only) opens it with the submission's answer."""
    events = {
        "type": "array",
        "items": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}},
    }
    kinds: dict[str, tuple[dict[str, Any], bool]] = {
        "events": (events, True),
        "end": ({"type": "object"}, False),
    }
    if accepted is not None:
        kinds["accepted"] = (inline_schema(accepted), False)
    return _sse_schema(
        "A server-sent event. `events`: `id: <stream seq>`, `data: <JSON list of the run's events as "
        "stored>`, one per batch; `end` when the run has ended (the stream closes). Reconnect with "
        "`Last-Event-ID` to resume without gaps or repeats.",
        kinds,
    )


def sse_changes_schema() -> dict[str, Any]:
    """One server-sent event of `GET /runs/changes`."""
    changes = {
        "type": "object",
        "required": ["seq", "runs", "overflow"],
        "properties": {
            "seq": {"type": "integer", "minimum": 0},
            "runs": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
            "overflow": {"type": "boolean"},
        },
    }
    return _sse_schema(
        "A server-sent event. `changes`: `id: <runs-stream seq>`, `data: {seq, runs: {run id: seq of "
        "its last change}, overflow}` (`overflow`: more runs changed than listed, or some changed "
        "while the client was away: read the list again). The first is sent at once. `end` when the "
        "stream's `hold_s` is over: reconnect with `Last-Event-ID`.",
        {"changes": (changes, True), "end": ({"type": "object"}, False)},
    )


def sse_cluster_schema() -> dict[str, Any]:
    """One server-sent event of `GET /cluster/stream`."""
    snapshot = {
        "type": "object",
        "required": ["resources", "queues"],
        "properties": {"resources": {"type": "object"}, "queues": {"type": "object"}},
    }
    return _sse_schema(
        "A server-sent event. `cluster`: `data: {resources, queues}`, what `GET /cluster/resources` "
        "and `GET /cluster/queues` answer, sent at once and then whenever it changed (checked every "
        "second); `end` when the stream's `hold_s` is over (reconnect).",
        {"cluster": (snapshot, False), "end": ({"type": "object"}, False)},
    )


def sse_log_event_schema(line: type[msgspec.Struct]) -> dict[str, Any]:
    """One server-sent event of a run's log stream: `logs` frames carry `id` (the cursor of their
    last line, for `Last-Event-ID`) and a JSON list of `line`s; `end` closes the stream."""
    return _sse_schema(
        "A server-sent event. `logs`: `id: <cursor of the last line>`, `data: <JSON list of lines>`; "
        "`end` once the run has ended and every line stored before its end was sent (the stream "
        "closes). Reconnect with `Last-Event-ID` to go on without gaps or repeats.",
        {
            "logs": ({"type": "array", "minItems": 1, "items": inline_schema(line)}, True),
            "end": ({"type": "object"}, False),
        },
    )


BYTES_SCHEMA: dict[str, Any] = {"type": "string", "format": "binary"}
