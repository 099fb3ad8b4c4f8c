"""Read-model queries used by the API. Each takes its own DuckDB cursor.

Per-run reads find the run row by its primary key, then filter its tasks and attempts on
`run_seq` (zone maps skip other runs' row groups: schema.py) and page tasks by `task_index`."""

from __future__ import annotations

import json
import re
from typing import Any

import duckdb
import msgspec

from maze.core.errors import NotFound, ValidationError
from maze.projections.db import rows
from maze.projections.rows import RunRow
from maze.projections.run_search import RunQuery, search_runs
from maze.projections.schema import TABLES

JSON_COLUMNS = {
    "error",
    "gpus",
    "resources",
    "inputs",
    "upstream",
    "outputs",
    "result",
    "progress",
    "result_summary",
}
# a run's snapshot: every column but the text a search looks in
RUN_COLUMNS = ", ".join(c for c in TABLES["runs"] if c != "names")
MAX_TASKS_PAGE = 10_000
RUN_SCOPE = "run_seq = ? AND run_id = ?"


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (json.loads(v) if k in JSON_COLUMNS and isinstance(v, str) else v) for k, v in row.items()}


def list_runs(
    cur: duckdb.DuckDBPyConnection, limit: int, offset: int, state: str | None
) -> list[dict[str, Any]]:
    """Runs, newest first (the older form of `search`)."""
    return search(cur, RunQuery.parse(limit=limit, offset=offset, state=state))[0]


def search(cur: duckdb.DuckDBPyConnection, query: RunQuery) -> tuple[list[dict[str, Any]], str | None]:
    """A page of runs matching `query` (run_search.py), and the next page's cursor, if any."""
    page, next_cursor = search_runs(cur, query)
    return [_decode(r) for r in page], next_cursor


RUN_ID_CHARS = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def match_run_ids(cur: duckdb.DuckDBPyConnection, prefix: str, limit: int) -> list[str]:
    """Run ids that are `prefix` or start with it (or with `run_` + it), newest first: just the
    run itself when one has exactly that id."""
    if not RUN_ID_CHARS.match(prefix):
        raise ValidationError("a run id (or its beginning) is 1-128 letters, digits, '_' or '-'")
    if not 1 <= limit <= 100:
        raise ValidationError("limit must be between 1 and 100")
    if find_run(cur, prefix) is not None:
        return [prefix]
    found = rows(
        cur,
        "SELECT run_id FROM runs WHERE starts_with(run_id, ?) OR starts_with(run_id, ?) "
        "ORDER BY created_at_ms DESC, run_id LIMIT ?",
        [prefix, f"run_{prefix}", limit],
    )
    return [str(r["run_id"]) for r in found]


def find_run(cur: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any] | None:
    """The run's snapshot (state, timing, counters, progress per task state, result summary), or
    None. A point read of the primary key's index (EXPLAIN: Index Scan, ~0.5 ms at 100,000 runs)."""
    found = rows(cur, f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", [run_id])
    return _decode(found[0]) if found else None


def run_from_row(row: RunRow) -> dict[str, Any]:
    """The same answer as `find_run`, from a row held in memory."""
    snapshot = msgspec.structs.asdict(row)
    del snapshot["names"]
    return _decode(snapshot)


def get_run(cur: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    run = find_run(cur, run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} not found", run_id=run_id)
    return run


def retried_by(cur: duckdb.DuckDBPyConnection, run_id: str) -> list[str]:
    """The runs that retry this one (the other way of their `retry_of`), oldest first."""
    found = rows(cur, "SELECT run_id FROM runs WHERE retry_of = ? ORDER BY created_at_ms, run_id", [run_id])
    return [r["run_id"] for r in found]


def get_tasks(
    cur: duckdb.DuckDBPyConnection, run_id: str, limit: int = 1000, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """One page of a run's tasks in submission order (`task_index` from `offset`), and how many
    tasks the run has recorded."""
    if not 1 <= limit <= MAX_TASKS_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_TASKS_PAGE}")
    if offset < 0:
        raise ValidationError("offset must not be negative")
    run = get_run(cur, run_id)
    page = rows(
        cur,
        f"SELECT * FROM tasks WHERE {RUN_SCOPE} AND task_index >= ? ORDER BY task_index LIMIT ?",
        [run["run_seq"], run_id, offset, limit],
    )
    return [_decode(r) for r in page], sum(run["progress"].values())


def get_task(cur: duckdb.DuckDBPyConnection, run_id: str, task_id: str) -> dict[str, Any]:
    run = get_run(cur, run_id)
    scope = [run["run_seq"], run_id, task_id]
    found = rows(cur, f"SELECT * FROM tasks WHERE {RUN_SCOPE} AND task_id = ?", scope)
    if not found:
        raise NotFound(f"task {task_id!r} not found in run {run_id!r}", run_id=run_id, task_id=task_id)
    task = _decode(found[0])
    attempts = rows(cur, f"SELECT * FROM attempts WHERE {RUN_SCOPE} AND task_id = ? ORDER BY attempt", scope)
    task["attempts"] = [_decode(a) for a in attempts]
    return task


def get_artifacts(cur: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    """The files the run's succeeded attempts registered, by task (submission order) then path."""
    run = get_run(cur, run_id)
    found = rows(
        cur,
        "SELECT f.task_id, f.attempt, f.path, f.sha256, f.size, f.node_id, f.at_ms "
        "FROM artifacts f JOIN attempts a USING (run_id, task_id, attempt) "
        "JOIN tasks t USING (run_id, task_id) "
        "WHERE f.run_seq = ? AND f.run_id = ? AND a.run_seq = f.run_seq AND t.run_seq = f.run_seq "
        "AND a.state = 'succeeded' ORDER BY t.task_index, f.path",
        [run["run_seq"], run_id],
    )
    for row in found:
        row["uri"] = f"maze://artifacts/sha256/{row['sha256']}"
    return found


def placements(cur: duckdb.DuckDBPyConnection, run_id: str) -> list[tuple[str, int, str]]:
    """(task, attempt, node) of every attempt of the run that was placed on a node."""
    run = get_run(cur, run_id)
    found = cur.execute(
        f"SELECT task_id, attempt, node_id FROM attempts WHERE {RUN_SCOPE} AND node_id IS NOT NULL",
        [run["run_seq"], run_id],
    ).fetchall()
    return [(str(t), int(a), str(n)) for t, a, n in found]


def list_nodes(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return [_decode(r) for r in rows(cur, "SELECT * FROM nodes ORDER BY node_id", [])]
