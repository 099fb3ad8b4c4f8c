"""The workflow builder's saved graphs: the JetStream KV bucket `maze-workflows` (replicated like
the streams, shared by every head, written by heads only), one key per workflow name (a workspace
name's rules, maze/core/paths.py), its value the saved workflow as JSON (maze/api/builder.py
decodes it). A graph is data about how to run something later, not a fact of history: it is kept
beside the event log, as workspace files are."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from maze.core.errors import Conflict, NotFound
from maze.core.paths import check_workspace_name
from maze.events import subjects
from maze.events.kv_list import live_entries
from maze.events.store import kv_put

WATCH_TIMEOUT_S = 10.0


async def _bucket(js: JetStreamContext) -> KeyValue:
    return await js.key_value(subjects.WORKFLOW_BUCKET)


async def put_workflow(js: JetStreamContext, name: str, value: bytes) -> bool:
    """Store (or replace) a workflow; whether the name was new."""
    check_workspace_name(name, "workflow name")
    kv = await _bucket(js)
    previous = await get_workflow(js, name, missing_ok=True)
    await kv_put(kv, name, value)
    return previous is None


async def get_workflow(js: JetStreamContext, name: str, missing_ok: bool = False) -> bytes | None:
    check_workspace_name(name, "workflow name")
    try:
        entry = await (await _bucket(js)).get(name)
    except (KeyNotFoundError, NotFoundError):
        entry = None
    if entry is None or not entry.value:
        if missing_ok:
            return None
        raise NotFound(f"no saved workflow {name!r}", workflow=name)
    return entry.value


async def list_workflows(js: JetStreamContext) -> list[tuple[str, bytes]]:
    """Every saved workflow, (name, value), by name."""
    await _bucket(js)  # the bucket is there (BucketNotFoundError otherwise)
    entries = await live_entries(js, subjects.WORKFLOW_BUCKET, ">", WATCH_TIMEOUT_S)
    return [(entry.key, entry.value) for entry in entries]


async def delete_workflow(js: JetStreamContext, name: str) -> bytes:
    """Remove a saved workflow (404 when there is none; 409 when it was replaced meanwhile)."""
    check_workspace_name(name, "workflow name")
    kv = await _bucket(js)
    try:
        entry = await kv.get(name)
    except (KeyNotFoundError, NotFoundError):
        entry = None
    if entry is None or not entry.value:
        raise NotFound(f"no saved workflow {name!r}", workflow=name)
    try:
        await kv.delete(name, last=int(entry.revision or 0))
    except KeyWrongLastSequenceError:
        raise Conflict(
            f"workflow {name!r} was replaced while being deleted; it was kept", workflow=name
        ) from None
    except APIError as exc:
        if exc.err_code in (10071, 10164):
            raise Conflict(
                f"workflow {name!r} was replaced while being deleted; it was kept", workflow=name
            ) from None
        raise
    return entry.value
