"""The README's quick-start workflow, runnable with `maze demo`."""

from __future__ import annotations

from typing import Any

from maze.sdk.client import MaClient
from maze.sdk.task import task


@task(resources={"cpu": 1, "cpu_mem": 128, "gpu": 0, "gpu_mem": 0})
def greet(text: str = "") -> dict[str, str]:
    return {"result": f"Hello {text}"}


@task(resources={"cpu": 1, "cpu_mem": 128, "gpu": 0, "gpu_mem": 0})
def uppercase(result: str = "") -> dict[str, str]:
    return {"upper": result.upper()}


def run_demo(server_url: str) -> dict[str, Any]:
    client = MaClient(server_url)
    workflow = client.create_workflow()
    greeting = workflow.add_task(greet, inputs={"text": "Maze"})
    workflow.add_task(uppercase, inputs={"result": greeting.outputs["result"]})
    run_id = workflow.run()
    summary = workflow.show_results(run_id)
    summary["run_id"] = run_id
    return summary
