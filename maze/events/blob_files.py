"""Files in and out of the blob store, streamed: a file is read and written a chunk at a time
(in a thread, never on the event loop), so a file of any size costs a few chunks of memory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from maze.events.blobs import BlobStore

READ_BYTES = 1024 * 1024


def hash_file(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read a chunk at a time (call it in a thread)."""
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(4 * READ_BYTES):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def hash_fd(fd: int) -> tuple[str, int]:
    """(sha256 hex, size) of an open file's content from its start (call it in a thread)."""
    hasher = hashlib.sha256()
    size = 0
    while chunk := os.pread(fd, 4 * READ_BYTES, size):
        hasher.update(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


async def fd_chunks(fd: int, chunk_bytes: int = READ_BYTES) -> AsyncIterator[bytes]:
    offset = 0
    while chunk := await asyncio.to_thread(os.pread, fd, chunk_bytes, offset):
        offset += len(chunk)
        yield chunk


async def put_fd(blobs: BlobStore, fd: int, sha: str, size: int, name: str) -> tuple[str, int, bool]:
    """put_file of a file opened already (read through that descriptor only, never its path
    again: what was hashed is what is stored, or it is refused as changed)."""
    blobs.check_size(size, f"file {name}")
    if await blobs.size_of(sha) is not None:
        return sha, size, False
    size, created = await blobs.put_stream(fd_chunks(fd, blobs.chunk_bytes), sha)
    return sha, size, created


async def file_chunks(path: Path, chunk_bytes: int = READ_BYTES) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, chunk_bytes):
            yield chunk
    finally:
        f.close()


async def put_file(blobs: BlobStore, path: Path, sha: str | None = None) -> tuple[str, int, bool]:
    """Store a file's content unless it is stored already: (sha256, size, created). The content
    is checked against `sha` (hashed first when not given) as it streams: a file changed while it
    is read is refused (ValidationError), nothing stored."""
    if sha is None:
        digest, size = await asyncio.to_thread(hash_file, path)
    else:
        digest, size = sha, (await asyncio.to_thread(path.stat)).st_size
    blobs.check_size(size, f"file {path.name}")
    if await blobs.size_of(digest) is not None:
        return digest, size, False
    size, created = await blobs.put_stream(file_chunks(path, blobs.chunk_bytes), digest)
    return digest, size, created


async def fetch_to_file(blobs: BlobStore, sha: str, dest: Path) -> int:
    """Write a blob's content to `dest` (through a temporary file beside it, renamed when the
    whole content has arrived and matched its hash: `dest` never holds part of a blob)."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{id(dest):x}.part")
    size = 0
    f = await asyncio.to_thread(tmp.open, "wb")
    try:
        async for chunk in blobs.stream(sha):
            await asyncio.to_thread(f.write, chunk)
            size += len(chunk)
        await asyncio.to_thread(f.close)
        await asyncio.to_thread(os.replace, tmp, dest)
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return size
