"""The client-facing HTTP/2 connection of a listener.

Invariants:
- one Exchange per request stream, keyed by its downstream stream id;
- protocol errors from the client end the connection with the GOAWAY h2
  chose (RFC 9113 section 5.4.1), and every exchange on it is cancelled;
- a malformed request or trailer block (checked by `scan_request`, cheaper
  than h2's own validation) resets only its stream with PROTOCOL_ERROR;
- graceful shutdown sends GOAWAY(last seen stream id), refuses later streams
  with REFUSED_STREAM and closes once the in-flight streams are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from hyperframe.frame import GoAwayFrame

from sidecar.transport.dispatch import StreamStarter
from sidecar.transport.exchange import Exchange
from sidecar.transport.h2conn import (
    flush_dirty,
    mark_dirty,
    new_server_connection,
    send_flow_controlled,
)
from sidecar.transport.headers import (
    Header,
    grpc_error_headers,
    http_error_response,
    scan_request,
    trailers_error,
)

__all__ = ["H2Downstream"]

_log = structlog.get_logger("sidecar.transport")

_NO_ERROR = int(ErrorCodes.NO_ERROR)
_REFUSED = int(ErrorCodes.REFUSED_STREAM)
_PROTOCOL_ERROR = int(ErrorCodes.PROTOCOL_ERROR)


class H2Downstream(asyncio.Protocol):
    """Serves one client connection; relays each stream through the starter."""

    def __init__(self, starter: StreamStarter, on_closed: Callable[[Any], None]) -> None:
        self.starter = starter
        self.on_closed = on_closed
        self.h2 = new_server_connection()
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Exchange] = {}
        self.dirty = False
        self.draining = False
        self.closed = False
        self.goaway_last = 0
        self.requests = 0

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        mark_dirty(self)

    def data_received(self, data: bytes) -> None:
        h2 = self.h2
        try:
            events: list[Any] = h2.receive_data(data)
        except ProtocolError:
            self._abort()
            flush_dirty()
            return
        try:
            self._handle(events)
        except Exception as exc:  # a bug must cost this connection, never the listener
            _log.warning("downstream_connection_failed", error=repr(exc), exc_info=True)
            h2.close_connection(ErrorCodes.INTERNAL_ERROR)
            self._abort()
        flush_dirty()

    def _handle(self, events: list[Any]) -> None:
        h2 = self.h2
        streams = self.streams
        for ev in events:
            kind = type(ev)
            if kind is DataReceived:
                ex = streams.get(ev.stream_id)
                if ex is None:
                    h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                else:
                    size = len(ev.data)
                    ex.req_data(ev.data, ev.flow_controlled_length - size)
            elif kind is RequestReceived:
                self._request(ev)
            elif kind is StreamEnded:
                ex = streams.get(ev.stream_id)
                if ex is not None:
                    ex.req_finished(None)
            elif kind is WindowUpdated:
                self._window_opened(ev.stream_id)
            elif kind is StreamReset:
                ex = streams.get(ev.stream_id)
                if ex is not None:
                    ex.down_reset()
            elif kind is TrailersReceived:
                ex = streams.get(ev.stream_id)
                if trailers_error(ev.headers):
                    self.d_reset_sid(ev.stream_id, _PROTOCOL_ERROR)
                    if ex is not None:
                        ex.down_reset()
                elif ex is not None:
                    ex.req_finished(ev.headers)
            elif kind is RemoteSettingsChanged:
                self._window_opened(0)
            elif kind is ConnectionTerminated:
                self.draining = True
                self._maybe_close()
        mark_dirty(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_all()
        self.on_closed(self)
        flush_dirty()

    def flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        data = self.h2.data_to_send()
        if data and not transport.is_closing():
            transport.write(data)

    # -- streams -----------------------------------------------------------------

    def _request(self, ev: Any) -> None:
        sid: int = ev.stream_id
        if self.draining and sid > self.goaway_last:
            self.h2.reset_stream(sid, _REFUSED)
            return
        self.requests += 1
        headers = ev.headers
        head = scan_request(headers)
        if head.error:
            # RFC 9113 8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR.
            self.h2.reset_stream(sid, _PROTOCOL_ERROR)
            return
        ex = Exchange(
            self,
            sid,
            headers if type(headers) is list else list(headers),
            head.is_grpc,
            ev.stream_ended is not None,
            head.timeout_index,
        )
        self.streams[sid] = ex
        self.starter.begin(ex, head)

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

    # h2 may have closed a stream under us within the same batch (for example,
    # it answered a protocol violation with RST_STREAM): such a send raises
    # StreamClosedError, and the exchange is then over.

    def d_headers(self, ex: Exchange, headers: list[Header], end: bool) -> None:
        mark_dirty(self)
        try:
            self.h2.send_headers(ex.down_sid, headers, end_stream=end)
        except StreamClosedError:
            ex.finish(False)

    def d_data(self, ex: Exchange, data: bytes, end: bool) -> int:
        mark_dirty(self)
        try:
            return send_flow_controlled(self.h2, ex.down_sid, data, end)
        except StreamClosedError:
            ex.finish(False)
            return len(data)

    def d_trailers(self, ex: Exchange, headers: list[Header]) -> None:
        mark_dirty(self)
        try:
            self.h2.send_headers(ex.down_sid, headers, end_stream=True)
        except StreamClosedError:
            ex.finish(False)

    def d_reset(self, ex: Exchange, code: int) -> None:
        self.d_reset_sid(ex.down_sid, code)

    def d_reset_sid(self, sid: int, code: int) -> None:
        """RST_STREAM `sid` unless it is closed already."""
        stream = self.h2.streams.get(sid)
        if stream is not None and not stream.closed:
            self.h2.reset_stream(sid, code)
            mark_dirty(self)

    def d_ack(self, ex: Exchange, size: int) -> None:
        self.h2.acknowledge_received_data(size, ex.down_sid)
        mark_dirty(self)

    def d_error(self, ex: Exchange, grpc_status: int, http_status: int, message: str) -> None:
        mark_dirty(self)
        try:
            if ex.is_grpc:
                self.h2.send_headers(
                    ex.down_sid, grpc_error_headers(grpc_status, message), end_stream=True
                )
            else:
                headers, body = http_error_response(http_status, message)
                self.h2.send_headers(ex.down_sid, headers)
                send_flow_controlled(self.h2, ex.down_sid, body, True)
        except StreamClosedError:
            pass

    def d_done(self, ex: Exchange) -> None:
        sid = ex.down_sid
        self.streams.pop(sid, None)
        if self.closed:
            return
        stream = self.h2.streams.get(sid)
        if stream is not None and not stream.closed:
            # The answer is complete; the caller need not send the rest (RFC 9113 8.1).
            self.h2.reset_stream(sid, _NO_ERROR)
            mark_dirty(self)
        if self.draining and not self.streams:
            self._maybe_close()

    # -- shutdown --------------------------------------------------------------------

    def drain(self) -> None:
        """Graceful: GOAWAY now, close when the streams in flight are done."""
        if self.closed or self.draining:
            return
        self.draining = True
        self.goaway_last = self.h2.highest_inbound_stream_id
        self.flush()
        if self.transport is not None and not self.transport.is_closing():
            frame = GoAwayFrame(0, last_stream_id=self.goaway_last, error_code=_NO_ERROR)
            self.transport.write(frame.serialize())
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.streams or self.closed:
            return
        self.closed = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.h2.close_connection()
            self.flush()
            transport.close()

    def abort(self) -> None:
        """Grace is over: cancel what is left and close."""
        self._cancel_all()
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.h2.close_connection()
            self.flush()
            self.transport.close()

    def _abort(self) -> None:
        """The client broke the protocol: h2 queued the GOAWAY; send it and close."""
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
