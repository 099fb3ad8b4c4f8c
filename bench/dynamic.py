"""Dynamic runs: `append_task` -> task started latency. One dynamic run on an in-process head with
its local worker; each round appends a no-op task and times, on this machine's clock, from just
before the append request to the attempt's start as its node recorded it (`attempt.started`), and
to its placement (`attempt.placed`, the controller's decision), plus the append's own round trip
(answered once the controller has folded it). p50 / p99 over --rounds.

    python bench/dynamic.py [--rounds 200]
"""

from __future__ import annotations

import argparse
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
    head = LocalHead(root / "head", extra=["--cpus", "2"])
    head.start(min_nodes=1)
    to_start: list[float] = []
    to_placed: list[float] = []
    answered: list[float] = []
    try:
        client = MaClient(head.url)
        run = client.create_dynamic_run(max_tasks=args.rounds + 20, timeout_seconds=3600)
        for i in range(10):  # warm up: code in the worker's cache, connections open
            run.wait_for_task(run.append_task(noop, inputs={"i": i}))
        for i in range(args.rounds):
            began_ms = time.time() * 1000
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
    print_rows(
        f"dynamic runs: append_task -> task started ({args.rounds} rounds, one no-op task each)",
        [
            ("append_task -> attempt placed, p50", f"{statistics.median(to_placed):.1f} ms"),
            ("append_task -> attempt started, p50", f"{statistics.median(to_start):.1f} ms"),
            ("append_task -> attempt started, p99", f"{pct(to_start, 0.99):.1f} ms"),
            ("append_task answered (folded), p50", f"{statistics.median(answered):.1f} ms"),
        ],
    )


if __name__ == "__main__":
    main()
