"""One client HTTP/2 connection carrying gRPC calls: h2's state machine in an asyncio Protocol.

h2 does the protocol (sans-IO); this adapter feeds it bytes, turns its events
into per-call state (`CallState`), and writes what it wants written. The
awaitable parts (waiting for a message, for send window, for the transport
to drain) live here too, and nothing else does I/O.

Invariants:
- every call ends exactly once with a status: trailers, a trailers-only
  response, RST_STREAM, GOAWAY beyond its stream id, or the connection
  being lost (UNAVAILABLE, naming the address);
- received DATA is acknowledged as it arrives (so a message larger than the
  window still completes) until QUEUE_LIMIT complete messages wait unread;
  then acknowledgement waits for the reader, and the server's window closes.
  A message larger than `max_message` fails the call with RESOURCE_EXHAUSTED;
- we never send DATA beyond the peer's flow-control window: a sender waits
  for WINDOW_UPDATE/SETTINGS instead;
- a GOAWAY stops new calls but the calls the server accepted run to their end.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from typing import Any, cast

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes, Settings

from skein.grpcclient.status import (
    RpcError,
    StatusCode,
    status_from_headers,
    status_from_http,
    status_from_reset,
)

__all__ = ["CallState", "ClientConnection"]

# Generous windows: control pushes whole snapshots; the default 64 KiB would
# cost a round trip per window.
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 4 << 20
_DEFAULT_WINDOW = 65535
# Complete messages a reader may leave unread before we stop acknowledging
# DATA: past it the server's window closes instead of our memory growing.
QUEUE_LIMIT = 8
_PREFIX = 5


class _GoawayTolerantConnection(H2Connection):  # type: ignore[misc]
    """h2 treats a received GOAWAY as the end of everything; RFC 9113 6.8 says the
    streams up to last-stream-id may still complete, so only report it."""

    def _receive_goaway_frame(self, frame: Any) -> tuple[list[Any], list[Any]]:
        event = ConnectionTerminated()
        event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


class CallState:
    """What one stream has received so far, and how it ended."""

    __slots__ = (
        "buffer",
        "deferred",
        "ended",
        "got_headers",
        "messages",
        "status",
        "stream_id",
        "waiter",
    )

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.buffer = bytearray()
        self.messages: deque[bytes] = deque()
        self.status: tuple[StatusCode, str] | None = None
        self.ended = False
        self.got_headers = False
        self.waiter: asyncio.Future[None] | None = None
        self.deferred = 0  # received bytes not yet acknowledged (the reader is behind)


class ClientConnection(asyncio.Protocol):
    """An HTTP/2 client connection for gRPC calls to `address` (host:port)."""

    def __init__(self, address: str, *, max_message: int) -> None:
        self.address = address
        self.max_message = max_message
        config = H2Configuration(client_side=True, header_encoding=None)
        self._h2 = _GoawayTolerantConnection(config=config)
        self._transport: asyncio.Transport | None = None
        self._calls: dict[int, CallState] = {}
        self._waiters: list[asyncio.Future[None]] = []  # send window or drain
        self._paused = False
        self.closed = False
        self.going_away = False
        self.close_reason = ""

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)
        self._h2.local_settings = Settings(
            client=True,
            initial_values={
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as err:
            self._abort(f"protocol error from the server: {err}")
            return
        for event in events:
            self._handle(event)
        self._flush()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost fails what is left

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.close_reason or (f"connection lost: {exc}" if exc else "connection closed")
        self.close_reason = reason
        self.closed = True
        self._transport = None
        for call in list(self._calls.values()):
            self._end(call, StatusCode.UNAVAILABLE, reason)
        self._calls.clear()
        self._wake_senders()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_senders()

    # -- events -> call state ----------------------------------------------------
    def _handle(self, event: Any) -> None:
        if isinstance(event, DataReceived):
            self._on_data(event)
        elif isinstance(event, ResponseReceived):
            call = self._calls.get(event.stream_id)
            if call is not None:
                call.got_headers = True
                self._on_headers(call, event.headers)
        elif isinstance(event, TrailersReceived):
            call = self._calls.get(event.stream_id)
            if call is not None and call.status is None:
                status = status_from_headers(event.headers)
                call.status = status or (StatusCode.INTERNAL, "trailers without grpc-status")
        elif isinstance(event, StreamEnded):
            call = self._calls.pop(event.stream_id, None)
            if call is not None:
                if call.status is None:
                    call.status = (StatusCode.INTERNAL, "stream ended without grpc-status")
                elif call.buffer and call.status[0] == StatusCode.OK:
                    call.status = (StatusCode.INTERNAL, "stream ended inside a message")
                self._end(call, *call.status)
        elif isinstance(event, StreamReset):
            call = self._calls.pop(event.stream_id, None)
            if call is not None:
                self._end(call, *(call.status or status_from_reset(event.error_code)))
        elif isinstance(event, WindowUpdated | RemoteSettingsChanged):
            self._wake_senders()
        elif isinstance(event, ConnectionTerminated):
            self._on_goaway(event)

    def _on_headers(self, call: CallState, headers: list[tuple[bytes, bytes]]) -> None:
        http_status = 0
        content_type = b""
        for name, value in headers:
            if name == b":status":
                http_status = int(value)
            elif name == b"content-type":
                content_type = value
        status = status_from_headers(headers)  # trailers-only response
        if status is not None:
            call.status = status
        elif http_status != 200:
            call.status = status_from_http(http_status)
        elif not content_type.startswith(b"application/grpc"):
            call.status = (StatusCode.UNKNOWN, f"unexpected content-type {content_type!r}")

    def _on_data(self, event: Any) -> None:
        sid = event.stream_id
        call = self._calls.get(sid)
        if call is not None and len(call.messages) >= QUEUE_LIMIT:
            call.deferred += event.flow_controlled_length  # acknowledged as the reader catches up
        elif event.flow_controlled_length:
            # a stream that is gone raises; h2 has credited the connection window by then
            with contextlib.suppress(H2Error):
                self._h2.acknowledge_received_data(event.flow_controlled_length, sid)
        if call is None or call.status is not None:
            return
        buf = call.buffer
        buf += event.data
        while len(buf) >= _PREFIX:
            length = int.from_bytes(buf[1:_PREFIX], "big")
            if length > self.max_message:
                self._fail(
                    call,
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"response message of {length} bytes exceeds the limit of {self.max_message}",
                )
                return
            if len(buf) < _PREFIX + length:
                break
            if buf[0] != 0:
                self._fail(call, StatusCode.INTERNAL, "compressed message, none was negotiated")
                return
            call.messages.append(bytes(buf[_PREFIX : _PREFIX + length]))
            del buf[: _PREFIX + length]
        if call.messages:
            _wake(call)

    def _on_goaway(self, event: Any) -> None:
        self.going_away = True
        code = event.error_code
        name = code.name if isinstance(code, ErrorCodes) else str(code)
        self.close_reason = f"server sent GOAWAY ({name})"
        for sid in [s for s in self._calls if s > event.last_stream_id]:
            call = self._calls.pop(sid)
            self._end(call, StatusCode.UNAVAILABLE, f"{self.close_reason}, call not processed")
        if not self._calls and self._transport is not None:
            self._transport.close()

    def _end(self, call: CallState, code: StatusCode, message: str) -> None:
        if call.status is None or (call.status[0] == StatusCode.OK and code != StatusCode.OK):
            call.status = (code, message)
        call.ended = True
        if call.deferred:  # the connection window still needs those bytes back
            self._acknowledge(call)
        _wake(call)
        self._wake_senders()
        if self.going_away and not self._calls and self._transport is not None:
            self._transport.close()

    def _fail(self, call: CallState, code: StatusCode, message: str) -> None:
        """End a call from our side: RST_STREAM CANCEL, and the status for the caller."""
        self._calls.pop(call.stream_id, None)
        call.status = (code, message)
        self._reset(call.stream_id)
        self._end(call, code, message)

    def _abort(self, reason: str) -> None:
        self.close_reason = reason
        self._flush()  # h2 queued a GOAWAY naming the error
        if self._transport is not None:
            self._transport.close()

    # -- calls (used by the channel) -------------------------------------------
    @property
    def usable(self) -> bool:
        """True while new calls may start here."""
        return not self.closed and not self.going_away and self._transport is not None

    def start(self, headers: list[tuple[bytes, bytes]]) -> CallState:
        """Send a request's HEADERS; raises RpcError(UNAVAILABLE) when it cannot."""
        if not self.usable:
            raise RpcError(
                StatusCode.UNAVAILABLE, self.close_reason or "not connected", self.address
            )
        try:
            sid = self._h2.get_next_available_stream_id()
            self._h2.send_headers(sid, headers)
        except H2Error as err:  # stream ids exhausted, too many streams...
            raise RpcError(
                StatusCode.UNAVAILABLE, f"cannot start a call: {err}", self.address
            ) from None
        call = CallState(sid)
        self._calls[sid] = call
        self._flush()
        return call

    async def send(self, call: CallState, payload: bytes, *, end: bool) -> None:
        """Send one gRPC message (prefix added here), honouring the peer's windows."""
        data = memoryview(b"\x00" + len(payload).to_bytes(4, "big") + payload)
        while data:
            self._check_sendable(call)
            window = min(
                self._h2.local_flow_control_window(call.stream_id), self._h2.max_outbound_frame_size
            )
            if window <= 0 or self._paused:
                await self._wait_sendable()
                continue
            chunk, data = data[:window], data[window:]
            self._h2.send_data(call.stream_id, bytes(chunk), end_stream=end and not data)
            self._flush()

    def end_request(self, call: CallState) -> None:
        """Half-close: no more messages from us."""
        self._check_sendable(call)
        self._h2.end_stream(call.stream_id)
        self._flush()

    def cancel(
        self,
        call: CallState,
        message: str = "cancelled by the client",
        code: StatusCode = StatusCode.CANCELLED,
    ) -> None:
        """Abandon a call: RST_STREAM CANCEL if it is still open; idempotent."""
        if self._calls.pop(call.stream_id, None) is not None:
            self._reset(call.stream_id)
        if not call.ended:
            call.status = (code, message)
            self._end(call, code, message)

    @property
    def alpn(self) -> str | None:
        """The protocol TLS negotiated; None on plain TCP."""
        sslobj = self._transport.get_extra_info("ssl_object") if self._transport else None
        return sslobj.selected_alpn_protocol() if sslobj is not None else None

    async def receive(self, call: CallState) -> bytes | None:
        """The next message; None once the call ended OK; raises RpcError otherwise."""
        while True:
            if call.messages:
                data = call.messages.popleft()
                if call.deferred and len(call.messages) < QUEUE_LIMIT:
                    self._acknowledge(call)
                return data
            if call.ended:
                assert call.status is not None
                code, message = call.status
                if code == StatusCode.OK:
                    return None
                raise RpcError(code, message, self.address)
            call.waiter = asyncio.get_running_loop().create_future()
            try:
                await call.waiter
            finally:
                call.waiter = None

    def close(self) -> None:
        """GOAWAY and close; calls still open end UNAVAILABLE."""
        if self._transport is None:
            return
        self.close_reason = self.close_reason or "connection closed by the client"
        with contextlib.suppress(H2Error):
            self._h2.close_connection()
        self._flush()
        self._transport.close()

    @property
    def socket(self) -> Any:
        """The connection's socket (for its options); None once closed."""
        return self._transport.get_extra_info("socket") if self._transport else None

    def set_tcp_keepalive(self, idle: int, interval: int, probes: int) -> None:
        """Have the kernel end the connection when the peer stops answering.

        Keepalive probes cover an idle connection; TCP_USER_TIMEOUT covers sent
        data that is never acknowledged. Best effort: a platform without these
        options keeps the connection as it is.
        """
        sock = self.socket
        if sock is None:
            return
        options = [
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), idle),
            (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), interval),
            (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), probes),
            (
                socket.IPPROTO_TCP,
                getattr(socket, "TCP_USER_TIMEOUT", None),
                (idle + interval * probes) * 1000,
            ),
        ]
        for level, option, value in options:
            if option is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(level, option, value)

    # -- helpers ---------------------------------------------------------------
    def _check_sendable(self, call: CallState) -> None:
        if call.ended or call.stream_id not in self._calls or self._transport is None:
            code, message = call.status or (StatusCode.UNAVAILABLE, self.close_reason)
            if code == StatusCode.OK:
                code, message = StatusCode.INTERNAL, "the server ended the call before the request"
            raise RpcError(code, message, self.address)

    async def _wait_sendable(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def _wake_senders(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _acknowledge(self, call: CallState) -> None:
        size, call.deferred = call.deferred, 0
        with contextlib.suppress(H2Error):
            self._h2.acknowledge_received_data(size, call.stream_id)
        self._flush()

    def _reset(self, sid: int) -> None:
        try:
            self._h2.reset_stream(sid, ErrorCodes.CANCEL)
        except H2Error:
            return
        self._flush()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)


def _wake(call: CallState) -> None:
    waiter = call.waiter
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
