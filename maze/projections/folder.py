"""The fold of events into read-model rows, over a DuckDB file: what the live projector
(projector.py) and a rebuild's shard processes (bulk.py, shard_main.py) share. Nothing here reads
NATS: a shard's process imports no more than it folds with."""

from __future__ import annotations

from collections import OrderedDict

import duckdb
import msgspec
import structlog

from maze.events import subjects
from maze.events.catalog import Event, fenced
from maze.events.nodes import NodeJoined, NodeLeft, NodeLost
from maze.events.runs import LeaderElected, RunCreated
from maze.projections import db
from maze.projections.fold import Row, RunModel, create_run, fold_node_event, fold_run_event, summarize
from maze.projections.rows import RunRow

log = structlog.get_logger(__name__)

STREAMS = (subjects.RUNS_STREAM, subjects.NODES_STREAM)
NODE_EVENTS = (NodeJoined, NodeLeft, NodeLost)
EPOCH_KEY = "_leader_epoch"  # kept beside the stream positions: the latest leadership folded
# the same for the nodes stream, which records each leadership again to judge node decisions by
# (the order of the two streams differs from fold to fold; each stream's own does not)
NODES_EPOCH_KEY = "_leader_epoch_nodes"
EPOCH_KEYS = {subjects.RUNS_STREAM: EPOCH_KEY, subjects.NODES_STREAM: NODES_EPOCH_KEY}
FINISHED_ROWS = 200_000  # task + attempt rows of finished runs kept in memory


class Folder:
    """Folds decoded events into models, loading a run's rows from DuckDB when the cache has let
    it go. Shared by the live projector and by rebuilds.

    Active runs stay cached whatever their size (each event of theirs would otherwise reload the
    run); finished runs are kept, most recent first, only up to `finished_rows` rows.

    `run_rows` holds a committed copy of each cached run's row, for `GET /runs/{id}` to answer
    from memory: DuckDB's checkpoints (every ~16 MB of WAL, every few seconds under load) hold
    every reader for ~100 ms, and a run's status is what clients poll."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, finished_rows: int = FINISHED_ROWS) -> None:
        self.conn = conn
        self.cache: OrderedDict[str, RunModel] = OrderedDict()
        self.run_rows: dict[str, RunRow] = {}
        self.finished_rows = finished_rows
        self.positions = db.positions(conn)
        # rows of each finished run in the cache, and their sum: a trim costs what it evicts, not
        # a walk of the whole cache per batch (2.2 s of a 100,000-run rebuild, bench/history.py)
        self._finished_sizes: dict[str, int] = {}
        self._finished_total = 0

    def fold(
        self, batch: list[tuple[str, int, list[Event]]]
    ) -> tuple[list[RunModel], list[Row], dict[str, int]]:
        touched: dict[str, RunModel] = {}
        nodes: dict[str, Row | None] = {}
        new_positions: dict[str, int] = {}
        # each stream's position before the batch (the positions move only when it is committed)
        applied = {stream: self.positions.get(stream, 0) for stream in STREAMS}
        cache = self.cache
        created = [
            e.run_id
            for stream, seq, events in batch
            if seq > applied.get(stream, 0)
            for e in events
            if type(e) is RunCreated and e.run_id not in cache
        ]
        stored = self._stored_runs(created)  # usually none: a run.created is a run's first
        epochs = {key: self.positions.get(key, 0) for key in EPOCH_KEYS.values()}
        for stream, seq, events in batch:
            if seq <= applied.get(stream, 0):
                continue  # already applied (a replay after a crash)
            new_positions[stream] = seq
            key = EPOCH_KEYS.get(stream, EPOCH_KEY)
            epoch = epochs[key]
            for event in events:
                if isinstance(event, LeaderElected):
                    if event.epoch > epoch:  # kept with the positions, in the same transaction
                        epoch = epochs[key] = new_positions[key] = event.epoch
                    continue
                if epoch and fenced(event, epoch):  # a deposed leader's late decision: as the controller does
                    continue
                if isinstance(event, NODE_EVENTS):
                    current = (
                        nodes[event.node_id] if event.node_id in nodes else self._load_node(event.node_id)
                    )
                    nodes[event.node_id] = fold_node_event(current, event)
                    continue
                run_id: str = event.run_id
                model = touched.get(run_id) or cache.get(run_id)
                if type(event) is RunCreated:
                    if model is None and run_id in stored:
                        model = self._load_run(run_id)
                    if model is None:
                        model = create_run(event, seq)
                else:
                    if model is None:
                        model = self._load_run(run_id)
                    if model is None:
                        log.warning("projector.event_for_unknown_run", run_id=run_id, seq=seq)
                        continue
                    fold_run_event(model, event)
                touched[run_id] = model
        for model in touched.values():
            summarize(model)
        return list(touched.values()), [n for n in nodes.values() if n is not None], new_positions

    # where a run or node not in the cache is looked for (a rebuild's BulkFolder knows without asking)
    def _stored_runs(self, run_ids: list[str]) -> set[str]:
        return db.existing_runs(self.conn, run_ids)

    def _load_run(self, run_id: str) -> RunModel | None:
        return db.load_run(self.conn, run_id)

    def _load_node(self, node_id: str) -> Row | None:
        return db.load_node(self.conn, node_id)

    def commit(self, models: list[RunModel], nodes: list[Row], new_positions: dict[str, int]) -> None:
        db.write_batch(self.conn, models, nodes, new_positions)
        for model in models:
            run_id = model.run.run_id
            self.cache[run_id] = model
            self.cache.move_to_end(run_id)
            # before the positions move: a reader that waited for them must find these rows
            self.run_rows[run_id] = msgspec.structs.replace(model.run)
            self._finished_total -= self._finished_sizes.pop(run_id, 0)
            if model.finished:
                self._finished_sizes[run_id] = model.size
                self._finished_total += model.size
        self.positions.update(new_positions)
        self._trim()

    def _trim(self) -> None:
        """Keep the most recently touched finished runs whose rows fit in `finished_rows` (the
        oldest go first; active runs always stay)."""
        if self._finished_total <= self.finished_rows:
            return
        victims = []
        total = self._finished_total
        for run_id in self.cache:  # oldest first, until the rest fits
            size = self._finished_sizes.get(run_id)
            if size is None:
                continue  # active
            victims.append(run_id)
            total -= size
            if total <= self.finished_rows:
                break
        for run_id in victims:
            del self.cache[run_id]
            self.run_rows.pop(run_id, None)
            self._finished_total -= self._finished_sizes.pop(run_id)

    def forget(self) -> None:
        """Let every run go (the tables under them were replaced): each is read again from DuckDB."""
        self.cache.clear()
        self.run_rows.clear()
        self._finished_sizes.clear()
        self._finished_total = 0
