"""The relay's sans-IO HTTP/2 codec: a client and a server connection talking to
each other in memory, and hand-built frames (hyperframe) for what a peer may
do wrong. No sockets, no sleeping."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.transport.frames import PREFACE
from sidecar.transport.h2conn import (
    CONNECTION_WINDOW,
    EV_DATA,
    EV_DATA_END,
    EV_GOAWAY,
    EV_HEADERS,
    EV_RESET,
    EV_SETTINGS,
    EV_TRAILERS,
    EV_WINDOW,
    STREAM_WINDOW,
    ConnectionFailed,
    Event,
    H2Connection,
    StreamGone,
)

# Header blocks come out of the codec as tuples (shared, immutable).
REQUEST = (
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/test.Echo/Unary"),
    (b":authority", b"echo"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
)
RESPONSE = ((b":status", b"200"), (b"content-type", b"application/grpc"))
TRAILERS = ((b"grpc-status", b"0"), (b"grpc-message", b""))
Fields = tuple[tuple[bytes, bytes], ...]

PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 1, 3, 5, 6
COMPRESSION_ERROR = 9


def pair() -> tuple[H2Connection, H2Connection]:
    """A connected client/server pair with SETTINGS exchanged and acknowledged."""
    client, server = H2Connection(client=True), H2Connection(client=False)
    hello = [(EV_SETTINGS, 0, None, 0)]  # the wider window is no news: nothing was blocked
    assert server.receive_data(bytes(client.data_to_send())) == hello
    assert client.receive_data(bytes(server.data_to_send())) == hello
    server.receive_data(bytes(client.data_to_send()))  # the SETTINGS ACK
    return client, server


def deliver(src: H2Connection, dst: H2Connection) -> list[Event]:
    return dst.receive_data(bytes(src.data_to_send()))


def frames_of(data: bytes) -> list[Frame]:
    out: list[Frame] = []
    view = memoryview(data)
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        out.append(frame)
        view = view[9 + length :]
    return out


def fresh_server() -> H2Connection:
    """A server that has read the preface and an empty SETTINGS; its output discarded."""
    server = H2Connection(client=False)
    server.receive_data(PREFACE + bytes(SettingsFrame(0).serialize()))
    server.data_to_send()
    return server


def headers_frame(sid: int, headers: Fields, *flags: str) -> bytes:
    frame = HeadersFrame(sid)
    frame.data = Encoder().encode(headers)
    for flag in ("END_HEADERS", *flags):
        frame.flags.add(flag)
    return bytes(frame.serialize())


def connection_error(conn: H2Connection, payload: bytes) -> int:
    with pytest.raises(ConnectionFailed) as info:
        conn.receive_data(payload)
    goaways = [f for f in frames_of(bytes(conn.data_to_send())) if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[-1].error_code == info.value.code
    assert conn.receive_data(b"anything") == []  # a failed connection ignores the rest
    return info.value.code


def resets(conn: H2Connection) -> dict[int, int]:
    out = frames_of(bytes(conn.data_to_send()))
    return {f.stream_id: f.error_code for f in out if isinstance(f, RstStreamFrame)}


# -- a whole exchange ----------------------------------------------------------------


def test_unary_call_round_trip() -> None:
    client, server = pair()
    sid = client.open_stream(REQUEST, False)
    assert client.send_data(sid, b"\x00\x00\x00\x00\x03abc", True) == 8
    events = deliver(client, server)
    assert events == [
        (EV_HEADERS, sid, REQUEST, 0),
        (EV_DATA_END, sid, b"\x00\x00\x00\x00\x03abc", 8),
    ]
    server.send_headers(sid, RESPONSE, False)
    server.send_data(sid, b"\x00\x00\x00\x00\x03cba", False)
    server.send_headers(sid, TRAILERS, True)
    events = deliver(server, client)
    assert [e[0] for e in events] == [EV_HEADERS, EV_DATA, EV_TRAILERS]
    assert events[2][2] == TRAILERS
    assert not client.is_open(sid) and not server.is_open(sid)  # closed both ways
    with pytest.raises(StreamGone):
        server.send_data(sid, b"late", False)


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_events_do_not_depend_on_how_bytes_are_split(cuts: list[int]) -> None:
    client = H2Connection(client=True)
    for i in range(3):
        sid = client.open_stream([*REQUEST, (b"x-n", b"%d" % i)], False)
        client.send_data(sid, bytes(range(i * 30)), True)
    wire = bytes(client.data_to_send())
    whole = H2Connection(client=False).receive_data(wire)
    split = H2Connection(client=False)
    events: list[Event] = []
    last = 0
    for cut in sorted({c % len(wire) for c in cuts}):
        events += split.receive_data(wire[last:cut])
        last = cut
    events += split.receive_data(wire[last:])
    assert events == whole
    assert [e[0] for e in whole].count(EV_HEADERS) == 3


def test_large_header_block_goes_out_as_continuation_frames() -> None:
    client, server = pair()
    big = (*REQUEST, (b"x-big", b"v" * 40000))
    sid = client.open_stream(big, True)
    wire = bytes(client.data_to_send())
    kinds = [type(f).__name__ for f in frames_of(wire)]
    assert kinds[0] == "HeadersFrame" and kinds.count("ContinuationFrame") >= 2
    assert server.receive_data(wire) == [(EV_HEADERS, sid, big, 1)]


def test_informational_response_is_skipped() -> None:
    client, server = pair()
    sid = client.open_stream(REQUEST, True)
    deliver(client, server)
    server.send_headers(sid, [(b":status", b"100")], False)
    server.send_headers(sid, RESPONSE, True)
    assert deliver(server, client) == [(EV_HEADERS, sid, RESPONSE, 1)]


# -- flow control --------------------------------------------------------------------


def test_send_data_stops_at_the_peer_window_and_resumes_on_window_update() -> None:
    client, server = pair()
    sid = client.open_stream(REQUEST, False)
    deliver(client, server)
    server.send_headers(sid, RESPONSE, False)
    body = bytes(STREAM_WINDOW + 100_000)
    sent = server.send_data(sid, body, True)
    assert sent == STREAM_WINDOW  # the window the client advertised
    assert server.send_data(sid, body[sent:], True) == 0
    events = deliver(server, client)
    assert sum(e[3] for e in events if e[0] == EV_DATA) == STREAM_WINDOW
    assert max(len(e[2]) for e in events if e[0] == EV_DATA) <= 16384  # the peer's frame size
    client.ack(sid, STREAM_WINDOW)
    client.data_to_send()  # its WINDOW_UPDATE is dropped: the server sees only ours below
    client.out += WindowUpdateFrame(sid, window_increment=50_000).serialize()
    client.out += WindowUpdateFrame(sid, window_increment=1).serialize()
    # the first update unblocks the stream; the second is no news until a send falls short
    assert deliver(client, server) == [(EV_WINDOW, sid, None, 0)]
    assert server.send_data(sid, body[sent:], True) == 50_001
    client.out += WindowUpdateFrame(sid, window_increment=50_000).serialize()
    deliver(client, server)
    assert server.send_data(sid, body[sent + 50_001 :], True) == 49_999
    assert deliver(server, client)[-1][0] == EV_DATA_END


def test_window_updates_are_batched_until_half_a_window() -> None:
    client, server = pair()
    sid = client.open_stream(REQUEST, False)
    deliver(client, server)
    server.ack(sid, STREAM_WINDOW // 2 - 1)
    assert server.data_to_send() == b""  # nothing yet
    server.ack(sid, 1)
    updates = [f for f in frames_of(bytes(server.data_to_send())) if f.stream_id == sid]
    assert [f.window_increment for f in updates] == [STREAM_WINDOW // 2]  # type: ignore[attr-defined]
    server.ack(sid, CONNECTION_WINDOW // 2)
    conn = [f for f in frames_of(bytes(server.data_to_send())) if f.stream_id == 0]
    expected = [CONNECTION_WINDOW // 2 + STREAM_WINDOW // 2]  # the stream's bytes count too
    assert [f.window_increment for f in conn] == expected  # type: ignore[attr-defined]


def test_peer_exceeding_the_stream_window_gets_flow_control_error() -> None:
    server = fresh_server()
    payload = headers_frame(1, REQUEST)
    for _ in range(STREAM_WINDOW // 16384 + 1):
        payload += bytes(DataFrame(1, data=bytes(16384)).serialize())
    events = server.receive_data(payload)
    assert events[-1] == (EV_RESET, 1, None, FLOW_CONTROL_ERROR)
    assert resets(server) == {1: FLOW_CONTROL_ERROR}


def test_initial_window_change_applies_to_open_streams() -> None:
    client, server = pair()
    sid = client.open_stream(REQUEST, False)
    deliver(client, server)
    server.send_headers(sid, RESPONSE, False)
    client.out += SettingsFrame(0, settings={4: 10}).serialize()
    deliver(client, server)
    assert server.send_window_of(sid) == 10
    assert server.send_data(sid, bytes(100), False) == 10


def test_settings_that_overflow_an_open_stream_window_are_connection_errors() -> None:
    server = fresh_server()
    server.receive_data(headers_frame(1, REQUEST))
    server.data_to_send()
    overflow = WindowUpdateFrame(1, window_increment=(1 << 31) - 1 - 65535).serialize()
    server.receive_data(bytes(overflow))
    settings_frame = SettingsFrame(0, settings={4: 65536}).serialize()
    assert connection_error(server, bytes(settings_frame)) == FLOW_CONTROL_ERROR


# -- what a peer may do wrong ----------------------------------------------------------


def test_bad_preface_is_protocol_error() -> None:
    assert connection_error(H2Connection(client=False), b"GET / HTTP/1.1\r\n\r\n" * 2) == 1


def test_first_frame_must_be_settings() -> None:
    server = H2Connection(client=False)
    assert connection_error(server, PREFACE + bytes(PingFrame(0).serialize())) == PROTOCOL_ERROR


def test_ping_is_acknowledged_with_its_payload() -> None:
    server = fresh_server()
    server.receive_data(bytes(PingFrame(0, opaque_data=b"abcdefgh").serialize()))
    (ack,) = frames_of(bytes(server.data_to_send()))
    assert isinstance(ack, PingFrame) and "ACK" in ack.flags and ack.opaque_data == b"abcdefgh"


def raw(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", sid)
        + payload
    )


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param(raw(0x6, 0, 0, bytes(7)), FRAME_SIZE_ERROR, id="ping-7-bytes"),
        pytest.param(raw(0x6, 0, 1, bytes(8)), PROTOCOL_ERROR, id="ping-on-stream"),
        pytest.param(raw(0x3, 0, 5, bytes(4)), PROTOCOL_ERROR, id="rst-on-idle"),
        pytest.param(raw(0x3, 0, 0, bytes(4)), PROTOCOL_ERROR, id="rst-on-0"),
        pytest.param(raw(0x3, 0, 5, bytes(3)), FRAME_SIZE_ERROR, id="rst-3-bytes"),
        pytest.param(raw(0x8, 0, 7, b"\x00\x00\x00\x01"), PROTOCOL_ERROR, id="wu-on-idle"),
        pytest.param(raw(0x8, 0, 0, bytes(4)), PROTOCOL_ERROR, id="wu-zero"),
        pytest.param(raw(0x8, 0, 0, bytes(5)), FRAME_SIZE_ERROR, id="wu-5-bytes"),
        pytest.param(raw(0x9, 0x4, 1, b""), PROTOCOL_ERROR, id="stray-continuation"),
        pytest.param(raw(0x5, 0x4, 1, b"\x00\x00\x00\x02"), PROTOCOL_ERROR, id="push-promise"),
        pytest.param(raw(0x7, 0, 1, bytes(8)), PROTOCOL_ERROR, id="goaway-on-stream"),
        pytest.param(raw(0x7, 0, 0, bytes(7)), FRAME_SIZE_ERROR, id="goaway-7-bytes"),
        pytest.param(raw(0x4, 0x1, 0, b"\x00"), FRAME_SIZE_ERROR, id="settings-ack-body"),
        pytest.param(raw(0x4, 0, 1, b""), PROTOCOL_ERROR, id="settings-on-stream"),
        pytest.param(raw(0x0, 0x8, 1, b"\x05"), PROTOCOL_ERROR, id="data-padding-too-long"),
        pytest.param(raw(0x0, 0, 0, b"x"), PROTOCOL_ERROR, id="data-on-0"),
        pytest.param(raw(0x1, 0x4, 0, b""), PROTOCOL_ERROR, id="headers-on-0"),
        pytest.param(raw(0x0, 0, 1, bytes(16385)), FRAME_SIZE_ERROR, id="frame-too-big"),
    ],
)
def test_connection_errors(payload: bytes, code: int) -> None:
    server = fresh_server()
    assert connection_error(server, payload) == code


def test_hpack_garbage_is_compression_error() -> None:
    server = fresh_server()
    garbage = b"\x00\x00\x04\x01\x05\x00\x00\x00\x01\xff\xff\xff\xff"
    assert connection_error(server, garbage) == COMPRESSION_ERROR


def test_interleaved_header_block_is_protocol_error() -> None:
    server = fresh_server()
    first = HeadersFrame(1)
    first.data = Encoder().encode(REQUEST)
    payload = bytes(first.serialize()) + bytes(PingFrame(0).serialize())
    assert connection_error(server, payload) == PROTOCOL_ERROR


def test_header_block_split_over_continuation_is_decoded() -> None:
    server = fresh_server()
    block = Encoder().encode(REQUEST)
    first = HeadersFrame(1, data=block[:5])
    first.flags.add("END_STREAM")
    rest = ContinuationFrame(1, data=block[5:])
    rest.flags.add("END_HEADERS")
    events = server.receive_data(bytes(first.serialize()) + bytes(rest.serialize()))
    assert events == [(EV_HEADERS, 1, REQUEST, 1)]


def test_padded_and_prioritised_headers_are_accepted() -> None:
    server = fresh_server()
    frame = HeadersFrame(1, data=Encoder().encode(REQUEST), pad_length=3, depends_on=0)
    for flag in ("END_HEADERS", "PADDED", "PRIORITY"):
        frame.flags.add(flag)
    assert server.receive_data(bytes(frame.serialize())) == [(EV_HEADERS, 1, REQUEST, 0)]
    data = DataFrame(1, data=b"abc", pad_length=4)
    data.flags.add("PADDED")
    data.flags.add("END_STREAM")
    assert server.receive_data(bytes(data.serialize())) == [(EV_DATA_END, 1, b"abc", 8)]


def test_stream_that_depends_on_itself_is_reset() -> None:
    server = fresh_server()
    server.receive_data(headers_frame(1, REQUEST))
    server.data_to_send()
    events = server.receive_data(bytes(PriorityFrame(1, depends_on=1).serialize()))
    assert events == [(EV_RESET, 1, None, PROTOCOL_ERROR)]
    assert resets(server) == {1: PROTOCOL_ERROR}


def test_data_after_end_stream_is_stream_closed() -> None:
    server = fresh_server()
    payload = headers_frame(1, REQUEST, "END_STREAM") + bytes(DataFrame(1, data=b"x").serialize())
    events = server.receive_data(payload)
    assert events[-1] == (EV_RESET, 1, None, STREAM_CLOSED)
    assert resets(server) == {1: STREAM_CLOSED}


def test_frames_on_a_stream_we_reset_get_stream_closed_and_keep_the_window() -> None:
    server = fresh_server()
    server.receive_data(headers_frame(1, REQUEST))
    server.reset(1, 8)
    server.data_to_send()
    assert server.receive_data(bytes(DataFrame(1, data=bytes(1000)).serialize())) == []
    assert resets(server) == {1: STREAM_CLOSED}
    assert server.recv_window + server.recv_pending == CONNECTION_WINDOW


def test_content_length_is_enforced() -> None:
    server = fresh_server()
    headers = (*REQUEST, (b"content-length", b"5"))
    data = DataFrame(1, data=b"abc")
    data.flags.add("END_STREAM")
    events = server.receive_data(headers_frame(1, headers) + bytes(data.serialize()))
    assert events == [(EV_HEADERS, 1, headers, 0), (EV_RESET, 1, None, PROTOCOL_ERROR)]


def test_trailers_must_end_the_stream() -> None:
    server = fresh_server()
    events = server.receive_data(headers_frame(1, REQUEST) + headers_frame(1, TRAILERS))
    assert events[-1] == (EV_RESET, 1, None, PROTOCOL_ERROR)


def test_even_reused_or_lower_stream_ids_from_a_client() -> None:
    assert connection_error(fresh_server(), headers_frame(2, REQUEST)) == PROTOCOL_ERROR
    server = fresh_server()
    server.receive_data(headers_frame(1, REQUEST, "END_STREAM"))
    server.reset(1, 8)
    server.receive_data(headers_frame(7, REQUEST, "END_STREAM"))
    server.data_to_send()
    # stream 1 was used and is closed: a stream error
    assert server.receive_data(headers_frame(1, REQUEST, "END_STREAM")) == []
    assert resets(server) == {1: STREAM_CLOSED}
    # 3 and 5 were skipped, never opened: an unexpected id, a connection error
    assert connection_error(server, headers_frame(5, REQUEST, "END_STREAM")) == PROTOCOL_ERROR


def test_goaway_and_reset_from_the_peer_are_reported() -> None:
    client, server = pair()
    sid = client.open_stream(REQUEST, False)
    deliver(client, server)
    server.reset(sid, 8)
    server.close(0, sid)
    assert deliver(server, client) == [(EV_RESET, sid, None, 8), (EV_GOAWAY, sid, None, 0)]
    assert not client.is_open(sid)


def test_never_indexed_fields_stay_never_indexed() -> None:
    from hpack import NeverIndexedHeaderTuple

    client, server = pair()
    secret = NeverIndexedHeaderTuple(b"authorization", b"Bearer x")
    client.open_stream([*REQUEST, secret], True)
    ((_, _, headers, _),) = deliver(client, server)
    assert isinstance(headers[-1], NeverIndexedHeaderTuple)


_names = st.binary(min_size=1, max_size=40).map(lambda b: b.lower())
_fields = st.lists(st.tuples(_names, st.binary(max_size=300)), max_size=20)


@settings(max_examples=100, deadline=None)
@given(blocks=st.lists(_fields, min_size=1, max_size=4))
def test_encoded_blocks_decode_to_the_same_fields(blocks: list[list[tuple[bytes, bytes]]]) -> None:
    from sidecar.transport.hpackcodec import encode_block

    decoder = Decoder()
    for block in blocks:
        assert decoder.decode(encode_block(block), raw=True) == block


_small_fields = st.lists(
    st.tuples(st.sampled_from([b"a", b"b", b"x-c"]), st.sampled_from([b"1", b"2", b"33"])),
    max_size=5,
)


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.one_of(_small_fields, st.sampled_from([0, 40, 4096])), min_size=1, max_size=12
    )
)
def test_block_cache_decodes_like_a_fresh_decoder(steps: list[object]) -> None:
    """Repeated blocks, insertions and table resizes: cached answers never go stale."""
    from sidecar.transport.hpackcodec import HeaderDecoder

    encoder, reference, ours = Encoder(), Decoder(), HeaderDecoder(1 << 16)
    for step in steps:
        if isinstance(step, int):
            # announced in the next block (hpack's encoder forgets a size set twice)
            if step != encoder.header_table_size:
                encoder.header_table_size = step
            continue
        fields = step if isinstance(step, list) else []
        for block in (encoder.encode(fields), encoder.encode(fields)):
            expected = reference.decode(block, raw=True)
            got = ours.decode(block)
            assert list(got) == expected
            assert isinstance(got, tuple)  # shared between callers: immutable


def test_request_scan_runs_once_per_distinct_block() -> None:
    seen: list[Fields] = []

    def scan(headers: Sequence[tuple[bytes, bytes]]) -> int:
        seen.append(tuple(headers))
        return len(seen)

    client = H2Connection(client=True)
    server = H2Connection(client=False, scan=scan)
    other = (*REQUEST, (b"x-other", b"1"))
    sids = [client.open_stream(h, True) for h in (REQUEST, REQUEST, other, REQUEST)]
    events = deliver(client, server)
    assert [e[2] for e in events if e[0] == EV_HEADERS] == [REQUEST, REQUEST, other, REQUEST]
    assert seen == [REQUEST, other]  # identical blocks share the first scan
    assert [server.streams[sid].head for sid in sids] == [1, 1, 2, 1]


def test_window_update_goes_out_at_once_when_the_peer_is_nearly_out_of_window() -> None:
    server = fresh_server()
    chunk = bytes(16384)
    frames = bytearray()
    for sid in range(1, 27, 2):  # 13 streams fill 13 of the 16 MiB connection window
        frames += headers_frame(sid, REQUEST)
        for _ in range(STREAM_WINDOW // 16384):
            frames += raw(0x0, 0, sid, chunk)
    server.receive_data(bytes(frames))
    server.data_to_send()
    server.ack(25, 1000)  # far below half a window, but the peer has < 4 MiB left
    updates = [f for f in frames_of(bytes(server.data_to_send())) if f.stream_id == 0]
    assert [f.window_increment for f in updates] == [1000]  # type: ignore[attr-defined]


def test_relayed_block_is_encoded_once_and_lists_are_never_cached() -> None:
    from sidecar.transport.hpackcodec import encode_block

    block = (*RESPONSE, (b"x-id", b"1"))
    assert encode_block(block) is encode_block(block)  # by identity, no re-encoding
    fields = list(block)
    first = encode_block(fields)
    fields[2] = (b"x-id", b"2")  # a list may change: it must be encoded afresh
    assert Decoder().decode(encode_block(fields), raw=True) == fields
    assert Decoder().decode(first, raw=True) == list(block)
