"""One HTTP/2 connection's state (RFC 9113), sans-IO, for both sides of the relay.

Why our own: with the `h2` library ~80% of the relay's CPU went to h2, hpack
and hyperframe (event objects, frame objects, per-stream state machines,
header validation generators). This codec parses frames with `struct` straight
from the received bytes, keeps per-stream state in one small slotted object,
writes frames straight into one output buffer and reports what happened as
plain tuples `(kind, stream id, payload, arg)`. Measured with `bench.relay`
(one bare hop, 1 KiB unary gRPC, grpc.aio echo server, h2load; relay CPU per
request, back to back on the same quiet machine): on h2 403 us at c=64
(-c 4 -m 16) and 723 us at c=1; on this codec 185 us and 323 us; with the
HPACK block cache (hpackcodec.py) and the request-scan memo ~125 / ~200 us.

`python -m bench.run --quick`, real sidecars, h2 tree and this one run back to
back (load average 0.6-1.2): sidecar CPU per request at c=64 388-402 -> 80-95 us
(Envoy 1 worker: 98-128 us), at c=1 740-770 -> 200-230 us (Envoy 300-340 us);
pair rps vs direct at c=64 26% -> 58% (vs the Envoy pair 52% -> 80%); one hop
adds 0.85 -> 0.33 ms p50 at c=1; RSS 44 -> 32 MiB. A full run (3 rounds) of
each, back to back, the machine busier (load 0.5 -> 3.6): c=64 378-416 ->
116-127 us (Envoy 122-130), c=1 716-807 -> 141-162 us (Envoy 284-343); pair
40% -> 60% of direct rps at c=64 (47% -> 73% of the Envoy pair). The gap to
the Envoy pair is now the echo server's CPU: ~330-350 us per request behind
Skein against ~280-300 us behind Envoy (not HPACK: see hpackcodec.py).

What a frame parse guarantees (the connection or stream error RFC 9113
prescribes, GOAWAY queued before `ConnectionFailed` is raised):
- preface, first frame SETTINGS, frame sizes, SETTINGS values, PING/RST/
  WINDOW_UPDATE/GOAWAY lengths, stream ids (parity, idle, closed), header
  blocks contiguous (CONTINUATION), HPACK (COMPRESSION_ERROR), flow-control
  windows on receipt and on WINDOW_UPDATE/SETTINGS, content-length;
- a whole received chunk is parsed before any of its events is handled, so a
  connection error anywhere in it wins over answers to earlier frames;
- received bytes reopen windows only through `ack()`, which batches
  WINDOW_UPDATE frames until half a window is consumed.
Request-header semantics (pseudo-headers, names, values) are the caller's:
`headers.scan_request` on the client-facing side.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from hpack.exceptions import HPACKError, OversizedHeaderListError

from sidecar.transport.frames import (
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    ENHANCE_YOUR_CALM,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    FLAG_PRIORITY,
    FLOW_CONTROL_ERROR,
    FRAME_HEADER,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    MAX_WINDOW,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    frame_header,
    goaway_frame,
    ping_ack,
    rst_frame,
    settings_frame,
    window_update_frame,
)
from sidecar.transport.hpackcodec import HeaderDecoder, encode_block

__all__ = [
    "CONNECTION_WINDOW",
    "EV_DATA",
    "EV_DATA_END",
    "EV_GOAWAY",
    "EV_HEADERS",
    "EV_RESET",
    "EV_SETTINGS",
    "EV_TRAILERS",
    "EV_WINDOW",
    "MAX_STREAM_ID",
    "STREAM_WINDOW",
    "ConnectionFailed",
    "Event",
    "H2Connection",
    "StreamGone",
]

# Large windows for throughput; acknowledging only what has been forwarded
# keeps what one stream can make us buffer bounded by STREAM_WINDOW.
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 16 << 20
MAX_CONCURRENT_STREAMS = 1000
MAX_HEADER_LIST_SIZE = 64 << 10
MAX_FRAME_SIZE = 16384  # what we accept (the RFC's initial value, never raised)
_DEFAULT_WINDOW = 65535
_MAX_SKIPPED = 64
_CONN_LOW = CONNECTION_WINDOW >> 2
_STREAM_LOW = STREAM_WINDOW >> 2
MAX_STREAM_ID = (1 << 31) - 1
_MAX_BLOCK = 2 * MAX_HEADER_LIST_SIZE  # HEADERS + CONTINUATION bytes before we give up

# Event kinds: (kind, sid, payload, arg).
EV_HEADERS = 1  # payload: header list (request, or final response); arg: 1 if END_STREAM
EV_TRAILERS = 2  # payload: trailer list (always ends the stream)
EV_DATA = 3  # payload: bytes; arg: flow-controlled length (data + padding)
EV_DATA_END = 4  # as EV_DATA, with END_STREAM
EV_RESET = 5  # the stream is gone (peer RST_STREAM or our stream error); arg: code
EV_WINDOW = 6  # send window grew after a send fell short (sid 0: the connection's)
EV_SETTINGS = 7  # peer SETTINGS applied (windows or stream limit may have changed)
EV_GOAWAY = 8  # sid: last stream id the peer will process; arg: code

Event = tuple[int, int, Any, int]

_U32 = struct.Struct(">I")
_GOAWAY_BODY = struct.Struct(">II")
_SETTING = struct.Struct(">HI")
_unpack_header = FRAME_HEADER.unpack_from
_unpack_u32 = _U32.unpack_from


class ConnectionFailed(Exception):
    """The peer broke the protocol; a GOAWAY with `code` is queued for sending."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamGone(Exception):
    """A send on a stream that is closed or reset (the exchange is over)."""


