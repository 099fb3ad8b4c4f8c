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
import os
import shutil
import stat
from pathlib import Path

import structlog
from msgspec import Struct

from maze.events.artifacts import FileEntry, check_path, decode_manifest, overlay, path_is_safe
from maze.events.blob_files import fetch_to_file, hash_file, put_file
from maze.events.blobs import BlobStore
from maze.events.values import staged_files
from maze.events.work import WorkItem
from maze.workers.blob_cache import BlobCache

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
                local = await self._local(entry.sha256)
                dest = directory / entry.path
                mtime = await asyncio.to_thread(_copy_in, local, dest, directory)
                return entry.path, Staged(entry.sha256, entry.size, mtime)

        staged = dict(await asyncio.gather(*(one(e) for e in entries)))
        log.debug("files.staged", run_id=item.run_id, task_id=item.task_id, files=len(staged))
        return staged

    async def _local(self, sha: str) -> Path:
        """The content's file in the local cache, fetched once however many attempts ask."""
        path = self.content_dir / sha
        if await asyncio.to_thread(path.exists):
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

    async def collect(self, directory: Path, staged: dict[str, Staged]) -> list[FileEntry]:
        """The files of `directory` that are new or changed since staging, each stored in the blob
        store (content stored already is not sent again). Symbolic links and other non-regular
        files are left out (a link could point anywhere on this machine)."""
        found = await asyncio.to_thread(_regular_files, directory)
        limit = asyncio.Semaphore(PARALLEL)

        async def one(rel: str, size: int, mtime: int) -> FileEntry | None:
            before = staged.get(rel)
            if before is not None and before.size == size and before.mtime_ns == mtime:
                return None  # untouched since it was staged
            async with limit:
                path = directory / rel
                sha, size = await asyncio.to_thread(hash_file, path)
                if before is not None and before.sha256 == sha:
                    return None  # rewritten with the same content
                await put_file(self.blobs, path, sha)
                return FileEntry(rel, sha, size)

        results = await asyncio.gather(*(one(rel, size, mtime) for rel, size, mtime in found))
        return sorted((e for e in results if e is not None), key=lambda e: e.path)


def input_files(item: WorkItem) -> list[FileEntry]:
    """The task's file inputs (`maze.FileInput`), as files to stage."""
    return [FileEntry(f.path, f.sha256, f.size) for f in staged_files(item.inputs)]


def has_files(item: WorkItem) -> bool:
    """Whether the attempt has files staged: a run with a workspace, or a file input."""
    return bool(item.workspace) or bool(input_files(item))


def _copy_in(source: Path, dest: Path, root: Path) -> int:
    """Copy a cached file to `dest` under `root` (its parents made); its mtime_ns after."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if root.resolve() not in dest.parent.resolve().parents and dest.parent.resolve() != root.resolve():
        raise ValueError(f"{dest} is outside the attempt directory")  # a path check missed it
    shutil.copyfile(source, dest)
    return dest.stat().st_mtime_ns


def _regular_files(directory: Path) -> list[tuple[str, int, int]]:
    """(relative POSIX path, size, mtime_ns) of every regular file under `directory`."""
    out: list[tuple[str, int, int]] = []
    skipped = 0
    for parent, dirs, files in os.walk(directory, followlinks=False):
        base = Path(parent)
        for name in files:
            path = base / name
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                skipped += 1
                continue
            rel = path.relative_to(directory).as_posix()
            if not path_is_safe(rel):  # a name no manifest may carry (a backslash, say)
                skipped += 1
                continue
            out.append((rel, st.st_size, st.st_mtime_ns))
        skipped += sum(1 for d in dirs if (base / d).is_symlink())
    if skipped:
        log.info("files.skipped_not_regular_or_unsafe_name", directory=str(directory), skipped=skipped)
    return sorted(out)
