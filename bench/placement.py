"""Issue 3 benchmark: placement throughput over 3 workers of mixed shapes, and the parallel
speed-up of N CPU-bound tasks against running them one after another.

    python bench/placement.py [--tasks 1500] [--cpu-tasks N] [--work-s 1.0]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from maze import MaClient, task
from maze.sdk.local_head import LocalHead, wait_for_nodes

SHAPES = {
    "small": ["--cpus", "2", "--memory-mb", "4000", "--gpus", "none"],
    "gpu": ["--cpus", "1", "--memory-mb", "4000", "--gpus", "16GB"],
    "big": ["--cpus", "4", "--memory-mb", "8000", "--gpus", "none"],
}


def spawn_worker(url: str, name: str, shape: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "maze",
                "start",
                "--worker",
                "--addr",
                url.removeprefix("http://"),
                "--node-id",
                name,
                *shape,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@task
def noop(x: int = 0):
    return {"x": x}


@task
def burn(seconds: float = 1.0):
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return {"n": n}


def run_and_wait(wf) -> float:
    start = time.perf_counter()
    run_id = wf.run()
    messages = wf.get_results(run_id, verbose=False)
    elapsed = time.perf_counter() - start
    final = messages[-1]
    assert final["type"] == "finish_workflow" and final["data"]["state"] == "succeeded", final
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1500)
    parser.add_argument("--cpu-tasks", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--work-s", type=float, default=1.0)
    parser.add_argument("--fsync", default="always", choices=["always", "interval"])
    args = parser.parse_args()
    console = Console()
    data = Path(tempfile.mkdtemp(prefix="maze-bench-"))
    workers: list[subprocess.Popen[bytes]] = []
    rows = []
    head = LocalHead(data / "cluster", extra=["--no-local-worker", "--fsync", args.fsync])
    try:
        head.start()  # inside the try: a head that never gets ready is still stopped
        # --- placement throughput over 3 worker shapes ---------------------------------------
        workers = [
            spawn_worker(head.url, name, shape, data / f"{name}.log") for name, shape in SHAPES.items()
        ]
        wait_for_nodes(head.url, 3, 60)
        client = MaClient(head.url)
        shapes = [{"cpu": 0.5}, {"cpu": 1}, {"cpu": 2}, {"cpu": 1, "gpu_mem": 2000}]
        variants = [task(resources=r)(noop) for r in shapes]
        warm = client.create_workflow()
        for v in variants:
            warm.add_task(v, inputs={"x": 0})
        run_and_wait(warm)
        wf = client.create_workflow()
        for i in range(args.tasks):
            wf.add_task(variants[i % len(variants)], inputs={"x": i})
        elapsed = run_and_wait(wf)
        rows.append(
            (
                "placement, 3 workers, mixed shapes",
                f"{args.tasks} tasks",
                f"{args.tasks / elapsed:,.0f} tasks/s",
            )
        )
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        head.stop()

    # --- parallel speed-up of CPU-bound tasks ------------------------------------------------
    start = time.perf_counter()
    for _ in range(args.cpu_tasks):
        burn(args.work_s)
    sequential = time.perf_counter() - start
    head = LocalHead(data / "speedup", extra=["--fsync", args.fsync])
    try:
        head.start(min_nodes=1)
        wf = MaClient(head.url).create_workflow()
        for _ in range(args.cpu_tasks):
            wf.add_task(burn, inputs={"seconds": args.work_s})
        parallel = run_and_wait(wf)
    finally:
        head.stop()
        shutil.rmtree(data, ignore_errors=True)
    rows.append(
        (
            f"{args.cpu_tasks} CPU-bound tasks of {args.work_s:g}s",
            f"sequential {sequential:.2f}s",
            f"Maze {parallel:.2f}s = {sequential / parallel:.2f}x",
        )
    )
    table = Table(
        "benchmark",
        "size",
        "result",
        title=f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"fsync={args.fsync} · {time.strftime('%Y-%m-%d')}",
    )
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
