"""The SDK's HTTP transport: httpx, with each request written to the socket in one piece.

httpcore writes a request's head and its body in two `send` calls. On a small machine each send
wakes the head's server, which parses the head, finds the body missing and sleeps again: a second
wake-up on both sides for every call with a body (~0.25 ms of an `append_task` here, measured by
bench/dynamic.py). `CoalescingStream` keeps what is written until the first read (the request is
complete then: HTTP/1.1 answers come after what they answer) or until 64 KiB are waiting, so a
small request leaves in one send and a large upload still streams in 64 KiB pieces. The run
submit-and-follow hot path uses http.client, which already sends head and body together
(maze/sdk/sse_client.py).
"""

from __future__ import annotations

import ssl
import typing

import httpcore
import httpx
import structlog
from httpcore._backends.sync import SyncBackend

log = structlog.get_logger()

FLUSH_BYTES = 64 * 1024  # a body larger than this streams in pieces of about this size


class CoalescingStream(httpcore.NetworkStream):
    """A connection's stream whose writes wait for the next read (or FLUSH_BYTES)."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner
        self.pending: list[bytes] = []
        self.size = 0

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        self.pending.append(bytes(buffer))
        self.size += len(buffer)
        if self.size >= FLUSH_BYTES:
            self.flush(timeout)

    def flush(self, timeout: float | None = None) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending, self.size = [], 0
            self.inner.write(data, timeout)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.flush(timeout)
        return self.inner.read(max_bytes, timeout)

    def close(self) -> None:
        self.pending, self.size = [], 0
        self.inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self.flush(timeout)
        return CoalescingStream(self.inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self.inner.get_extra_info(info)


class CoalescingBackend(SyncBackend):
    def connect_tcp(self, *args: typing.Any, **kwargs: typing.Any) -> httpcore.NetworkStream:
        return CoalescingStream(super().connect_tcp(*args, **kwargs))

    def connect_unix_socket(self, *args: typing.Any, **kwargs: typing.Any) -> httpcore.NetworkStream:
        return CoalescingStream(super().connect_unix_socket(*args, **kwargs))


def coalescing_transport(verify: ssl.SSLContext | bool) -> httpx.HTTPTransport:
    """httpx's own transport (its limits, its error mapping) over connections that send each
    request in one piece. Its pool is httpx's private `_pool`: an httpx that keeps it otherwise
    gets its plain transport, with a warning (only speed differs; tests/test_unit_transport.py
    fails on such an httpx, so it is seen before a release)."""
    transport = httpx.HTTPTransport(verify=verify)
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.ConnectionPool):
        log.warning("sdk.transport_not_coalescing", httpx=httpx.__version__)
        return transport
    limits = httpx.Limits()  # httpx's defaults, as HTTPTransport applied them
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(verify=verify),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=CoalescingBackend(),
    )
    pool.close()
    return transport
