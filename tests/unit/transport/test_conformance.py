"""Frame-level RFC 9113/7541 checks against a real listener on 127.0.0.1:0.

Hand-built frames (hyperframe + hpack, no validation) go over a raw socket;
the test reads frames back and checks the error code the RFC prescribes.
A stream error may be answered with RST_STREAM or, as RFC 9113 5.4.1 allows,
with a connection error (GOAWAY) carrying the same code.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from sidecar.transport import UpstreamPool, start_listener
from skein.launch import free_port
from tests.integration.test_transport_support import StaticDispatcher, run

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 1, 3, 5, 6
COMPRESSION_ERROR = 9

GOOD = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/test.Echo/Unary"),
    (b":authority", b"echo"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]


def headers_frame(sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool = True) -> bytes:
    frame = HeadersFrame(sid)
    frame.data = Encoder().encode(headers)
    frame.flags.add("END_HEADERS")
    if end_stream:
        frame.flags.add("END_STREAM")
    return bytes(frame.serialize())


def raw_frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", sid)
        + payload
    )


async def read_frames(reader: asyncio.StreamReader, until: float) -> list[Frame]:
    frames: list[Frame] = []
    loop = asyncio.get_running_loop()
    while True:
        remaining = until - loop.time()
        if remaining <= 0:
            return frames
        try:
            header = await asyncio.wait_for(reader.readexactly(9), remaining)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return frames
        frame, length = Frame.parse_frame_header(memoryview(header))
        body = await reader.readexactly(length)
        frame.parse_body(memoryview(body))
        frames.append(frame)
        if isinstance(frame, (GoAwayFrame, RstStreamFrame)):
            return frames


def probe(
    payload: bytes,
    settings: bytes | None = None,
    wait: float = 1.0,
    dispatcher: StaticDispatcher | None = None,
) -> list[Frame]:
    """Send the preface, SETTINGS and `payload`; return what the listener sent back."""
    result: list[Frame] = []

    async def scenario() -> None:
        pool = UpstreamPool()
        listener = await start_listener(
            "127.0.0.1", 0, dispatcher or StaticDispatcher(None), pool, name="conformance"
        )
        try:
            reader, writer = await asyncio.open_connection(*listener.address)
            hello = settings if settings is not None else bytes(SettingsFrame(0).serialize())
            writer.write(PREFACE + hello + payload)
            loop = asyncio.get_running_loop()
            result.extend(await read_frames(reader, loop.time() + wait))
            writer.close()
        finally:
            await listener.close(grace=0.5)
            await pool.close()

    run(scenario)
    return result


def error_of(frames: list[Frame], sid: int) -> tuple[str, int]:
    for frame in frames:
        if isinstance(frame, GoAwayFrame):
            return "goaway", frame.error_code
        if isinstance(frame, RstStreamFrame) and frame.stream_id == sid:
            return "rst", frame.error_code
    raise AssertionError(f"no RST_STREAM/GOAWAY in {frames}")


def test_valid_request_is_answered_and_settings_acked() -> None:
    frames = probe(headers_frame(1, GOOD), wait=0.3)
    assert any(isinstance(f, SettingsFrame) and "ACK" in f.flags for f in frames)
    answered = [f for f in frames if isinstance(f, HeadersFrame) and f.stream_id == 1]
    assert answered and "END_STREAM" in answered[0].flags


def test_ping_is_answered() -> None:
    frames = probe(bytes(PingFrame(0, opaque_data=b"12345678").serialize()), wait=0.3)
    acks = [f for f in frames if isinstance(f, PingFrame) and "ACK" in f.flags]
    assert acks and acks[0].opaque_data == b"12345678"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([*GOOD, (b"X-Upper", b"1")], id="uppercase-name"),
        pytest.param([*GOOD, (b"connection", b"keep-alive")], id="connection"),
        pytest.param([*GOOD, (b"keep-alive", b"5")], id="keep-alive"),
        pytest.param([*GOOD, (b"transfer-encoding", b"chunked")], id="transfer-encoding"),
        pytest.param([*GOOD[:5], (b"te", b"gzip")], id="te-not-trailers"),
        pytest.param([h for h in GOOD if h[0] != b":path"], id="missing-path"),
        pytest.param([h for h in GOOD if h[0] != b":method"], id="missing-method"),
        pytest.param([*GOOD[:1], (b":method", b"GET"), *GOOD[1:]], id="duplicate-method"),
        pytest.param([*GOOD[:4], (b":foo", b"bar"), *GOOD[4:]], id="unknown-pseudo"),
        pytest.param([*GOOD[:3], (b"x-a", b"1"), *GOOD[3:]], id="pseudo-after-regular"),
        pytest.param([*GOOD[:4], (b":status", b"200"), *GOOD[4:]], id="response-pseudo"),
        pytest.param([(b":path", b""), *[h for h in GOOD if h[0] != b":path"]], id="empty-path"),
        pytest.param([*GOOD, (b"x-a", b"a\nb")], id="newline-in-value"),
        pytest.param([*GOOD, (b"x-a", b"a\x00b")], id="nul-in-value"),
        pytest.param([*GOOD, (b"host", b"elsewhere")], id="host-differs-from-authority"),
    ],
)
def test_malformed_request_headers_are_protocol_errors(headers: list[tuple[bytes, bytes]]) -> None:
    _, code = error_of(probe(headers_frame(1, headers)), 1)
    assert code == PROTOCOL_ERROR


def test_content_length_mismatch_is_protocol_error() -> None:
    headers = [*GOOD, (b"content-length", b"10")]
    data = DataFrame(1, data=b"abc")
    data.flags.add("END_STREAM")
    payload = headers_frame(1, headers, end_stream=False) + bytes(data.serialize())
    _, code = error_of(probe(payload), 1)
    assert code == PROTOCOL_ERROR


def test_pseudo_header_in_request_trailers_is_protocol_error() -> None:
    payload = headers_frame(1, GOOD, end_stream=False) + headers_frame(1, [(b":path", b"/x")])
    # routed to a closed port: the stream is still open when its trailers are checked
    _, code = error_of(probe(payload, dispatcher=StaticDispatcher(("127.0.0.1", free_port()))), 1)
    assert code == PROTOCOL_ERROR


def test_stream_error_leaves_the_connection_usable() -> None:
    bad = headers_frame(1, [*GOOD, (b"X-Upper", b"1")])
    frames = probe(bad + headers_frame(3, GOOD), wait=0.5)
    assert error_of(frames, 1) == ("rst", PROTOCOL_ERROR)


def test_data_on_closed_stream_is_stream_closed() -> None:
    payload = headers_frame(1, GOOD, end_stream=True) + bytes(DataFrame(1, data=b"x").serialize())
    _, code = error_of(probe(payload), 1)
    assert code == STREAM_CLOSED


def test_data_on_idle_stream_is_protocol_error() -> None:
    _, code = error_of(probe(bytes(DataFrame(3, data=b"x").serialize())), 3)
    assert code == PROTOCOL_ERROR


def test_hpack_garbage_is_compression_error() -> None:
    payload = raw_frame(0x1, 0x4 | 0x1, 1, b"\xff\xff\xff\xff\xff\xff\xff")
    kind, code = error_of(probe(payload), 1)
    assert (kind, code) == ("goaway", COMPRESSION_ERROR)


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        pytest.param(0x2, 2, PROTOCOL_ERROR, id="enable-push-2"),
        pytest.param(0x4, 1 << 31, FLOW_CONTROL_ERROR, id="initial-window-too-big"),
        pytest.param(0x5, 100, PROTOCOL_ERROR, id="max-frame-size-too-small"),
        pytest.param(0x5, 1 << 24, PROTOCOL_ERROR, id="max-frame-size-too-big"),
    ],
)
def test_bad_settings_are_connection_errors(setting: int, value: int, expected: int) -> None:
    settings = raw_frame(0x4, 0, 0, struct.pack(">HI", setting, value))
    kind, code = error_of(probe(b"", settings=settings), 0)
    assert (kind, code) == ("goaway", expected)


def test_settings_with_bad_length_is_frame_size_error() -> None:
    settings = raw_frame(0x4, 0, 0, b"\x00\x04\x00")
    kind, code = error_of(probe(b"", settings=settings), 0)
    assert (kind, code) == ("goaway", FRAME_SIZE_ERROR)


def test_connection_window_overflow_is_flow_control_error() -> None:
    payload = bytes(WindowUpdateFrame(0, window_increment=(1 << 31) - 1).serialize())
    kind, code = error_of(probe(payload), 0)
    assert (kind, code) == ("goaway", FLOW_CONTROL_ERROR)


def test_stream_window_overflow_is_flow_control_error() -> None:
    payload = headers_frame(1, GOOD, end_stream=False) + bytes(
        WindowUpdateFrame(1, window_increment=(1 << 31) - 1).serialize()
    )
    _, code = error_of(probe(payload), 1)
    assert code == FLOW_CONTROL_ERROR


def test_frame_larger_than_max_frame_size_is_frame_size_error() -> None:
    payload = headers_frame(1, GOOD, end_stream=False) + raw_frame(0x0, 0, 1, b"x" * 20000)
    _, code = error_of(probe(payload), 1)
    assert code == FRAME_SIZE_ERROR


def test_continuation_on_other_stream_is_protocol_error() -> None:
    first = HeadersFrame(1)
    first.data = Encoder().encode(GOOD)
    cont = ContinuationFrame(3)
    cont.flags.add("END_HEADERS")
    payload = bytes(first.serialize()) + bytes(cont.serialize())
    kind, code = error_of(probe(payload), 1)
    assert (kind, code) == ("goaway", PROTOCOL_ERROR)


def test_even_stream_id_from_client_is_protocol_error() -> None:
    kind, code = error_of(probe(headers_frame(2, GOOD)), 2)
    assert (kind, code) == ("goaway", PROTOCOL_ERROR)
