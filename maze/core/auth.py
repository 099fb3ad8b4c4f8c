"""Where an API token is found, shared by the head (maze/api/auth.py) and the SDK and CLI."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

from maze.core.settings import default_data_dir

TOKEN_FILE = "api-token"  # in the data dir, mode 0600: the token a head made at its first start


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_token(data_dir: Path) -> str | None:
    """The token a head made in this data dir, if any (what the SDK and CLI use for a head on the
    same machine)."""
    try:
        return (data_dir / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def resolve_token(server_url: str, token: str | None) -> str | None:
    """The API token to send: the one given, else $MAZE_TOKEN, else, for a head on this machine, the
    one it made in the local data dir ($MAZE_DATA_DIR or ~/.maze)."""
    if token:
        return token
    if os.environ.get("MAZE_TOKEN"):
        return os.environ["MAZE_TOKEN"]
    host = urlsplit(server_url if "://" in server_url else f"http://{server_url}").hostname or ""
    if is_loopback(host):
        return local_token(default_data_dir())
    return None
