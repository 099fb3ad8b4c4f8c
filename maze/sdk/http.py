"""HTTP to the head, mapping its structured errors back to Maze exception types."""

from __future__ import annotations

import time
import weakref
from typing import Any

import httpx

from maze.core.errors import ERROR_TYPES, MazeError, Unavailable


def raise_for_error(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
    except Exception:
        raise MazeError(f"HTTP {resp.status_code}: {resp.text[:500]}") from None
    cls = ERROR_TYPES.get(err.get("type", ""), MazeError)
    exc = cls(err.get("message", resp.text), **(err.get("details") or {}))
    exc.status_code = resp.status_code
    raise exc


class Http:
    def __init__(self, server_url: str, timeout: float = 30.0) -> None:
        self.server_url = server_url.rstrip("/")
        self.client = httpx.Client(base_url=self.server_url, timeout=timeout)
        # close the pooled connections when the SDK object goes away, even if nobody calls close()
        self._finalizer = weakref.finalize(self, self.client.close)

    def close(self) -> None:
        self._finalizer()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach the Maze server at {self.server_url}: {exc}") from exc
        raise_for_error(resp)
        return resp.json()

    def get(self, path: str, retries: int = 5, **params: Any) -> Any:
        """GETs are safe to repeat: a head that is unreachable or catching up (503) is asked again."""
        query = {k: v for k, v in params.items() if v is not None}
        for attempt in range(retries + 1):
            try:
                return self.request("GET", path, params=query)
            except Unavailable:
                if attempt == retries:
                    raise
                time.sleep(min(0.25 * 2**attempt, 4.0))
        raise AssertionError("unreachable")

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)
