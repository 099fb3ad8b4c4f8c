"""Leader failover time: two heads on one NATS server (fsync always), a worker, a run in progress;
kill -9 the leading head and time (a) until the other one decides and (b) until its first decision
lands in the log (the next task of the run placed with its epoch). Median of --rounds, the heads
swapping roles each round.

    python bench/failover.py [--rounds 5] [--lease 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from local_nats import start_nats
from report import print_rows

from maze import MaClient, task
from maze.sdk.local_head import LocalHead


@task
def link(x: int = 0):
    import time as _t

    _t.sleep(0.2)
    return {"x": x + 1}


def leader_view(url: str) -> dict[str, object]:
    try:
        view: dict[str, object] = httpx.get(f"{url}/cluster/resources", timeout=2).json()["leader"]
        return view
    except httpx.HTTPError:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lease", type=float, default=5.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="maze-bench-failover-"))
    nats, url = start_nats(root)
    extra = [
        "--nats",
        url,
        "--no-local-worker",
        "--lease-seconds",
        str(args.lease),
        "--heartbeat-interval",
        "0.5",
    ]
    heads = [LocalHead(root / name, extra=extra) for name in ("a", "b")]
    worker = None
    took_over: list[float] = []
    first_decision: list[float] = []
    try:
        heads[0].start()
        while not leader_view(heads[0].url).get("this_head"):
            time.sleep(0.05)
        heads[1].start()
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "maze",
                "start",
                "--worker",
                "--addr",
                f"127.0.0.1:{heads[0].port}",
                "--cpus",
                "2",
                "--agent",
                "--heartbeat-interval",
                "0.5",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(3)
        leader, standby = heads
        for _ in range(args.rounds):
            client = MaClient(standby.url)
            wf = client.create_workflow()
            t = wf.add_task(link, inputs={"x": 0})
            for _ in range(40):
                t = wf.add_task(link, inputs={"x": t.outputs["x"]})
            run_id = wf.run()
            time.sleep(1.0)
            old_epoch = int(leader_view(standby.url).get("epoch") or 0)  # type: ignore[call-overload]
            assert leader.proc is not None
            killed_ms = time.time() * 1000
            killed = time.monotonic()
            os.kill(leader.proc.pid, signal.SIGKILL)
            leader.proc.wait()
            while not leader_view(standby.url).get("this_head"):
                time.sleep(0.01)
            took_over.append(time.monotonic() - killed)
            placed = None
            while placed is None:
                for event in client.get_run_events(run_id):
                    if event["type"] == "attempt.placed" and event.get("epoch", 0) > old_epoch:
                        placed = event["at_ms"]
                        break
                else:
                    time.sleep(0.05)
            first_decision.append((placed - killed_ms) / 1000)
            for sock_port in (leader.port,):  # its API port is free again before it restarts
                with socket.socket() as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    while sock.connect_ex(("127.0.0.1", sock_port)) == 0:
                        time.sleep(0.05)
            leader.start()  # back as the standby
            leader, standby = standby, leader
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        for head in heads:
            head.stop()
        nats.terminate()
    print_rows(
        f"head failover, lease {args.lease:g} s, {args.rounds} rounds (median / max)",
        [
            (
                "kill -9 of the leader -> the standby decides",
                f"{statistics.median(took_over):.2f} / {max(took_over):.2f} s",
            ),
            (
                "kill -9 -> its first decision in the log",
                f"{statistics.median(first_decision):.2f} / {max(first_decision):.2f} s",
            ),
        ],
    )


if __name__ == "__main__":
    main()
