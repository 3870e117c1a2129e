"""An HTTP client whose requests each end by one overall deadline.

httpx's timeouts bound each wait (connecting, each write, each read), not a whole request: an
endpoint that trickles its answer a byte at a time, each within the timeout, could hold a request
for ever. :func:`deadline_client` gives an ``httpx.Client`` whose every socket wait is cut to what
is left of the deadline :func:`until` set for the calling thread, so the request fails with a
timeout (``httpx.TimeoutException``) once the deadline passes, whatever the endpoint does. (Name
resolution is not a socket wait and is not cut.)
"""

from __future__ import annotations

import ssl
import threading
import time
import typing
from collections.abc import Iterator
from contextlib import contextmanager

import httpcore
import httpx


class _Deadline(threading.local):
    at: float | None = None


_DEADLINE = _Deadline()


@contextmanager
def until(seconds: float) -> Iterator[None]:
    """Within the block, this thread's requests through a :func:`deadline_client` end at the
    latest ``seconds`` from now."""
    _DEADLINE.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _DEADLINE.at = None


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """The wait allowed now: the phase's ``timeout`` cut to what is left of the deadline."""
    at = _DEADLINE.at
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._stream.start_tls(ssl_context, server_hostname,
                                              _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None
                    ) -> httpcore.NetworkStream:
        return _Stream(self._backend.connect_tcp(host, port, _left(timeout, httpcore.ConnectTimeout),
                                                 local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None
                            ) -> httpcore.NetworkStream:
        return _Stream(self._backend.connect_unix_socket(path, _left(timeout, httpcore.ConnectTimeout),
                                                         socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def deadline_client(connections: int, timeout_s: float, **options: typing.Any) -> httpx.Client:
    """An ``httpx.Client`` of up to ``connections`` connections, each wait at most ``timeout_s``,
    and each request's waits cut to the deadline :func:`until` set."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    transport = httpx.HTTPTransport(limits=limits)
    pool = transport._pool  # noqa: SLF001 - httpx makes its pool with no way to name the backend
    pool._network_backend = _Backend(pool._network_backend)  # noqa: SLF001
    return httpx.Client(timeout=httpx.Timeout(timeout_s), transport=transport, **options)
