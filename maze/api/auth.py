"""API authentication: a bearer token on every call (REST and SSE) of a head that others can reach.

A head bound to anything but loopback requires `Authorization: Bearer <token>`: the token given
with `--token` / `MAZE_TOKEN`, else one made at its first start in `<data-dir>/api-token` (mode 0600)
and printed once. `--insecure` turns the check off, loudly. A loopback-only head stays open (the
two-command quick start) unless a token is given. Tokens are compared in constant time; a missing
or wrong one is a 401 with the usual error envelope. Probes (`/healthz`, `/readyz`) stay open.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from maze.api.errors import _body
from maze.core.auth import TOKEN_FILE, is_loopback, local_token
from maze.core.errors import Unauthorized

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def head_token(data_dir: Path, given: str, host: str, insecure: bool) -> tuple[str | None, bool]:
    """The token this head requires (None: open) and whether it was made just now (print it once)."""
    if insecure:
        return None, False
    if given:
        return given, False
    if is_loopback(host):
        return None, False
    found = local_token(data_dir)
    if found:
        return found, False
    token = secrets.token_urlsafe(32)
    path = data_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    return token, True


class BearerToken(ASGIMiddleware):
    """Refuses every HTTP call without the head's token (before any route runs)."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, token: str, open_pages: Callable[[Any], bool] | None = None) -> None:
        self.expected = f"Bearer {token}".encode()
        # GET/HEAD answered by these route handlers need no token: the Playground's own files
        # (maze/api/playground.py), which a browser loads without a header; the API calls the app
        # makes carry the token. Judged by the handler the path was routed to (Litestar routes
        # before app middleware runs), never by the path's look: API routes share its prefix
        # (`/playground/llm`, `/playground/catalog`).
        self.open_pages = open_pages

    def _open_page(self, scope: Scope) -> bool:
        return (
            self.open_pages is not None
            and scope.get("method") in ("GET", "HEAD")
            and self.open_pages(scope.get("route_handler"))
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["path"] in OPEN_PATHS or self._open_page(scope) or self._allowed(scope):
            await next_app(scope, receive, send)
            return
        await _refuse(send)

    def _allowed(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        return hmac.compare_digest(given, self.expected)


async def _refuse(send: Send) -> None:
    error = Unauthorized(
        "this Maze head requires its API token: Authorization: Bearer <token> (--token, MAZE_TOKEN)"
    )
    body: dict[str, Any] = _body(error.error_type, error.message)
    data = msgspec.json.encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"www-authenticate", b'Bearer realm="maze"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})
