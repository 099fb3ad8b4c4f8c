"""One head and eight workers of small declared shapes on this machine, a 20,000-task fan-out:
throughput, placement wait (a task ready -> its `attempt.placed`, p50 / p99) and how evenly the work
spreads over the nodes; on a single NATS server and on a 3-server cluster (streams replicated 3x),
so that the cost of replication is a ratio in one invocation.

    python bench/spread.py [--tasks 20000] [--workers 8]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from report import print_rows

from maze import MaClient, task
from maze.head.nats_server import nats_server_binary, server_config
from maze.sdk.local_head import LocalHead, free_port, wait_for_nodes


@task(resources={"cpu": 0.5, "cpu_mem": 16, "gpu": 0, "gpu_mem": 0})
def tiny(i: int = 0):
    return {"i": i}


def nats_servers(root: Path, size: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    ports = [free_port() for _ in range(size)]
    cluster_ports = [free_port() for _ in range(size)]
    procs = []
    for i, port in enumerate(ports):
        store = root / f"n{i}"
        store.mkdir(parents=True)
        conf = server_config("127.0.0.1", port, store / "js", "always", 8)
        if size > 1:
            routes = ", ".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
            conf = f'server_name: n{i}\n{conf}cluster {{\n  name: maze\n  listen: "127.0.0.1:{cluster_ports[i]}"\n  routes: [{routes}]\n}}\n'
        (store / "nats.conf").write_text(conf)
        procs.append(
            subprocess.Popen(
                [nats_server_binary(), "-c", str(store / "nats.conf")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(3 if size > 1 else 0.5)  # a cluster elects its JetStream leader
    return procs, [f"nats://127.0.0.1:{p}" for p in ports]


def measure(tasks: int, workers: int, size: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="maze-bench-spread-"))
    servers, urls = nats_servers(root / "nats", size)
    head = LocalHead(
        root / "head", extra=["--nats", ",".join(urls), "--no-local-worker", "--node-queue-factor", "4"]
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        head.start(timeout=120)
        for i in range(workers):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "maze",
                        "start",
                        "--worker",
                        "--addr",
                        f"127.0.0.1:{head.port}",
                        "--node-id",
                        f"w{i}",
                        "--cpus",
                        "0.5" if i % 2 else "1",
                        "--memory-mb",
                        "512",
                        "--gpus",
                        "none",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        wait_for_nodes(head.url, workers, 120)
        client = MaClient(head.url)
        wf = client.create_workflow()
        for i in range(tasks):
            wf.add_task(tiny, inputs={"i": i})
        started = time.perf_counter()
        run_id = wf.run()
        messages = wf.get_results(run_id, verbose=False)
        took = time.perf_counter() - started
        assert messages[-1]["data"]["state"] == "succeeded"
        events = client.get_run_events(run_id)
        created = next(e["at_ms"] for e in events if e["type"] == "run.created")
        waits = sorted(e["at_ms"] - created for e in events if e["type"] == "attempt.placed")
        per_node = Counter(e["node_id"] for e in events if e["type"] == "attempt.succeeded")
        counts = [per_node.get(f"w{i}", 0) for i in range(workers)]
        # a node of 1 CPU should take about twice the work of a node of 0.5
        shares = [c / (0.5 if i % 2 else 1.0) for i, c in enumerate(counts)]
        return {
            "tasks_per_s": tasks / took,
            "wait_p50_ms": waits[len(waits) // 2],
            "wait_p99_ms": waits[int(len(waits) * 0.99)],
            "spread_cv": statistics.pstdev(shares) / statistics.mean(shares),
            "min_tasks": min(counts),
            "max_tasks": max(counts),
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        head.stop()
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    one = measure(args.tasks, args.workers, 1)
    three = measure(args.tasks, args.workers, 3)
    rows = []
    for key, label in (
        ("tasks_per_s", "throughput, tasks/s"),
        ("wait_p50_ms", "placement wait p50, ms"),
        ("wait_p99_ms", "placement wait p99, ms"),
        ("spread_cv", "spread: variation of tasks per CPU over nodes (0 = even)"),
        ("min_tasks", "fewest tasks on a node"),
        ("max_tasks", "most tasks on a node"),
    ):
        ratio = one[key] / three[key] if three[key] else float("nan")
        rows.append((label, f"{one[key]:,.2f} | {three[key]:,.2f} | {ratio:.2f}"))
    print_rows(
        f"{args.tasks:,} tasks, {args.workers} workers (1 or 0.5 CPU each): 1 NATS server | 3 (R3) | ratio",
        rows,
    )


if __name__ == "__main__":
    main()
