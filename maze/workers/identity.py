"""A worker's node id when `--node-id` is not given: the same one each time a worker starts on this
machine, so that restarts rejoin as the same node (a new session of it) instead of piling up new
nodes, and new NATS users, at the head (maze/head/nats_auth.py makes one per node id).

Several workers may run on one machine at once: each takes the first free *slot*, a file
`<data dir>/worker-ids/<hostname>/<slot>.id` it holds an exclusive lock on for as long as it runs
(the lock goes with the process, however it ends). The file keeps the id made the first time that
slot was used (`<hostname>-<6 hex>`). The slots are kept per host name, so that machines sharing a
home directory (and so a default data dir) never take each other's ids; a file that does not hold
a usable id of this host is given a new one.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import uuid
from pathlib import Path
from typing import IO

from maze.core.settings import default_data_dir
from maze.head.nats_auth import NODE_ID_RE

MAX_SLOTS = 256
_held: list[IO[str]] = []  # the locked slot files, open for the life of the process


def stable_node_id(data_dir: Path | None = None) -> str:
    """This machine's first free worker slot's node id (made the first time; then kept)."""
    folder = (data_dir or default_data_dir()) / "worker-ids" / _host()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return _fresh()  # no writable data dir: an id of this run's own, as before
    for slot in range(MAX_SLOTS):
        try:
            handle = open(folder / f"{slot}.id", "a+")  # noqa: SIM115 (held open: the lock lives as long as it)
        except OSError:
            return _fresh()  # an unwritable slot: an id of this run's own
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: a running worker holds this slot
            handle.close()
            continue
        try:
            handle.seek(0)
            node_id = handle.read().strip()
            if not (NODE_ID_RE.match(node_id) and node_id.startswith(f"{_host()}-")):
                node_id = _fresh()
                handle.seek(0)
                handle.truncate()
                handle.write(node_id)
                handle.flush()
                os.fsync(handle.fileno())
        except (OSError, UnicodeDecodeError):
            handle.close()
            return _fresh()
        _held.append(handle)
        return node_id
    return _fresh()


def _host() -> str:
    """This machine's short host name, as a node id may spell it (letters, digits, '_', '-')."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:64]
    return name or "node"


def _fresh() -> str:
    return f"{_host()}-{uuid.uuid4().hex[:6]}"
