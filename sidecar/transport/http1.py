"""The client-facing HTTP/1.1 connection: requests relayed as HTTP/2 streams.

Invariants:
- requests on one connection are answered in order; a pipelined request is
  parsed and buffered (bounded by pausing reads) but starts upstream only when
  the one before it is answered;
- the request body is acknowledged as it is forwarded: reading pauses while
  more than READ_LIMIT bytes wait for the upstream window;
- response bodies of unknown length are sent chunked; the upstream window is
  reopened only as the socket accepts bytes (pause_writing/resume_writing);
- an upstream reset after the response began closes the connection (HTTP/1.1
  has no other way to say the body is incomplete).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import httptools

from sidecar.transport.dispatch import StreamStarter, peer_ip_of
from sidecar.transport.exchange import Exchange
from sidecar.transport.flush import flush_dirty, mark_dirty
from sidecar.transport.headers import (
    Header,
    HeaderError,
    h1_request_to_h2,
    h2_response_to_h1,
    http_error_response,
    scan_request,
)

__all__ = ["H1Downstream"]

READ_LIMIT = 1 << 20


class H1Downstream(asyncio.Protocol):
    """Serves one HTTP/1.1 client connection."""

    def __init__(self, starter: StreamStarter, on_closed: Callable[[Any], None]) -> None:
        self.starter = starter
        self.on_closed = on_closed
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []
        self.dirty = False
        self.closed = False
        self.draining = False
        self.write_paused = False
        self.read_paused = False
        self.queue: deque[tuple[Exchange, bool]] = deque()  # (exchange, keep-alive)
        self.active: Exchange | None = None
        self.keep_alive = True
        self.chunked = False
        self.body_allowed = True
        self.requests = 0
        self._url = b""
        self._fields: list[Header] = []
        self._current: Exchange | None = None
        self._sid = 0
        self.peer_ip = ""
        self.peer_id = ""  # the caller's verified SPIFFE ID (mesh TLS), else ""
        self.peer_xfcc = b""  # its x-forwarded-client-cert value, else b""

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer_ip = peer_ip_of(transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrade is not supported; use HTTP/2 prior knowledge")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP/1.1 request: {exc}")
        self._start_next()
        flush_dirty()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        pending = [ex for ex, _ in self.queue]
        self.queue.clear()
        if self.active is not None:
            pending.append(self.active)
        for ex in pending:
            ex.down_reset()
        self.on_closed(self)
        flush_dirty()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.active is not None and self.active.resp_buf is not None:
            self.active.drain_resp()
            flush_dirty()

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._fields = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        method: bytes = parser.get_method()
        keep_alive = bool(parser.should_keep_alive())
        self._sid += 1
        try:
            headers = h1_request_to_h2(method, self._url, self._fields)
        except HeaderError as exc:
            self._reject(400, str(exc))
            return
        head = scan_request(headers, validate=False)
        ex = Exchange(self, self._sid, headers, head.is_grpc, False, head.timeout_index)
        ex.is_grpc = False  # an HTTP/1.1 caller reads HTTP statuses, not gRPC trailers
        self._current = ex
        self.queue.append((ex, keep_alive))
        self.requests += 1

    def on_body(self, body: bytes) -> None:
        ex = self._current
        if ex is not None:
            ex.req_data(body, 0)
            if ex.req_buf is not None and len(ex.req_buf) > READ_LIMIT and not self.read_paused:
                self.read_paused = True
                if self.transport is not None:
                    self.transport.pause_reading()

    def on_message_complete(self) -> None:
        ex = self._current
        self._current = None
        if ex is not None:
            ex.req_finished(None)

    # -- ordering --------------------------------------------------------------------

    def _start_next(self) -> None:
        if self.active is not None or not self.queue or self.closed:
            return
        ex, keep_alive = self.queue.popleft()
        self.active = ex
        self.keep_alive = keep_alive and not self.draining
        self.body_allowed = ex.headers[0][1] != b"HEAD"
        self.starter.begin(ex, scan_request(ex.headers, validate=False), self.peer_ip)

    # -- Exchange's Downstream interface --------------------------------------------

    def d_headers(self, ex: Exchange, headers: Sequence[Header], end: bool) -> None:
        head, self.chunked = h2_response_to_h1(
            headers, keep_alive=self.keep_alive, body_allowed=self.body_allowed
        )
        self.out.append(head)
        if end and self.chunked:
            self.out.append(b"0\r\n\r\n")
        self._mark()

    def d_data(self, ex: Exchange, data: bytes, end: bool) -> int:
        if self.write_paused:
            return 0
        if data and self.body_allowed:
            if self.chunked:
                self.out.append(b"%x\r\n" % len(data))
                self.out.append(data)
                self.out.append(b"\r\n")
            else:
                self.out.append(data)
        if end and self.chunked:
            self.out.append(b"0\r\n\r\n")
        self._mark()
        return len(data)

    def d_trailers(self, ex: Exchange, headers: Sequence[Header]) -> None:
        if self.chunked:
            fields = b"".join(n + b": " + v + b"\r\n" for n, v in headers if n[:1] != b":")
            self.out.append(b"0\r\n" + fields + b"\r\n")
        self._mark()

    def d_reset(self, ex: Exchange, code: int) -> None:
        self.keep_alive = False

    def d_ack(self, ex: Exchange, size: int) -> None:
        if self.read_paused and (ex.req_buf is None or len(ex.req_buf) <= READ_LIMIT):
            self.read_paused = False
            if self.transport is not None:
                self.transport.resume_reading()

    def d_error(
        self,
        ex: Exchange,
        grpc_status: int,
        http_status: int,
        message: str,
        extra: Sequence[Header],
    ) -> None:
        headers, body = http_error_response(http_status, message, extra)
        self.d_headers(ex, headers, False)
        self.d_data(ex, body, True)

    def d_done(self, ex: Exchange) -> None:
        if ex is not self.active:
            return
        self.active = None
        self.flush()
        if not self.keep_alive or ex.resp_buf is not None:
            self._close()
            return
        if self.read_paused:
            self.read_paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        self._start_next()
        if self.draining and self.active is None and not self.queue:
            self._close()

    # -- output ----------------------------------------------------------------------

    def _mark(self) -> None:
        mark_dirty(self)

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out = []

    def _reject(self, status: int, message: str) -> None:
        headers, body = http_error_response(status, message)
        head, _ = h2_response_to_h1(headers, keep_alive=False, body_allowed=True)
        self.out.append(head + body)
        self.queue.clear()
        self.flush()
        self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.flush()
            self.transport.close()

    def drain(self) -> None:
        """Graceful: finish the request in progress, then close."""
        self.draining = True
        self.keep_alive = False
        if self.active is None:
            self._close()

    def abort(self) -> None:
        self._close()

    def stats(self) -> dict[str, Any]:
        return {"protocol": "http/1.1", "streams": 1 if self.active else 0}
