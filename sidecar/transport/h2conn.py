"""HTTP/2 connection state shared by both sides of the relay.

Conformance at the lowest cost, measured (1 KiB unary gRPC through one hop,
h2load -c 4 -m 16 against a grpc.aio echo server, proxy CPU per request,
h2 4.4 on uvloop; the machine is noisy, +-30 us between identical runs):
- h2's own inbound header validation on the client-facing side cost ~9% of
  the relay's CPU (py-spy: a chain of generators per header), and h2's frame
  dispatch spent another ~5.5% building repr(frame) for a trace log that is
  off. With both on, a hop cost ~430 us per request.
- Replaced by `headers.scan_request`, which checks RFC 9113 8.2/8.3 in the
  same single pass that extracts :authority/:path/grpc-timeout (one regex per
  name and value), and by `RelayH2Connection._receive_frame` without the
  repr: ~320-350 us per request. Turning our validation off as well measured
  the same within noise (312-377 us), so it is kept on every client-facing
  connection. A malformed request is a stream error (RST_STREAM
  PROTOCOL_ERROR) instead of h2's connection error.
- Connections we originate (toward the local app or a peer sidecar's
  listener, which validates for itself) validate nothing.
- h2 still enforces everything frame-level: SETTINGS values, flow-control
  windows, frame sizes, stream states, content-length, HPACK (reported as
  COMPRESSION_ERROR here; h2 says PROTOCOL_ERROR).

Invariants:
- a received GOAWAY does not end the connection: streams up to its
  last-stream-id keep flowing (h2 alone would refuse every frame after it);
- outbound bytes are written once per event batch: a connection marks itself
  dirty and `flush_dirty()` writes every dirty connection at the end of the
  callback that made them dirty (the dirty list is per process: the data
  plane runs on one event loop thread).
"""

from __future__ import annotations

from typing import Any, Protocol

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated
from h2.exceptions import (
    DenialOfServiceError,
    ProtocolError,
    StreamClosedError,
    StreamIDTooLowError,
)
from h2.settings import SettingCodes, Settings
from hpack.exceptions import HPACKError
from hyperframe.frame import RstStreamFrame

__all__ = [
    "CONNECTION_WINDOW",
    "STREAM_WINDOW",
    "Flushable",
    "RelayH2Connection",
    "flush_dirty",
    "mark_dirty",
    "new_client_connection",
    "new_server_connection",
    "send_flow_controlled",
]

# Large windows for throughput; acknowledging only what has been forwarded
# keeps what one stream can make us buffer bounded by STREAM_WINDOW.
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 16 << 20
MAX_CONCURRENT_STREAMS = 1000
MAX_HEADER_LIST_SIZE = 64 << 10
_DEFAULT_WINDOW = 65535


class RelayH2Connection(H2Connection):  # type: ignore[misc]
    """An H2Connection that keeps serving in-flight streams after a GOAWAY arrives,
    and reports undecodable header blocks as COMPRESSION_ERROR (RFC 7541 section 2.3.3;
    h2 says PROTOCOL_ERROR)."""

    def _receive_frame(self, frame: Any) -> list[Any]:
        # As h2's own, minus its eager repr(frame) for a trace log (~5% of relay CPU).
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as exc:
            if not self._stream_is_closed_by_reset(exc.stream_id):
                raise
            # RFC 9113 5.1: frames on a stream we reset get RST_STREAM(STREAM_CLOSED).
            self._prepare_for_sending([RstStreamFrame(exc.stream_id, error_code=exc.error_code)])
            return list(exc._events)
        except StreamIDTooLowError as exc:
            if self._stream_is_closed_by_reset(exc.stream_id):
                reply = RstStreamFrame(exc.stream_id, error_code=ErrorCodes.STREAM_CLOSED)
                self._prepare_for_sending([reply])
                return []
            if self._stream_is_closed_by_end(exc.stream_id):
                raise StreamClosedError(exc.stream_id) from exc
            raise
        self._prepare_for_sending(frames)
        return list(events)

    def _receive_headers_frame(self, frame: Any) -> Any:
        try:
            return super()._receive_headers_frame(frame)
        except ProtocolError as exc:
            if isinstance(exc.__cause__, HPACKError) and not isinstance(exc, DenialOfServiceError):
                exc.error_code = ErrorCodes.COMPRESSION_ERROR
            raise

    def _receive_goaway_frame(self, frame: Any) -> tuple[list[Any], list[Any]]:
        event = ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


def _settings(client: bool) -> Settings:
    return Settings(
        client=client,
        initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
        },
    )


def _open(conn: RelayH2Connection, client: bool) -> RelayH2Connection:
    conn.local_settings = _settings(client)
    conn.initiate_connection()
    conn.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
    conn.max_inbound_frame_size = conn.local_settings.max_frame_size
    return conn


def new_server_connection() -> RelayH2Connection:
    """A client-facing connection; request headers are validated by `scan_request`."""
    config = H2Configuration(
        client_side=False,
        header_encoding=None,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        split_outbound_cookies=False,
    )
    return _open(RelayH2Connection(config=config), client=False)


def new_client_connection() -> RelayH2Connection:
    """A connection we originate toward a trusted HTTP/2 peer: no header checks."""
    config = H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        split_outbound_cookies=False,
    )
    return _open(RelayH2Connection(config=config), client=True)


class Flushable(Protocol):
    dirty: bool

    def flush(self) -> None: ...


_dirty: list[Flushable] = []


def mark_dirty(conn: Flushable) -> None:
    """Schedule `conn.flush()` for the end of the current callback."""
    if not conn.dirty:
        conn.dirty = True
        _dirty.append(conn)


def flush_dirty() -> None:
    """Write out every connection marked dirty since the last call."""
    while _dirty:
        conn = _dirty.pop()
        conn.dirty = False
        conn.flush()


def send_flow_controlled(conn: H2Connection, sid: int, data: bytes, end: bool) -> int:
    """Send as much of `data` as the stream's send window allows; return bytes sent.

    END_STREAM goes with the last frame only when all of `data` went out.
    """
    size = len(data)
    if not size:
        if end:
            conn.send_data(sid, b"", end_stream=True)
        return 0
    window: int = conn.local_flow_control_window(sid)
    if window <= 0:
        return 0
    frame: int = conn.max_outbound_frame_size
    if size <= window and size <= frame:
        conn.send_data(sid, data, end_stream=end)
        return size
    limit = size if size < window else window
    sent = 0
    while sent < limit:
        step = limit - sent if limit - sent < frame else frame
        last = sent + step
        conn.send_data(sid, data[sent:last], end_stream=end and last == size)
        sent = last
    return sent
