"""Pooled HTTP/2 (h2c) client connections to upstream addresses.

Invariants:
- streams are multiplexed: a new connection is opened only when every
  connection to the address is at the peer's MAX_CONCURRENT_STREAMS or going
  away (GOAWAY received), never per request;
- a GOAWAY stops new streams on that connection; streams up to its
  last-stream-id finish, later ones are reset REFUSED_STREAM downstream so the
  caller may retry them (the peer never processed them);
- a connect failure or lost connection answers every stream it carried with
  UNAVAILABLE naming the address and the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog

from sidecar.transport.exchange import Exchange
from sidecar.transport.flush import flush_dirty, mark_dirty_turn, write_queued
from sidecar.transport.frames import CANCEL, PROTOCOL_ERROR, REFUSED_STREAM
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

__all__ = ["UpstreamConnection", "UpstreamPool"]

_log = structlog.get_logger("sidecar.transport")
CONNECT_TIMEOUT = 10.0
# A peer that accepts TCP but never sends its SETTINGS (not an HTTP/2 server, or
# hung) would otherwise hold every call without a deadline forever.
HANDSHAKE_TIMEOUT = 10.0
# RFC 9113: no limit until the peer's SETTINGS say one; streams beyond a
# lower advertised limit wait on the connection for a slot.
_ASSUMED_MAX_STREAMS = 1000


class UpstreamConnection(asyncio.Protocol):
    """One h2c client connection; carries many exchanges."""

    def __init__(
        self, pool: UpstreamPool, address: tuple[str, int], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.pool = pool
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
        self.handshake: asyncio.TimerHandle | None = None  # until the peer's SETTINGS

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
        """Carry `ex`: start its stream now, or once connected."""
        ex.up = self
        if self.transport is None:
            self.waiting.append(ex)
        else:
            self._start(ex)

    def _start(self, ex: Exchange) -> None:
        h2 = self.h2
        if len(self.streams) >= self.max_streams:
            self.waiting.append(ex)
            return
        headers = ex.request_headers(self.loop.time() if ex.deadline else 0.0)
        end = ex.req_end and ex.req_buf is None and ex.req_trailers is None
        sid = h2.open_stream(headers, end)
        if h2.next_local >= MAX_STREAM_ID:  # ids used up: retire once the streams finish
            self.going_away = True
            self.pool._forget(self)
        self.streams[sid] = ex
        mark_dirty_turn(self, self.loop)
        ex.started(self, sid)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.address
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.create_connection(lambda: self, host, port)
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            self._fail_all(f"upstream {self.label}: connect failed: {reason}")
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
            with contextlib.suppress(ValueError):
                self.waiting.remove(ex)
            return
        if self.streams.pop(sid, None) is None or self.closed:
            return
        if self.h2.is_open(sid):
            self.h2.reset(sid, CANCEL)
            mark_dirty_turn(self, self.loop)
        if self.waiting and self.transport is not None:
            self._start(self.waiting.pop(0))
        if self.going_away and not self.streams:
            self.close()

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.closed:
            transport.close()
            return
        self.handshake = self.loop.call_later(self.pool.handshake_timeout, self._handshake_expired)
        mark_dirty_turn(self, self.loop)
        waiting, self.waiting = self.waiting, []
        for ex in waiting:
            if not ex.finished:
                self._start(ex)
        flush_dirty()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ConnectionFailed as exc:
            self.flush()
            self._fail_all(f"upstream {self.label}: protocol error: {exc}")
            self.close()
            flush_dirty()
            return
        try:
            self._handle(events)
        except Exception as exc:  # a bug must cost this connection, never the process
            _log.warning("upstream_connection_failed", upstream=self.label, error=repr(exc))
            self._fail_all(f"upstream {self.label}: proxy error: {exc!r}")
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
        if self.handshake is not None:
            self.handshake.cancel()
            self.handshake = None
        self.closed = True
        self.pool._forget(self)
        reason = str(exc) if exc else "closed by peer"
        self._fail_all(f"upstream {self.label}: connection lost: {reason}")
        flush_dirty()

    # -- internals -------------------------------------------------------------------

    def flush(self) -> None:
        write_queued(self.transport, self.h2)

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

    def _malformed(self, sid: int, ex: Exchange, error: str) -> None:
        """RFC 9113 8.1.1: a malformed response is a stream error; it is never relayed."""
        self.h2.reset(sid, PROTOCOL_ERROR)
        ex.up_failed(f"upstream {self.label}: malformed response: {error}")

    def _handshake_expired(self) -> None:
        self.handshake = None
        if self.closed:
            return
        timeout = self.pool.handshake_timeout
        self._fail_all(
            f"upstream {self.label}: no SETTINGS within {timeout:g} s of connecting "
            "(not an HTTP/2 server, or not answering)"
        )
        self.close()
        flush_dirty()

    def _goaway(self, last_stream_id: int, error_code: Any) -> None:
        self.going_away = True
        self.pool._forget(self)
        for sid, ex in list(self.streams.items()):
            if sid > last_stream_id:
                self.streams.pop(sid, None)
                ex.up_reset(REFUSED_STREAM)
        if not self.streams:
            self.close()

    def _fail_all(self, message: str) -> None:
        self.closed = True
        self.pool._forget(self)
        exchanges = [*self.waiting, *self.streams.values()]
        self.waiting = []
        self.streams = {}
        for ex in exchanges:
            ex.up_failed(message)

    def close(self) -> None:
        if self.handshake is not None:
            self.handshake.cancel()
            self.handshake = None
        self.closed = True
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
        self, *, metrics: Any = None, handshake_timeout: float = HANDSHAKE_TIMEOUT
    ) -> None:
        """`handshake_timeout`: seconds a new connection may take to send its SETTINGS;
        after that its calls fail UNAVAILABLE and it is closed."""
        if not handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be > 0 seconds, got {handshake_timeout!r}")
        self.metrics = metrics
        self.handshake_timeout = handshake_timeout
        self._by_address: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self._all: set[UpstreamConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def open(self, ex: Exchange, address: tuple[str, int]) -> None:
        """Put `ex` on a connection to `address` with room for one more stream."""
        conns = self._by_address.get(address)
        if conns:
            for conn in reversed(conns):
                if conn.has_capacity():
                    conn.open(ex)
                    return
        else:
            conns = self._by_address[address] = []
        loop = asyncio.get_running_loop()
        conn = UpstreamConnection(self, address, loop)
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

    def stats(self) -> dict[str, Any]:
        """Connections and streams per upstream address, for the admin page."""
        out: dict[str, Any] = {}
        for conn in self._all:
            out.setdefault(conn.label, []).append(conn.stats())
        return out

    async def close(self) -> None:
        """Close every connection now (streams still open are answered UNAVAILABLE)."""
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._all):
            conn._fail_all(f"upstream {conn.label}: connection pool closed")
            conn.close()
        flush_dirty()
        self._all.clear()
        self._by_address.clear()
        await asyncio.sleep(0)
