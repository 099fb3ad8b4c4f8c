"""ReAct runs: the overhead of one step (a decision task, the tool task it asks for, and the
controller's bookkeeping between them) with a no-op decision and a no-op tool. Each run makes
--steps tool calls, then a final answer; a step's cost is the run's duration (its `run.created` to
its `run.finished`, as recorded) over its steps, p50 over --runs. It also splits a step, from the
recorded times: decision task succeeded -> `agent.decision` recorded (the controller's reading and
the tool's append), and tool task succeeded -> next decision appended.

    python bench/react.py [--steps 50] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from report import print_rows

from maze import MaClient, task
from maze.sdk.local_head import LocalHead


@task
def noop_decide(prompt: str, history: list, tools: dict, step: int):
    if step <= int(prompt):
        return {"action": {"tool": "noop_tool", "args": {"i": step}}}
    return {"action": {"final": step}}


@task
def noop_tool(i: int = 0):
    return {"i": i}


def one_run(client: MaClient, steps: int) -> tuple[float, list[float], list[float]]:
    react = client.create_react_workflow(llm_task=noop_decide, tools=[noop_tool], max_steps=steps + 1)
    run_id = react.run_async(str(steps))
    run = client.wait_run(run_id, timeout=600)
    assert run["state"] == "succeeded", run
    events = client.get_run_events(run_id)
    ended = {e["task_id"]: e["at_ms"] for e in events if e["type"] == "attempt.succeeded"}
    decided = [e["at_ms"] - ended[e["task_id"]] for e in events if e["type"] == "agent.decision"]
    observed = [
        e["at_ms"] - max(ended[o["task_id"]] for o in e["observations"])
        for e in events
        if e["type"] == "agent.observation"
    ]
    per_step = (run["finished_at_ms"] - run["created_at_ms"]) / (steps + 1)
    return per_step, decided, observed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="maze-bench-react-"))
    head = LocalHead(root / "head", extra=["--cpus", "2"])
    head.start(min_nodes=1)
    per_step: list[float] = []
    decided: list[float] = []
    observed: list[float] = []
    try:
        client = MaClient(head.url)
        one_run(client, 5)  # warm up: code in the worker's cache, connections open
        for _ in range(args.runs):
            step, d, o = one_run(client, args.steps)
            per_step.append(step)
            decided += d
            observed += o
    finally:
        head.stop()
    print_rows(
        f"ReAct runs: one step = no-op decision task + no-op tool task ({args.runs} runs x {args.steps} steps)",
        [
            ("per step (run duration / steps), p50 of runs", f"{statistics.median(per_step):.1f} ms"),
            ("per step, best run", f"{min(per_step):.1f} ms"),
            ("decision succeeded -> agent.decision recorded, p50", f"{statistics.median(decided):.1f} ms"),
            ("tool succeeded -> next decision appended, p50", f"{statistics.median(observed):.1f} ms"),
        ],
    )


if __name__ == "__main__":
    main()
