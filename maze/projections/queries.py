"""Read-model queries used by the API. Each takes its own DuckDB cursor."""

from __future__ import annotations

import json
from typing import Any

import duckdb

from maze.core.errors import NotFound, ValidationError
from maze.projections.db import _rows

JSON_COLUMNS = {"error", "gpus", "resources", "inputs", "upstream", "outputs", "result"}
RUN_STATES = ("created", "running", "succeeded", "failed", "cancelled", "timed_out")


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (json.loads(v) if k in JSON_COLUMNS and isinstance(v, str) else v) for k, v in row.items()}


def list_runs(
    cur: duckdb.DuckDBPyConnection, limit: int, offset: int, state: str | None
) -> list[dict[str, Any]]:
    if not 1 <= limit <= 1000:
        raise ValidationError("limit must be between 1 and 1000")
    if offset < 0:
        raise ValidationError("offset must not be negative")
    if state is not None and state not in RUN_STATES:
        raise ValidationError(f"unknown state {state!r}; one of {list(RUN_STATES)}")
    sql = "SELECT * FROM runs"
    params: list[Any] = []
    if state:
        sql += " WHERE state = ?"
        params.append(state)
    sql += " ORDER BY created_at_ms DESC, run_id LIMIT ? OFFSET ?"
    return [_decode(r) for r in _rows(cur, sql, [*params, limit, offset])]


def get_run(cur: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    rows = _rows(cur, "SELECT * FROM runs WHERE run_id = ?", [run_id])
    if not rows:
        raise NotFound(f"run {run_id!r} not found", run_id=run_id)
    run = _decode(rows[0])
    counts = _rows(cur, "SELECT state, count(*) AS n FROM tasks WHERE run_id = ? GROUP BY state", [run_id])
    run["progress"] = {r["state"]: r["n"] for r in counts}
    return run


def get_tasks(cur: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    get_run(cur, run_id)
    rows = _rows(
        cur, "SELECT * FROM tasks WHERE run_id = ? ORDER BY queued_at_ms NULLS LAST, task_id", [run_id]
    )
    return [_decode(r) for r in rows]


def get_task(cur: duckdb.DuckDBPyConnection, run_id: str, task_id: str) -> dict[str, Any]:
    get_run(cur, run_id)
    rows = _rows(cur, "SELECT * FROM tasks WHERE run_id = ? AND task_id = ?", [run_id, task_id])
    if not rows:
        raise NotFound(f"task {task_id!r} not found in run {run_id!r}", run_id=run_id, task_id=task_id)
    task = _decode(rows[0])
    attempts = _rows(
        cur, "SELECT * FROM attempts WHERE run_id = ? AND task_id = ? ORDER BY attempt", [run_id, task_id]
    )
    task["attempts"] = [_decode(a) for a in attempts]
    return task


def list_nodes(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return [_decode(r) for r in _rows(cur, "SELECT * FROM nodes ORDER BY node_id", [])]
