"""A rebuild's shard process (shards.py starts it: `python -m maze.projections.shard_main FD PID`):
told its job (the file to fold into) by its first message, it folds the batches it is handed into
a read-model file of its own. It imports only what it folds with (no asyncio, no NATS client): a
shard's start-up is on a rebuild's critical path, unless it was started ahead of its rebuild
(shards.py `ShardPool`), to wait for its job.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from maze.core.logs import configure_logging
from maze.core.procs import die_with
from maze.events.codec import decode_events
from maze.projections import db
from maze.projections.bulk import BulkFolder
from maze.projections.folder import FINISHED_ROWS

Item = tuple[str, int, str, bytes]  # stream, sequence, subject, payload: a message as a shard gets it


class Job(msgspec.Struct, frozen=True):
    """A shard's first message: the file it folds into, and the finished runs' rows it keeps in
    memory (its share of FINISHED_ROWS)."""

    path: str
    finished_rows: int = FINISHED_ROWS


_encode = msgspec.msgpack.Encoder().encode
_decode_items = msgspec.msgpack.Decoder(list[Item]).decode
_decode_job = msgspec.msgpack.Decoder(Job).decode


def shard_main(pipe: Connection) -> None:
    """A shard's process: wait for its job, fold each batch it is handed into the job's file; an
    empty message ends the fold (the file is then complete). Answers once: `{"ok": true}` or the
    error, then ends (code 1 after an error). A shard let go of before any job (its socket closed:
    a pool's, ShardPool.close) ends at once, code 0."""
    try:
        try:
            data = pipe.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)
        job = _decode_job(data)
        path, finished_rows = job.path, job.finished_rows
        # appended to, then read whole by the compare and the swap; DuckDB's row groups (smaller
        # ones made each bulk load compress its rows as it wrote them: a slower fold, ~4%)
        conn = db.open_db(path, keys=False, row_group_rows=None)
        conn.execute("SET threads = 1")  # one shard a core: DuckDB's own threads only contend
        # closed without a checkpoint (~0.15 s at the end of a 100,000-run rebuild, on its critical
        # path): the bulk loads wrote their rows into the file itself, the write-ahead log holds
        # the last small commits, and the rebuild's read-only attach replays it
        conn.execute("PRAGMA disable_checkpoint_on_shutdown")
        folder = BulkFolder(conn, finished_rows=finished_rows)
        try:
            while data := pipe.recv_bytes():
                batch = [
                    (stream, seq, decode_events(payload, stream=stream, seq=seq, subject=subject))
                    for stream, seq, subject, payload in _decode_items(data)
                ]
                folder.commit(*folder.fold(batch))
            folder.finish()
        finally:
            folder.close()
            conn.close()
        answer: dict[str, Any] = {"ok": True}
    except BaseException as exc:  # said to the rebuild, which fails with it
        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    try:
        pipe.send_bytes(_encode(answer))
    except OSError:  # the rebuilding process is gone: nobody to tell
        os._exit(1)
    os._exit(0 if answer["ok"] else 1)  # freeing millions of rows one by one only delays the rebuild


if __name__ == "__main__":
    # bulk.py `gc_paused`: the fold makes no cycles, and the collector's walks of the millions of
    # objects it keeps took half a replay. Never turned on again: the process ends with os._exit,
    # and turning it on had the first collection walk every object made meanwhile (~0.08 s a shard,
    # at the end of the fold, on a rebuild's critical path)
    gc.disable()
    die_with(int(sys.argv[2]))  # killed with the rebuilding process, not left folding for nobody
    configure_logging()  # as the read models' process logs (JSON off a terminal)
    shard_main(Connection(int(sys.argv[1])))
