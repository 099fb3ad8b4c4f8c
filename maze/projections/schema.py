"""Read-model tables. JSON-valued columns are VARCHAR holding JSON text.

Layout (measured, bench/projector.py and README "Projections"): DuckDB does not use a composite
primary key for `WHERE run_id = ?`, and an extra index on `run_id` only serves small runs (a 100,000-
task run is above DuckDB's index-scan threshold and is scanned). So every task and attempt row
carries `run_seq`, the stream sequence of its run's `run.created`: a run's task rows are inserted
together and updated in place, so they sit in one or two row groups, and DuckDB's min/max zone maps
on `run_seq` skip every other row group. Per-run reads filter on `run_seq` (and `run_id`); run-level
counters live in the run row, so `GET /runs/{id}` reads one row.
"""

from __future__ import annotations

# Bump when a table changes: read models are derived data, so an older file is dropped and rebuilt
# from the event log at start instead of migrated.
# 3: tasks.failures; 4: runs.names, runs.result_summary; 5: runs.retry_of, runs.timeout_seconds;
# 6: artifacts; 7: runs.max_tasks (dynamic runs); 8: JSON values (results, inputs, errors…)
# written compact, UTF-8, by msgspec
SCHEMA_VERSION = 8

TABLES: dict[str, dict[str, str]] = {
    "runs": {
        "run_id": "VARCHAR",
        "workflow_id": "VARCHAR",
        "kind": "VARCHAR",
        "state": "VARCHAR",
        "created_at_ms": "BIGINT",
        "started_at_ms": "BIGINT",
        "finished_at_ms": "BIGINT",
        "task_count": "BIGINT",
        "tasks_succeeded": "BIGINT",
        "tasks_failed": "BIGINT",
        "error": "VARCHAR",
        "failed_task_id": "VARCHAR",
        "run_seq": "BIGINT",
        "progress": "VARCHAR",  # {task state: number of tasks in it}, kept by the fold
        "names": "VARCHAR",  # what a text search looks in (run_summary.py); never shown
        "result_summary": "VARCHAR",  # the final tasks' outputs, briefly, once the run ends
        "retry_of": "VARCHAR",  # the run this one retries (POST /runs/{id}/retry)
        "timeout_seconds": "DOUBLE",  # the run-level timeout it was created with
        "max_tasks": "BIGINT",  # a dynamic run's bound on its tasks (NULL: not dynamic)
    },
    "tasks": {
        "run_id": "VARCHAR",
        "task_id": "VARCHAR",
        "name": "VARCHAR",
        "func_name": "VARCHAR",
        "task_type": "VARCHAR",
        "state": "VARCHAR",
        "attempt": "BIGINT",
        "failures": "BIGINT",  # attempts that failed (rejected and lost-before-start ones are not)
        "node_id": "VARCHAR",
        "node_ip": "VARCHAR",
        "gpus": "VARCHAR",
        "resources": "VARCHAR",
        "inputs": "VARCHAR",
        "upstream": "VARCHAR",
        "outputs": "VARCHAR",
        "result": "VARCHAR",
        "error": "VARCHAR",
        "placement_reason": "VARCHAR",
        "queued_at_ms": "BIGINT",
        "started_at_ms": "BIGINT",
        "finished_at_ms": "BIGINT",
        "run_seq": "BIGINT",
        "task_index": "BIGINT",  # submission order, 0 .. task_count - 1
    },
    "attempts": {
        "run_id": "VARCHAR",
        "task_id": "VARCHAR",
        "attempt": "BIGINT",
        "node_id": "VARCHAR",
        "node_ip": "VARCHAR",
        "pid": "BIGINT",
        "state": "VARCHAR",
        "gpus": "VARCHAR",
        "reason": "VARCHAR",
        "error": "VARCHAR",
        "placed_at_ms": "BIGINT",
        "started_at_ms": "BIGINT",
        "finished_at_ms": "BIGINT",
        "duration_ms": "DOUBLE",
        "run_seq": "BIGINT",
    },
    "artifacts": {  # the files attempts registered (artifact.registered)
        "run_id": "VARCHAR",
        "task_id": "VARCHAR",
        "attempt": "BIGINT",
        "path": "VARCHAR",
        "sha256": "VARCHAR",
        "size": "BIGINT",
        "node_id": "VARCHAR",
        "at_ms": "BIGINT",
        "run_seq": "BIGINT",
    },
    "nodes": {
        "node_id": "VARCHAR",
        "session": "VARCHAR",
        "hostname": "VARCHAR",
        "ip": "VARCHAR",
        "state": "VARCHAR",
        "cpus": "DOUBLE",
        "memory_mb": "BIGINT",
        "gpus": "VARCHAR",
        "joined_at_ms": "BIGINT",
        "left_at_ms": "BIGINT",
    },
}

KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id",),
    "tasks": ("run_id", "task_id"),
    "attempts": ("run_id", "task_id", "attempt"),
    "artifacts": ("run_id", "task_id", "attempt", "path"),
    "nodes": ("node_id",),
}

POSITION_DDL = "CREATE TABLE IF NOT EXISTS projection_position (stream VARCHAR PRIMARY KEY, seq BIGINT)"
VERSION_DDL = "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT)"


def ddl(keys: bool = True) -> list[str]:
    """The tables. `keys=False`: without their primary keys, for a file that is only ever appended
    to and read whole (a rebuild's shard, maze/projections/shards.py: maintaining the keys' indexes
    took a third of its fold)."""
    out = [POSITION_DDL, VERSION_DDL]
    for name, cols in TABLES.items():
        body = ", ".join(f"{col} {typ}" for col, typ in cols.items())
        key = f", PRIMARY KEY ({', '.join(KEYS[name])})" if keys else ""
        out.append(f"CREATE TABLE IF NOT EXISTS {name} ({body}{key})")
    return out
