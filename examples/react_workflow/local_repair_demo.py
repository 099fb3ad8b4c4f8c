"""A ReAct agent that recovers from a bad decision, offline (scripted decisions, no LLM).

Step 1 the "LLM" asks for a tool that does not exist: the run does not fail, the agent sees a
repair observation naming the tools there are. Step 2 it calls the calculator; step 3 it answers.
Every decision and tool call is a task of one run (kind `react`), and the trace is in its history.

    python examples/react_workflow/local_repair_demo.py                # starts a local head
    MAZE_SERVER_URL=http://HEAD:8000 python examples/react_workflow/local_repair_demo.py
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from maze import MaClient, task
from maze.sdk.local_head import LocalHead


@task
def decide(prompt: str, history: list, tools: dict, step: int):
    """A scripted stand-in for an LLM: wrong first, then right."""
    if not history:
        return {"action": {"tool": "web_search", "args": {"query": prompt}}}  # no such tool
    last = history[-1]["observation"]
    if "repair" in last:  # the agent is told what was wrong, and which tools there are
        return {"action": {"tool": "calculator", "args": {"expression": "18 * 7"}}}
    return {"action": {"final": f"18 * 7 = {last['result']['value']}"}}


@task
def calculator(expression: str):
    """Evaluate an arithmetic expression (digits, + - * / and parentheses)."""
    if not set(expression) <= set("0123456789+-*/(). "):
        raise ValueError(f"not arithmetic: {expression!r}")
    return {"value": eval(expression)}  # only digits and operators get here


def main() -> None:
    url = os.environ.get("MAZE_SERVER_URL")
    head = None
    if url is None:
        head = LocalHead(Path(tempfile.mkdtemp(prefix="maze-react-demo-")) / "head", extra=["--cpus", "2"])
        head.start(min_nodes=1)
        url = head.url
    try:
        client = MaClient(url)
        react = client.create_react_workflow(llm_task=decide, tools=[calculator], max_steps=5)
        run_id = react.run_async("What is 18 * 7?")
        client.wait_run(run_id, timeout=120)
        trace = client.get_agent_trace(run_id)
        for step in trace["steps"]:
            decision = step["decision"]
            print(f"step {step['step']}: {decision['kind']} {json.dumps(decision['action'])}")
            if "repair" in step:
                print(f"  repair: {step['repair']}")
            for observation in step.get("observations", []):
                print(f"  observation: {json.dumps(observation['observation'])}")
        print(f"final ({trace['state']}): {trace['final']}")
    finally:
        if head is not None:
            head.stop()


if __name__ == "__main__":
    main()
