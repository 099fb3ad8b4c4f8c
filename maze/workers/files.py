"""An attempt's files: staged into its directory before it runs (for a run with a workspace, the
workspace manifest with its upstream tasks' artifacts laid over it; for any run, the task's file
inputs, `maze.FileInput`, at their `inputs/<key>/<name>`), and after it succeeded (runs with a
workspace), the files it created or changed stored in the blob store (identical content once) and
returned for the worker to register.

Staged files are copies of a local content cache (`<work root>/.content/<sha256>`), so a file that
many attempts of this worker use is fetched once. Copies, not hard links: a task that rewrites an
input in place would otherwise rewrite the cache (permissions do not stop a worker running as
root).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import structlog
from msgspec import Struct

from maze.core.errors import ArtifactError, MazeError
from maze.core.globs import matcher
from maze.events.artifacts import (
    MAX_ARTIFACTS_PER_ATTEMPT,
    FileEntry,
    check_path,
    decode_manifest,
    overlay,
    path_is_safe,
)
from maze.events.blob_files import fetch_to_file, hash_fd, put_fd
from maze.events.blobs import BlobStore
from maze.events.values import staged_files
from maze.events.work import WorkItem
from maze.workers.blob_cache import BlobCache

COPY_CHUNK = 1 << 20  # staging copies and hashes a cached file this much at a time

log = structlog.get_logger(__name__)
PARALLEL = 8  # files fetched or stored at once


class Staged(Struct, frozen=True, array_like=True):
    """A file as staged: its content and what its stat said just after."""

    sha256: str
    size: int
    mtime_ns: int


class FileStager:
    def __init__(self, blobs: BlobStore, cache: BlobCache, content_dir: Path) -> None:
        self.blobs = blobs
        self.cache = cache
        self.content_dir = content_dir
        self._fetching: dict[str, asyncio.Task[Path]] = {}

    async def view(self, item: WorkItem) -> list[FileEntry]:
        """The files the attempt sees: the workspace, its upstream tasks' artifacts over it, its
        file inputs over those."""
        manifest = decode_manifest(await self.cache.get(item.workspace)) if item.workspace else []
        inputs = input_files(item)
        if not item.files and not inputs:
            return manifest
        return overlay([manifest, list(item.files), inputs])

    async def stage(self, item: WorkItem, directory: Path) -> dict[str, Staged]:
        """Put the attempt's files in its (empty) directory. Raises ValidationError (a bad path),
        BlobMissing or ArtifactError (content missing or corrupt), or what an unreachable store
        raises."""
        entries = await self.view(item)
        for entry in entries:
            check_path(entry.path, "staged file")
        limit = asyncio.Semaphore(PARALLEL)

        async def one(entry: FileEntry) -> tuple[str, Staged]:
            async with limit:
                dest = directory / entry.path
                for tries in (1, 2):
                    local = await self._local(entry.sha256, again=tries > 1)
                    # checked against its sha256 as it is copied: the cache is on this machine's
                    # disk, where a task of another run may have written it
                    mtime = await asyncio.to_thread(_copy_in, local, dest, directory, entry.sha256)
                    if mtime is not None:
                        return entry.path, Staged(entry.sha256, entry.size, mtime)
                    log.warning("files.cache_entry_corrupt_refetching", sha256=entry.sha256, tries=tries)
                raise ArtifactError(
                    f"the content of {entry.path!r} ({entry.sha256[:12]}…) did not match its sha256 twice",
                    path=entry.path,
                )

        staged = dict(await asyncio.gather(*(one(e) for e in entries)))
        log.debug("files.staged", run_id=item.run_id, task_id=item.task_id, files=len(staged))
        return staged

    async def _local(self, sha: str, again: bool = False) -> Path:
        """The content's file in the local cache, fetched once however many attempts ask (`again`:
        fetched anew over what is there, found corrupt; the new file replaces the old one whole,
        so a copy being read meanwhile never loses its file)."""
        path = self.content_dir / sha
        if not again and await asyncio.to_thread(path.exists):
            return path
        task = self._fetching.get(sha)
        if task is None:
            task = asyncio.create_task(self._fetch(sha, path), name=f"file-fetch-{sha[:12]}")
            self._fetching[sha] = task
            task.add_done_callback(lambda _: self._fetching.pop(sha, None))
        return await asyncio.shield(task)

    async def _fetch(self, sha: str, path: Path) -> Path:
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        await fetch_to_file(self.blobs, sha, path)
        return path

    async def collect(
        self, directory: Path, staged: dict[str, Staged], patterns: tuple[str, ...] | None = None
    ) -> list[FileEntry]:
        """The files of `directory` that are new or changed since staging (and match `patterns`,
        maze/core/globs.py, when the task names some), each stored in the blob store (content
        stored already is not sent again). Symbolic links and other non-regular files are left
        out (a link could point anywhere on this machine), and no link is ever followed: the walk
        and every open go through directory descriptors with O_NOFOLLOW, and a file is hashed and
        stored from the one descriptor it was opened as (a name swapped for a link meanwhile is
        skipped, never read through)."""
        # the patterns are matched in the walk's thread: thousands of files never hold the loop
        wanted = matcher(patterns) if patterns is not None else None
        found = await asyncio.to_thread(_regular_files, directory, wanted)
        touched = sum(
            1
            for rel, size, mtime in found
            if (before := staged.get(rel)) is None or before.size != size or before.mtime_ns != mtime
        )
        if touched > MAX_ARTIFACTS_PER_ATTEMPT:  # refused before any is stored
            raise TooManyFiles(
                f"the task made or changed {touched} files; an attempt registers "
                f"{MAX_ARTIFACTS_PER_ATTEMPT} at most (write fewer, bigger files: an archive, say)",
                files=touched,
            )
        limit = asyncio.Semaphore(PARALLEL)

        async def one(rel: str, size: int, mtime: int) -> FileEntry | None:
            before = staged.get(rel)
            if before is not None and before.size == size and before.mtime_ns == mtime:
                return None  # untouched since it was staged
            async with limit:
                try:
                    fd = await asyncio.to_thread(open_no_follow, directory, rel)
                except OSError as exc:  # became a link, a fifo, or went away since the walk
                    log.info("files.skipped_changed_since_walk", path=rel, error=str(exc))
                    return None
                try:
                    sha, size = await asyncio.to_thread(hash_fd, fd)
                    if before is not None and before.sha256 == sha:
                        return None  # rewritten with the same content
                    await put_fd(self.blobs, fd, sha, size, rel)
                finally:
                    os.close(fd)
                return FileEntry(rel, sha, size)

        results = await asyncio.gather(*(one(rel, size, mtime) for rel, size, mtime in found))
        return sorted((e for e in results if e is not None), key=lambda e: e.path)


class TooManyFiles(MazeError):
    error_type = "artifact_error"
    status_code = 400


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_no_follow(directory: Path, rel: str) -> int:
    """A read-only descriptor of the regular file `rel` under `directory`, opened one component
    at a time relative to its parent's descriptor, none of them followed if a link. Raises
    OSError (ELOOP/ENOTDIR for a link on the way, EINVAL for what is not a regular file)."""
    fd = os.open(directory, _DIR_FLAGS)
    try:
        *parents, name = rel.split("/")
        for part in parents:
            inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        # O_NONBLOCK: a fifo put there opens without waiting for a writer (and is refused below)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        file_fd = os.open(name, flags, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise OSError(errno.EINVAL, f"{rel} is not a regular file")
    return file_fd


def input_files(item: WorkItem) -> list[FileEntry]:
    """The task's file inputs (`maze.FileInput`), as files to stage."""
    return [FileEntry(f.path, f.sha256, f.size) for f in staged_files(item.inputs)]


