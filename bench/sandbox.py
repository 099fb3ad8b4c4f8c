"""What a sandbox adds to one attempt: a no-op task run with and without `sandbox=True`.

    python bench/sandbox.py [--runs 30]

One head with its local worker (1 CPU). Each figure is submit -> run finished, one run at a time:
(a) a no-op task in the worker's warm process pool;
(b) the same task sandboxed, a spare sandbox ready (runs spaced by --gap seconds): what an attempt
    waits for its sandbox (the spare's directory renamed onto the attempt's, its limits written,
    the request sent, the sandbox killed after);
(c) sandboxed back to back: each attempt finds the spare its predecessor started still starting
    (a fresh interpreter's start, ~0.1 s, is the bound on sandboxed attempts per second per core);
(d) the start of one sandbox from nothing: bubblewrap + Python + Maze's task process, timed
    alone (the cost of the first sandboxed attempt on a worker, and of each one without a spare).
The start overhead per attempt is (b) - (a).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from maze import MaClient, task
from maze.sdk.local_head import LocalHead
from maze.workers.sandbox import bwrap_argv, default_hidden, find_bwrap, sandbox_env


@task
def noop(n: int = 0):
    return {"n": n}


@task(sandbox=True)
def noop_boxed(n: int = 0):
    return {"n": n}


def once(client: MaClient, fn: object) -> float:
    wf = client.create_workflow()
    wf.add_task(fn, inputs={"n": 1})
    start = time.perf_counter()
    run_id = wf.run()
    for _ in client.follow_run_events(run_id):
        pass
    elapsed = time.perf_counter() - start
    assert client.get_run(run_id)["state"] == "succeeded", client.get_run(run_id)
    return elapsed


def series(client: MaClient, fn: object, runs: int, gap: float) -> list[float]:
    out = []
    for _ in range(runs):
        if gap:
            time.sleep(gap)
        out.append(once(client, fn))
    return out


def cold_start(runs: int) -> list[float]:
    bwrap = find_bwrap()
    assert bwrap is not None
    root = Path(tempfile.mkdtemp(prefix="maze-bench-sandbox-"))
    code = "import maze.workers.sandbox_child"
    out = []
    try:
        for _ in range(runs):
            start = time.perf_counter()
            argv = bwrap_argv(
                bwrap, str(root), default_hidden(root), False, [sys.executable, "-P", "-c", code]
            )
            subprocess.run(argv, env=sandbox_env(os.environ, sys.path), check=True)
            out.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def row(table: Table, name: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[int(len(ms) * 0.9) - 1] if len(ms) >= 10 else ms[-1]
    table.add_row(name, f"{statistics.median(ms):.1f}", f"{p90:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between spaced runs")
    args = parser.parse_args()
    console = Console()
    data_dir = Path(tempfile.mkdtemp(prefix="maze-bench-sandbox-head-"))
    head = LocalHead(data_dir, extra=["--cpus", "1", "--fsync", "interval"])
    try:
        head.start(min_nodes=1)
        client = MaClient(head.url)
        node = client.http.get("/cluster/resources")["nodes"][0]
        if not node["sandbox"]["available"]:
            sys.exit(f"this worker cannot sandbox: {node['sandbox']['reason']}")
        once(client, noop)
        once(client, noop_boxed)  # the first sandbox starts cold; the next ones find a spare
        plain = series(client, noop, args.runs, args.gap)
        spaced = series(client, noop_boxed, args.runs, args.gap)
        back_to_back = series(client, noop_boxed, args.runs, 0.0)
    finally:
        head.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    cold = cold_start(min(args.runs, 10))
    table = Table(
        title=f"sandbox overhead, {platform.node()}, {os.cpu_count()} CPUs, limits {node['sandbox']['limits']}"
    )
    table.add_column("one no-op run, submit -> finished")
    table.add_column("median ms", justify="right")
    table.add_column("p90 ms", justify="right")
    row(table, "(a) unsandboxed (warm process pool)", plain)
    row(table, f"(b) sandboxed, spare ready ({args.gap:g}s apart)", spaced)
    row(table, "(c) sandboxed, back to back", back_to_back)
    row(table, "(d) one sandbox started from nothing (alone)", cold)
    console.print(table)
    overhead = (statistics.median(spaced) - statistics.median(plain)) * 1000
    console.print(f"start overhead per sandboxed attempt (b - a): {overhead:.1f} ms (target <= 20 ms)")


if __name__ == "__main__":
    main()
