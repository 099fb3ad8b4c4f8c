"""DuckDB access for the read models: bulk upserts (one transaction per batch, with the stream
positions), and loading one run's rows back into a fold model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import structlog

from maze.projections.fold import Row, RunModel, count_states
from maze.projections.rows import ArtifactRow, AttemptRow, RunRow, TaskRow
from maze.projections.schema import KEYS, SCHEMA_VERSION, TABLES, ddl

log = structlog.get_logger(__name__)
_json_encode = msgspec.json.Encoder().encode
MAX_ROW_BYTES = 1 << 30  # a row in a bulk file (read_json's limit per object is 16 MB by default)


CATALOG = "readmodels"  # the read-model file's name in its connection: see `cursor`
# rows per row group of the live file (DuckDB's default: 122,880). A rebuild's swap (rebuild.py)
# inserts every row again in one transaction: DuckDB writes each full row group to the file as it
# inserts, compressed on every core, and what is left of a table (less than a row group) into the
# write-ahead log, to compress it again at the checkpoint of the commit, on one. At 100,000 runs
# every table was under one default row group, and the swap took 0.75 s, against 0.55 s with this
# size (bench/history.py); queries are as fast.
ROW_GROUP_ROWS = 16_384


def open_db(
    path: Path | str, keys: bool = True, row_group_rows: int | None = ROW_GROUP_ROWS
) -> duckdb.DuckDBPyConnection:
    """Open (or create) the read models. A file written with another schema version is emptied:
    its tables are derived data, rebuilt from the event log from position 0. `keys=False`: a new
    file's tables without primary keys (schema.py `ddl`). The file is attached as CATALOG, with
    row groups of `row_group_rows` rows (None: DuckDB's default), a setting DuckDB keeps for the
    connection, not in the file; another cursor of the connection reads it through `cursor`."""
    # where DuckDB spills what does not fit in memory: beside the file, as a connection to the
    # file itself has it (an in-memory instance's default is `.tmp` in the working directory)
    spill: dict[str, Any] = {} if str(path) == ":memory:" else {"temp_directory": f"{path}.tmp"}
    conn = duckdb.connect(config=spill)
    size = f" (ROW_GROUP_SIZE {row_group_rows})" if row_group_rows else ""
    conn.execute(f"ATTACH {sql_text(path)} AS {CATALOG}{size}")
    conn.execute(f"USE {CATALOG}")
    tables = {
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()"
        ).fetchall()
    }
    version = None
    if "schema_version" in tables:
        found = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = found[0] if found else None
    if tables and version != SCHEMA_VERSION:
        log.warning(
            "projections.schema_changed_rebuilding", path=str(path), found=version, want=SCHEMA_VERSION
        )
        for table in [*TABLES, "projection_position", "schema_version"]:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    for stmt in ddl(keys):
        conn.execute(stmt)
    if conn.execute("SELECT count(*) FROM schema_version").fetchone() == (0,):
        conn.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION])
    return conn


def sql_text(path: Path | str) -> str:
    """A path as an SQL string literal (where DuckDB takes no parameter: ATTACH, a table function's
    file)."""
    return "'" + str(path).replace("'", "''") + "'"


def cursor(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of an `open_db` connection, for another thread. A DuckDB cursor is a connection of
    its own, which starts on the in-memory database, not on the one its parent `USE`s: this one
    reads and writes the read models."""
    cur = conn.cursor()
    cur.execute(f"USE {CATALOG}")
    return cur


def positions(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {s: int(q) for s, q in conn.execute("SELECT stream, seq FROM projection_position").fetchall()}


def upsert(conn: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Any], replace: bool = True) -> None:
    """Replace rows by primary key, in bulk: one parameter per column and unnest (executemany takes
    seconds for a few hundred rows). Each column travels as one JSON array that DuckDB parses
    (`from_json`): handing it a Python list costs ~1.5 µs a value to convert, a JSON text ~0.3 µs,
    which made this write 3x faster (bench/history.py: the rebuild). Rows are structs (rows.py)
    or, for nodes, dicts. `replace=False`: none of the rows' keys is in the table (which then
    needs no primary key)."""
    if not rows:
        return
    cols = list(TABLES[table])
    if isinstance(rows[0], dict):
        columns = [[r[c] for r in rows] for c in cols]
    else:
        columns = [list(c) for c in zip(*(msgspec.structs.astuple(r) for r in rows), strict=True)]
    selects = ", ".join(f"unnest(from_json(?, '[\"{TABLES[table][c]}\"]')) AS {c}" for c in cols)
    conn.execute(
        f"INSERT {'OR REPLACE ' if replace else ''}INTO {table} ({', '.join(cols)}) SELECT {selects}",
        [_json_encode(column).decode() for column in columns],
    )


def load_json_rows(conn: duckdb.DuckDBPyConnection, table: str, path: Path, fresh: bool = False) -> None:
    """Replace rows by primary key from a file holding one JSON array of row objects (what
    `msgspec.json` makes of a list of row structs): the bulk path of a rebuild. DuckDB's JSON reader
    parses it in parallel, ~3x faster than the same rows handed over as one JSON text per column
    (`upsert`), and the same conversions of each value (bench/history.py: the rebuild). The rows
    with the same keys are deleted, then all inserted: the table needs no primary key (a shard's
    has none); `fresh`: the caller knows none of the keys is in the table yet."""
    cols = TABLES[table]
    types = ", ".join(f"'{c}': '{t}'" for c, t in cols.items())
    names = ", ".join(cols)
    rows = f"read_json({sql_text(path)}, format = 'array', columns = {{{types}}}, maximum_object_size = {MAX_ROW_BYTES})"
    if not fresh:
        same = " AND ".join(f"{table}.{key} = new.{key}" for key in KEYS[table])
        conn.execute(
            f"DELETE FROM {table} USING (SELECT {', '.join(KEYS[table])} FROM {rows}) AS new WHERE {same}"
        )
    conn.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {rows}")


def write_positions(conn: duckdb.DuckDBPyConnection, new_positions: dict[str, int]) -> None:
    for stream, seq in new_positions.items():
        conn.execute("DELETE FROM projection_position WHERE stream = ?", [stream])
        conn.execute("INSERT INTO projection_position VALUES (?, ?)", [stream, seq])


def write_batch(
    conn: duckdb.DuckDBPyConnection, models: list[RunModel], nodes: list[Row], new_positions: dict[str, int]
) -> None:
    conn.execute("BEGIN")
    try:
        upsert(conn, "runs", [m.run for m in models])
        upsert(conn, "tasks", [m.tasks[t] for m in models for t in m.dirty_tasks])
        upsert(conn, "attempts", [m.attempts[a] for m in models for a in m.dirty_attempts])
        upsert(conn, "artifacts", [m.artifacts[a] for m in models for a in m.dirty_artifacts])
        upsert(conn, "nodes", nodes)
        write_positions(conn, new_positions)
        conn.execute("COMMIT")
    except Exception:
        roll_back(conn)
        raise
    for m in models:
        m.dirty_tasks.clear()
        m.dirty_attempts.clear()
        m.dirty_artifacts.clear()


def roll_back(conn: duckdb.DuckDBPyConnection) -> None:
    """End a failed transaction, unless its failed COMMIT already did (DuckDB ends a transaction
    whose commit fails): a ROLLBACK then raises "no transaction is active", which would hide why
    the commit failed."""
    try:
        conn.execute("ROLLBACK")
    except duckdb.TransactionException:
        pass


def rows(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[Row]:
    result = cur.execute(sql, params)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


_rows = rows  # the old name, for callers outside this package


def run_row(cur: duckdb.DuckDBPyConnection, run_id: str) -> Row | None:
    found = rows(cur, "SELECT * FROM runs WHERE run_id = ?", [run_id])
    return found[0] if found else None


def existing_runs(conn: duckdb.DuckDBPyConnection, run_ids: list[str]) -> set[str]:
    """Which of these runs the read models hold: one query for a batch (a point lookup per new
    run cost ~1 ms each, and made creating runs the projector's bottleneck)."""
    if not run_ids:
        return set()
    found = conn.execute(
        "SELECT r.run_id FROM (SELECT unnest(?::VARCHAR[]) AS run_id) q JOIN runs r USING (run_id)", [run_ids]
    ).fetchall()
    return {row[0] for row in found}


def load_run(conn: duckdb.DuckDBPyConnection, run_id: str) -> RunModel | None:
    """A run's rows back from DuckDB (a run the cache let go of). Reads only its row groups."""
    run = run_row(conn, run_id)
    if run is None:
        return None
    model = RunModel(run=msgspec.convert(run, RunRow))
    where = "WHERE run_seq = ? AND run_id = ?"
    params = [run["run_seq"], run_id]
    for row in rows(conn, f"SELECT * FROM tasks {where}", params):
        model.tasks[row["task_id"]] = msgspec.convert(row, TaskRow)
    for row in rows(conn, f"SELECT * FROM attempts {where}", params):
        model.attempts[(row["task_id"], row["attempt"])] = msgspec.convert(row, AttemptRow)
    for row in rows(conn, f"SELECT * FROM artifacts {where}", params):
        model.artifacts[(row["task_id"], row["attempt"], row["path"])] = msgspec.convert(row, ArtifactRow)
    model.counts = count_states(model.tasks)
    return model


def load_node(conn: duckdb.DuckDBPyConnection, node_id: str) -> Row | None:
    found = rows(conn, "SELECT * FROM nodes WHERE node_id = ?", [node_id])
    return found[0] if found else None


def table_rows(conn: duckdb.DuckDBPyConnection, table: str) -> list[tuple[Any, ...]]:
    cols = ", ".join(TABLES[table])
    keys = ", ".join(KEYS[table])
    return conn.execute(f"SELECT {cols} FROM {table} ORDER BY {keys}").fetchall()
