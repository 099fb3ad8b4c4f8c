"""Folding a whole log into a fresh read-model file (a rebuild): the live projector's fold, written
in bulk.

Nothing reads the file until the rebuild is done, so rows need not be written batch by batch: the
runs folded are kept in memory and written every `flush_rows` rows as one JSON file per table that
DuckDB loads in a thread of its own (its reader releases the GIL: the load overlaps the folding):
rows of a run written before are deleted by key and inserted again, so the file's tables need no
primary key (a shard's have none, shards.py). The fold itself is `Folder.fold`, unchanged:
only where rows go and where an uncached run is looked for differ.

A run the cache let go of was written (only written runs are let go), so the file holds it exactly
when `written` names it: no query asks DuckDB whether a new run exists. Nodes are few: all of them
stay in memory and are written at the end, with the stream positions.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import duckdb
import msgspec

from maze.core.errors import Conflict
from maze.projections import db
from maze.projections.fold import Row, RunModel
from maze.projections.folder import FINISHED_ROWS, Folder

FLUSH_ROWS = 50_000  # rows written per load (a load costs ~5 µs a row, whatever its size past this)
_encode = msgspec.json.Encoder().encode


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a rebuild allocates millions of objects that live on
    (rows, cached runs): its full collections walked them all, again and again, and took half of a
    100,000-run replay (bench/history.py). Folding makes no reference cycles; what other threads
    make meanwhile is collected when it is back on."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class BulkFolder(Folder):
    """A Folder for a file that starts empty and that nothing reads until `finish` returns."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        finished_rows: int = FINISHED_ROWS,
        flush_rows: int = FLUSH_ROWS,
    ) -> None:
        super().__init__(conn, finished_rows)
        if self.positions or conn.execute("SELECT count(*) FROM runs").fetchone() != (0,):
            raise Conflict("a bulk fold needs a fresh read-model file")
        self.flush_rows = flush_rows
        self.written: set[str] = set()  # runs with rows in the file
        self.unwritten: dict[str, RunModel] = {}  # runs folded since the last flush
        self._unwritten_rows = 0
        self.nodes: dict[str, Row] = {}
        path = conn.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()")
        where = (path.fetchone() or (None,))[0]
        self._scratch = Path(tempfile.mkdtemp(prefix="bulk-", dir=Path(where).parent if where else None))
        self._writer = db.cursor(conn)  # the loading thread's own connection
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="bulk-load")
        self._loading: Future[None] | None = None
        self._loading_runs: list[RunModel] = []
        self._files = 0

    # the fold asks these for what is not in its cache
    def _stored_runs(self, run_ids: list[str]) -> set[str]:
        return {run_id for run_id in run_ids if run_id in self.written}

    def _load_run(self, run_id: str) -> RunModel | None:
        return db.load_run(self.conn, run_id) if run_id in self.written else None

    def _load_node(self, node_id: str) -> Row | None:
        return self.nodes.get(node_id)

    def commit(self, models: list[RunModel], nodes: list[Row], new_positions: dict[str, int]) -> None:
        """Keep what a batch folded (nothing is written until `flush_rows` rows have gathered)."""
        for model in models:
            run_id = model.run.run_id
            self.cache[run_id] = model
            self.cache.move_to_end(run_id)
            self.unwritten[run_id] = model
            # a run is let go of only once written: until then it does not count as finished
            self._finished_total -= self._finished_sizes.pop(run_id, 0)
            self._unwritten_rows += 1 + len(model.dirty_tasks) + len(model.dirty_attempts)
        for node in nodes:
            self.nodes[node["node_id"]] = node
        self.positions.update(new_positions)
        self._settle(wait=False)
        if self._unwritten_rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Write the runs folded since the last flush: each table's rows encoded now (the rows
        change as folding goes on), loaded by the loading thread after the load before."""
        self._settle(wait=True)
        models = list(self.unwritten.values())
        self.unwritten.clear()
        self._unwritten_rows = 0
        if not models:
            return
        tables = {
            "runs": [m.run for m in models],
            "tasks": [m.tasks[t] for m in models for t in m.dirty_tasks],
            "attempts": [m.attempts[a] for m in models for a in m.dirty_attempts],
            "artifacts": [m.artifacts[a] for m in models for a in m.dirty_artifacts],
        }
        for m in models:
            m.dirty_tasks.clear()
            m.dirty_attempts.clear()
            m.dirty_artifacts.clear()
        files = []
        for table, rows in tables.items():
            if rows:
                self._files += 1
                path = self._scratch / f"{self._files}-{table}.json"
                path.write_bytes(_encode(rows))
                files.append((table, path))
        # a run written before and folded since has rows to replace; most flushes only add
        fresh = not any(m.run.run_id in self.written for m in models)
        self._loading = self._loader.submit(self._load, files, fresh)
        self._loading_runs = models

    def _load(self, files: list[tuple[str, Path]], fresh: bool) -> None:
        cur = self._writer
        cur.execute("BEGIN")
        try:
            for table, path in files:
                db.load_json_rows(cur, table, path, fresh)
            cur.execute("COMMIT")
        except Exception:
            db.roll_back(cur)
            raise
        finally:
            for _, path in files:
                path.unlink(missing_ok=True)

    def _settle(self, wait: bool) -> None:
        """Once a load is done, its runs are in the file: finished ones may be let go of (unless
        folded again since, and not yet written again)."""
        if self._loading is None or (not wait and not self._loading.done()):
            return
        loading, self._loading = self._loading, None
        loading.result()  # a failed load fails the rebuild
        for model in self._loading_runs:
            run_id = model.run.run_id
            self.written.add(run_id)
            if model.finished and run_id not in self.unwritten and run_id in self.cache:
                self._finished_total -= self._finished_sizes.pop(run_id, 0)
                self._finished_sizes[run_id] = model.size
                self._finished_total += model.size
        self._loading_runs = []
        self._trim()

    def finish(self) -> None:
        """Write everything left, the nodes and the stream positions; the file is then complete."""
        try:
            self.flush()
            self._settle(wait=True)
            self.conn.execute("BEGIN")
            try:
                db.upsert(self.conn, "nodes", list(self.nodes.values()), replace=False)  # written once
                db.write_positions(self.conn, self.positions)
                self.conn.execute("COMMIT")
            except Exception:
                db.roll_back(self.conn)
                raise
        finally:
            self.close()

    def close(self) -> None:
        """Stop the loading thread and remove the scratch files (again after `finish`: harmless)."""
        self._loader.shutdown(wait=True)
        self._writer.close()
        shutil.rmtree(self._scratch, ignore_errors=True)
