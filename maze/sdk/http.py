"""HTTP to the head, mapping its structured errors back to Maze exception types."""

from __future__ import annotations

import errno
import os
import socket
import ssl
import time
import weakref
from collections import OrderedDict
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import msgspec

from maze.core.auth import resolve_token
from maze.core.errors import (
    ERROR_TYPES,
    Conflict,
    MazeError,
    NotAMazeHead,
    Unavailable,
    Unreachable,
    ValidationError,
)
from maze.core.identity import HEAD_HEADER
from maze.core.tls import TLS_CA_ENV, client_context
from maze.sdk.sse_client import StreamPool
from maze.sdk.transport import coalescing_transport


def normalize_server_url(url: str) -> str:
    """The head's URL as given, or `http://` + a scheme-less `HOST:PORT` (`https://` when a CA to
    trust the head with is set, as workers do)."""
    url = url.strip().rstrip("/")
    if url and "://" not in url:
        url = f"{'https' if os.environ.get(TLS_CA_ENV) else 'http'}://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            f"server URL {url!r}: expected http://HOST:PORT, https://HOST:PORT or HOST:PORT"
        )
    try:
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError as exc:
        raise ValidationError(f"server URL {url!r}: {exc}") from None
    return url


def wrong_address(exc: BaseException) -> str | None:
    """Why a connection could not be made at all, when that points at the address rather than at a
    blip: nothing listens there, the host is unknown, or there is no route to it. None otherwise
    (a timeout, a reset: worth another try)."""
    seen: BaseException | None = exc
    for _ in range(8):  # httpx and httpcore wrap the OSError
        if seen is None:
            return None
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused (nothing listens there: is the head running, on that port?)"
        if isinstance(seen, socket.gaierror):
            return f"unknown host ({seen.strerror or seen})"
        if isinstance(seen, OSError) and seen.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"no route to the host ({seen.strerror})"
        seen = seen.__cause__ or seen.__context__
    return None


def not_a_maze_head(where: str, status: int, text: str) -> NotAMazeHead:
    return NotAMazeHead(
        f"{where}: the server there answered HTTP {status} and is not a Maze head (its answer lacks "
        f"the {HEAD_HEADER} header; a wrong host, port or path?): {text[:200]!r}",
        status=status,
    )


def raise_for_error(status: int, body: bytes, maze_head: bool = True, where: str = "") -> None:
    """The head's answer as the Maze exception it stands for (`{"error": {type, message,
    details}}`), from httpx and from the event streams' own connections (maze/sdk/sse_client.py).
    An error from a server that is not a Maze head (`maze_head` False) is NotAMazeHead."""
    if status < 400:
        return
    text = body.decode(errors="replace")
    try:
        err = msgspec.json.decode(body)["error"]
        if not isinstance(err, dict):
            raise TypeError(err)
    except Exception:
        if not maze_head:
            raise not_a_maze_head(where or "the server", status, text) from None
        raise MazeError(f"HTTP {status}: {text[:500]}") from None
    cls = ERROR_TYPES.get(err.get("type", ""), MazeError)
    exc = cls(err.get("message", text), **(err.get("details") or {}))
    exc.status_code = status
    raise exc


class _Session:
    """What this process knows of one head's runs stream: the highest sequence it wrote (a
    submit's `seq`) or saw (an event it read). Reads pass it as `min_seq`, so they reflect what
    the process already knows about, without waiting for anyone else's writes (read-your-writes
    and monotonic reads, shared by every client of that head in the process)."""

    def __init__(self) -> None:
        self.seen_seq = 0
        # whether a server ever answered at this URL: until then, a refused connection is a wrong
        # URL (said at once); after, a head restarting (waited for)
        self.reached = False


_sessions: dict[str, _Session] = {}
OPEN_STREAMS_KEPT = 4


def _session(server_url: str) -> _Session:
    return _sessions.setdefault(server_url, _Session())


def log_replaced(exc: MazeError, asked: int) -> bool:
    """Whether a head answered that `min_seq` (`asked`, what this process knew of the log at its
    URL) is past the end of its event log: the log there is another one than the one this process
    saw (a cluster made again at the same address), and what it knew says nothing about it."""
    last = exc.details.get("last_seq")
    return (
        isinstance(exc, Conflict)
        and exc.details.get("min_seq") == asked
        and isinstance(last, int)
        and last < asked
    )


