"""Pooled HTTP/2 client connections to upstream addresses (h2c, or mesh TLS).

Invariants:
- streams are multiplexed: a new connection is opened only when every
  connection to the address is at the peer's MAX_CONCURRENT_STREAMS or going
  away (GOAWAY received), never per request;
- a GOAWAY stops new streams on that connection; streams up to its
  last-stream-id finish, later ones are refused (`Exchange.up_refused`: the
  peer never processed them, so they are retried, or reset REFUSED_STREAM
  downstream); calls still waiting for a stream slot move to another connection;
- a connect failure or lost connection hands every call it carried to
  `Exchange.up_failed` with the failure kind (FAIL_CONNECT, FAIL_RESET); a
  stream whose HEADERS were never written (opened since the last write,
  `writes`) goes to `Exchange.up_unsent` instead: it can not have had effects;
- with PoolLimits, `connections` counts this pool's open connections of the
  cluster (each released once, when it closes) and `pending` the calls in a
  `waiting` list; a call that would exceed either fails fast, naming the limit;
- with mesh TLS (`tls(cluster)` gives a context and the SPIFFE ID expected),
  a connection is TLS 1.3 and serves calls only once the server's verified
  certificate names that ID; otherwise every call it carried fails as a
  connect failure naming both IDs. `retire_tls()` (certificate rotation) takes
  TLS connections out of rotation: their streams finish, new calls connect
  with the new certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from sidecar.tls.identity import spiffe_id_of
from sidecar.transport.contract import FAIL_CONNECT, FAIL_RESET, Pick, PoolLimits
from sidecar.transport.exchange import UNAVAILABLE, Exchange
from sidecar.transport.flush import flush_dirty, mark_dirty_turn, write_queued
from sidecar.transport.frames import CANCEL, PROTOCOL_ERROR
from sidecar.transport.h2conn import (
    EV_DATA,
    EV_DATA_END,
    EV_GOAWAY,
    EV_HEADERS,
    EV_RESET,
    EV_SETTINGS,
    EV_TRAILERS,
    EV_WINDOW,
    MAX_STREAM_ID,
    ConnectionFailed,
    Event,
    H2Connection,
    StreamGone,
)
from sidecar.transport.headers import Header, response_error, trailers_error
from sidecar.transport.tlsread import TlsReader

__all__ = ["UpstreamConnection", "UpstreamPool"]

_log = structlog.get_logger("sidecar.transport")
CONNECT_TIMEOUT = 10.0
# A peer that accepts TCP but never sends its SETTINGS (not an HTTP/2 server, or
# hung) would otherwise hold every call without a deadline forever.
HANDSHAKE_TIMEOUT = 10.0
# RFC 9113: no limit until the peer's SETTINGS say one; streams beyond a
# lower advertised limit wait on the connection for a slot.
_ASSUMED_MAX_STREAMS = 1000

# A cluster's client TLS: the context and the peer SPIFFE ID required; None: plaintext.
ClientTls = Callable[[str], "tuple[ssl.SSLContext, str] | None"]


class UpstreamConnection(asyncio.Protocol):
    """One h2c client connection; carries many exchanges."""

    def __init__(
        self,
        pool: UpstreamPool,
        address: tuple[str, int],
        loop: asyncio.AbstractEventLoop,
        limits: PoolLimits | None = None,
        tls: tuple[ssl.SSLContext, str] | None = None,
    ) -> None:
        self.pool = pool
        self.tls = tls
        self.limits = limits  # counted in limits.connections until released
        self.loop = loop  # held: asyncio.get_running_loop() costs a getpid() per call
        self.address = address
        self.label = f"{address[0]}:{address[1]}"
        self.h2 = H2Connection(client=True)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Exchange] = {}
        self.waiting: list[Exchange] = []
        self.dirty = False
        self.going_away = False
        self.closed = False
        self.max_streams = _ASSUMED_MAX_STREAMS
        self.writes = 0  # socket writes so far: a stream opened at the current count is unsent
        self.handshake: asyncio.TimerHandle | None = None  # until the peer's SETTINGS
        if limits is not None:
            limits.connections += 1

    # -- pool side -------------------------------------------------------------------

    def has_capacity(self) -> bool:
        return (
            not self.going_away
            and not self.closed
            and len(self.streams) + len(self.waiting) < self.max_streams
            # stream ids run out after 2^30 streams: then a new connection
            and self.h2.next_local + 2 * len(self.waiting) < MAX_STREAM_ID
        )

    def open(self, ex: Exchange) -> None:
        """Carry `ex`: start its stream now, or once connected or a stream slot frees."""
        ex.up = self
        if self.transport is None or self.waiting or len(self.streams) >= self.max_streams:
            self._queue(ex)
        else:
            self._start(ex)

    def _queue(self, ex: Exchange) -> None:
        """Make `ex` wait for the connection or a stream slot, unless max_pending says no."""
        limits = ex.pick.limits if ex.pick is not None else None
        if limits is not None:
            if limits.pending >= limits.max_pending:
                limits.overflows += 1
                ex.up = None
                ex.fail(
                    UNAVAILABLE,
                    503,
                    f"circuit breaker for '{limits.cluster}': max_pending_requests "
                    f"({limits.max_pending}) reached",
                    ok=True,
                )
                return
            limits.pending += 1
        self.waiting.append(ex)

    def _take_waiting(self) -> list[Exchange]:
        """Empty the waiting list (they are no longer pending)."""
        waiting, self.waiting = self.waiting, []
        for ex in waiting:
            limits = ex.pick.limits if ex.pick is not None else None
            if limits is not None:
                limits.pending -= 1
        return waiting

    def _admit(self) -> None:
        """Start waiting streams while the connection has slots for them."""
        waiting = self.waiting
        while waiting and len(self.streams) < self.max_streams:
            ex = waiting.pop(0)
            limits = ex.pick.limits if ex.pick is not None else None
            if limits is not None:
                limits.pending -= 1
            if not ex.finished:
                self._start(ex)

    def _start(self, ex: Exchange) -> None:
        h2 = self.h2
        headers = ex.request_headers(self.loop.time() if ex.deadline or ex.try_deadline else 0.0)
        end = ex.req_end and ex.req_buf is None and ex.req_trailers is None
        sid = h2.open_stream(headers, end)
        if h2.next_local >= MAX_STREAM_ID:  # ids used up: retire once the streams finish
            self.going_away = True
            self.pool._forget(self)
        self.streams[sid] = ex
        ex.up_mark = self.writes
        mark_dirty_turn(self, self.loop)
        ex.started(self, sid)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.address
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                if self.tls is None:
                    await loop.create_connection(lambda: self, host, port)
                else:
                    await loop.create_connection(
                        lambda: TlsReader(self), host, port, ssl=self.tls[0], server_hostname=""
                    )
        except ssl.SSLError as exc:
            reason = getattr(exc, "verify_message", "") or getattr(exc, "reason", "") or str(exc)
            self._fail_all(
                f"upstream {self.label}: TLS handshake failed: {reason} (is the peer a mesh "
                "sidecar with a certificate from this mesh's CA?)",
                FAIL_CONNECT,
            )
            flush_dirty()
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            self._fail_all(f"upstream {self.label}: connect failed: {reason}", FAIL_CONNECT)
            flush_dirty()

    # -- Exchange's Upstream interface ---------------------------------------------

    def u_data(self, ex: Exchange, data: bytes, end: bool) -> int:
        mark_dirty_turn(self, self.loop)
        try:
            return self.h2.send_data(ex.up_sid, data, end)
        except StreamGone:
            return len(data)  # the upstream is done with this stream; drop what is left

    def u_trailers(self, ex: Exchange, headers: Sequence[Header]) -> None:
        mark_dirty_turn(self, self.loop)
        with contextlib.suppress(StreamGone):
            self.h2.send_headers(ex.up_sid, headers, True)

    def u_ack(self, ex: Exchange, size: int) -> None:
        self.h2.ack(ex.up_sid, size)
        mark_dirty_turn(self, self.loop)

    def u_done(self, ex: Exchange) -> None:
        sid = ex.up_sid
        if not sid:
            if ex in self.waiting:
                self.waiting.remove(ex)
                limits = ex.pick.limits if ex.pick is not None else None
                if limits is not None:
                    limits.pending -= 1
            return
        if self.streams.pop(sid, None) is None or self.closed:
            return
        if self.h2.is_open(sid):
            self.h2.reset(sid, CANCEL)
            mark_dirty_turn(self, self.loop)
        if self.waiting and self.transport is not None:
            self._admit()
        if self.going_away and not self.streams:
            self.close()

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        if self.tls is not None and not self._peer_verified(transport):
            return
        self.transport = transport
        if self.closed:
            transport.close()
            return
        self.handshake = self.loop.call_later(self.pool.handshake_timeout, self._handshake_expired)
        mark_dirty_turn(self, self.loop)
        self._admit()
        flush_dirty()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ConnectionFailed as exc:
            self.flush()
            self._fail_all(f"upstream {self.label}: protocol error: {exc}", FAIL_RESET, exc.code)
            self.close()
            flush_dirty()
            return
        try:
            self._handle(events)
        except Exception as exc:  # a bug must cost this connection, never the process
            _log.warning("upstream_connection_failed", upstream=self.label, error=repr(exc))
            self._fail_all(f"upstream {self.label}: proxy error: {exc!r}", 0)
            self.close()
        flush_dirty()

    def _handle(self, events: list[Event]) -> None:
        streams = self.streams
        for kind, sid, payload, arg in events:
            if EV_DATA <= kind <= EV_DATA_END:
                ex = streams.get(sid)
                if ex is None:
                    self.h2.ack(sid, arg)
                else:
                    ex.resp_data(payload, arg - len(payload), kind == EV_DATA_END)
            elif kind == EV_HEADERS:
                ex = streams.get(sid)
                if ex is None:
                    continue
                error = response_error(payload)
                if error:
                    self._malformed(sid, ex, error)
                else:
                    ex.resp_headers(payload, bool(arg))
            elif kind == EV_TRAILERS:
                ex = streams.get(sid)
                if ex is None:
                    continue
                error = trailers_error(payload)
                if error:
                    self._malformed(sid, ex, error)
                else:
                    ex.resp_finished(payload)
            elif kind == EV_WINDOW:
                self._window_opened(sid)
            elif kind == EV_RESET:
                ex = streams.get(sid)
                if ex is not None:
                    ex.up_reset(arg)
            elif kind == EV_SETTINGS:
                if self.handshake is not None:
                    self.handshake.cancel()
                    self.handshake = None
                self._settings_changed()
            elif kind == EV_GOAWAY:
                self._goaway(sid, arg)
        mark_dirty_turn(self, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        # Lost before the peer's SETTINGS: HTTP/2 never came up (a connect failure).
        failure = FAIL_RESET
        if self.handshake is not None:
            self.handshake.cancel()
            self.handshake = None
            failure = FAIL_CONNECT
        reason = str(exc) if exc else "closed by peer"
        self._fail_all(f"upstream {self.label}: connection lost: {reason}", failure)
        flush_dirty()

    # -- internals -------------------------------------------------------------------

    def _peer_verified(self, transport: Any) -> bool:
        """The server's certificate names the service we meant to call (else fail all)."""
        expected = self.tls[1] if self.tls is not None else ""
        got = spiffe_id_of(transport.get_extra_info("peercert"))
        if got == expected:
            return True
        _log.warning("upstream_identity_mismatch", upstream=self.label, expected=expected, got=got)
        self._fail_all(
            f"upstream {self.label}: server identity {got or '(none)'} is not {expected}",
            FAIL_CONNECT,
        )
        transport.close()
        flush_dirty()
        return False

    def flush(self) -> None:
        if write_queued(self.transport, self.h2):
            self.writes += 1

    def _window_opened(self, sid: int) -> None:
        if sid:
            ex = self.streams.get(sid)
            if ex is not None and ex.req_buf is not None:
                ex.drain_req()
            return
        for ex in list(self.streams.values()):
            if ex.req_buf is not None:
                ex.drain_req()

    def _settings_changed(self) -> None:
        limit = self.h2.peer_max_streams
        self.max_streams = limit if limit < 1 << 20 else 1 << 20
        self._window_opened(0)
        if self.waiting and not self.going_away:
            self._admit()

    def _malformed(self, sid: int, ex: Exchange, error: str) -> None:
        """RFC 9113 8.1.1: a malformed response is a stream error; it is never relayed."""
        self.h2.reset(sid, PROTOCOL_ERROR)
        ex.up_failed(
            f"upstream {self.label}: malformed response: {error}", FAIL_RESET, PROTOCOL_ERROR
        )

    def _handshake_expired(self) -> None:
        self.handshake = None
        if self.closed:
            return
        timeout = self.pool.handshake_timeout
        self._fail_all(
            f"upstream {self.label}: no SETTINGS within {timeout:g} s of connecting "
            "(not an HTTP/2 server, or not answering)",
            FAIL_CONNECT,
        )
        self.close()
        flush_dirty()

    def _goaway(self, last_stream_id: int, error_code: Any) -> None:
        self.going_away = True
        self.pool._forget(self)
        for sid, ex in list(self.streams.items()):
            if sid > last_stream_id:
                self.streams.pop(sid, None)
                ex.up_refused()
        self._move_waiting()
        if not self.streams:
            self.close()

    def _move_waiting(self) -> None:
        """Calls waiting for a slot here never reached the peer: put them elsewhere."""
        for ex in self._take_waiting():
            ex.up = None
            if not ex.finished:
                self.pool.open(ex)

    def _fail_all(self, message: str, failure: int, code: int = 0) -> None:
        """The connection is over: hand every call it carried to its exchange.

        `failure` is the FAIL_* kind for the streams (0: never retry them).
        """
        self.closed = True
        self._release()
        streams, self.streams = self.streams, {}
        self.pool._forget(self)
        if failure == FAIL_RESET and self.transport is not None:
            self._move_waiting()  # connected, lost: the waiting ones were never sent
        else:
            for ex in self._take_waiting():
                ex.up_failed(message, failure, code)
        writes = self.writes
        for ex in streams.values():
            if failure == FAIL_RESET and ex.up_mark == writes:
                ex.up_unsent(message)
            else:
                ex.up_failed(message, failure, code)

    def _release(self) -> None:
        """Stop counting this connection against its cluster's max_connections (once)."""
        limits = self.limits
        if limits is not None:
            self.limits = None
            limits.connections -= 1

    def close(self) -> None:
        if self.handshake is not None:
            self.handshake.cancel()
            self.handshake = None
        self.closed = True
        self._release()
        self.pool._forget(self)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.h2.close(0, 0)
            self.flush()
            transport.close()

    def stats(self) -> dict[str, Any]:
        return {
            "streams": len(self.streams),
            "waiting": len(self.waiting),
            "max_streams": self.max_streams,
            "going_away": self.going_away,
            "connected": self.transport is not None and not self.closed,
        }


