"""A run's artifacts from the SDK's side: listing them, and downloading one streamed to a file,
checked against its sha256 before the file appears."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from maze.core.errors import ArtifactError, NotFound, Unavailable
from maze.events.artifacts import check_path
from maze.events.values import URI_PREFIX
from maze.sdk.http import Http, raise_for_error

Progress = Callable[[int], None]  # called with the bytes received since the last call
HAND_OFF_BYTES = 4 * 1024 * 1024


def _hash_and_write(hasher: Any, f: BinaryIO, pieces: list[bytes]) -> None:
    for piece in pieces:
        hasher.update(piece)
    f.writelines(pieces)


def list_artifacts(http: Http, run_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = http.get(f"/runs/{run_id}/artifacts")
    return found


def find_artifact(http: Http, run_id: str, path: str, task_id: str | None = None) -> dict[str, Any]:
    """The artifact registered at `path` (a clean relative path: ValidationError else); of
    `task_id`, or the last task's in submission order that registered it."""
    check_path(path, "artifact path")
    matches = [
        a
        for a in list_artifacts(http, run_id)
        if a["path"] == path and (task_id is None or a["task_id"] == task_id)
    ]
    if not matches:
        raise NotFound(f"run {run_id} has no artifact {path!r}", run_id=run_id, path=path)
    return matches[-1]


def download_blob(http: Http, sha: str, dest: Path, progress: Progress | None = None) -> int:
    """Stream blob `sha` to `dest` through a temporary file beside it; the file appears only
    when the whole content arrived and hashes to `sha`. Returns its size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")  # two threads, one dest
    hasher = hashlib.sha256()
    size = 0
    try:
        with (
            http.client.stream(
                "GET", f"/artifacts/sha256/{sha}", timeout=httpx.Timeout(30.0, read=300.0)
            ) as resp,
        ):
            if resp.status_code == 404:
                raise NotFound(f"blob {URI_PREFIX}{sha} is not in the blob store", sha256=sha)
            if resp.status_code >= 400:
                raise_for_error(resp.status_code, resp.read())
            with tmp.open("wb") as f, ThreadPoolExecutor(1, thread_name_prefix="maze-download") as pool:
                # the pieces as they are read (no re-chunking copies), gathered to ~4 MB, hashed and
                # written in a thread (hashlib and file writes let go of the GIL) while the next
                # ones are read: at most two batches in memory
                batch: list[bytes] = []
                batch_bytes = 0
                writing: Future[None] | None = None
                # iter_raw: no re-chunking; a proxy that compressed the body gets it decoded
                pieces = resp.iter_bytes() if resp.headers.get("content-encoding") else resp.iter_raw()
                for piece in pieces:
                    batch.append(piece)
                    batch_bytes += len(piece)
                    size += len(piece)
                    if batch_bytes >= HAND_OFF_BYTES:
                        if writing is not None:
                            writing.result()
                        writing = pool.submit(_hash_and_write, hasher, f, batch)
                        if progress is not None:
                            progress(batch_bytes)
                        batch, batch_bytes = [], 0
                if writing is not None:
                    writing.result()
                _hash_and_write(hasher, f, batch)
                if progress is not None and batch_bytes:
                    progress(batch_bytes)
        got = hasher.hexdigest()
        if got != sha:
            raise ArtifactError(
                f"blob {URI_PREFIX}{sha} arrived corrupt or cut short ({size} bytes hashing to {got}); "
                "nothing was written",
                sha256=sha,
                actual=got,
            )
        os.replace(tmp, dest)
    except httpx.RemoteProtocolError as exc:
        raise ArtifactError(
            f"the transfer of blob {URI_PREFIX}{sha} was cut short; nothing was written", sha256=sha
        ) from exc
    except httpx.TransportError as exc:
        raise Unavailable(f"cannot fetch blob {sha[:12]}… from {http.server_url}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return size