def has_files(item: WorkItem) -> bool:
    """Whether the attempt has files staged: a run with a workspace, or a file input."""
    return bool(item.workspace) or bool(input_files(item))


def _copy_in(source: Path, dest: Path, root: Path, sha256: str) -> int | None:
    """Copy a cached file to `dest` under `root` (its parents made), hashing what is copied: its
    mtime_ns after, or None (nothing left at `dest`) when the copy is not `sha256`'s content."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if root.resolve() not in dest.parent.resolve().parents and dest.parent.resolve() != root.resolve():
        raise ValueError(f"{dest} is outside the attempt directory")  # a path check missed it
    digest = hashlib.sha256()
    with source.open("rb") as src, dest.open("wb") as out:
        while chunk := src.read(COPY_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        dest.unlink()
        return None
    return dest.stat().st_mtime_ns


def _regular_files(
    directory: Path, wanted: Callable[[str], bool] | None = None
) -> list[tuple[str, int, int]]:
    """(relative POSIX path, size, mtime_ns) of every regular file under `directory` (that
    `wanted` accepts, when given), walked through directory descriptors (os.fwalk): a directory
    swapped for a link during the walk is not entered."""
    out: list[tuple[str, int, int]] = []
    skipped = 0
    for parent, _dirs, files, dir_fd in os.fwalk(directory, follow_symlinks=False):
        base = Path(parent)
        for name in files:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                skipped += 1
                continue
            if not stat.S_ISREG(st.st_mode):  # links (to files or directories), fifos, sockets
                skipped += 1
                continue
            rel = (base / name).relative_to(directory).as_posix()
            if not path_is_safe(rel):  # a name no manifest may carry (a backslash, say)
                skipped += 1
                continue
            if wanted is not None and not wanted(rel):
                continue
            out.append((rel, st.st_size, st.st_mtime_ns))
    if skipped:
        log.info("files.skipped_not_regular_or_unsafe_name", directory=str(directory), skipped=skipped)
    return sorted(out)
