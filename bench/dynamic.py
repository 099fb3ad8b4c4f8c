"""Dynamic runs: `append_task` -> task started latency. One dynamic run on an in-process head with
its local worker; each round appends a no-op task and times, on this machine's clock, from just
before the append request to the attempt's start: the worker handing it to its task process, in
microseconds (the `process_start` hop of maze/core/hops.py, MAZE_TRACE_HOPS), and as its node
recorded it in `attempt.started` (whole milliseconds); to its placement (`attempt.placed`, the
controller's decision, whole ms); plus the append's own round trip (answered once the controller
has folded it). p50 / p99 over --rounds.

    python bench/dynamic.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from report import print_rows

from maze import MaClient, task
from maze.sdk.local_head import LocalHead


@task
def noop(i: int = 0):
    return {"i": i}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="maze-bench-dynamic-"))
    trace_dir = root / "hops"
    os.environ["MAZE_TRACE_HOPS"] = str(trace_dir)
    head = LocalHead(root / "head", extra=["--cpus", "2"])
    head.start(min_nodes=1)
    to_start: list[float] = []
    to_placed: list[float] = []
    answered: list[float] = []
    began_us: list[int] = []
    try:
        client = MaClient(head.url)
        run = client.create_dynamic_run(max_tasks=args.rounds + 20, timeout_seconds=3600)
        for i in range(10):  # warm up: code in the worker's cache, connections open
            run.wait_for_task(run.append_task(noop, inputs={"i": i}))
        for i in range(args.rounds):
            began_ms = time.time() * 1000
            began_us.append(time.time_ns() // 1000)
            began = time.perf_counter()
            t = run.append_task(noop, inputs={"i": i})
            answered.append((time.perf_counter() - began) * 1000)
            run.wait_for_task(t)
            row = client.get_run_task(run.run_id, t.task_id)
            attempt = row["attempts"][-1]
            to_start.append(attempt["started_at_ms"] - began_ms)
            to_placed.append(attempt["placed_at_ms"] - began_ms)
        run.finalize({"rounds": args.rounds})
    finally:
        head.stop()
    starts = sorted(  # one task at a time: the n-th start of the run is the n-th append's
        int(line.split(" ")[2])
        for path in trace_dir.glob("hops-*.txt")
        for line in path.read_text().splitlines()
        if line.startswith("process_start ") and line.split(" ")[1] == run.run_id
    )[10:]
    assert len(starts) == len(began_us), (len(starts), len(began_us))
    to_process = [(at - began) / 1000 for at, began in zip(starts, began_us, strict=True)]
    print_rows(
        f"dynamic runs: append_task -> task started ({args.rounds} rounds, one no-op task each)",
        [
            ("append_task -> attempt placed, p50", f"{statistics.median(to_placed):.1f} ms"),
            (
                "append_task -> handed to the task process (µs clock), p50",
                f"{statistics.median(to_process):.2f} ms",
            ),
            ("append_task -> handed to the task process (µs clock), p99", f"{pct(to_process, 0.99):.2f} ms"),
            ("append_task -> attempt.started (ms clock), p50", f"{statistics.median(to_start):.1f} ms"),
            ("append_task -> attempt.started (ms clock), p99", f"{pct(to_start, 0.99):.1f} ms"),
            ("append_task answered (folded), p50", f"{statistics.median(answered):.1f} ms"),
        ],
    )


if __name__ == "__main__":
    main()
