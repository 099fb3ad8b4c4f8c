"""The embedded NATS server's accounts: the head's (`MAZE`, with JetStream and every stream), and
one per worker node (`W_<node>`), whose user may use only what that account imports from the
head's. Passwords are kept in `<data-dir>/nats-users.json` (mode 0600) so that credentials
outlive restarts.

- The head may do everything.
- A worker of node N may: pull its own work (its durable consumer on `maze.work.N`, made by the
  head, and ack it; it may make no consumer), write its reports on runs (`maze.run.*.N`,
  maze/events/authority.py), what its tasks print (`maze.log.*.N.*`, maze/events/logs.py: the node
  is the subject's), its sessions (`maze.node.N`) and heartbeat (`$KV.maze-heartbeats.N`),
  read the blob store and store results in it. What the head tells it (a run cancelled, a session
  declared lost) comes on its work subject: no stream is imported (a subscription to one is a
  shadow subscription in the head's account, and nats-server 2.15 panics on one made right after
  the configuration reload that added the account). Nothing else: it cannot create runs (those are the head's subjects), purge
  or delete streams, read another node's work, or read the head's credentials (it never has them:
  `GET /cluster/nats` hands out its own).

Accounts, not only subject permissions: NATS checks a publish's subject, never its reply subject,
and JetStream answers (an ack, a direct get of bytes the worker stored) go to the reply subject
from inside the server. In the head's account that could land them on the head's own subjects
(a forged run, a broken lease); from a worker's account they only ever go back into it.
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
    if node_id == subjects.LEADER_RUN_ID:  # its head subject records leaderships (NODES_LEADER_SUBJECT)
        raise ValidationError(f"node id {node_id!r} is reserved (--node-id)")
    if not NODE_ID_RE.match(node_id):
        raise ValidationError(
            f"node id {node_id!r} is not usable: 1 to 128 letters, digits, '_' or '-' (--node-id)"
        )
    return node_id


def worker_user(node_id: str) -> str:
    return f"worker-{node_id}"


HEAD_ACCOUNT = "MAZE"
JS_API_PREFIX = "JS.maze.API"  # where a worker's account has the JetStream API it may use
_API = "$JS.API"


def worker_account(node_id: str) -> str:
    return f"W_{node_id}"


def _head_exports() -> list[dict[str, object]]:
    """What the head's account offers workers' accounts (each imports its own node's part only).
    Exports name no accounts: every account of this server is Maze's own (the configuration
    lists them all), and so the exports never change as nodes join."""
    work, blobs, kv = subjects.WORK_STREAM, subjects.BLOB_STREAM, f"KV_{subjects.HEARTBEAT_BUCKET}"
    services = [
        "maze.run.*.*",
        "maze.log.*.*.*",
        "maze.node.*",
        f"$KV.{subjects.HEARTBEAT_BUCKET}.*",
        f"$O.{subjects.BLOB_BUCKET}.C.>",
        f"$O.{subjects.BLOB_BUCKET}.M.>",
        f"{_API}.CONSUMER.INFO.{work}.*",
        f"$JS.ACK.{work}.*.>",
        f"{_API}.STREAM.INFO.{blobs}",
        f"{_API}.STREAM.INFO.{kv}",
        f"{_API}.STREAM.MSG.GET.{blobs}",
    ]
    streamed = [  # answered with many messages
        f"{_API}.CONSUMER.MSG.NEXT.{work}.*",
        f"{_API}.DIRECT.GET.{blobs}",
        f"{_API}.DIRECT.GET.{blobs}.>",
    ]
    exports: list[dict[str, object]] = [{"service": s} for s in services]
    exports += [{"service": s, "response_type": "stream"} for s in streamed]
    return exports


def worker_imports(node_id: str) -> list[dict[str, object]]:
    """What node `node_id`'s account imports from the head's: its own reports, sessions and
    heartbeat written; its own work pulled and acked; the blob store read and written; and what
    the head tells it. Nothing else of the head's account exists for it: no reply subject it names
    can reach the head's subjects (a JetStream answer goes back into the worker's account)."""
    work, blobs, kv = subjects.WORK_STREAM, subjects.BLOB_STREAM, f"KV_{subjects.HEARTBEAT_BUCKET}"
    durable = f"worker-{node_id}"
    plain = [
        f"maze.run.*.{node_id}",
        f"maze.log.*.{node_id}.*",
        subjects.node_subject(node_id),
        f"$KV.{subjects.HEARTBEAT_BUCKET}.{node_id}",
        f"$O.{subjects.BLOB_BUCKET}.C.>",
        f"$O.{subjects.BLOB_BUCKET}.M.>",
        f"$JS.ACK.{work}.{durable}.>",
    ]
    api = [
        f"CONSUMER.MSG.NEXT.{work}.{durable}",
        f"CONSUMER.INFO.{work}.{durable}",
        f"STREAM.INFO.{blobs}",
        f"STREAM.INFO.{kv}",
        f"STREAM.MSG.GET.{blobs}",
        f"DIRECT.GET.{blobs}",
        f"DIRECT.GET.{blobs}.>",
    ]
    imports: list[dict[str, object]] = [
        {"service": {"account": HEAD_ACCOUNT, "subject": subject}} for subject in plain
    ]
    imports += [
        {"service": {"account": HEAD_ACCOUNT, "subject": f"{_API}.{a}"}, "to": f"{JS_API_PREFIX}.{a}"}
        for a in api
    ]
    return imports


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
        """The server configuration's `accounts` block (JSON is valid NATS configuration): the
        head's account, with JetStream, and one account per worker node."""
        accounts: dict[str, object] = {
            HEAD_ACCOUNT: {
                "jetstream": "enabled",
                "users": [{"user": HEAD_USER, "password": self.head_password}],
                "exports": _head_exports(),
            }
        }
        for node_id, password in sorted(self.workers.items()):
            accounts[worker_account(node_id)] = {
                "users": [{"user": worker_user(node_id), "password": password}],
                "imports": worker_imports(node_id),
            }
        return "accounts " + json.dumps(accounts, indent=1) + "\n"
