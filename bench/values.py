"""A large value's round trip through Maze, against copying the same bytes through a local file.

    python bench/values.py [--mb 20] [--runs 10] [--fsync always|interval]

(a) a 2-task chain where the first task returns --mb bytes and the second receives them
    (stored once in the blob store, fetched once by the worker): submit -> run finished;
(b) the same chain passing one byte (what the value itself adds is (a) - (b));
(c) the client fetching that result from the head (GET /artifacts/sha256/..., hash checked);
(d) the same bytes written to a local file and read back, without and with fsync.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from maze import MaClient, task
from maze.sdk.local_head import LocalHead

MB = 1024 * 1024


@task
def produce(mb: float = 1.0):
    return {"data": b"\x00" * int(mb * MB)}  # made in ~2 ms: the measure is moving it


@task
def consume(data=None):
    return {"size": len(data)}


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def chain_once(client: MaClient, mb: float) -> tuple[float, str, str]:
    wf = client.create_workflow()
    up = wf.add_task(produce, inputs={"mb": mb})
    wf.add_task(consume, inputs={"data": up.outputs["data"]})
    start = time.perf_counter()
    run_id = wf.run()
    for _ in client.follow_run_events(run_id):
        pass
    elapsed = time.perf_counter() - start
    assert client.get_run(run_id)["state"] == "succeeded"
    return elapsed, run_id, up.task_id


def local_file(size: int, fsync: bool, runs: int) -> float:
    data = os.urandom(size)
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "value.bin"
        for _ in range(runs):
            start = time.perf_counter()
            with path.open("wb") as out:
                out.write(data)
                if fsync:
                    out.flush()
                    os.fsync(out.fileno())
            assert len(path.read_bytes()) == size
            samples.append(time.perf_counter() - start)
            path.unlink()
    return median_ms(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=20)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--fsync", default="always", choices=["always", "interval"])
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="maze-bench-values-"))
    head = LocalHead(data_dir, extra=["--fsync", args.fsync])
    try:
        head.start(min_nodes=1)
        client = MaClient(head.url)
        chain_once(client, args.mb)  # warm-up: processes, code in the blob store
        big, small, fetch = [], [], []
        for _ in range(args.runs):
            elapsed, run_id, task_id = chain_once(client, args.mb)
            big.append(elapsed)
            small.append(chain_once(client, 1 / MB)[0])
            row = client.get_run_task(run_id, task_id)["result"]["data"]
            start = time.perf_counter()
            assert len(client.fetch_blob(row["sha256"])) == int(args.mb * MB) + 5
            fetch.append(time.perf_counter() - start)
    finally:
        head.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    size = int(args.mb * MB)
    rows = [
        (f"(a) chain passing {args.mb:g} MB, submit -> finished", median_ms(big)),
        ("(b) same chain passing 1 byte", median_ms(small)),
        ("(a) - (b): what the value adds", median_ms(big) - median_ms(small)),
        (f"(c) client fetch of the {args.mb:g} MB result (hash checked)", median_ms(fetch)),
        ("(d) local file write + read back", local_file(size, False, args.runs)),
        ("(d) local file write + fsync + read back", local_file(size, True, args.runs)),
    ]
    table = Table(title=f"{args.mb:g} MB value, median of {args.runs} (fsync {args.fsync})")
    table.add_column("measure")
    table.add_column("ms", justify="right")
    for name, ms in rows:
        table.add_row(name, f"{ms:.1f}")
    console = Console()
    console.print(table)
    console.print(
        f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}"
    )


if __name__ == "__main__":
    main()
