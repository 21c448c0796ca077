"""Listeners: accept TCP, detect the protocol, serve HTTP/2 or HTTP/1.1.

A connection is HTTP/2 (prior knowledge, or TLS with ALPN h2) when its first
bytes are the client preface `PRI * HTTP/2.0...`; anything else is parsed as
HTTP/1.1. Detection swaps the transport's protocol once, so there is no
per-read indirection afterwards.

With mesh TLS (`tls`), the listener accepts sockets itself and peeks at each
one's first byte: 0x16 (a TLS handshake record) is handed to TLS with the
context current at that moment (so a rotated certificate serves new
connections while open ones finish); anything else is plaintext, served as
before in PERMISSIVE and refused in STRICT. Every refusal is logged with its
reason (plaintext in STRICT, no client certificate, unknown CA, expired).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any

import structlog

from sidecar.accesslog import AccessLog
from sidecar.tls.identity import spiffe_id_of, xfcc_value
from sidecar.tls.store import InboundTls
from sidecar.transport.contract import Dispatcher
from sidecar.transport.dispatch import StreamStarter
from sidecar.transport.downstream import H2Downstream
from sidecar.transport.flush import flush_dirty
from sidecar.transport.http1 import H1Downstream
from sidecar.transport.stats import relay_metrics
from sidecar.transport.tlsread import TlsReader
from sidecar.transport.upstream import UpstreamPool
from skein.metrics import Registry

__all__ = ["Listener", "start_listener"]

_log = structlog.get_logger("sidecar.transport")
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_TLS_HANDSHAKE = 0x16
FIRST_BYTE_TIMEOUT = 10.0  # an accepted socket that sends nothing is closed after this
TLS_HANDSHAKE_TIMEOUT = 10.0


class _Sniffer(asyncio.Protocol):
    """Reads until the first bytes tell HTTP/2 from HTTP/1.1, then hands over."""

    __slots__ = ("buffer", "listener", "peer_id", "peer_xfcc", "reader", "transport")

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: Any = None
        self.buffer = b""
        self.peer_id = ""
        self.peer_xfcc = b""
        self.reader: TlsReader | None = None  # set when the connection is TLS

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        tls = self.listener.tls
        if tls is not None:
            self.peer_id = peer_id = spiffe_id_of(transport.get_extra_info("peercert"))
            if peer_id:  # the header value, built once per connection
                self.peer_xfcc = xfcc_value(tls.own_id, peer_id)
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
        proto.peer_id = self.peer_id
        proto.peer_xfcc = self.peer_xfcc
        listener._conns.add(proto)
        if self.reader is not None:
            self.reader.inner = proto  # TLS: the reader stays the transport's protocol
        else:
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

    def __init__(self, name: str, starter: StreamStarter, tls: InboundTls | None = None) -> None:
        self.name = name
        self.starter = starter
        self.tls = tls
        self.refused: dict[str, int] = {}  # mesh TLS refusals by reason
        self.tls_accepted = 0
        self.plain_accepted = 0
        self._sock: socket.socket | None = None  # with tls: the listening socket
        self._accepting: asyncio.Task[None] | None = None
        self._peeking: dict[socket.socket, asyncio.TimerHandle] = {}
        self._starting: set[asyncio.Task[None]] = set()
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
        self._stop_accepting()
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
        tls: dict[str, Any] = {}
        if self.tls is not None:
            tls["tls"] = {
                "mode": "STRICT" if self.tls.strict else "PERMISSIVE",
                "identity": self.tls.own_id,
                "tls_accepted": self.tls_accepted,
                "plaintext_accepted": self.plain_accepted,
                "refused": dict(self.refused),
            }
        return {
            **tls,
            "name": self.name,
            "address": "{}:{}".format(*self._address),
            "closing": self.closing,
            "connections": len(conns),
            "streams": sum(c["streams"] for c in conns),
            "no_route": self.starter.no_route,
            "downstream": conns,
            "upstream": self.starter.pool.stats(),
        }

    # -- mesh TLS: own accept loop, first-byte peek ------------------------------------

    def _serve_tls(self, sock: socket.socket) -> None:
        self._sock = sock
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop(sock))

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while not self.closing:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if self.closing:
                    return
                _log.warning("accept_failed", listener=self.name, error=str(exc))
                await asyncio.sleep(0.1)  # e.g. out of file descriptors: do not spin
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._peeking[conn] = loop.call_later(FIRST_BYTE_TIMEOUT, self._silent, conn)
            loop.add_reader(conn.fileno(), self._first_byte, conn)

    def _unpeek(self, conn: socket.socket) -> None:
        timer = self._peeking.pop(conn, None)
        if timer is not None:
            timer.cancel()
            asyncio.get_running_loop().remove_reader(conn.fileno())

    def _silent(self, conn: socket.socket) -> None:
        self._unpeek(conn)
        conn.close()

    def _refuse(self, reason: str, peer: str, detail: str = "") -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        _log.warning(
            "mtls_refused", listener=self.name, reason=reason, peer=peer, detail=detail or reason
        )

    def _first_byte(self, conn: socket.socket) -> None:
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            first = b""
        self._unpeek(conn)
        tls = self.tls
        if not first or self.closing or tls is None:
            conn.close()
            return
        if first[0] == _TLS_HANDSHAKE:
            context: ssl.SSLContext | None = tls.context()
        elif tls.strict:
            self._refuse("plaintext in STRICT", _peer(conn))
            conn.close()
            return
        else:
            context = None
        task = asyncio.get_running_loop().create_task(self._start(conn, context))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _start(self, conn: socket.socket, context: ssl.SSLContext | None) -> None:
        loop = asyncio.get_running_loop()
        peer = _peer(conn)
        try:
            if context is None:
                await loop.connect_accepted_socket(lambda: _Sniffer(self), conn)
                self.plain_accepted += 1
                return
            await loop.connect_accepted_socket(
                lambda: _tls_sniffer(self),
                conn,
                ssl=context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
            )
            self.tls_accepted += 1
        except ssl.SSLError as exc:
            self._refuse(_tls_reason(exc), peer, str(exc))
            conn.close()
        except (OSError, TimeoutError) as exc:
            self._refuse("handshake failed", peer, str(exc) or type(exc).__name__)
            conn.close()

    def _stop_accepting(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            self._accepting = None
        for conn in list(self._peeking):
            self._unpeek(conn)
            conn.close()
        for task in list(self._starting):
            task.cancel()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _tls_sniffer(listener: Listener) -> TlsReader:
    sniffer = _Sniffer(listener)
    sniffer.reader = TlsReader(sniffer)
    return sniffer.reader


def _peer(conn: socket.socket) -> str:
    try:
        host, port = conn.getpeername()[:2]
    except OSError:
        return ""
    return f"{host}:{port}"


def _tls_reason(exc: ssl.SSLError) -> str:
    """A short, stable reason for a refused handshake (the log's `reason`)."""
    verify = getattr(exc, "verify_message", "") or ""
    reason = getattr(exc, "reason", "") or ""
    text = f"{verify} {reason} {exc}".lower()
    if "expired" in text:
        return "expired certificate"
    if "not yet valid" in text:
        return "certificate not yet valid"
    if "peer did not return a certificate" in text or "certificate required" in text:
        return "no client certificate"
    if "unable to get local issuer" in text or "unknown ca" in text or "self-signed" in text:
        return "unknown CA"
    if "wrong version" in text or "unsupported protocol" in text or "no protocols" in text:
        return "TLS version below 1.3"
    return f"handshake failed: {reason or exc}"


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
    tls: InboundTls | None = None,
) -> Listener:
    """Bind `host:port` (0 picks a free port) and relay every stream via `dispatcher`.

    `tls`: mesh TLS on this port (PERMISSIVE or STRICT, see the module doc);
    callers' identities then reach the app in `x-forwarded-client-cert`.
    """
    starter = StreamStarter(name, dispatcher, pool, relay_metrics(metrics), access_log, tls)
    listener = Listener(name, starter, tls)
    loop = asyncio.get_running_loop()
    if tls is not None:
        sock = _bind(host, port)
        sockname = sock.getsockname()
        listener._address = (str(sockname[0]), int(sockname[1]))
        listener._serve_tls(sock)
        return listener
    listener.server = await loop.create_server(
        lambda: _Sniffer(listener), host, port, ssl=ssl_context, reuse_address=True
    )
    sockname = listener.server.sockets[0].getsockname()
    listener._address = (str(sockname[0]), int(sockname[1]))
    return listener


def _bind(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket (as `create_server` would make it)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
