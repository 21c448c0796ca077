"""Property tests of the sans-IO HTTP/2 codec against hostile input (no sockets).

Whatever a peer sends, `H2Connection.receive_data` must either return events
or raise `ConnectionFailed` with a GOAWAY queued; never another exception
(IndexError, struct.error, KeyError, ...), and what it queues must be
well-formed frames. A second group checks that sending never exceeds the
flow-control windows the peer granted, whatever SETTINGS/WINDOW_UPDATE it sends.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from hpack import Encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.transport.frames import (
    DATA,
    GOAWAY,
    HEADERS,
    PREFACE,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    frame_header,
    settings_frame,
    window_update_frame,
)
from sidecar.transport.h2conn import (
    EV_DATA,
    EV_DATA_END,
    EV_HEADERS,
    EV_TRAILERS,
    ConnectionFailed,
    Event,
    H2Connection,
    StreamGone,
)
from sidecar.transport.headers import scan_request

REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/test.Echo/Unary"),
    (b":authority", b"echo"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def parse_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Split our own output into (type, flags, stream id, payload); fail on a torn frame."""
    frames = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 9, "torn frame header in output"
        length = int.from_bytes(data[pos : pos + 3], "big")
        kind, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5 : pos + 9], "big")
        assert sid < 1 << 31, "reserved bit set in output"
        payload = data[pos + 9 : pos + 9 + length]
        assert len(payload) == length, "torn frame payload in output"
        frames.append((kind, flags, sid, payload))
        pos += 9 + length
    return frames


def drive(conn: H2Connection, chunks: Sequence[bytes]) -> None:
    """Feed `chunks` as an adapter would (answering requests, acking data); check the contract."""
    for chunk in chunks:
        try:
            events = conn.receive_data(chunk)
        except ConnectionFailed as exc:
            assert exc.code >= 0 and str(exc)
            out = parse_frames(bytes(conn.data_to_send()))
            assert out and out[-1][0] == GOAWAY, "a connection error must queue a GOAWAY"
            assert int.from_bytes(out[-1][3][4:8], "big") == exc.code
            assert conn.receive_data(b"\x00" * 9) == []
            return
        react(conn, events)
        parse_frames(bytes(conn.data_to_send()))


def react(conn: H2Connection, events: list[Event]) -> None:
    for kind, sid, payload, arg in events:
        assert isinstance(kind, int) and isinstance(sid, int)
        if kind in (EV_DATA, EV_DATA_END):
            assert isinstance(payload, bytes) and arg >= len(payload)
            conn.ack(sid, arg)
        elif kind in (EV_HEADERS, EV_TRAILERS):
            assert isinstance(payload, tuple)
            if not conn.client and kind == EV_HEADERS:
                try:
                    conn.send_headers(sid, RESPONSE, False)
                    conn.send_data(sid, b"x" * 100, False)
                except StreamGone:
                    pass


def server() -> H2Connection:
    conn = H2Connection(client=False, scan=scan_request)
    conn.data_to_send()
    return conn


def client() -> H2Connection:
    conn = H2Connection(client=True)
    conn.open_stream(REQUEST, False)
    conn.open_stream(REQUEST, True)
    conn.data_to_send()
    return conn


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for point in points:
        out.append(data[last:point])
        last = point
    out.append(data[last:])
    return out


HELLO = PREFACE + settings_frame({})
SERVER_HELLO = settings_frame({})


# -- random frames ------------------------------------------------------------------

_encoder_blocks = st.lists(
    st.tuples(
        st.sampled_from([b":method", b":path", b":status", b"x-a", b"te", b"content-length"]),
        st.binary(max_size=6),
    ),
    max_size=5,
).map(lambda fields: Encoder().encode(fields))

frame_kinds = st.integers(min_value=0, max_value=11)
stream_ids = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 0x7FFFFFFF, 0x80000001])


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(frame_kinds)
    flags = draw(st.integers(min_value=0, max_value=255))
    sid = draw(stream_ids)
    if kind in (HEADERS, 0x9) and draw(st.booleans()):
        payload = draw(_encoder_blocks)
    elif kind == SETTINGS and draw(st.booleans()):
        pairs = draw(
            st.lists(
                st.tuples(
                    st.integers(min_value=0, max_value=8),
                    st.integers(min_value=0, max_value=(1 << 32) - 1),
                ),
                max_size=3,
            )
        )
        payload = b"".join(struct.pack(">HI", k, v) for k, v in pairs)
    else:
        payload = draw(st.binary(max_size=24))
    return frame_header(len(payload), kind, flags, sid) + payload


@FAST
@given(
    body=st.lists(frames(), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=4),
)
def test_server_survives_random_frames(body: list[bytes], cuts: list[int]) -> None:
    drive(server(), chunked(HELLO + b"".join(body), cuts))


@FAST
@given(body=st.lists(frames(), max_size=12))
def test_client_survives_random_frames(body: list[bytes]) -> None:
    drive(client(), [SERVER_HELLO + b"".join(body)])


