"""Workspace files for people (the Playground, `maze workspace`, `client.*_workspace_*`): named
workspaces of files, shared by every head of a cluster, none of it on one head's disk.

- A file's content is a blob of the content-addressed blob store (maze/events/blobs.py): streamed
  in, hashed as it passes, identical content stored once, read back checked against its hash.
- A workspace's listing is the JetStream KV bucket `maze-workspaces` (replicated like the streams):
  one key per file, its value a msgspec-encoded WorkspaceFile. A file's key is the workspace's name
  then one token per path segment, the first 12 bytes of the segment's sha256 in base64url (16
  characters): keys stay short whatever the path's characters (a NATS subject must fit the
  server's 4 KB control line; a 1,024-character path of 4-byte characters would not, encoded as
  it is), and a directory's files share a subject prefix, so a listing of a directory or the
  check that a directory is empty is a subject filter, not a scan. The value holds the path, and
  every read checks it against the path asked for.

Paths follow maze/core/paths.py. A file cannot have the path of a directory that holds files, nor
a directory the path of a file (409): a workspace stays something that can be written to a disk.
That check and the write are two steps: two uploads racing (`a` and `a/b` at once) can both pass.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from collections.abc import AsyncIterable, AsyncIterator

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from maze.core.clock import now_ms
from maze.core.errors import Conflict, NotFound, PayloadTooLarge
from maze.core.paths import check_relative_path, check_workspace_name
from maze.events import subjects
from maze.events.blobs import BlobStore
from maze.events.kv_list import KvEntry, live_entries
from maze.events.store import kv_put

WATCH_TIMEOUT_S = 10.0


class WorkspaceFile(msgspec.Struct, frozen=True):
    """One file of a workspace, as the listing keeps it."""

    path: str
    sha256: str
    size: int
    modified_ms: int
    content_type: str


_decode = msgspec.msgpack.Decoder(WorkspaceFile)
_encode = msgspec.msgpack.Encoder()


def _token(segment: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(segment.encode()).digest()[:12]).decode()


def file_key(workspace: str, path: str) -> str:
    """The KV key of a workspace's file (the path checked beforehand)."""
    return ".".join([workspace, *(_token(s) for s in path.split("/"))])


def guess_content_type(path: str) -> str:
    kind, _ = mimetypes.guess_type(path, strict=False)
    return kind or "application/octet-stream"


async def _bucket(js: JetStreamContext) -> KeyValue:
    return await js.key_value(subjects.WORKSPACE_BUCKET)


async def _watch_entries(
    js: JetStreamContext, subject_filter: str, first_only: bool = False
) -> list[KvEntry]:
    """The live entries whose keys match `subject_filter` (deleted ones left out), as stored when
    the read begins (maze/events/kv_list.py). `first_only`: stop at the first one."""
    return await live_entries(js, subjects.WORKSPACE_BUCKET, subject_filter, WATCH_TIMEOUT_S, first_only)


async def _watch(js: JetStreamContext, subject_filter: str, first_only: bool = False) -> list[WorkspaceFile]:
    return [_decode.decode(e.value) for e in await _watch_entries(js, subject_filter, first_only)]


async def _delete_at(kv: KeyValue, key: str, revision: int) -> bool:
    """Delete a key if it is still at `revision`; False when it changed since."""
    try:
        await kv.delete(key, last=revision)
    except KeyWrongLastSequenceError:
        return False
    except APIError as exc:
        if exc.err_code in (10071, 10164):  # wrong last sequence (nats-py converts it for updates only)
            return False
        raise
    return True


async def list_files(js: JetStreamContext, workspace: str, prefix: str = "") -> list[WorkspaceFile]:
    """A workspace's files, by path; with `prefix`, those whose path starts with it (its whole
    segments narrow the read down to that directory)."""
    check_workspace_name(workspace)
    whole = prefix.split("/")[:-1]  # the segments followed by a "/"
    subject_filter = ".".join([workspace, *(_token(s) for s in whole), ">"])
    await _bucket(js)  # the bucket is there (BucketNotFoundError otherwise)
    files = await _watch(js, subject_filter)
    return sorted((f for f in files if f.path.startswith(prefix)), key=lambda f: f.path)


async def list_workspaces(js: JetStreamContext) -> dict[str, tuple[int, int]]:
    """Every workspace that holds files: name -> (files, bytes)."""
    found: dict[str, tuple[int, int]] = {}
    await _bucket(js)  # the bucket is there (BucketNotFoundError otherwise)
    for entry in await _watch_entries(js, ">"):
        name = entry.key.split(".", 1)[0]
        files, size = found.get(name, (0, 0))
        found[name] = (files + 1, size + _decode.decode(entry.value or b"").size)
    return dict(sorted(found.items()))


