"""Artifact throughput: a file uploaded to and downloaded from the head's blob store over HTTP
(streamed both ways, hashed on both sides), against a plain copy of the same file on the same disk.

    python bench/artifacts.py [--mb 200] [--runs 3] [--fsync always|interval]

(a) upload: PUT /artifacts/sha256/<hex> streamed from the file (a new blob each run: the content
    differs by its first block), the client's hashing of the file first included;
(b) download: GET streamed to a file, hashed as it arrives, renamed when it matches
    (MaClient.download_artifact's path);
(c) a plain copy of the file (shutil.copyfile), and the same with fsync, on the same disk.
Each figure is the median MB/s of --runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from maze.sdk.artifacts import download_blob
from maze.sdk.http import Http
from maze.sdk.local_head import LocalHead

MB = 1024 * 1024


def make_file(path: Path, mb: int, salt: int) -> None:
    block = hashlib.sha512(str(salt).encode()).digest() * (MB // 64)
    with path.open("wb") as f:
        f.write(os.urandom(MB))  # a new content each run
        for _ in range(mb - 1):
            f.write(block)


def chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(MB):
            yield chunk


def sha_of(path: Path) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks(path):
        hasher.update(chunk)
    return hasher.hexdigest()


def copy(src: Path, dest: Path, fsync: bool) -> float:
    start = time.perf_counter()
    shutil.copyfile(src, dest)
    if fsync:
        with dest.open("rb+") as f:
            os.fsync(f.fileno())
    took = time.perf_counter() - start
    dest.unlink()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fsync", default="always", choices=["always", "interval"])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="maze-bench-artifacts-"))
    head = LocalHead(root / "head", extra=["--fsync", args.fsync, "--no-local-worker"])
    up, down, plain, synced = [], [], [], []
    try:
        head.start()
        http = Http(head.url)
        timeout = httpx.Timeout(60.0, read=600.0, write=600.0)
        for run in range(args.runs):
            src = root / f"src-{run}.bin"
            make_file(src, args.mb, run)
            start = time.perf_counter()
            sha = sha_of(src)
            http.request("PUT", f"/artifacts/sha256/{sha}", content=chunks(src), timeout=timeout)
            up.append(time.perf_counter() - start)
            start = time.perf_counter()
            download_blob(http, sha, root / f"got-{run}.bin")
            down.append(time.perf_counter() - start)
            (root / f"got-{run}.bin").unlink()
            plain.append(copy(src, root / "copy.bin", fsync=False))
            synced.append(copy(src, root / "copy.bin", fsync=True))
            src.unlink()
    finally:
        head.stop()
        shutil.rmtree(root, ignore_errors=True)

    def rate(samples: list[float]) -> float:
        return args.mb / statistics.median(samples)

    copy_rate = rate(plain)
    table = Table(title=f"{args.mb} MB file, median of {args.runs} runs (head fsync {args.fsync})")
    for col in ("measure", "MB/s", "of a plain copy"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    for name, samples in (
        ("(a) upload: hash + PUT, streamed", up),
        ("(b) download: GET streamed, hashed, renamed", down),
        ("(c) plain copy (shutil.copyfile)", plain),
        ("(c) plain copy + fsync", synced),
    ):
        table.add_row(name, f"{rate(samples):.0f}", f"{rate(samples) / copy_rate:.0%}")
    console = Console()
    console.print(table)
    console.print(
        f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