@FAST
@given(garbage=st.binary(max_size=300), preface=st.booleans())
def test_random_bytes_are_events_or_a_clean_protocol_error(garbage: bytes, preface: bool) -> None:
    drive(server(), [(HELLO if preface else b"") + garbage])
    drive(client(), [garbage])


# -- mutations of a valid conversation -------------------------------------------------


def valid_request_stream() -> bytes:
    """A client's bytes (with preface): 3 streams with data and trailers, PING, WINDOW_UPDATE."""
    conn = H2Connection(client=True)
    for i in range(3):
        sid = conn.open_stream([*REQUEST, (b"x-n", b"%d" % i)], False)
        conn.send_data(sid, bytes(range(40)), False)
        conn.send_headers(sid, [(b"x-trailer", b"t")], True)
    conn.out += frame_header(8, 0x6, 0, 0) + b"pingpong"
    conn.out += window_update_frame(1, 1000)
    return bytes(conn.data_to_send())


def valid_response_stream() -> bytes:
    """A server's bytes answering streams 1 and 3 of `client()`."""
    conn = H2Connection(client=False)
    conn.receive_data(bytes(client_wire()))
    conn.data_to_send()
    for sid in (1, 3):
        conn.send_headers(sid, RESPONSE, False)
        conn.send_data(sid, b"y" * 50, False)
        conn.send_headers(sid, [(b"grpc-status", b"0")], True)
    conn.close(0)
    return SERVER_HELLO + bytes(conn.data_to_send())


def client_wire() -> bytes:
    conn = H2Connection(client=True)
    conn.open_stream(REQUEST, False)
    conn.open_stream(REQUEST, True)
    return bytes(conn.data_to_send())


VALID_REQUESTS = valid_request_stream()
VALID_RESPONSES = valid_response_stream()

mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "set"]),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=255),
)


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, where, value in edits:
        at = where % (len(buf) + 1)
        if op == "insert":
            buf[at:at] = bytes((value,))
        elif at < len(buf):
            if op == "delete":
                del buf[at]
            elif op == "flip":
                buf[at] ^= 1 << (value % 8)
            else:
                buf[at] = value
    return bytes(buf)


@FAST
@given(edits=st.lists(mutation, min_size=1, max_size=6))
def test_server_survives_mutated_requests(edits: list[tuple[str, int, int]]) -> None:
    drive(server(), [PREFACE + mutate(VALID_REQUESTS[len(PREFACE) :], edits)])


@FAST
@given(edits=st.lists(mutation, min_size=1, max_size=6))
def test_client_survives_mutated_responses(edits: list[tuple[str, int, int]]) -> None:
    drive(client(), [mutate(VALID_RESPONSES, edits)])


def test_unmutated_streams_are_accepted() -> None:
    """The seeds of the mutation tests are themselves valid (else the tests prove little)."""
    conn = server()
    events = conn.receive_data(VALID_REQUESTS)
    assert [e[0] for e in events].count(EV_TRAILERS) == 3
    answer = client()
    events = answer.receive_data(VALID_RESPONSES)
    assert [e[0] for e in events].count(EV_TRAILERS) == 2


# -- flow control when sending -------------------------------------------------------

window_steps = st.lists(
    st.one_of(
        st.tuples(st.just("initial"), st.integers(min_value=0, max_value=70_000)),
        st.tuples(st.just("conn_update"), st.integers(min_value=1, max_value=40_000)),
        st.tuples(st.just("stream_update"), st.integers(min_value=1, max_value=40_000)),
        st.tuples(st.just("send"), st.integers(min_value=0, max_value=50_000)),
    ),
    max_size=25,
)


@FAST
@given(steps=window_steps)
def test_server_never_sends_beyond_the_windows_the_client_granted(
    steps: list[tuple[str, int]],
) -> None:
    conn = server()
    conn.receive_data(HELLO + frame_header(0, SETTINGS, 1, 0))
    conn.receive_data(_headers_block(1))
    conn.data_to_send()
    initial = 65535
    conn_left = 65535  # what the client lets us send, by the RFC's arithmetic
    stream_left = 65535
    for step, value in steps:
        if step == "initial":
            stream_left += value - initial  # may go negative (RFC 9113 6.9.2)
            initial = value
            conn.receive_data(settings_frame({SETTINGS_INITIAL_WINDOW_SIZE: value}))
        elif step == "conn_update":
            conn_left += value
            conn.receive_data(window_update_frame(0, value))
        elif step == "stream_update":
            stream_left += value
            conn.receive_data(window_update_frame(1, value))
        else:
            sent = conn.send_data(1, b"z" * value, False)
            assert sent == min(value, max(0, min(conn_left, stream_left)))
        wire = [f for f in parse_frames(bytes(conn.data_to_send())) if f[0] == DATA]
        size = 0
        for _, _, sid, payload in wire:
            assert sid == 1 and len(payload) <= 16384
            size += len(payload)
        assert size <= max(0, min(conn_left, stream_left))
        conn_left -= size
        stream_left -= size
        assert conn.send_window_of(1) == min(conn_left, stream_left)


def _headers_block(sid: int) -> bytes:
    block = Encoder().encode(REQUEST)
    return frame_header(len(block), HEADERS, 0x4, sid) + block
