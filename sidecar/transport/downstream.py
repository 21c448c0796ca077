"""The client-facing HTTP/2 connection of a listener.

Invariants:
- one Exchange per request stream, keyed by its downstream stream id;
- protocol errors from the client end the connection with the GOAWAY the
  codec chose (RFC 9113 section 5.4.1), and every exchange on it is cancelled;
- a malformed request or trailer block (checked by `scan_request`) resets
  only its stream with PROTOCOL_ERROR;
- graceful shutdown sends GOAWAY(last seen stream id), refuses later streams
  with REFUSED_STREAM and closes once the in-flight streams are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from sidecar.transport.dispatch import StreamStarter, peer_ip_of
from sidecar.transport.exchange import Exchange
from sidecar.transport.flush import flush_dirty, mark_dirty, write_queued
from sidecar.transport.frames import INTERNAL_ERROR, NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM
from sidecar.transport.h2conn import (
    EV_DATA,
    EV_DATA_END,
    EV_GOAWAY,
    EV_HEADERS,
    EV_RESET,
    EV_SETTINGS,
    EV_TRAILERS,
    EV_WINDOW,
    ConnectionFailed,
    Event,
    H2Connection,
    StreamGone,
)
from sidecar.transport.headers import (
    Header,
    RequestHead,
    grpc_error_headers,
    http_error_response,
    scan_request,
    trailers_error,
)

__all__ = ["H2Downstream"]

_log = structlog.get_logger("sidecar.transport")


class H2Downstream(asyncio.Protocol):
    """Serves one client connection; relays each stream through the starter."""

    def __init__(self, starter: StreamStarter, on_closed: Callable[[Any], None]) -> None:
        self.starter = starter
        self.on_closed = on_closed
        self.h2 = H2Connection(client=False, scan=scan_request)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Exchange] = {}
        self.dirty = False
        self.draining = False
        self.closed = False
        self.goaway_last = 0
        self.requests = 0
        self.peer_ip = ""
        self.peer_id = ""  # the caller's verified SPIFFE ID (mesh TLS), else ""
        self.peer_xfcc = b""  # its x-forwarded-client-cert value, else b""

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer_ip = peer_ip_of(transport)
        mark_dirty(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ConnectionFailed:
            self._abort()
            flush_dirty()
            return
        try:
            self._handle(events)
        except Exception as exc:  # a bug must cost this connection, never the listener
            _log.warning("downstream_connection_failed", error=repr(exc), exc_info=True)
            self.h2.close(INTERNAL_ERROR)
            self._abort()
        flush_dirty()

    def _handle(self, events: list[Event]) -> None:
        h2 = self.h2
        streams = self.streams
        for kind, sid, payload, arg in events:
            if EV_DATA <= kind <= EV_DATA_END:
                ex = streams.get(sid)
                if ex is None:
                    h2.ack(sid, arg)
                else:
                    ex.req_data(payload, arg - len(payload), kind == EV_DATA_END)
            elif kind == EV_HEADERS:
                self._request(sid, payload, arg)
            elif kind == EV_WINDOW:
                self._window_opened(sid)
            elif kind == EV_TRAILERS:
                ex = streams.get(sid)
                if trailers_error(payload):
                    self.d_reset_sid(sid, PROTOCOL_ERROR)
                    if ex is not None:
                        ex.down_reset()
                elif ex is not None:
                    ex.req_finished(payload)
            elif kind == EV_RESET:
                ex = streams.get(sid)
                if ex is not None:
                    ex.down_reset()
            elif kind == EV_SETTINGS:
                self._window_opened(0)
            elif kind == EV_GOAWAY:
                self.draining = True
                self._maybe_close()
        mark_dirty(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_all()
        self.on_closed(self)
        flush_dirty()

    def flush(self) -> None:
        write_queued(self.transport, self.h2)

    # -- streams -----------------------------------------------------------------

    def _request(self, sid: int, headers: Sequence[Header], end: int) -> None:
        st = self.h2.streams.get(sid)
        if st is None:
            return  # reset later in the same batch (a stream error of the codec)
        if self.draining and sid > self.goaway_last:
            self.h2.reset(sid, REFUSED_STREAM)
            return
        self.requests += 1
        head: RequestHead = st.head  # scan_request(headers), shared by identical blocks
        if head.error:
            # RFC 9113 8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR.
            self.h2.reset(sid, PROTOCOL_ERROR)
            return
        ex = Exchange(self, sid, headers, head.is_grpc, bool(end), head.timeout_index)
        self.streams[sid] = ex
        self.starter.begin(ex, head, self.peer_ip)

    def _window_opened(self, sid: int) -> None:
        if sid:
            ex = self.streams.get(sid)
            if ex is not None and ex.resp_buf is not None:
                ex.drain_resp()
            return
        for ex in list(self.streams.values()):
            if ex.resp_buf is not None:
                ex.drain_resp()

    # -- Exchange's Downstream interface --------------------------------------------

    # The codec may have closed a stream under us within the same batch (for
    # example, it answered a protocol violation with RST_STREAM): such a send
    # raises StreamGone, and the exchange is then over (the caller's doing).

    def d_headers(self, ex: Exchange, headers: Sequence[Header], end: bool) -> None:
        mark_dirty(self)
        try:
            self.h2.send_headers(ex.down_sid, headers, end)
        except StreamGone:
            ex.finish(True)

    def d_data(self, ex: Exchange, data: bytes, end: bool) -> int:
        mark_dirty(self)
        try:
            return self.h2.send_data(ex.down_sid, data, end)
        except StreamGone:
            ex.finish(True)
            return len(data)

    def d_trailers(self, ex: Exchange, headers: Sequence[Header]) -> None:
        mark_dirty(self)
        try:
            self.h2.send_headers(ex.down_sid, headers, True)
        except StreamGone:
            ex.finish(True)

    def d_reset(self, ex: Exchange, code: int) -> None:
        self.d_reset_sid(ex.down_sid, code)

    def d_reset_sid(self, sid: int, code: int) -> None:
        """RST_STREAM `sid` unless it is closed already."""
        self.h2.reset(sid, code)
        mark_dirty(self)

    def d_ack(self, ex: Exchange, size: int) -> None:
        self.h2.ack(ex.down_sid, size)
        mark_dirty(self)

    def d_error(
        self,
        ex: Exchange,
        grpc_status: int,
        http_status: int,
        message: str,
        extra: Sequence[Header],
    ) -> None:
        mark_dirty(self)
        try:
            if ex.is_grpc:
                headers = grpc_error_headers(grpc_status, message, extra)
                self.h2.send_headers(ex.down_sid, headers, True)
            else:
                headers, body = http_error_response(http_status, message, extra)
                self.h2.send_headers(ex.down_sid, headers, False)
                self.h2.send_data(ex.down_sid, body, True)
        except StreamGone:
            pass

    def d_done(self, ex: Exchange) -> None:
        sid = ex.down_sid
        self.streams.pop(sid, None)
        if self.closed:
            return
        if self.h2.is_open(sid):
            # The answer is complete; the caller need not send the rest (RFC 9113 8.1).
            self.h2.reset(sid, NO_ERROR)
            mark_dirty(self)
        if self.draining and not self.streams:
            self._maybe_close()

    # -- shutdown --------------------------------------------------------------------

    def drain(self) -> None:
        """Graceful: GOAWAY now, close when the streams in flight are done."""
        if self.closed or self.draining:
            return
        self.draining = True
        self.goaway_last = self.h2.highest_remote
        self.h2.close(NO_ERROR, self.goaway_last)
        self.flush()
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.streams or self.closed:
            return
        self.closed = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.h2.close(NO_ERROR)
            self.flush()
            transport.close()

    def abort(self) -> None:
        """Grace is over: cancel what is left and close."""
        self._cancel_all()
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.h2.close(NO_ERROR)
            self.flush()
            self.transport.close()

    def _abort(self) -> None:
        """The client broke the protocol: the codec queued the GOAWAY; send it and close."""
        self.closed = True
        self.flush()
        self._cancel_all()
        if self.transport is not None:
            self.transport.close()

    def _cancel_all(self) -> None:
        streams, self.streams = self.streams, {}
        for ex in streams.values():
            ex.down_reset()

    def stats(self) -> dict[str, Any]:
        return {"protocol": "h2", "streams": len(self.streams), "draining": self.draining}