async def workspace_manifest(js: JetStreamContext, name: str) -> list[tuple[str, str, int]]:
    """A workspace's files as (path, sha256, size), by path: what a run staging the workspace
    fetches from the blob store (maze://artifacts/sha256/<hex>)."""
    return [(f.path, f.sha256, f.size) for f in await list_files(js, name)]


async def _entry(kv: KeyValue, workspace: str, path: str) -> tuple[WorkspaceFile, int] | None:
    """The file at `path` and its revision, or None."""
    try:
        entry = await kv.get(file_key(workspace, path))
    except (KeyNotFoundError, NotFoundError):
        return None
    if not entry.value:
        return None
    stored = _decode.decode(entry.value)
    if stored.path != path:  # two paths whose segments' 96-bit hashes collide: never shown as the other
        raise Conflict(
            f"path {path!r} cannot be stored in workspace {workspace!r}: its key is taken by {stored.path!r}",
            path=path,
        )
    return stored, int(entry.revision or 0)


async def get_file(js: JetStreamContext, workspace: str, path: str) -> WorkspaceFile:
    check_workspace_name(workspace)
    check_relative_path(path)
    found = await _entry(await _bucket(js), workspace, path)
    if found is None:
        raise NotFound(f"workspace {workspace!r} has no file {path!r}", workspace=workspace, path=path)
    return found[0]


async def _check_fits(js: JetStreamContext, kv: KeyValue, workspace: str, path: str) -> None:
    """409 when a directory on the way is a file, or the path is a directory holding files."""
    segments = path.split("/")
    for depth in range(1, len(segments)):
        directory = "/".join(segments[:depth])
        if await _entry(kv, workspace, directory) is not None:
            raise Conflict(
                f"{directory!r} is a file of workspace {workspace!r}, so it cannot hold {path!r}",
                workspace=workspace,
                path=path,
            )
    if await _watch(js, file_key(workspace, path) + ".>", first_only=True):
        raise Conflict(
            f"{path!r} is a directory of workspace {workspace!r} (it holds files): not replaced by a file",
            workspace=workspace,
            path=path,
        )


async def _bounded(body: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    size = 0
    async for part in body:
        size += len(part)
        if size > limit:
            raise file_too_large(size, limit, "at least ")
        yield part


def file_too_large(size: int, limit: int, at_least: str = "") -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the file is {at_least}{size} bytes, above the workspace file limit of {limit} bytes "
        "(--workspace-file-max-mb); nothing was stored",
        size=size,
        limit=limit,
    )


async def put_file(
    js: JetStreamContext,
    blobs: BlobStore,
    workspace: str,
    path: str,
    body: AsyncIterable[bytes],
    limit: int,
) -> tuple[WorkspaceFile, bool]:
    """Store a streamed file at `path` (replacing the one there): its content into the blob store,
    then its entry into the listing. Returns (the file, whether the path was new). A body above
    `limit` bytes, or one that fails midway, stores nothing and leaves the file there as it was."""
    check_workspace_name(workspace)
    check_relative_path(path)
    kv = await _bucket(js)
    await _check_fits(js, kv, workspace, path)
    sha, size, _ = await blobs.put_unhashed(_bounded(body, limit))
    stored = WorkspaceFile(
        path=path, sha256=sha, size=size, modified_ms=now_ms(), content_type=guess_content_type(path)
    )
    previous = await _entry(kv, workspace, path)
    await kv_put(kv, file_key(workspace, path), _encode.encode(stored))
    return stored, previous is None


async def delete_file(js: JetStreamContext, workspace: str, path: str) -> WorkspaceFile:
    """Remove a file from the listing (404 when absent); its content stays in the blob store (no
    collection of unreferenced blobs yet). Revision-checked: a file replaced meanwhile is kept (409)."""
    check_workspace_name(workspace)
    check_relative_path(path)
    kv = await _bucket(js)
    found = await _entry(kv, workspace, path)
    if found is None:
        raise NotFound(f"workspace {workspace!r} has no file {path!r}", workspace=workspace, path=path)
    stored, revision = found
    if not await _delete_at(kv, file_key(workspace, path), revision):
        raise Conflict(
            f"{path!r} of workspace {workspace!r} changed while it was being deleted; it was kept",
            workspace=workspace,
            path=path,
        )
    return stored


async def delete_workspace(js: JetStreamContext, workspace: str) -> int:
    """Remove every file of a workspace that has not changed since it was listed; how many."""
    check_workspace_name(workspace)
    kv = await _bucket(js)
    entries = await _watch_entries(js, f"{workspace}.>")
    if not entries:
        raise NotFound(f"workspace {workspace!r} has no files", workspace=workspace)
    deleted = 0
    for entry in entries:
        # a file replaced since it was listed is newer than the delete: it stays
        deleted += await _delete_at(kv, entry.key, int(entry.revision or 0))
    return deleted
