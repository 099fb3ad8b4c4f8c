"""Maze vs Ray on the same machine, in one invocation (issue 2's benchmark).

    pip install -r bench/requirements.txt
    python bench/compare_ray.py [--runs 200] [--fanout 2000] [--fsync always|interval] [--skip-ray]

Maze's figures include what a user's code does: `workflow.run()`, then `get_results()` (the
results decoded into messages); Ray's are `ray.get` of the remote call.

(a) one no-op task, submit -> result: median and p99 over --runs
(b) a 2-task chain a -> b: median and p99 over --runs
(c) a 100-task chain: milliseconds per edge (submit -> last result, divided by 99), median of 5
(d) a --fanout no-op task fan-out: tasks/s from submit to the last result
(e) 2 CPU-bound 1-second tasks at once: the speed-up over running them one after the other (in
    this process, before anything else starts)
(f) Maze only: messages published to the event and work streams per one-task run, and per task
    of the fan-out
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from maze import MaClient, task
from maze.sdk.local_head import LocalHead


@task
def noop(x: int = 0):
    return {"x": x}


def burn(seconds: float) -> int:
    """CPU-bound: spin for `seconds` of CPU time."""
    count = 0
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        count += 1
    return count


@task
def cpu_bound(seconds: float = 1.0):
    return {"n": burn(seconds)}


def stream_messages(url: str) -> dict[str, int]:
    """Messages stored so far in the event (runs) and work streams."""
    import asyncio

    import nats

    async def ask() -> dict[str, int]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            out = {}
            for stream in ("MAZE_RUNS", "MAZE_WORK"):
                out[stream] = (await js.stream_info(stream)).state.last_seq
            return out
        finally:
            await nc.close()

    return asyncio.run(ask())


SEQUENTIAL_S = 2.0  # the two CPU-bound tasks one after the other, measured in main()


def sequential_cpu_s() -> float:
    start = time.perf_counter()
    burn(1.0)
    burn(1.0)
    return time.perf_counter() - start


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def time_runs(fn: Callable[[], None], runs: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def bench_maze(runs: int, fanout: int, fsync: str) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="maze-bench-"))
    head = LocalHead(data_dir, extra=["--fsync", fsync])
    try:
        head.start(min_nodes=1)  # inside the try: a head that never gets ready is still stopped
        client = MaClient(head.url)

        def run(wf, expect: int) -> None:
            messages = wf.get_results(wf.run(), verbose=False)
            assert messages[-1]["data"]["state"] == "succeeded", messages[-1]
            assert sum(m["type"] == "finish_task" for m in messages) == expect
            wf.clear_cache()

        url = head.nats_url  # the head's credentials: the streams are read and written as the head does
        single = client.create_workflow()
        single.add_task(noop, inputs={"x": 1})
        chain = client.create_workflow()
        first = chain.add_task(noop, inputs={"x": 1})
        chain.add_task(noop, inputs={"x": first.outputs["x"]})
        long_chain = client.create_workflow()
        link = long_chain.add_task(noop, inputs={"x": 0})
        for _ in range(99):
            link = long_chain.add_task(noop, inputs={"x": link.outputs["x"]})
        wide = client.create_workflow()
        for i in range(fanout):
            wide.add_task(noop, inputs={"x": i})
        burners = client.create_workflow()
        for _ in range(2):
            burners.add_task(cpu_bound, inputs={"seconds": 1.0})
        out = {}
        # first, while nothing else runs (the read models fold a fan-out for seconds afterwards)
        run(burners, 2)  # warm-up
        start = time.perf_counter()
        run(burners, 2)
        out["cpu_speedup"] = SEQUENTIAL_S / (time.perf_counter() - start)
        for _ in range(10):
            run(single, 1)  # warm-up, then count what one run publishes
        before = stream_messages(url)
        out["single_median_ms"], out["single_p99_ms"] = percentiles(
            time_runs(lambda: run(single, 1), runs, warmup=0)
        )
        after = stream_messages(url)
        out["run_messages_per_single_run"] = (after["MAZE_RUNS"] - before["MAZE_RUNS"]) / runs
        out["work_messages_per_single_run"] = (after["MAZE_WORK"] - before["MAZE_WORK"]) / runs
        out["chain_median_ms"], out["chain_p99_ms"] = percentiles(time_runs(lambda: run(chain, 2), runs))
        chain_s = time_runs(lambda: run(long_chain, 100), 5, warmup=1)
        out["chain100_ms_per_edge"] = statistics.median(chain_s) * 1000 / 99
        run(wide, fanout)  # warm-up
        before = stream_messages(url)
        start = time.perf_counter()
        run(wide, fanout)
        out["fanout_tasks_per_s"] = fanout / (time.perf_counter() - start)
        after = stream_messages(url)
        out["messages_per_fanout_task"] = sum(after[s] - before[s] for s in after) / fanout
        return out
    finally:
        head.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def bench_ray(runs: int, fanout: int) -> dict[str, float]:
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote
        def ray_noop(x: int) -> int:
            return x

        # Ray's monitor processes take much of 2 cores for a moment after init: let that settle
        settle_until = time.perf_counter() + 2.0
        while time.perf_counter() < settle_until:
            ray.get(ray_noop.remote(0))

        @ray.remote
        def ray_burn(seconds: float) -> int:
            return burn(seconds)

        out = {}
        ray.get([ray_burn.remote(0.1) for _ in range(2)])  # warm-up
        start = time.perf_counter()
        ray.get([ray_burn.remote(1.0) for _ in range(2)])
        out["cpu_speedup"] = SEQUENTIAL_S / (time.perf_counter() - start)
        out["single_median_ms"], out["single_p99_ms"] = percentiles(
            time_runs(lambda: ray.get(ray_noop.remote(1)), runs)
        )
        out["chain_median_ms"], out["chain_p99_ms"] = percentiles(
            time_runs(lambda: ray.get(ray_noop.remote(ray_noop.remote(1))), runs)
        )

        def long_chain() -> None:
            ref = ray_noop.remote(0)
            for _ in range(99):
                ref = ray_noop.remote(ref)
            ray.get(ref)

        out["chain100_ms_per_edge"] = statistics.median(time_runs(long_chain, 5, warmup=1)) * 1000 / 99
        ray.get([ray_noop.remote(i) for i in range(fanout)])  # warm-up
        start = time.perf_counter()
        assert ray.get([ray_noop.remote(i) for i in range(fanout)]) == list(range(fanout))
        out["fanout_tasks_per_s"] = fanout / (time.perf_counter() - start)
        return out
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--fanout", type=int, default=2000)
    parser.add_argument("--fsync", choices=["always", "interval"], default="always")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.skip_ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("Ray is not installed: pip install -r bench/requirements.txt (or pass --skip-ray)")
            sys.exit(2)
    global SEQUENTIAL_S
    SEQUENTIAL_S = sequential_cpu_s()  # measured first, while nothing else runs
    results = {"maze": bench_maze(args.runs, args.fanout, args.fsync)}
    if not args.skip_ray:
        results["ray"] = bench_ray(args.runs, args.fanout)
    title = (
        f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"{time.strftime('%Y-%m-%d')} · Maze fsync={args.fsync} · runs={args.runs}"
    )
    table = Table(
        "metric",
        "Maze",
        "Ray",
        "Maze/Ray",
        title=title,
        caption="Maze/Ray: above 1 means Maze is slower on latency rows, faster on the tasks/s row",
    )
    labels = {
        "single_median_ms": "(a) 1 task submit→result, median ms",
        "single_p99_ms": "(a) 1 task submit→result, p99 ms",
        "chain_median_ms": "(b) 2-task chain, median ms",
        "chain_p99_ms": "(b) 2-task chain, p99 ms",
        "chain100_ms_per_edge": "(c) 100-task chain, ms per edge",
        "fanout_tasks_per_s": f"(d) {args.fanout}-task fan-out, tasks/s",
        "cpu_speedup": "(e) 2 CPU-bound 1 s tasks, speed-up",
        "run_messages_per_single_run": "(f) event-stream messages per 1-task run",
        "work_messages_per_single_run": "(f) work-stream messages per 1-task run",
        "messages_per_fanout_task": "(f) messages per task in the fan-out (both streams)",
    }
    for key, label in labels.items():
        maze_value = results["maze"][key]
        if key.startswith(("run_messages", "work_messages", "messages")):
            table.add_row(label, f"{maze_value:,.2f}", "-", "-")
            continue
        ray_value = results.get("ray", {}).get(key)
        table.add_row(
            label,
            f"{maze_value:,.1f}",
            "-" if ray_value is None else f"{ray_value:,.1f}",
            "-" if not ray_value else f"{maze_value / ray_value:.2f}",
        )
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, **results}, indent=2))


if __name__ == "__main__":
    main()
