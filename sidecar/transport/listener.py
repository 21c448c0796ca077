"""Listeners: accept TCP, detect the protocol, serve HTTP/2 or HTTP/1.1.

A connection is HTTP/2 (prior knowledge, or TLS with ALPN h2 once mTLS
comes) when its first bytes are the client preface `PRI * HTTP/2.0...`;
anything else is parsed as HTTP/1.1. Detection swaps the transport's
protocol once, so there is no per-read indirection afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from sidecar.accesslog import AccessLog
from sidecar.transport.contract import Dispatcher
from sidecar.transport.dispatch import StreamStarter
from sidecar.transport.downstream import H2Downstream
from sidecar.transport.flush import flush_dirty
from sidecar.transport.http1 import H1Downstream
from sidecar.transport.stats import relay_metrics
from sidecar.transport.upstream import UpstreamPool
from skein.metrics import Registry

__all__ = ["Listener", "start_listener"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class _Sniffer(asyncio.Protocol):
    """Reads until the first bytes tell HTTP/2 from HTTP/1.1, then hands over."""

    __slots__ = ("buffer", "listener", "transport")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: Any = None
        self.buffer = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.listener._sniffing.add(self)
        if self.listener.closing:
            transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        size = min(len(buffer), len(_PREFACE))
        if buffer[:size] == _PREFACE[:size] and size < len(_PREFACE):
            self.buffer = buffer  # could still be the preface; wait for more
            return
        self.buffer = b""
        listener = self.listener
        listener._sniffing.discard(self)
        proto: H2Downstream | H1Downstream
        if buffer.startswith(_PREFACE):
            proto = H2Downstream(listener.starter, listener._closed)
        else:
            proto = H1Downstream(listener.starter, listener._closed)
        listener._conns.add(proto)
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        if listener.closing:
            proto.drain()
        proto.data_received(buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener._sniffing.discard(self)
        self.transport = None


class Listener:
    """A bound listener; see `start_listener`."""

    def __init__(self, name: str, starter: StreamStarter) -> None:
        self.name = name
        self.starter = starter
        self.server: asyncio.Server | None = None
        self.closing = False
        self._conns: set[H2Downstream | H1Downstream] = set()
        self._sniffing: set[_Sniffer] = set()  # accepted, protocol not known yet
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self._address: tuple[str, int] = ("", 0)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port when 0 was asked for."""
        return self._address

    def _closed(self, conn: Any) -> None:
        self._conns.discard(conn)
        if self.closing and not self._conns:
            self._all_closed.set()

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting, GOAWAY every connection, wait up to `grace` s, then cancel the rest."""
        self.closing = True
        if self.server is not None:
            self.server.close()
        for sniffer in list(self._sniffing):
            if sniffer.transport is not None:
                sniffer.transport.close()
        if self._conns:
            self._all_closed.clear()
            for conn in list(self._conns):
                conn.drain()
            flush_dirty()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._all_closed.wait()
        for conn in list(self._conns):
            conn.abort()
        flush_dirty()
        if self.server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.server.wait_closed()

    def stats(self) -> dict[str, Any]:
        """Connections and streams, for the admin page."""
        conns = [conn.stats() for conn in self._conns]
        return {
            "name": self.name,
            "address": "{}:{}".format(*self._address),
            "closing": self.closing,
            "connections": len(conns),
            "streams": sum(c["streams"] for c in conns),
            "no_route": self.starter.no_route,
            "downstream": conns,
            "upstream": self.starter.pool.stats(),
        }


async def start_listener(
    host: str,
    port: int,
    dispatcher: Dispatcher,
    pool: UpstreamPool,
    *,
    name: str,
    metrics: Registry | None = None,
    ssl_context: ssl.SSLContext | None = None,
    access_log: AccessLog | None = None,
) -> Listener:
    """Bind `host:port` (0 picks a free port) and relay every stream via `dispatcher`."""
    starter = StreamStarter(name, dispatcher, pool, relay_metrics(metrics), access_log)
    listener = Listener(name, starter)
    loop = asyncio.get_running_loop()
    listener.server = await loop.create_server(
        lambda: _Sniffer(listener), host, port, ssl=ssl_context, reuse_address=True
    )
    sockname = listener.server.sockets[0].getsockname()
    listener._address = (str(sockname[0]), int(sockname[1]))
    return listener
