"""TLS for the API (HTTPS) and NATS: one certificate, key and CA passed through to both.

A head started with `--tls-cert/--tls-key` serves HTTPS, and its embedded NATS server speaks TLS
with the same certificate (`tls://` URLs). `--tls-ca` (or MAZE_TLS_CA) is the CA that clients (the
head's own connections, its children, workers, the SDK and CLI) trust to verify them; without it,
the system's trust store.
"""

from __future__ import annotations

import os
import ssl

TLS_CA_ENV = "MAZE_TLS_CA"


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A context that verifies servers against `ca_file` (else $MAZE_TLS_CA, else the system's)."""
    ca = ca_file or os.environ.get(TLS_CA_ENV) or None
    return ssl.create_default_context(cafile=ca)


def needs_tls(urls: list[str]) -> bool:
    return any(u.startswith(("tls://", "https://")) for u in urls)
