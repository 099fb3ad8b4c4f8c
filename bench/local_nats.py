"""A nats-server of a benchmark's own (JetStream on a temp dir, fsync always, max_payload 8 MB, a
free port), as an operator's external server: heads are pointed at it with `--nats`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from maze.head.nats_server import nats_server_binary, server_config
from maze.sdk.local_head import free_port


def start_nats(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The server's process and its URL; its store and config under `root / "nats"`."""
    port = free_port()
    (root / "nats").mkdir(parents=True, exist_ok=True)
    conf = root / "nats" / "nats.conf"
    conf.write_text(server_config("127.0.0.1", port, root / "nats" / "js", "always", 8))
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return proc, f"nats://127.0.0.1:{port}"