class Closable(Protocol):
    def close(self) -> None: ...


class OpenedRuns:
    """Run streams a submit opened that nobody has read yet (maze/sdk/stream.py), newest last:
    at most OPEN_STREAMS_KEPT, the oldest closed first (a reader then opens a new one)."""

    def __init__(self) -> None:
        self._runs: OrderedDict[str, Closable] = OrderedDict()

    def keep(self, run_id: str, opened: Closable) -> None:
        self._runs[run_id] = opened
        while len(self._runs) > OPEN_STREAMS_KEPT:
            self._runs.popitem(last=False)[1].close()

    def take(self, run_id: str) -> Closable | None:
        return self._runs.pop(run_id, None)

    def close(self) -> None:
        while self._runs:
            self._runs.popitem()[1].close()


def _close(client: httpx.Client, opened: OpenedRuns, streams: StreamPool) -> None:
    opened.close()
    streams.close()
    client.close()


class Http:
    def __init__(self, server_url: str, timeout: float = 30.0, token: str | None = None) -> None:
        self.server_url = normalize_server_url(server_url)
        self.token = resolve_token(self.server_url, token)
        auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        # https: verified against $MAZE_TLS_CA when set (a private CA), else the usual trust store
        verify: ssl.SSLContext | bool = client_context() if os.environ.get(TLS_CA_ENV) else True
        self.client = httpx.Client(
            base_url=self.server_url,
            timeout=timeout,
            headers=auth,
            transport=coalescing_transport(verify),  # each request in one send (maze/sdk/transport.py)
        )
        # a run's submit-and-follow and its event stream: the hot path, on http.client
        self.streams = StreamPool(self.server_url, auth)
        self.session = _session(self.server_url)
        self.opened = OpenedRuns()
        # close the connections when the SDK object goes away, even if nobody calls close()
        self._finalizer = weakref.finalize(self, _close, self.client, self.opened, self.streams)

    def close(self) -> None:
        self._finalizer()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.send(method, path, **kwargs)
        try:
            return resp.json()
        except ValueError:
            if HEAD_HEADER not in resp.headers:
                raise not_a_maze_head(
                    f"{method} {self.server_url}{path}", resp.status_code, resp.text
                ) from None
            raise

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.cannot_connect(exc) from exc
        self.session.reached = True
        where = f"{method} {self.server_url}{path}"
        raise_for_error(resp.status_code, resp.content, HEAD_HEADER in resp.headers, where)
        return resp

    def cannot_connect(self, exc: BaseException) -> MazeError:
        """What a failed connection means: Unreachable (raised at once by every caller) when no
        server ever answered at this URL and the address itself is wrong; else Unavailable (a head
        restarting, a dropped connection: the callers try again)."""
        why = wrong_address(exc)
        if why is not None and not self.session.reached:
            return Unreachable(f"cannot reach a Maze head at {self.server_url}: {why}", url=self.server_url)
        if why is None:
            self.session.reached = True  # a connection was made (then dropped, or slow): a server
        return Unavailable(f"cannot reach the Maze server at {self.server_url}: {exc}")

    def note_seen(self, seq: int) -> None:
        self.session.seen_seq = max(self.session.seen_seq, seq)

    def forget_log(self) -> None:
        """The head at this URL keeps another log than the one this process saw there: what it
        knew of that one (the highest sequence) would hold every read back."""
        self.session.seen_seq = 0

    def get(self, path: str, retries: int = 5, **params: Any) -> Any:
        """GETs are safe to repeat: a head that is unreachable or catching up (503) is asked again."""
        return self.get_response(path, retries, **params).json()

    def get_response(self, path: str, retries: int = 5, **params: Any) -> httpx.Response:
        query = {k: v for k, v in params.items() if v is not None}
        ours = self.session.seen_seq if "min_seq" not in query else 0  # what this process knew
        if ours:
            query["min_seq"] = ours
        for attempt in range(retries + 1):
            try:
                return self.send("GET", path, params=query)
            except Conflict as exc:
                if not (ours and log_replaced(exc, ours)):
                    raise
                self.forget_log()  # a new log at this URL: read it as it is
                ours = 0
                del query["min_seq"]
            except Unreachable:
                raise  # a wrong URL: said at once
            except Unavailable:
                if attempt == retries:
                    raise
                time.sleep(min(0.25 * 2**attempt, 4.0))
        raise AssertionError("unreachable")

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)
