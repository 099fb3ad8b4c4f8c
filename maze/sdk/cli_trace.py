"""`maze runs trace <run_id>`: a ReAct run's agent trace, step by step (README, "ReAct agents")."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from maze.sdk.cli import RunIdArg, ServerUrl, Token, _call, _client, _run_id, console

SHOWN_CHARS = 300


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + f"… ({len(text)} characters)"


def runs_trace(
    run_id: str = RunIdArg,
    server_url: str = ServerUrl,
    token: str | None = Token,
    as_json: bool = typer.Option(False, "--json", help="The whole trace as JSON."),
) -> None:
    """A ReAct run's trace: each step's decision, tool calls, observations and repairs, then its
    final answer (or why it has none)."""
    client = _client(server_url, token)
    run_id = _run_id(client, run_id)
    trace = _call(client.get_agent_trace, run_id)
    if as_json:
        typer.echo(json.dumps(trace, ensure_ascii=False, default=repr))
        return
    console.print(
        f"[bold]{run_id}[/bold]  state={trace['state']}  steps={len(trace['steps'])}", highlight=False
    )
    table = Table()
    for column in ("step", "decision", "calls / repair", "observations"):
        table.add_column(column, overflow="fold")
    for step in trace["steps"]:
        decision = step.get("decision") or {}
        calls = step.get("tool_calls") or []
        did = "; ".join(f"{c['tool']}({_short(c['args'])})" for c in calls) or step.get("repair", "")
        table.add_row(
            str(step["step"]),
            decision.get("kind", "-"),
            did,
            "\n".join(_short(o.get("observation")) for o in step.get("observations") or []),
        )
    console.print(table)
    if trace.get("final") is not None:
        console.print(f"final: {_short(trace['final'])}", highlight=False, soft_wrap=True)
    elif trace.get("error"):
        console.print(f"error: {_short(trace['error'])}", highlight=False, soft_wrap=True)
