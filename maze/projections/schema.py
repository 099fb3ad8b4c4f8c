"""Read-model tables. JSON-valued columns are VARCHAR holding JSON text."""

from __future__ import annotations

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
    },
    "tasks": {
        "run_id": "VARCHAR",
        "task_id": "VARCHAR",
        "name": "VARCHAR",
        "func_name": "VARCHAR",
        "task_type": "VARCHAR",
        "state": "VARCHAR",
        "attempt": "BIGINT",
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
    "nodes": ("node_id",),
}

POSITION_DDL = "CREATE TABLE IF NOT EXISTS projection_position (stream VARCHAR PRIMARY KEY, seq BIGINT)"


def ddl() -> list[str]:
    out = [POSITION_DDL]
    for name, cols in TABLES.items():
        body = ", ".join(f"{col} {typ}" for col, typ in cols.items())
        out.append(f"CREATE TABLE IF NOT EXISTS {name} ({body}, PRIMARY KEY ({', '.join(KEYS[name])}))")
    return out
