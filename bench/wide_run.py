"""One very wide static run: throughput, and how reads hold up while it runs.

    python bench/wide_run.py [--tasks 100000] [--fsync always|interval] [--poll-ms 50]

Builds one run of --tasks no-op tasks, submits it, and while it runs asks `GET /runs/{id}` every
--poll-ms from another thread, timing each answer. Reports the submit time (SDK build + POST), the
run's throughput from its acceptance to its last task, the GET latency percentiles during the run,
and then checks that `get_results` returns a finish_task message for every task.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from report import print_rows

from maze import MaClient, task
from maze.sdk.local_head import LocalHead

FINAL = {"succeeded", "failed", "cancelled", "timed_out"}


@task
def noop(x: int = 0):
    return {"x": x}


def poll(url: str, run_id: str, every_s: float, samples: list[float], done: threading.Event) -> None:
    with httpx.Client(timeout=30) as http:
        while not done.is_set():
            start = time.perf_counter()
            resp = http.get(f"{url}/runs/{run_id}")
            samples.append(time.perf_counter() - start)
            if resp.status_code == 200 and resp.json()["state"] in FINAL:
                done.set()
                return
            time.sleep(max(0.0, every_s - (time.perf_counter() - start)))


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--fsync", default="always", choices=["always", "interval"])
    parser.add_argument("--poll-ms", type=float, default=50)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="maze-bench-wide-"))
    head = LocalHead(data_dir, extra=["--fsync", args.fsync])
    rows: list[tuple[str, str]] = []
    try:
        head.start(min_nodes=1)
        client = MaClient(head.url)
        warm = client.create_workflow()
        warm.add_task(noop, inputs={"x": 0})
        warm.get_results(warm.run(), verbose=False)
        start = time.perf_counter()
        wf = client.create_workflow()
        for i in range(args.tasks):
            wf.add_task(noop, inputs={"x": i})
        built = time.perf_counter()
        run_id = wf.run()
        accepted = time.perf_counter()
        samples: list[float] = []
        done = threading.Event()
        poller = threading.Thread(target=poll, args=(head.url, run_id, args.poll_ms / 1000, samples, done))
        poller.start()
        poller.join()
        finished = time.perf_counter()
        run = client.get_run(run_id)
        assert run["state"] == "succeeded", run
        results_start = time.perf_counter()
        messages = wf.get_results(run_id, verbose=False)
        results_s = time.perf_counter() - results_start
        finished_tasks = sum(m["type"] == "finish_task" for m in messages)
        assert finished_tasks == args.tasks, finished_tasks
        run_s = finished - accepted
        rows += [
            ("tasks", f"{args.tasks:,}"),
            ("SDK build (add_task x N)", f"{built - start:.1f} s"),
            ("submit (POST /runs, recorded in chunks)", f"{accepted - built:.1f} s"),
            ("accepted -> last task finished", f"{run_s:.1f} s"),
            ("throughput, accepted -> finished", f"{args.tasks / run_s:,.0f} tasks/s"),
            ("throughput, build -> finished", f"{args.tasks / (finished - start):,.0f} tasks/s"),
            (f"GET /runs/{{id}} during the run ({len(samples)} requests) p50", f"{pct(samples, 0.5):.1f} ms"),
            ("GET /runs/{id} p99", f"{pct(samples, 0.99):.1f} ms"),
            ("GET /runs/{id} max", f"{max(samples) * 1000:.1f} ms"),
            ("GET /runs/{id} mean", f"{statistics.mean(samples) * 1000:.1f} ms"),
            ("get_results afterwards: finish_task messages", f"{finished_tasks:,} in {results_s:.1f} s"),
        ]
    finally:
        head.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print_rows(f"one {args.tasks:,}-task static run (fsync {args.fsync})", rows)


if __name__ == "__main__":
    main()
