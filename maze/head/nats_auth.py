"""The embedded NATS server's users: one for the head, one per worker node, each with the subjects
it may use. Kept in `<data-dir>/nats-users.json` (mode 0600) so that credentials outlive restarts.

- The head may do everything.
- A worker of node N may: pull its own work (its durable consumer on `maze.work.N`, made by the
  head, and ack it; it may make no consumer itself),
  write its reports on runs (`maze.run.*.N`, maze/events/authority.py), what its tasks print
  (`maze.log.*.N.*`, maze/events/logs.py: the node is the subject's, so no worker writes lines as
  another node), its node events
  (`maze.node.N`) and heartbeat (`$KV.maze-heartbeats.N`), read the blob store and store results
  in it, and receive on its own inboxes (`_INBOX_N.>`) and its node subject. Nothing else: it cannot create runs
  (those are the head's subjects), purge or delete streams, read another node's work, or read
  the head's credentials (it never has them: `GET /cluster/nats` hands out its own).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

from maze.core.errors import ValidationError
from maze.events import subjects

HEAD_USER = "maze-head"
NODE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
USERS_FILE = "nats-users.json"


def check_node_id(node_id: str) -> str:
    """A node id becomes a NATS subject token: letters, digits, '_' and '-' only."""
    if not NODE_ID_RE.match(node_id):
        raise ValidationError(
            f"node id {node_id!r} is not usable: 1 to 128 letters, digits, '_' or '-' (--node-id)"
        )
    return node_id


def worker_user(node_id: str) -> str:
    return f"worker-{node_id}"


def worker_permissions(node_id: str) -> dict[str, object]:
    work, blobs, kv = subjects.WORK_STREAM, subjects.BLOB_STREAM, f"KV_{subjects.HEARTBEAT_BUCKET}"
    durable = f"worker-{node_id}"
    api = "$JS.API"
    publish = [
        f"maze.run.*.{node_id}",
        f"maze.log.*.{node_id}.*",
        subjects.node_subject(node_id),
        f"$KV.{subjects.HEARTBEAT_BUCKET}.{node_id}",
        # its own work: its durable consumer (made by the head, maze/events/store.py
        # ensure_work_consumer), pulled and acked. No consumer of any stream may a worker make: a
        # consumer's request may name a deliver subject, and the server would then publish the
        # stream's messages there, onto the head's own subjects as well
        f"{api}.CONSUMER.INFO.{work}.{durable}",
        f"{api}.CONSUMER.MSG.NEXT.{work}.{durable}",
        f"$JS.ACK.{work}.{durable}.>",
        # the blob store: read (direct gets, batched for chunks), and results written
        f"{api}.STREAM.INFO.{blobs}",
        f"{api}.STREAM.MSG.GET.{blobs}",
        f"{api}.DIRECT.GET.{blobs}",
        f"{api}.DIRECT.GET.{blobs}.>",
        f"$O.{subjects.BLOB_BUCKET}.C.>",
        f"$O.{subjects.BLOB_BUCKET}.M.>",
        f"{api}.STREAM.INFO.{kv}",
        f"{api}.INFO",
    ]
    return {
        "publish": {"allow": publish},
        # replies on its own inbox prefix only (maze/events/subjects.py worker_inbox)
        "subscribe": {"allow": [f"{subjects.worker_inbox(node_id)}.>", subjects.node_subject(node_id)]},
    }


class NatsUsers:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / USERS_FILE
        found: dict[str, object] = {}
        if self.path.exists():
            found = json.loads(self.path.read_text())
        legacy = data_dir / "nats-token"  # the head's secret before users: kept, so URLs stay valid
        head = found.get("head") or (legacy.read_text().strip() if legacy.exists() else None)
        self.head_password = str(head or secrets.token_urlsafe(24))
        workers = found.get("workers") or {}
        assert isinstance(workers, dict)
        self.workers: dict[str, str] = {str(k): str(v) for k, v in workers.items()}
        self._save()

    def _save(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"head": self.head_password, "workers": self.workers}, out)

    def worker(self, node_id: str) -> tuple[str, bool]:
        """The password of node `node_id`'s worker user, and whether it was made just now (the
        server must then reload its configuration)."""
        check_node_id(node_id)
        if node_id in self.workers:
            return self.workers[node_id], False
        self.workers[node_id] = secrets.token_urlsafe(24)
        self._save()
        return self.workers[node_id], True

    def authorization(self) -> str:
        """The server configuration's `authorization` block (JSON is valid NATS configuration)."""
        users: list[dict[str, object]] = [
            {
                "user": HEAD_USER,
                "password": self.head_password,
                "permissions": {"publish": ">", "subscribe": ">"},
            }
        ]
        for node_id, password in sorted(self.workers.items()):
            users.append(
                {
                    "user": worker_user(node_id),
                    "password": password,
                    "permissions": worker_permissions(node_id),
                }
            )
        return "authorization " + json.dumps({"users": users}, indent=1) + "\n"