class UpstreamPool:
    """Upstream connections by address, shared by every listener of a sidecar."""

    def __init__(
        self,
        *,
        metrics: Any = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        tls: ClientTls | None = None,
    ) -> None:
        """`handshake_timeout`: seconds a new connection may take to send its SETTINGS;
        after that its calls fail UNAVAILABLE and it is closed. `tls`: mesh TLS
        per cluster (asked once per new connection)."""
        if not handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be > 0 seconds, got {handshake_timeout!r}")
        self.metrics = metrics
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self._by_address: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self._all: set[UpstreamConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def open(self, ex: Exchange) -> None:
        """Put `ex` on a connection to `ex.pick.address` with room for one more stream.

        With PoolLimits, a new connection beyond max_connections is not opened:
        the call waits on an existing one to that address, or fails fast.
        """
        pick: Pick = ex.pick  # type: ignore[assignment]
        if self.closed:  # a retry scheduled before the pool closed
            ex.fail(UNAVAILABLE, 503, "upstream connection pool closed (the sidecar is stopping)")
            return
        address = pick.address
        conns = self._by_address.get(address)
        if conns:
            for conn in reversed(conns):
                if conn.has_capacity():
                    conn.open(ex)
                    return
        limits = pick.limits
        if limits is not None and limits.connections >= limits.max_connections:
            if conns:
                conns[-1].open(ex)  # over its stream limit: waits (a pending call)
                return
            limits.overflows += 1
            ex.fail(
                UNAVAILABLE,
                503,
                f"circuit breaker for '{limits.cluster}': max_connections "
                f"({limits.max_connections}) reached",
                ok=True,
            )
            return
        if conns is None:
            conns = self._by_address[address] = []
        loop = asyncio.get_running_loop()
        tls = self.tls(pick.cluster) if self.tls is not None else None
        conn = UpstreamConnection(self, address, loop, limits, tls)
        conns.append(conn)
        self._all.add(conn)
        conn.open(ex)
        task = loop.create_task(conn.connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, conn: UpstreamConnection) -> None:
        """Take `conn` out of rotation (it still finishes its streams)."""
        conns = self._by_address.get(conn.address)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._by_address[conn.address]
        if conn.closed and not conn.streams:
            self._all.discard(conn)

    def retire_tls(self) -> None:
        """New certificate: TLS connections finish their streams; new calls reconnect."""
        for conn in list(self._all):
            if conn.tls is not None and not conn.going_away:
                conn.going_away = True
                self._forget(conn)
                if not conn.streams and not conn.waiting:
                    conn.close()

    def stats(self) -> dict[str, Any]:
        """Connections and streams per upstream address, for the admin page."""
        out: dict[str, Any] = {}
        for conn in self._all:
            out.setdefault(conn.label, []).append(conn.stats())
        return out

    async def close(self) -> None:
        """Close every connection now (streams still open are answered UNAVAILABLE)."""
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._all):
            conn._fail_all(f"upstream {conn.label}: connection pool closed", 0)
            conn.close()
        flush_dirty()
        self._all.clear()
        self._by_address.clear()
        await asyncio.sleep(0)