class _Stream:
    __slots__ = (
        "blocked",
        "content_length",
        "got_headers",
        "head",
        "local_closed",
        "received",
        "recv_pending",
        "recv_window",
        "remote_closed",
        "send_window",
    )

    def __init__(self, send_window: int, got_headers: bool) -> None:
        self.send_window = send_window
        self.blocked = False
        self.recv_window = STREAM_WINDOW
        self.recv_pending = 0
        self.local_closed = False
        self.remote_closed = False
        self.got_headers = got_headers
        self.content_length = -1
        self.received = 0
        self.head: Any = None  # what `scan` made of the request headers (server side)


Header = tuple[bytes, bytes]


def _content_length(headers: Sequence[Header]) -> tuple[int, bool]:
    """(content-length or -1, whether `:status` is informational); (-2, _) if malformed."""
    length = -1
    informational = False
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit() or (length >= 0 and int(value) != length):
                return -2, False
            length = int(value)
        elif name == b":status":
            informational = value[:1] == b"1"
    return length, informational


class H2Connection:
    """HTTP/2 framing, stream states and flow control for one connection.

    `receive_data()` returns events; `send_*`, `open_stream`, `reset`, `ack`
    queue frames; `data_to_send()` hands the queued bytes over.
    """

    def __init__(self, client: bool, scan: Callable[[Sequence[Header]], Any] | None = None) -> None:
        """`scan` (server side) derives what the caller needs from request headers;
        its result is kept on the stream (`streams[sid].head`) and reused for
        identical header blocks."""
        self.client = client
        self.scan = scan
        self.out = bytearray()
        self._buf = b""
        self._need_preface = not client
        self._settings_seen = False
        self.failed = False
        self.streams: dict[int, _Stream] = {}
        self.highest_remote = 0  # highest stream id the peer opened (server side)
        self.next_local = 1  # next stream id we open (client side)
        self.send_window = _DEFAULT_WINDOW
        # A send fell short of its data for want of window: only then does a
        # WINDOW_UPDATE concern the caller (EV_WINDOW), else it is just counted.
        self.blocked = False
        self.recv_window = CONNECTION_WINDOW
        self.recv_pending = 0
        self.peer_initial_window = _DEFAULT_WINDOW
        self.peer_max_frame = 16384
        self.peer_max_streams = 1 << 31
        self._decoder = HeaderDecoder(MAX_HEADER_LIST_SIZE)
        self._cont_sid = 0
        self._cont_block = bytearray()
        self._cont_end = False
        # Client stream ids the peer skipped (never opened), as (first, last)
        # ranges; the newest _MAX_SKIPPED are kept (clients rarely skip any).
        self._skipped: list[tuple[int, int]] = []
        if client:
            self.out += PREFACE
        self.out += settings_frame(
            {
                SETTINGS_ENABLE_PUSH: 0,
                SETTINGS_MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                SETTINGS_INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                SETTINGS_MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            }
        )
        self.out += window_update_frame(0, CONNECTION_WINDOW - _DEFAULT_WINDOW)

    # -- output ------------------------------------------------------------------------

    def data_to_send(self) -> bytearray:
        """The bytes queued so far; the caller owns them."""
        out = self.out
        if out:
            self.out = bytearray()
        return out

    def open_stream(self, headers: Sequence[Header], end: bool) -> int:
        """Client side: start a stream with `headers`; returns its id."""
        sid = self.next_local
        self.next_local = sid + 2
        st = self.streams[sid] = _Stream(self.peer_initial_window, False)
        self._write_block(sid, encode_block(headers), end)
        st.local_closed = end
        return sid

    def send_headers(self, sid: int, headers: Sequence[Header], end: bool) -> None:
        st = self.streams.get(sid)
        if st is None or st.local_closed:
            raise StreamGone(sid)
        self._write_block(sid, encode_block(headers), end)
        if end:
            self._local_end(sid, st)

    def _write_block(self, sid: int, block: bytes, end: bool) -> None:
        flags = FLAG_END_STREAM if end else 0
        out = self.out
        size = len(block)
        limit = self.peer_max_frame
        if size <= limit:
            out += FRAME_HEADER.pack(size << 8 | HEADERS, flags | FLAG_END_HEADERS, sid)
            out += block
            return
        kind = HEADERS
        for start in range(0, size, limit):
            chunk = block[start : start + limit]
            last = start + limit >= size
            out += frame_header(len(chunk), kind, flags | (FLAG_END_HEADERS if last else 0), sid)
            out += chunk
            kind = CONTINUATION
            flags = 0

    def send_data(self, sid: int, data: bytes, end: bool) -> int:
        """Send as much of `data` as the windows allow; return bytes sent.

        END_STREAM goes with the last frame only when all of `data` went out.
        """
        st = self.streams.get(sid)
        if st is None or st.local_closed:
            raise StreamGone(sid)
        out = self.out
        size = len(data)
        if not size:
            if end:
                out += FRAME_HEADER.pack(DATA, FLAG_END_STREAM, sid)
                self._local_end(sid, st)
            return 0
        window = self.send_window if self.send_window < st.send_window else st.send_window
        if window <= 0:
            st.blocked = self.blocked = True
            return 0
        frame = self.peer_max_frame
        if size <= window and size <= frame:
            out += FRAME_HEADER.pack(size << 8, FLAG_END_STREAM if end else 0, sid)
            out += data
            self.send_window -= size
            st.send_window -= size
            if end:
                self._local_end(sid, st)
            return size
        limit = size if size < window else window
        sent = 0
        while sent < limit:
            step = limit - sent if limit - sent < frame else frame
            last = sent + step
            flags = FLAG_END_STREAM if end and last == size else 0
            out += FRAME_HEADER.pack(step << 8, flags, sid)
            out += data[sent:last]
            sent = last
        self.send_window -= sent
        st.send_window -= sent
        if sent < size:
            st.blocked = self.blocked = True
        elif end:
            self._local_end(sid, st)
        return sent

    def _local_end(self, sid: int, st: _Stream) -> None:
        st.local_closed = True
        if st.remote_closed:
            del self.streams[sid]

    def send_window_of(self, sid: int) -> int:
        st = self.streams.get(sid)
        if st is None:
            return 0
        return self.send_window if self.send_window < st.send_window else st.send_window

    def is_open(self, sid: int) -> bool:
        """The stream is neither fully closed nor reset."""
        return sid in self.streams

    def reset(self, sid: int, code: int) -> None:
        """RST_STREAM `sid` unless it is closed already."""
        if self.streams.pop(sid, None) is not None:
            self.out += rst_frame(sid, code)

    def ack(self, sid: int, size: int) -> None:
        """`size` received bytes of `sid` were handed on: reopen the windows (batched).

        A WINDOW_UPDATE goes out once half a window is acknowledged, or at once
        while the peer has less than a quarter of the window left (streams that
        hold their bytes must not keep the others waiting for a batch to fill).
        """
        pending = self.recv_pending + size
        if pending >= CONNECTION_WINDOW >> 1 or (pending and self.recv_window < _CONN_LOW):
            self.out += window_update_frame(0, pending)
            self.recv_window += pending
            pending = 0
        self.recv_pending = pending
        st = self.streams.get(sid)
        if st is not None and not st.remote_closed:
            pending = st.recv_pending + size
            if pending >= STREAM_WINDOW >> 1 or (pending and st.recv_window < _STREAM_LOW):
                self.out += window_update_frame(sid, pending)
                st.recv_window += pending
                pending = 0
            st.recv_pending = pending

    def close(self, code: int = 0, last_sid: int = -1) -> None:
        """Queue a GOAWAY (by default naming the last stream the peer opened)."""
        self.out += goaway_frame(self.highest_remote if last_sid < 0 else last_sid, code)

    # -- input -------------------------------------------------------------------------

    def _fail(self, code: int, message: str) -> ConnectionFailed:
        if not self.failed:
            self.failed = True
            self.out += goaway_frame(self.highest_remote, code, message.encode()[:256])
        return ConnectionFailed(code, message)

    def _idle(self, sid: int) -> bool:
        if sid & 1 == 0:
            return True  # peer-pushed or server-initiated: never opened here
        return sid >= self.next_local if self.client else sid > self.highest_remote

    def _stream_error(self, sid: int, code: int, events: list[Event]) -> None:
        self.out += rst_frame(sid, code)
        if self.streams.pop(sid, None) is not None:
            events.append((EV_RESET, sid, None, code))

    def receive_data(self, data: bytes) -> list[Event]:
        """Parse what arrived; raise ConnectionFailed on a connection error."""
        if self.failed:
            return []
        buf = self._buf + data if self._buf else data
        pos = 0
        size = len(buf)
        if self._need_preface:
            if size < 24:
                self._buf = buf
                return []
            if buf[:24] != PREFACE:
                raise self._fail(PROTOCOL_ERROR, "invalid connection preface")
            self._need_preface = False
            pos = 24
        events: list[Event] = []
        streams = self.streams
        while size - pos >= 9:
            word, flags, sid = _unpack_header(buf, pos)
            length = word >> 8
            kind = word & 0xFF
            sid &= 0x7FFFFFFF
            if length > MAX_FRAME_SIZE:
                raise self._fail(FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds 16384")
            start = pos + 9
            end = start + length
            if end > size:
                break
            pos = end
            if self._cont_sid and kind != CONTINUATION:
                raise self._fail(PROTOCOL_ERROR, "header block interrupted by another frame")
            if not self._settings_seen:
                if kind != SETTINGS or flags & FLAG_ACK:
                    raise self._fail(PROTOCOL_ERROR, "first frame must be SETTINGS")
                self._settings_seen = True
            if kind == DATA:
                if not sid:
                    raise self._fail(PROTOCOL_ERROR, "DATA on stream 0")
                flow = length
                if flags & FLAG_PADDED:
                    pad = buf[start] if length else 256
                    if pad >= length:
                        raise self._fail(PROTOCOL_ERROR, "padding exceeds DATA payload")
                    payload = buf[start + 1 : end - pad]
                else:
                    payload = buf[start:end]
                self.recv_window -= flow
                if self.recv_window < 0:
                    raise self._fail(FLOW_CONTROL_ERROR, "connection receive window exceeded")
                st = streams.get(sid)
                if st is None or st.remote_closed:
                    if st is None and self._idle(sid):
                        raise self._fail(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
                    self._stream_error(sid, STREAM_CLOSED, events)
                    self.ack(sid, flow)  # the stream is gone: the connection's window only
                    continue
                st.recv_window -= flow
                if st.recv_window < 0 or not st.got_headers:
                    bad = FLOW_CONTROL_ERROR if st.recv_window < 0 else PROTOCOL_ERROR
                    self._stream_error(sid, bad, events)
                    self.ack(sid, flow)
                    continue
                ended = flags & FLAG_END_STREAM
                if st.content_length >= 0:
                    st.received += len(payload)
                    if st.received > st.content_length or (
                        ended and st.received != st.content_length
                    ):
                        self._stream_error(sid, PROTOCOL_ERROR, events)
                        self.ack(sid, flow)
                        continue
                if ended:
                    st.remote_closed = True
                    if st.local_closed:
                        del streams[sid]
                    events.append((EV_DATA_END, sid, payload, flow))
                else:
                    events.append((EV_DATA, sid, payload, flow))
            elif kind == HEADERS:
                self._headers(buf, start, end, flags, sid, events)
            elif kind == WINDOW_UPDATE:
                if length != 4:
                    raise self._fail(FRAME_SIZE_ERROR, "WINDOW_UPDATE length is not 4")
                increment = _unpack_u32(buf, start)[0] & 0x7FFFFFFF
                self._window_update(sid, increment, events)
            elif kind == CONTINUATION:
                if not self._cont_sid or sid != self._cont_sid:
                    raise self._fail(PROTOCOL_ERROR, "CONTINUATION without an open header block")
                block = self._cont_block
                block += buf[start:end]
                if len(block) > _MAX_BLOCK:
                    raise self._fail(ENHANCE_YOUR_CALM, "header block too large")
                if flags & FLAG_END_HEADERS:
                    self._cont_sid = 0
                    self._cont_block = bytearray()
                    self._block(sid, bytes(block), self._cont_end, False, events)
            else:
                self._control(kind, buf, start, end, flags, sid, events)
        self._buf = buf[pos:] if pos < size else b""
        return events

    def _headers(
        self, buf: bytes, start: int, end: int, flags: int, sid: int, events: list[Event]
    ) -> None:
        if not sid:
            raise self._fail(PROTOCOL_ERROR, "HEADERS on stream 0")
        pad = 0
        if flags & FLAG_PADDED:
            if start >= end:
                raise self._fail(FRAME_SIZE_ERROR, "HEADERS too short for its padding")
            pad = buf[start]
            start += 1
        self_dependent = False
        if flags & FLAG_PRIORITY:
            if end - start < 5:
                raise self._fail(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            self_dependent = _unpack_u32(buf, start)[0] & 0x7FFFFFFF == sid
            start += 5
        if end - pad < start:
            raise self._fail(PROTOCOL_ERROR, "padding exceeds HEADERS payload")
        fragment = buf[start : end - pad]
        if not flags & FLAG_END_HEADERS:
            self._cont_sid = sid
            self._cont_block = bytearray(fragment)
            self._cont_end = bool(flags & FLAG_END_STREAM)
            return
        self._block(sid, fragment, bool(flags & FLAG_END_STREAM), self_dependent, events)

    def _block(
        self, sid: int, block: bytes, end: bool, self_dependent: bool, events: list[Event]
    ) -> None:
        """A complete header block arrived on `sid`."""
        try:
            headers = self._decoder.decode(block)  # always: the HPACK context must advance
        except OversizedHeaderListError as exc:
            raise self._fail(ENHANCE_YOUR_CALM, f"header list too large: {exc}") from exc
        except HPACKError as exc:
            raise self._fail(COMPRESSION_ERROR, f"undecodable header block: {exc}") from exc
        streams = self.streams
        st = streams.get(sid)
        if st is None:
            if not self.client and sid & 1 and sid > self.highest_remote:
                expected = self.highest_remote + 2 if self.highest_remote else 1
                if sid > expected:
                    self._skipped.append((expected, sid - 2))
                    del self._skipped[:-_MAX_SKIPPED]
                self.highest_remote = sid
                if self_dependent:
                    self.out += rst_frame(sid, PROTOCOL_ERROR)
                    return
                if len(streams) >= MAX_CONCURRENT_STREAMS:
                    self.out += rst_frame(sid, REFUSED_STREAM)
                    return
                length, _, head = self._derive(headers)
                if length == -2 or (end and length > 0):
                    self.out += rst_frame(sid, PROTOCOL_ERROR)
                    return
                st = streams[sid] = _Stream(self.peer_initial_window, True)
                st.content_length = length
                st.head = head
                st.remote_closed = end
                events.append((EV_HEADERS, sid, headers, end))
                return
            if self._idle(sid) or any(lo <= sid <= hi for lo, hi in self._skipped):
                # RFC 9113 5.1.1: an unexpected stream identifier (below one
                # already used, never opened) is a connection error.
                raise self._fail(PROTOCOL_ERROR, f"HEADERS on stream {sid}, never opened")
            self.out += rst_frame(sid, STREAM_CLOSED)
            return
        if st.remote_closed:
            self._stream_error(sid, STREAM_CLOSED, events)
            return
        if self_dependent:
            self._stream_error(sid, PROTOCOL_ERROR, events)
            return
        if not st.got_headers:  # client side: the response
            length, informational, _ = self._derive(headers)
            if informational:
                if end:
                    self._stream_error(sid, PROTOCOL_ERROR, events)
                return  # 1xx is hop-local; the final response follows
            if length == -2 or (end and length > 0):
                self._stream_error(sid, PROTOCOL_ERROR, events)
                return
            st.got_headers = True
            st.content_length = length
            kind = EV_HEADERS
        else:
            if not end or (st.content_length >= 0 and st.received != st.content_length):
                self._stream_error(sid, PROTOCOL_ERROR, events)
                return
            kind = EV_TRAILERS
        if end:
            st.remote_closed = True
            if st.local_closed:
                del streams[sid]
        events.append((kind, sid, headers, end))

    def _derive(self, headers: Sequence[Header]) -> tuple[int, bool, Any]:
        """(content-length, informational, scan result) of the block just decoded."""
        memo = self._decoder.memo
        if memo is not None and memo.derived is not None:
            derived: tuple[int, bool, Any] = memo.derived
            return derived
        length, informational = _content_length(headers)
        scan = self.scan
        derived = (length, informational, scan(headers) if scan is not None else None)
        if memo is not None:
            memo.derived = derived
        return derived

    def _window_update(self, sid: int, increment: int, events: list[Event]) -> None:
        if not sid:
            if not increment:
                raise self._fail(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise self._fail(FLOW_CONTROL_ERROR, "connection send window above 2^31-1")
            if self.blocked:
                self.blocked = False
                events.append((EV_WINDOW, 0, None, 0))
            return
        st = self.streams.get(sid)
        if st is None:
            if self._idle(sid):
                raise self._fail(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return
        if not increment:
            self._stream_error(sid, PROTOCOL_ERROR, events)
            return
        st.send_window += increment
        if st.send_window > MAX_WINDOW:
            self._stream_error(sid, FLOW_CONTROL_ERROR, events)
            return
        if st.blocked:
            st.blocked = False
            events.append((EV_WINDOW, sid, None, 0))

    def _control(
        self, kind: int, buf: bytes, start: int, end: int, flags: int, sid: int, events: list[Event]
    ) -> None:
        length = end - start
        if kind == SETTINGS:
            if sid:
                raise self._fail(PROTOCOL_ERROR, "SETTINGS on a stream")
            if flags & FLAG_ACK:
                if length:
                    raise self._fail(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
                return
            if length % 6:
                raise self._fail(FRAME_SIZE_ERROR, "SETTINGS length is not a multiple of 6")
            for at in range(start, end, 6):
                ident, value = _SETTING.unpack_from(buf, at)
                self._setting(ident, value)
            self.out += frame_header(0, SETTINGS, FLAG_ACK, 0)
            events.append((EV_SETTINGS, 0, None, 0))
        elif kind == PING:
            if length != 8:
                raise self._fail(FRAME_SIZE_ERROR, "PING length is not 8")
            if sid:
                raise self._fail(PROTOCOL_ERROR, "PING on a stream")
            if not flags & FLAG_ACK:
                self.out += ping_ack(buf[start:end])
        elif kind == RST_STREAM:
            if length != 4:
                raise self._fail(FRAME_SIZE_ERROR, "RST_STREAM length is not 4")
            if not sid or (sid not in self.streams and self._idle(sid)):
                raise self._fail(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            if self.streams.pop(sid, None) is not None:
                events.append((EV_RESET, sid, None, _unpack_u32(buf, start)[0]))
        elif kind == GOAWAY:
            if sid:
                raise self._fail(PROTOCOL_ERROR, "GOAWAY on a stream")
            if length < 8:
                raise self._fail(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            last, code = _GOAWAY_BODY.unpack_from(buf, start)
            events.append((EV_GOAWAY, last & 0x7FFFFFFF, None, code))
        elif kind == PRIORITY:
            if not sid:
                raise self._fail(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if length != 5:
                self._stream_error(sid, FRAME_SIZE_ERROR, events)
            elif _unpack_u32(buf, start)[0] & 0x7FFFFFFF == sid:
                self._stream_error(sid, PROTOCOL_ERROR, events)
        elif kind == PUSH_PROMISE:
            raise self._fail(PROTOCOL_ERROR, "PUSH_PROMISE, but push is disabled")
        # unknown frame types are ignored (RFC 9113 section 5.5)

    def _setting(self, ident: int, value: int) -> None:
        if ident == SETTINGS_INITIAL_WINDOW_SIZE:
            if value > MAX_WINDOW:
                raise self._fail(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
            delta = value - self.peer_initial_window
            self.peer_initial_window = value
            for st in self.streams.values():
                st.send_window += delta
                if st.send_window > MAX_WINDOW:
                    raise self._fail(FLOW_CONTROL_ERROR, "stream send window above 2^31-1")
        elif ident == SETTINGS_MAX_FRAME_SIZE:
            if not 16384 <= value <= 16777215:
                raise self._fail(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
            self.peer_max_frame = value
        elif ident == SETTINGS_ENABLE_PUSH:
            if value > 1:
                raise self._fail(PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value} is not 0 or 1")
        elif ident == SETTINGS_MAX_CONCURRENT_STREAMS:
            self.peer_max_streams = value
