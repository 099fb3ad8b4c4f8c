"""The SDK's side of workspace files (README "Workspaces"): MaClient's `*_workspace_*` methods.
Uploads and downloads stream (a file is never held whole in memory); downloads are checked against
the sha256 the head names (ETag) before they replace anything."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import httpx

from maze.core.errors import ArtifactError, ValidationError
from maze.core.identity import HEAD_HEADER
from maze.core.paths import check_relative_path, check_workspace_name, resolve_inside
from maze.sdk.http import Http, raise_for_error

CHUNK_BYTES = 1024 * 1024
TRANSFER_TIMEOUT = httpx.Timeout(30.0, write=None, read=300.0)
Progress = Callable[[int], None]  # called with the bytes just sent or received


def _file_url(name: str, path: str, route: str = "files") -> str:
    return f"/workspaces/{check_workspace_name(name)}/{route}/{quote(check_relative_path(path), safe='/')}"


def _read_chunks(handle: Any, progress: Progress | None) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK_BYTES):
        if progress is not None:
            progress(len(chunk))
        yield chunk


def local_files(local_dir: Path) -> list[tuple[Path, str]]:
    """(local file, workspace path) for every file under `local_dir`, by path. A symbolic link
    that leads outside `local_dir` is refused (ValidationError, before anything is sent); one that
    leads inside is uploaded as what it points at; directories reached through links are not
    entered (their files are uploaded from where they are)."""
    root = Path(local_dir)
    if not root.is_dir():
        raise ValidationError(f"{str(root)!r} is not a directory")
    found: list[tuple[Path, str]] = []
    for top, dirs, files in os.walk(root, followlinks=False):
        base = Path(top)
        for directory in dirs:
            if (base / directory).is_symlink():
                resolve_inside(root, (base / directory).relative_to(root))  # refused when it leads out
        for file in files:
            local = base / file
            relative = check_relative_path(PurePosixPath(local.relative_to(root).as_posix()))
            target = resolve_inside(root, relative)
            if target.is_file():
                found.append((target, relative))
    return sorted(found, key=lambda pair: pair[1])


class WorkspaceMethods:
    """Workspace files: mixed into MaClient."""

    http: Http

    def list_workspaces(self) -> list[dict[str, Any]]:
        """Every workspace that holds files: `{name, files, bytes}` each."""
        found: list[dict[str, Any]] = self.http.get("/workspaces")
        return found

    def list_workspace_files(self, name: str, prefix: str | None = None) -> list[dict[str, Any]]:
        """A workspace's files, by path: `{path, sha256, size, modified_ms, content_type}` each;
        with `prefix`, only those whose path starts with it (`data/`, `data/tr`)."""
        found: list[dict[str, Any]] = self.http.get(
            f"/workspaces/{check_workspace_name(name)}/files", prefix=prefix
        )
        return found

    def upload_workspace_file(
        self, name: str, local_path: str | Path, path: str | None = None, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Upload a local file as `path` of workspace `name` (default: the file's name), replacing
        what is there; streamed. Returns the stored file (`sha256`, `size`...). Raises
        PayloadTooLarge above the head's `--workspace-file-max-mb`, Conflict when a directory on
        the way is a file (or the path a directory). `progress(n)` is called as bytes go out."""
        local = Path(local_path)
        if not local.is_file():
            raise ValidationError(f"{str(local)!r} is not a file")
        url = _file_url(name, path if path is not None else local.name)
        size = local.stat().st_size
        with local.open("rb") as handle:
            stored: dict[str, Any] = self.http.request(
                "PUT",
                url,
                content=_read_chunks(handle, progress),
                headers={"content-type": "application/octet-stream", "content-length": str(size)},
                timeout=TRANSFER_TIMEOUT,
            )
        return stored

    def upload_workspace_dir(
        self, name: str, local_dir: str | Path, prefix: str = "", progress: Progress | None = None
    ) -> list[dict[str, Any]]:
        """Upload every file under `local_dir` into workspace `name` (under `prefix/` when given),
        keeping their relative paths. Every path and link is checked before the first byte is
        sent (`local_files`). Returns the stored files."""
        if prefix:
            check_relative_path(prefix, "prefix")
        check_workspace_name(name)
        stored = []
        for local, relative in local_files(Path(local_dir)):
            target = f"{prefix}/{relative}" if prefix else relative
            check_relative_path(target)
            stored.append(self.upload_workspace_file(name, local, target, progress))
        return stored

    def download_workspace_file(
        self, name: str, path: str, dest: str | Path, progress: Progress | None = None
    ) -> Path:
        """Download a workspace file to `dest` (a file path, or an existing directory to put it in
        under its own name); streamed into a temporary file beside it, checked against its sha256,
        then moved into place. Returns where it is."""
        target = Path(dest)
        if target.is_dir():
            target = target / PurePosixPath(check_relative_path(path)).name
        url = _file_url(name, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                expected, got = self._stream_into(url, out, progress)
            if expected and got != expected:
                raise ArtifactError(
                    f"{path!r} of workspace {name!r} arrived corrupt or cut short (sha256 {got}, not "
                    f"{expected}); {str(target)!r} was not written",
                    sha256=expected,
                    actual=got,
                )
            temp.replace(target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return target

    def _stream_into(self, url: str, out: Any, progress: Progress | None) -> tuple[str, str]:
        """Write the answer's body into `out`: (the sha256 the head named (its ETag), the one
        of what arrived)."""
        digest = hashlib.sha256()
        try:
            with self.http.client.stream("GET", url, timeout=TRANSFER_TIMEOUT) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    where = f"GET {self.http.server_url}{url}"
                    raise_for_error(resp.status_code, resp.content, HEAD_HEADER in resp.headers, where)
                for chunk in resp.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    if progress is not None:
                        progress(len(chunk))
                return str(resp.headers.get("etag", "")).strip('"'), digest.hexdigest()
        except httpx.RemoteProtocolError as exc:
            raise ArtifactError(f"the download of {url} was cut short (see the head's log)") from exc
        except httpx.TransportError as exc:
            raise self.http.cannot_connect(exc) from exc

    def preview_workspace_file(
        self, name: str, path: str, lines: int | None = None, rows: int | None = None
    ) -> dict[str, Any]:
        """What a workspace file holds, in short: `kind` text (`lines`), csv (`columns`, `rows`),
        image (`content_type`, `width`, `height`) or binary (type and size)."""
        shown: dict[str, Any] = self.http.get(_file_url(name, path, "preview"), lines=lines, rows=rows)
        return shown

    def delete_workspace(self, name: str) -> int:
        """Remove every file of a workspace (NotFound when it holds none); how many were removed."""
        answer: dict[str, Any] = self.http.request("DELETE", f"/workspaces/{check_workspace_name(name)}")
        return int(answer["deleted"])

    def delete_workspace_file(self, name: str, path: str) -> dict[str, Any]:
        """Remove a file from a workspace (NotFound when it has none there); what was removed."""
        removed: dict[str, Any] = self.http.request("DELETE", _file_url(name, path))
        return removed
