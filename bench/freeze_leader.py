"""The leading head frozen (SIGSTOP) past its lease while runs flow, then woken (SIGCONT): a
deposed leader that does not know it yet, with its own worker frozen alike. Not a speed figure:
what the log says afterwards.

    python bench/freeze_leader.py [--rounds 4] [--freeze 3] [--seconds 30]

Two heads, each with its own worker, one more worker, on one nats-server (fsync always), a lease
of 1 s. Client threads submit small runs (one task, a chain of 5, a fan-out of 8 with its fan-in)
to either head for --seconds, while the leading head is frozen --rounds times for --freeze seconds
(the other one takes over; the frozen one's worker is declared lost), then woken. Printed: the runs
recorded, how they ended, tasks whose log holds more than one success, of one attempt (a node's
report of a deposed leader's placement, which no fold counts) or of two (an attempt of a node
declared lost that ran on while it was frozen, and the attempt placed instead), the nodes' `worker.placement_superseded` lines, and whether each head's read models
rebuilt from the log equal its live ones.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from local_nats import start_nats
from report import print_rows

from maze import MaClient, task
from maze.sdk.local_head import LocalHead


@task
def inc(x: int = 0, wait: float = 0.0) -> dict:
    import time as _t

    _t.sleep(wait)
    return {"x": x + 1}


@task
def total(parts: list) -> dict:
    return {"x": sum(parts)}


def leading(head: LocalHead) -> bool:
    try:
        return bool(httpx.get(f"{head.url}/cluster/resources", timeout=1).json()["leader"]["this_head"])
    except (httpx.HTTPError, KeyError, ValueError):
        return False


def submit_one(url: str, shape: int) -> None:
    wf = MaClient(url).create_workflow()
    if shape == 0:
        wf.add_task(inc, inputs={"x": 0})
    elif shape == 1:
        t = wf.add_task(inc, inputs={"x": 0, "wait": 0.05})
        for _ in range(4):
            t = wf.add_task(inc, inputs={"x": t.outputs["x"], "wait": 0.05})
    else:
        parts = [wf.add_task(inc, inputs={"x": i, "wait": 0.1}) for i in range(8)]
        wf.add_task(total, inputs={"parts": [p.outputs["x"] for p in parts]})
    wf.run()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--freeze", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="maze-bench-freeze-"))
    nats, url = start_nats(root)
    extra = ["--nats", url, "--lease-seconds", "1", "--heartbeat-interval", "0.5", "--liveness-timeout", "3"]
    heads = [LocalHead(root / name, extra=extra) for name in ("a", "b")]
    worker = None
    submitted = collections.Counter[str]()
    stop = threading.Event()

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            head = rng.choice(heads)
            try:
                submit_one(head.url, rng.randrange(3))
                submitted["accepted"] += 1
            except Exception as exc:  # a frozen head's answer may never come in time: counted
                submitted[type(exc).__name__] += 1
            time.sleep(rng.uniform(0.02, 0.1))

    froze = 0
    runs: list[dict] = []
    open_runs: list[dict] = []
    states: collections.Counter[str] = collections.Counter()
    twice: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    superseded = 0
    rebuilt: list[object] = []
    try:
        heads[0].start(min_nodes=1)
        while not leading(heads[0]):
            time.sleep(0.05)
        heads[1].start()
        worker_log = (root / "worker.log").open("ab")
        worker = subprocess.Popen(
            [
                *[sys.executable, "-m", "maze", "start", "--worker", "--addr", f"127.0.0.1:{heads[0].port}"],
                *["--cpus", "2", "--heartbeat-interval", "0.5", "--node-id", "spare"],
            ],
            stdout=worker_log,
            stderr=worker_log,
        )
        time.sleep(3)
        clients = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(3)]
        for thread in clients:
            thread.start()
        began = time.monotonic()
        gap = max(1.0, (args.seconds - args.rounds * args.freeze) / (args.rounds + 1))
        for _ in range(args.rounds):
            time.sleep(gap)
            leader = next((h for h in heads if leading(h)), None)
            if leader is None or leader.proc is None:
                continue
            leader.proc.send_signal(signal.SIGSTOP)
            froze += 1
            time.sleep(args.freeze)
            leader.proc.send_signal(signal.SIGCONT)
        time.sleep(max(0.0, args.seconds - (time.monotonic() - began)))
        stop.set()
        for thread in clients:
            thread.join(timeout=120)
        client = MaClient(heads[0].url)
        deadline = time.monotonic() + 180
        while True:
            runs = list(client.iter_runs())
            open_runs = [
                r for r in runs if r["state"] not in ("succeeded", "failed", "cancelled", "timed_out")
            ]
            if not open_runs or time.monotonic() > deadline:
                break
            time.sleep(1)
        states = collections.Counter(r["state"] for r in runs)
        # tasks whose log holds more than one success
        for run in runs:
            events = client.get_run_events(run["run_id"])
            successes = collections.defaultdict(list)
            for e in events:
                if e["type"] == "attempt.succeeded":
                    successes[e["task_id"]].append(e["attempt"])
            for attempts in successes.values():
                if len(attempts) > 1:
                    twice["of one attempt" if len(set(attempts)) < len(attempts) else "of two attempts"] += 1
        errors = collections.Counter(
            str((r.get("error") or {}).get("message", ""))[:80] for r in runs if r["state"] == "failed"
        )
        superseded = sum(
            path.read_text(errors="replace").count("worker.placement_superseded")
            for path in [root / "worker.log", *(h.data_dir / "head.log" for h in heads)]
        )
        rebuilt = [httpx.post(f"{h.url}/projections/rebuild", timeout=300).json().get("equal") for h in heads]
    finally:
        stop.set()
        for head in heads:
            if head.proc is not None and head.proc.poll() is None:
                head.proc.send_signal(signal.SIGCONT)
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        for head in heads:
            head.stop()
        nats.terminate()
    print_rows(
        f"leading head frozen {froze} times for {args.freeze:g} s (lease 1 s), {args.seconds:g} s of runs",
        [
            ("submits (by outcome)", ", ".join(f"{k}: {v}" for k, v in sorted(submitted.items()))),
            ("runs recorded", str(len(runs))),
            ("runs by state", ", ".join(f"{k}: {v}" for k, v in sorted(states.items()))),
            ("runs not ended 180 s after the last submit", str(len(open_runs))),
            ("failed runs' errors", "; ".join(f"{k} (x{v})" for k, v in errors.items()) or "-"),
            (
                "tasks with two successes in the log",
                ", ".join(f"{k}: {v}" for k, v in sorted(twice.items())) or "0",
            ),
            ("worker.placement_superseded lines", str(superseded)),
            ("read models rebuilt equal (a, b)", str(rebuilt)),
            ("data dir", str(root)),
        ],
    )
    if open_runs or states.get("failed") or not all(rebuilt):
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
