"""Fold the recorded histories again into the read-model snapshots, with the current code: for a
read model that changes on purpose (a new column), the histories themselves staying as recorded.

    python -m tests.golden.refold      # review the diff: only the change meant may show
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import msgspec

from maze.events.codec import decode_events
from maze.projections import db
from maze.projections.folder import Folder
from maze.projections.schema import TABLES

HERE = Path(__file__).parent


def refold(history: str, snapshot: str) -> None:
    messages = msgspec.msgpack.decode((HERE / history).read_bytes())
    conn = db.open_db(Path(tempfile.mkdtemp(prefix="maze-refold-")) / "rm.duckdb")
    folder = Folder(conn)
    folder.commit(*folder.fold([(m["stream"], m["seq"], decode_events(m["data"])) for m in messages]))
    rows = {t: [list(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()] for t in TABLES}
    ending = (HERE / snapshot).read_text().endswith("\n")
    text = json.dumps(rows, indent=1, sort_keys=True, default=str)
    (HERE / snapshot).write_text(text + ("\n" if ending else ""))
    print(f"{snapshot}: {sum(len(r) for r in rows.values())} rows")


if __name__ == "__main__":
    refold("history.msgpack", "readmodels.json")
    refold("lifecycle.msgpack", "lifecycle_readmodels.json")
    refold("operations.msgpack", "operations_readmodels.json")
