"""What the blob store's layers achieve on their own, for a 200 MB blob: the upper bounds under
bench/artifacts.py's HTTP figures.

    python bench/blob_raw.py [--mb 200] [--runs 3] [--fsync always|interval] [--chunk-mb 1 4]

On a nats-server configured as the head's embedded one (max_payload 8 MB, the given fsync):
(1) nats-py JetStream publishes of the chunks, one at a time (`js.publish`: publish, wait for the
    ack), then pipelined (the blob store's writer: a window of acks in flight);
(2) BlobStore.put_stream (chunks pipelined with a window of acks, hashed, the meta written);
(3) BlobStore.stream (batched direct gets, hashed);
(4) sha256 of the 200 MB alone, and a plain copy of a 200 MB file (with and without fsync).
Each figure is the median MB/s of --runs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
from rich.console import Console
from rich.table import Table

from maze.events import blobs as blob_module
from maze.events.blobs import BlobStore
from maze.events.store import ensure_streams
from maze.head.nats_server import nats_server_binary, server_config

MB = 1024 * 1024


async def parts(data: bytes, size: int) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])


async def measure(args: argparse.Namespace, port: int) -> dict[str, list[float]]:
    nc = await nats.connect(f"nats://127.0.0.1:{port}", max_reconnect_attempts=1)
    js = nc.jetstream(timeout=30)
    await ensure_streams(js, replicas=1)
    results: dict[str, list[float]] = {}
    data_base = os.urandom(MB) * args.mb
    for chunk_mb in args.chunk_mb:
        chunk = chunk_mb * MB
        for run in range(args.runs):
            data = os.urandom(64) + data_base[64:]  # new content each run
            sha = hashlib.sha256(data).hexdigest()
            start = time.perf_counter()
            for i in range(0, len(data), chunk):
                await js.publish(f"$O.maze-artifacts.C.serial{chunk_mb}x{run}", data[i : i + chunk])
            note(
                results,
                f"(1) js.publish one at a time, {chunk_mb} MB chunks",
                time.perf_counter() - start,
                args.mb,
            )
            start = time.perf_counter()
            writer = blob_module._ChunkWriter(nc, f"$O.maze-artifacts.C.pipe{chunk_mb}x{run}")
            await writer.start()
            view = memoryview(data)
            for i in range(0, len(data), chunk):
                await writer.write(view[i : i + chunk])
            await writer.finish()
            note(
                results,
                f"(1) publishes pipelined ({blob_module.WINDOW} acks in flight), {chunk_mb} MB chunks",
                time.perf_counter() - start,
                args.mb,
            )
            store = BlobStore(nc, max_blob_bytes=1 << 40)
            store.chunk_bytes = chunk
            start = time.perf_counter()
            await store.put_stream(parts(data, 256 * 1024), sha)
            note(
                results,
                f"(2) BlobStore.put_stream, {chunk_mb} MB chunks",
                time.perf_counter() - start,
                args.mb,
            )
            start = time.perf_counter()
            got = 0
            async for piece in store.stream(sha):
                got += len(piece)
            assert got == len(data)
            note(results, f"(3) BlobStore.stream, {chunk_mb} MB chunks", time.perf_counter() - start, args.mb)
    start = time.perf_counter()
    hashlib.sha256(data_base).hexdigest()
    results["(4) sha256 alone"] = [time.perf_counter() - start]
    await nc.close()
    return results


def note(results: dict[str, list[float]], name: str, took: float, mb: int) -> None:
    results.setdefault(name, []).append(took)
    print(f"{name}: {mb / took:.0f} MB/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fsync", default="always", choices=["always", "interval"])
    parser.add_argument("--chunk-mb", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="maze-bench-blob-raw-"))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = root / "nats.conf"
    conf.write_text(server_config("127.0.0.1", port, root / "js", args.fsync, 8))
    import subprocess

    server = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(1.0)
        results = asyncio.run(measure(args, port))
        src = root / "src.bin"
        src.write_bytes(os.urandom(MB) * args.mb)
        copies, synced = [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            shutil.copyfile(src, root / "copy.bin")
            copies.append(time.perf_counter() - start)
            start = time.perf_counter()
            shutil.copyfile(src, root / "copy.bin")
            with (root / "copy.bin").open("rb+") as f:
                os.fsync(f.fileno())
            synced.append(time.perf_counter() - start)
        results["(4) plain copy"] = copies
        results["(4) plain copy + fsync"] = synced
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(root, ignore_errors=True)
    table = Table(
        title=f"{args.mb} MB, median of {args.runs} (nats-server fsync {args.fsync}, window {blob_module.WINDOW})"
    )
    table.add_column("measure")
    table.add_column("MB/s", justify="right")
    for name, samples in results.items():
        table.add_row(name, f"{args.mb / statistics.median(samples):.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
