"""A channel to one gRPC server: one reused HTTP/2 connection, unary calls and bidi streams.

The connection is dialled on first use and again after it is lost or the
server sent GOAWAY; concurrent callers share one dial. Every failure reaches
the caller as `RpcError` with a status code: nothing listening, a reset or a
lost connection are UNAVAILABLE and name the address; a deadline that passes
is DEADLINE_EXCEEDED (and the server is told with RST_STREAM CANCEL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl as _ssl
from types import TracebackType
from typing import Protocol, TypeVar

from skein.grpcclient.connection import CallState, ClientConnection
from skein.grpcclient.status import RpcError, StatusCode, format_timeout

__all__ = ["BidiStream", "GrpcChannel"]


class _Message(Protocol):
    def SerializeToString(self) -> bytes: ...


M = TypeVar("M")
M_co = TypeVar("M_co", covariant=True)


class _Parser(Protocol[M_co]):  # a generated protobuf class
    def FromString(self, data: bytes) -> M_co: ...


DEFAULT_MAX_MESSAGE = 64 << 20
# A control replica whose host died or was cut off must not leave a stream
# waiting forever. HTTP/2 PINGs would do it too, but gRPC servers punish
# frequent pings on idle streams (GOAWAY too_many_pings); the kernel's TCP
# keepalive and user timeout need nothing from the server: (idle s, interval s, probes).
TCP_KEEPALIVE = (10, 5, 3)


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"gRPC address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


class GrpcChannel:
    """Calls to the server at `address` (HOST:PORT; IPv6 in brackets).

    `ssl`: a client SSLContext for TLS (ALPN `h2` is set on it); plain h2c
    without one.
    """

    def __init__(
        self,
        address: str,
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
        user_agent: str = "skein-grpcclient/1",
    ) -> None:
        self.address = address
        self._host, self._port = _split(address)
        self._ssl = ssl
        if ssl is not None:
            ssl.set_alpn_protocols(["h2"])
        self._server_hostname = server_hostname
        self._max_message = max_message
        self._conn: ClientConnection | None = None
        self._lock = asyncio.Lock()
        scheme = b"https" if ssl is not None else b"http"
        self._headers = [
            (b":method", b"POST"),
            (b":scheme", scheme),
            (b":authority", address.encode()),
        ]
        self._trailing = [
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"user-agent", user_agent.encode()),
        ]

    # -- connection --------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.usable

    async def connect(self, timeout: float | None = None) -> ClientConnection:  # noqa: ASYNC109
        """The live connection, dialled if needed within `timeout` seconds."""
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        try:
            async with asyncio.timeout(timeout):
                async with self._lock:
                    conn = self._conn
                    if conn is None or not conn.usable:
                        conn = self._conn = await self._dial()
                    return conn
        except TimeoutError:
            raise RpcError(
                StatusCode.UNAVAILABLE, f"not reachable within {timeout:g}s", self.address
            ) from None

    async def _dial(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        conn = ClientConnection(self.address, max_message=self._max_message)
        try:
            if self._ssl is not None:
                await loop.create_connection(
                    lambda: conn,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname or self._host,
                )
            else:
                await loop.create_connection(lambda: conn, self._host, self._port)
        except _ssl.SSLError as err:  # before OSError, of which it is a kind
            raise RpcError(
                StatusCode.UNAVAILABLE, f"TLS handshake failed: {err.reason or err}", self.address
            ) from None
        except OSError as err:
            # asyncio words a refused connect as "Connect call failed (...)"; say why
            reason = os.strerror(err.errno) if err.errno else str(err) or type(err).__name__
            raise RpcError(
                StatusCode.UNAVAILABLE, f"cannot connect: {reason}", self.address
            ) from None
        if self._ssl is not None and conn.alpn != "h2":
            conn.close()
            raise RpcError(
                StatusCode.UNAVAILABLE, "the TLS server did not agree to h2 (ALPN)", self.address
            )
        conn.set_tcp_keepalive(*TCP_KEEPALIVE)
        return conn

    async def close(self) -> None:
        """Close the connection; calls still open end UNAVAILABLE."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await asyncio.sleep(0)  # let the transport report connection_lost

    # -- calls -------------------------------------------------------------------
    def _request_headers(self, method: str, timeout: float | None) -> list[tuple[bytes, bytes]]:
        headers = [*self._headers, (b":path", method.encode()), *self._trailing]
        if timeout is not None:
            headers.append((b"grpc-timeout", format_timeout(timeout)))
        return headers

    async def unary(
        self,
        method: str,
        request: _Message,
        response_type: _Parser[M],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (sent to the server as grpc-timeout)
    ) -> M:
        """Call `method` (`/pkg.Service/Method`) once; the reply, or RpcError."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        payload = request.SerializeToString()
        conn: ClientConnection | None = None
        call: CallState | None = None
        try:
            async with asyncio.timeout_at(deadline):
                conn = await self.connect()
                left = None if deadline is None else deadline - loop.time()
                call = conn.start(self._request_headers(method, left))
                await conn.send(call, payload, end=True)
                reply = await conn.receive(call)
                if reply is None:
                    raise RpcError(
                        StatusCode.INTERNAL, "OK without a response message", self.address
                    )
                if await conn.receive(call) is not None:
                    raise RpcError(
                        StatusCode.INTERNAL, "more than one response message", self.address
                    )
        except TimeoutError:
            raise RpcError(
                StatusCode.DEADLINE_EXCEEDED, f"deadline of {timeout:g}s exceeded", self.address
            ) from None
        finally:
            if conn is not None and call is not None:
                conn.cancel(call)
        try:
            return response_type.FromString(reply)
        except Exception as err:  # protobuf's DecodeError, without importing it here
            raise RpcError(
                StatusCode.INTERNAL, f"cannot parse the response: {err}", self.address
            ) from None

    async def stream(
        self,
        method: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (sent to the server as grpc-timeout)
        connect_timeout: float | None = None,
    ) -> BidiStream:
        """Open a bidi (or server-/client-streaming) call; use it as an async context."""
        conn = await self.connect(connect_timeout)
        call = conn.start(self._request_headers(method, timeout))
        return BidiStream(conn, call, timeout)


class BidiStream:
    """One open streaming call. Messages go out with `send`, come in with `recv`.

    `recv()` returns None once the server ended the call OK and raises
    RpcError for any other end; leaving the `async with` block (or `cancel()`)
    resets a call still open.
    """

    __slots__ = ("_call", "_conn", "_timer")

    def __init__(self, conn: ClientConnection, call: CallState, timeout: float | None) -> None:
        self._conn = conn
        self._call = call
        self._timer: asyncio.TimerHandle | None = None
        if timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._expire, timeout)

    def _expire(self, timeout: float) -> None:
        self._conn.cancel(
            self._call, f"deadline of {timeout:g}s exceeded", StatusCode.DEADLINE_EXCEEDED
        )

    async def send(self, message: _Message | bytes) -> None:
        payload = message if isinstance(message, bytes) else message.SerializeToString()
        await self._conn.send(self._call, payload, end=False)

    def close_send(self) -> None:
        """No more requests (half-close); responses keep coming."""
        self._conn.end_request(self._call)

    async def recv(self) -> bytes | None:
        return await self._conn.receive(self._call)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._conn.cancel(self._call)

    async def __aenter__(self) -> BidiStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            self.cancel()
