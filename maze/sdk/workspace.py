"""A run's workspace, from the SDK's side: the files of a local directory stored in the head's blob
store (each content once: asked with `POST /artifacts/missing` first, uploads streamed), and the
manifest that lists them (path, sha256, size) stored as a blob too; the run records its sha256."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from maze.core.errors import ValidationError
from maze.events.artifacts import MAX_MANIFEST_FILES, FileEntry, check_path, encode_manifest
from maze.events.blob_files import hash_file
from maze.sdk.blobs import BlobClient

READ_BYTES = 1024 * 1024
MISSING_BATCH = 5_000


def file_context_of(
    workspace_dir: str | os.PathLike[str] | None, artifact_mode: bool, file_context: dict[str, Any] | None
) -> tuple[bool, Path | None, str | None]:
    """(files on, the workspace directory or None, the artifact store's base URL or None) from
    `run()`'s arguments; a bad combination is a ValidationError."""
    if file_context is not None:
        if workspace_dir is not None or artifact_mode:
            raise ValidationError("pass either file_context or workspace_dir/artifact_mode, not both")
        if not isinstance(file_context, dict):
            raise ValidationError("file_context is a dict: {'enabled': True, 'workspace_dir': ..., ...}")
        unknown = sorted(set(file_context) - {"enabled", "workspace_dir", "artifact_store"})
        if unknown:
            raise ValidationError(f"file_context: unknown key(s) {unknown}")
        if not file_context.get("enabled", True):
            return False, None, None
        store = file_context.get("artifact_store") or {"type": "head_http"}
        if not isinstance(store, dict) or store.get("type", "head_http") != "head_http":
            raise ValidationError(
                "file_context.artifact_store: only {'type': 'head_http', 'base_url': ...} is supported "
                "(the head's content-addressed blob store)"
            )
        workspace_dir = file_context.get("workspace_dir")
        base_url = store.get("base_url")
        return True, workspace_directory(workspace_dir), str(base_url) if base_url else None
    if workspace_dir is None and not artifact_mode:
        return False, None, None
    return True, workspace_directory(workspace_dir), None


def workspace_directory(given: str | os.PathLike[str] | None) -> Path | None:
    if given is None:
        return None
    path = Path(given).expanduser()
    if not path.is_dir():
        raise ValidationError(f"workspace_dir {str(given)!r} is not a directory", workspace_dir=str(given))
    return path.resolve()


def scan(directory: Path) -> list[tuple[FileEntry, Path]]:
    """Every regular file under `directory` (a link to a file inside it counts as that file; a
    link that leads outside it is refused, as `maze workspace put` refuses it: a workspace must not
    carry ~/.ssh/id_rsa because a link pointed there; linked directories are not entered), hashed."""
    found: list[tuple[FileEntry, Path]] = []
    root = directory.resolve()
    for parent, _dirs, files in os.walk(directory, followlinks=False):
        for name in files:
            path = Path(parent) / name
            if not path.is_file():
                continue  # a dangling link, a socket, a fifo
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise ValidationError(
                    f"workspace file {path.relative_to(directory).as_posix()!r} is a link that leads outside "
                    f"the workspace ({path.resolve()}); copy the file in instead",
                    path=str(path),
                )
            rel = path.relative_to(directory).as_posix()
            check_path(rel, f"workspace file {rel!r}")
            sha, size = hash_file(path)
            found.append((FileEntry(rel, sha, size), path))
            if len(found) > MAX_MANIFEST_FILES:
                raise ValidationError(f"a workspace holds {MAX_MANIFEST_FILES} files at most")
    return sorted(found, key=lambda f: f[0].path)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(READ_BYTES):
            yield chunk


def put_file(blobs: BlobClient, sha: str, path: Path) -> None:
    """PUT one file's content, streamed (the head checks it hashes to `sha`)."""
    blobs.http.request(
        "PUT",
        f"/artifacts/sha256/{sha}",
        content=_chunks(path),
        headers={"content-type": "application/octet-stream"},
        timeout=httpx.Timeout(30.0, write=None, read=300.0),
    )
    blobs.known.add(sha)


def upload_workspace(
    blobs: BlobClient,
    directory: Path | None,
    progress: Callable[[int, int], None] | None = None,
    extra: list[tuple[FileEntry, Path]] | None = None,
) -> str:
    """Store the directory's files (those the head lacks) and their manifest; the manifest's
    sha256, which the run records. No directory: an empty workspace (artifacts only).
    `progress(sent, total)`: told the bytes of content sent so far and the bytes the files hold
    (content the head has already counts as sent). `extra`: more files, by the path they take in
    the workspace (a ReAct run's skills); one at the same path as a directory's file replaces it."""
    found = scan(directory) if directory is not None else []
    if extra:
        taken = {entry.path for entry, _ in extra}
        found = sorted([f for f in found if f[0].path not in taken] + list(extra), key=lambda f: f[0].path)
    by_sha = {entry.sha256: path for entry, path in found}
    sizes = {entry.sha256: entry.size for entry, _ in found}
    total = sum(sizes.values())
    todo = [sha for sha in by_sha if sha not in blobs.known]
    sent = total - sum(sizes[sha] for sha in todo)
    if progress is not None:
        progress(sent, total)
    for start in range(0, len(todo), MISSING_BATCH):
        batch = todo[start : start + MISSING_BATCH]
        missing = set(blobs.http.post("/artifacts/missing", json={"sha256": batch})["missing"])
        for sha in batch:
            if sha in missing:
                put_file(blobs, sha, by_sha[sha])
            blobs.known.add(sha)
            sent += sizes[sha]
            if progress is not None:
                progress(sent, total)
    manifest = encode_manifest([entry for entry, _ in found])
    sha = hashlib.sha256(manifest).hexdigest()
    blobs.upload({sha: manifest})
    return sha
