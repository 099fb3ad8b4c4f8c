"""Files that travel between machines: a run's workspace manifest and the artifacts its attempts
register, all content-addressed (`maze://artifacts/sha256/<hex>` in the blob store).

A run with a workspace records the sha256 of its manifest (`RunCreated.workspace`): a msgpack list
of `FileEntry` stored as a blob, so a workspace of any size costs the run stream 64 characters.
After a succeeded attempt, its worker records each new or changed file of the attempt's directory
as an `artifact.registered` report on its own subject (`maze.run.<run>.<node>`), before the
attempt's end, so the controller has folded them when it places the task's downstream tasks.

Paths are relative POSIX paths inside the attempt directory: never absolute, never `..`, never
empty parts; `check_path` is the one judge, used at submit, by the controller's folds and by the
worker before it writes anything.
"""

from __future__ import annotations

import hashlib
import posixpath
import re

import msgspec
from msgspec import Struct

from maze.core.errors import ValidationError

MAX_PATH_CHARS = 1024
MAX_MANIFEST_FILES = 100_000
MAX_ARTIFACTS_PER_ATTEMPT = 10_000  # files one attempt may register (its worker fails it past them)
HEX_RE = re.compile(r"^[0-9a-f]{64}$")


class FileEntry(Struct, frozen=True, array_like=True, gc=False):
    """One file of a view: where it goes (relative path), its content (sha256) and size."""

    path: str
    sha256: str
    size: int


class ArtifactRegistered(Struct, frozen=True, tag="artifact.registered"):
    """A file a succeeded attempt created or changed in its directory, stored in the blob store.
    Only the artifacts of the attempt that succeeded are seen by the task's downstream tasks."""

    run_id: str
    task_id: str
    attempt: int
    node_id: str
    path: str
    sha256: str
    size: int
    at_ms: int


def check_path(path: str, where: str = "path") -> str:
    """`path` if it is a clean relative POSIX path inside a directory, else ValidationError."""
    if not isinstance(path, str) or not path:
        raise ValidationError(f"{where}: a file path must be a non-empty string", path=path)
    if len(path) > MAX_PATH_CHARS:
        raise ValidationError(f"{where}: file paths are {MAX_PATH_CHARS} characters at most", path=path[:80])
    if "\x00" in path or "\\" in path:
        raise ValidationError(f"{where}: {path!r} holds a NUL or a backslash", path=path)
    if path.startswith("/"):
        raise ValidationError(
            f"{where}: {path!r} is absolute; paths are relative to the workspace", path=path
        )
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or posixpath.normpath(path) != path:
        raise ValidationError(
            f"{where}: {path!r} is not a clean relative path (no '..', '.', empty parts or trailing '/')",
            path=path,
        )
    return path


def artifact_is_sound(event: ArtifactRegistered) -> bool:
    """Whether a reported artifact names a clean path, a sha256 in hex and a size: what every fold
    takes (a sha256 names a file in the workers' content caches, so it must be one)."""
    return bool(HEX_RE.fullmatch(event.sha256)) and event.size >= 0 and path_is_safe(event.path)


def path_is_safe(path: str) -> bool:
    try:
        check_path(path)
    except ValidationError:
        return False
    return True


_manifest_encoder = msgspec.msgpack.Encoder()
_manifest_decoder = msgspec.msgpack.Decoder(list[FileEntry])


def encode_manifest(entries: list[FileEntry]) -> bytes:
    """A manifest's bytes, sorted by path (the same files always give the same blob)."""
    return _manifest_encoder.encode(sorted(entries, key=lambda e: e.path))


def decode_manifest(data: bytes) -> list[FileEntry]:
    """A manifest blob's entries, each path checked. Raises ValidationError."""
    try:
        entries = _manifest_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValidationError(f"the workspace manifest is not a list of [path, sha256, size]: {exc}") from exc
    if len(entries) > MAX_MANIFEST_FILES:
        raise ValidationError(f"a workspace holds {MAX_MANIFEST_FILES} files at most, not {len(entries)}")
    seen: set[str] = set()
    for entry in entries:
        check_path(entry.path, "workspace manifest")
        if entry.path in seen:
            raise ValidationError(f"workspace manifest: {entry.path!r} is listed twice", path=entry.path)
        seen.add(entry.path)
        if not HEX_RE.fullmatch(entry.sha256) or entry.size < 0:
            raise ValidationError(
                f"workspace manifest: {entry.path!r} has a bad sha256 or size", path=entry.path
            )
    return entries


def overlay(layers: list[list[FileEntry]]) -> list[FileEntry]:
    """The files of `layers` laid one over the other in order (a later layer's file wins), sorted
    by path. A path that is a file in one layer and a directory in a later one: the later wins."""
    view: dict[str, FileEntry] = {}
    for layer in layers:
        for entry in layer:
            view[entry.path] = entry
    paths = set(view)
    # a file `a` and a file `a/b` cannot both exist: drop whichever an earlier layer gave
    order = {p: i for i, layer in enumerate(layers) for p in (e.path for e in layer)}
    for path in sorted(paths):
        parent = posixpath.dirname(path)
        while parent:
            if parent in view:
                loser = parent if order[parent] <= order[path] else path
                view.pop(loser, None)
            parent = posixpath.dirname(parent)
    return sorted(view.values(), key=lambda e: e.path)


def path_key(path: str) -> str:
    """A short stable stand-in for a path in message ids."""
    return hashlib.sha256(path.encode()).hexdigest()[:16]
