"""Files as task inputs, from any fsspec URL (`file://`, `memory://`, `s3://`, …): `maze.FileInput`.

At submit the SDK reads each URL once through fsspec, hashing as it reads, stores the content in
the head's blob store (asked with `POST /artifacts/missing` first: identical content is stored
once) and sends the input as a file reference (`maze.events.values.StagedFile`). The worker stages
it into the attempt's directory at `inputs/<input key>/<name>` (the URL's last segment unless
`name=` says otherwise) and the task gets that relative path, a `str`.

A local file (`file://` or a plain path) is hashed in place and streamed from where it is; any
other URL is copied to a temporary file as it is hashed (one read of the source, however slow),
and streamed from there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from maze.core.errors import PayloadTooLarge, Unavailable, ValidationError
from maze.events.artifacts import check_path
from maze.events.blob_files import hash_file
from maze.events.values import StagedFile, too_large, wire_file
from maze.sdk.blobs import BlobClient
from maze.sdk.workspace import MISSING_BATCH, put_file

URL_KEPT_CHARS = 4096


def recorded_url(url: str) -> str:
    """What the log keeps of where a file came from: the URL without its credentials, query or
    fragment (a password, a signed URL's token), which the log, immutable, would keep for ever."""
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # a plain path (a Windows drive letter too)
        return url[:URL_KEPT_CHARS]
    host = parts.netloc.rpartition("@")[2]  # as written, less any user:password@
    return urlunsplit((parts.scheme, host, parts.path, "", ""))[:URL_KEPT_CHARS]


if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from maze.sdk.workflow import MaTask

INPUTS_DIR = "inputs"
READ_BYTES = 4 * 1024 * 1024


class FileInput:
    """A task input that is a file, read at submit from an fsspec URL.

        t = workflow.add_task(count_rows, inputs={"data": FileInput("s3://bucket/data.csv")})

    The task receives `"inputs/data/data.csv"` (a str: a path relative to its directory, where the
    worker put the file). `name` replaces the URL's last segment as the file's name;
    `storage_options` go to the fsspec filesystem (credentials, endpoint, …). The URL must name a
    file; one that does not exist, or whose fsspec backend is not installed (`s3fs` for `s3://`,
    …), is a ValidationError at `run()`, before anything is submitted."""

    def __init__(self, url: str | os.PathLike[str], name: str | None = None, **storage_options: Any) -> None:
        if not isinstance(url, str | os.PathLike):
            raise ValidationError(f"FileInput takes a URL or a path, not a {type(url).__name__}")
        self.url = os.fspath(url)
        if not self.url:
            raise ValidationError("FileInput: the URL is empty")
        self.storage_options = storage_options
        self.name = name if name is not None else _last_segment(self.url)
        if not isinstance(self.name, str) or "/" in self.name:
            raise ValidationError(f"FileInput({self.url!r}): the name {self.name!r} must be one path segment")
        check_path(self.name, f"FileInput({self.url!r}): its name")

    def path_for(self, key: str) -> str:
        """Where the worker stages it for input `key`: `inputs/<key>/<name>`."""
        if not isinstance(key, str) or "/" in key:
            raise ValidationError(f"input {key!r}: a file input's key must be a str without '/'")
        return check_path(f"{INPUTS_DIR}/{key}/{self.name}", f"input {key!r}")

    def __repr__(self) -> str:
        return f"FileInput({self.url!r}, name={self.name!r})"


def _last_segment(url: str) -> str:
    path = url.split("://", 1)[-1].split("?", 1)[0].split("#", 1)[0]
    name = posixpath.basename(path.rstrip("/")) if not path.endswith("/") else ""
    if not name:
        raise ValidationError(f"FileInput({url!r}): the URL names no file (pass name=... or a file's URL)")
    return name


def holds_file_input(value: Any, depth: int = 0) -> bool:
    """Whether a FileInput sits inside a list, tuple, set or dict (refused: a file input is an
    input's whole value)."""
    if isinstance(value, FileInput):
        return True
    if depth > 32:
        return False
    if isinstance(value, list | tuple | set | frozenset):
        return any(holds_file_input(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(holds_file_input(v, depth + 1) for v in value.values())
    return False


@dataclass
class _Source:
    """One URL's content, read and hashed: `local` is the file to stream it from."""

    url: str
    sha256: str
    size: int
    local: Path
    spooled: bool
    users: list[tuple[MaTask, str]] = field(default_factory=list)


class FileInputs:
    """The file inputs of one `run()`: read and hashed first (every URL checked before anything is
    sent), then stored (those the head lacks), then written into the tasks' input forms."""

    def __init__(self, tasks: list[MaTask], blob_max_bytes: int | None) -> None:
        self.sources: dict[tuple[str, str], _Source] = {}
        self.limit = blob_max_bytes
        wanted: dict[tuple[str, str], tuple[FileInput, list[tuple[MaTask, str]]]] = {}
        for t in tasks:
            for key, given in t._file_inputs.items():
                ident = (given.url, repr(sorted(given.storage_options.items())))
                wanted.setdefault(ident, (given, []))[1].append((t, key))
        try:
            opened = {ident: _open(given) for ident, (given, _) in wanted.items()}  # all exist?
            for ident, (given, users) in wanted.items():
                fs, path = opened[ident]
                source = _read(given.url, fs, path, self.limit)
                source.users = users
                self.sources[ident] = source
        except BaseException:
            self.close()
            raise

    def upload(self, blobs: BlobClient) -> None:
        """Store the content the head lacks, and set each task's input form."""
        todo = sorted({s.sha256 for s in self.sources.values()} - blobs.known)
        by_sha = {s.sha256: s for s in self.sources.values()}
        for start in range(0, len(todo), MISSING_BATCH):
            batch = todo[start : start + MISSING_BATCH]
            missing = set(blobs.http.post("/artifacts/missing", json={"sha256": batch})["missing"])
            for sha in batch:
                if sha in missing:
                    put_file(blobs, sha, by_sha[sha].local)
                blobs.known.add(sha)
        for source in self.sources.values():
            for t, key in source.users:
                given = t._file_inputs[key]
                staged = StagedFile(given.path_for(key), source.sha256, source.size, recorded_url(source.url))
                t._input_forms[key] = {"encoded": wire_file(staged)}

    def close(self) -> None:
        for source in self.sources.values():
            if source.spooled:
                with contextlib.suppress(OSError):
                    source.local.unlink()


def _open(given: FileInput) -> tuple[AbstractFileSystem, str]:
    """The URL's filesystem and path, checked to name an existing file."""
    from fsspec.core import url_to_fs

    url = given.url
    try:
        fs, path = url_to_fs(url, **given.storage_options)
    except ImportError as exc:
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        raise ValidationError(
            f"file input {url!r}: the fsspec backend for {protocol}:// is not installed ({exc})",
            url=url,
        ) from exc
    except ValueError as exc:  # an unknown protocol
        raise ValidationError(f"file input {url!r}: {exc}", url=url) from exc
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise ValidationError(f"file input {url!r} does not exist", url=url) from exc
    except PermissionError as exc:
        raise ValidationError(f"file input {url!r} cannot be read: {exc}", url=url) from exc
    except Exception as exc:  # the storage did not answer
        raise Unavailable(f"file input {url!r}: cannot reach its storage: {exc!r}", url=url) from exc
    if info.get("type") != "file":
        raise ValidationError(f"file input {url!r} is a {info.get('type')}, not a file", url=url)
    return fs, path


def _read(url: str, fs: AbstractFileSystem, path: str, limit: int | None) -> _Source:
    """Hash the file: in place when it is local, else copied to a temporary file as it is read."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        local = Path(path)
        size = local.stat().st_size
        _check_size(url, size, limit)
        sha, size = hash_file(local)
        return _Source(url, sha, size, local, spooled=False)
    hasher = hashlib.sha256()
    size = 0
    fd, name = tempfile.mkstemp(prefix="maze-file-input-")
    spool = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, fs.open(path, "rb") as src:
            while chunk := src.read(READ_BYTES):
                size += len(chunk)
                _check_size(url, size, limit)
                hasher.update(chunk)
                out.write(chunk)
    except (ValidationError, PayloadTooLarge):
        spool.unlink(missing_ok=True)
        raise
    except Exception as exc:
        spool.unlink(missing_ok=True)
        raise Unavailable(f"file input {url!r} could not be read: {exc!r}", url=url) from exc
    return _Source(url, hasher.hexdigest(), size, spool, spooled=True)


def _check_size(url: str, size: int, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise too_large(f"file input {url!r}", size, limit)
