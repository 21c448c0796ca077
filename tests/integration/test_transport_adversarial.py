"""Adversarial HTTP/2 peers against the relay, over real sockets on 127.0.0.1.

Client side: hand-built frames (our own byte layout, hpack's encoder, or raw
HPACK bytes) sent to a real listener; the answer must be the connection or
stream error RFC 9113/7541 prescribes (h2spec's groups), and the listener must
go on serving. Upstream side: raw-socket servers that misbehave; the gRPC
caller must get a clear error, promptly, and the relay must not crash.
A stream error may be answered with RST_STREAM or, as RFC 9113 5.4.1 allows,
with a connection error (GOAWAY) carrying the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from hpack import Decoder, Encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.transport import Listener, UpstreamPool, start_listener
from tests.integration.test_transport_support import EchoApp, StaticDispatcher, run

pytestmark = pytest.mark.integration

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0, 1, 3, 5
FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR = 6, 7, 9

GOOD = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/test.Echo/Unary"),
    (b":authority", b"echo"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]
Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", sid)
        + payload
    )


def block(headers: list[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
    return bytes(Encoder().encode(headers, huffman=huffman))


def headers(sid: int, fields: list[tuple[bytes, bytes]] = GOOD, end: bool = True) -> bytes:
    return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, block(fields))


def settings_frame(*pairs: tuple[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def window_update(sid: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", increment))


def grpc_message(body: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    head = await reader.readexactly(9)
    length = int.from_bytes(head[:3], "big")
    sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    return head[3], head[4], sid, await reader.readexactly(length)


async def read_until(
    reader: asyncio.StreamReader, done: Callable[[Frame], bool], wait: float = 3.0
) -> list[Frame]:
    """Frames until one satisfies `done`, the peer closes, or `wait` s pass."""
    frames: list[Frame] = []
    with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        async with asyncio.timeout(wait):
            while True:
                got = await read_frame(reader)
                frames.append(got)
                if done(got):
                    break
    return frames


def is_error(got: Frame) -> bool:
    return got[0] in (GOAWAY, RST_STREAM)


def error_of(frames: list[Frame], sid: int) -> tuple[str, int]:
    """The first GOAWAY, or RST_STREAM on `sid`, as ("goaway"|"rst", code)."""
    for kind, _, on, payload in frames:
        if kind == GOAWAY:
            return "goaway", int.from_bytes(payload[4:8], "big")
        if kind == RST_STREAM and on == sid:
            return "rst", int.from_bytes(payload[:4], "big")
    raise AssertionError(f"no RST_STREAM on {sid} and no GOAWAY in {frames}")


@contextlib.asynccontextmanager
async def relay(address: tuple[str, int] | None) -> AsyncIterator[Listener]:
    """A listener routing every stream to `address` (None: no route)."""
    pool = UpstreamPool()
    listener = await start_listener(
        "127.0.0.1", 0, StaticDispatcher(address), pool, name="adversarial"
    )
    try:
        yield listener
    finally:
        await listener.close(grace=0.3)
        await pool.close()


@contextlib.asynccontextmanager
async def silent_upstream() -> AsyncIterator[tuple[str, int]]:
    """A TCP server that accepts and reads, and never says a word (streams stay open)."""
    conns: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    async with scripted_upstream_server(serve) as address:
        yield address
    for writer in conns:
        writer.close()


@contextlib.asynccontextmanager
async def scripted_upstream_server(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[tuple[str, int]]:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[:2]
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await server.wait_closed()


async def h2_connect(
    listener: Listener, hello: bytes | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*listener.address)
    writer.write(PREFACE + (settings_frame() if hello is None else hello))
    return reader, writer


def probe(
    payload: bytes,
    *,
    hello: bytes | None = None,
    upstream: str = "none",
    done: Callable[[Frame], bool] = is_error,
    wait: float = 3.0,
) -> list[Frame]:
    """Send preface, SETTINGS and `payload` to a fresh listener; what came back.

    upstream: "none" (no route: the proxy answers at once) or "silent"
    (streams stay open, as they would while a real upstream works).
    """
    result: list[Frame] = []

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            address = None
            if upstream == "silent":
                address = await stack.enter_async_context(silent_upstream())
            listener = await stack.enter_async_context(relay(address))
            reader, writer = await h2_connect(listener, hello)
            writer.write(payload)
            result.extend(await read_until(reader, done, wait))
            writer.close()

    run(scenario)
    return result


# -- RFC 9113 section 3.4 / 4 / 5: preface, framing, stream states ---------------------


def test_invalid_preface_closes_the_connection_and_the_listener_still_serves() -> None:
    async def scenario() -> None:
        async with relay(None) as listener:
            reader, writer = await asyncio.open_connection(*listener.address)
            writer.write(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + settings_frame())
            async with asyncio.timeout(3):
                while await reader.read(4096):
                    pass  # whatever comes, the connection must end
            writer.close()
            reader, writer = await h2_connect(listener)
            writer.write(headers(1))
            frames = await read_until(reader, lambda f: f[0] == HEADERS and f[2] == 1)
            assert frames and frames[-1][0] == HEADERS
            writer.close()

    run(scenario)


@pytest.mark.parametrize(
    ("payload", "sid", "expected"),
    [
        pytest.param(frame(DATA, 0, 1, b"x" * 16385), 1, FRAME_SIZE_ERROR, id="data-too-large"),
        pytest.param(
            frame(HEADERS, END_HEADERS | PADDED, 1, b"\x40" + block(GOOD)),
            1,
            PROTOCOL_ERROR,
            id="headers-pad-too-long",
        ),
        pytest.param(
            headers(1, end=False) + frame(DATA, PADDED, 1, b"\x05abc"),
            1,
            PROTOCOL_ERROR,
            id="data-pad-too-long",
        ),
        pytest.param(frame(RST_STREAM, 0, 1, bytes(4)), 1, PROTOCOL_ERROR, id="rst-on-idle"),
        pytest.param(
            frame(SETTINGS, ACK, 0, bytes(6)), 0, FRAME_SIZE_ERROR, id="settings-ack-body"
        ),
        pytest.param(frame(SETTINGS, 0, 0, bytes(5)), 0, FRAME_SIZE_ERROR, id="settings-len-5"),
        pytest.param(frame(PING, 0, 0, bytes(6)), 0, FRAME_SIZE_ERROR, id="ping-len-6"),
        pytest.param(frame(PING, 0, 1, bytes(8)), 0, PROTOCOL_ERROR, id="ping-on-stream"),
        pytest.param(frame(GOAWAY, 0, 1, bytes(8)), 0, PROTOCOL_ERROR, id="goaway-on-stream"),
        pytest.param(window_update(0, 0), 0, PROTOCOL_ERROR, id="window-update-0-conn"),
        pytest.param(frame(WINDOW_UPDATE, 0, 0, bytes(3)), 0, FRAME_SIZE_ERROR, id="wu-len-3"),
        pytest.param(window_update(1, 1), 1, PROTOCOL_ERROR, id="window-update-idle"),
        pytest.param(frame(PRIORITY, 0, 0, bytes(5)), 0, PROTOCOL_ERROR, id="priority-on-0"),
        pytest.param(
            window_update(0, 0x7FFFFFFF) + window_update(0, 0x7FFFFFFF),
            0,
            FLOW_CONTROL_ERROR,
            id="conn-window-overflow-twice",
        ),
        pytest.param(
            frame(PUSH_PROMISE, END_HEADERS, 1, b"\x00\x00\x00\x02" + block(GOOD)),
            1,
            PROTOCOL_ERROR,
            id="push-promise-from-client",
        ),
        pytest.param(headers(5) + headers(3), 3, PROTOCOL_ERROR, id="stream-id-goes-down"),
        pytest.param(frame(CONTINUATION, END_HEADERS, 1, b""), 1, PROTOCOL_ERROR, id="cont-alone"),
        pytest.param(frame(CONTINUATION, END_HEADERS, 0, b""), 0, PROTOCOL_ERROR, id="cont-on-0"),
        pytest.param(
            headers(1) + frame(CONTINUATION, END_HEADERS, 1, b""),
            1,
            PROTOCOL_ERROR,
            id="cont-after-end-headers",
        ),
        pytest.param(
            frame(HEADERS, 0, 1, block(GOOD)) + frame(PRIORITY, 0, 1, bytes(5)),
            1,
            PROTOCOL_ERROR,
            id="header-block-then-priority",
        ),
        pytest.param(
            frame(HEADERS, 0, 1, block(GOOD)) + frame(0x21, 0, 1, b"ext"),
            1,
            PROTOCOL_ERROR,
            id="header-block-then-unknown-frame",
        ),
        pytest.param(
            frame(HEADERS, 0, 1, block(GOOD)) + headers(3),
            1,
            PROTOCOL_ERROR,
            id="header-block-then-headers",
        ),
        pytest.param(
            frame(HEADERS, END_STREAM, 1, block(GOOD[:3]))
            + frame(CONTINUATION, 0, 1, block(GOOD[3:]))
            + frame(CONTINUATION, END_HEADERS, 3, b""),
            1,
            PROTOCOL_ERROR,
            id="continuation-on-other-stream",
        ),
    ],
)
def test_connection_errors(payload: bytes, sid: int, expected: int) -> None:
    assert error_of(probe(payload), sid) == ("goaway", expected)


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        pytest.param(0x2, 2, PROTOCOL_ERROR, id="enable-push-2"),
        pytest.param(0x4, 0xFFFFFFFF, FLOW_CONTROL_ERROR, id="initial-window-max-u32"),
        pytest.param(0x5, 16383, PROTOCOL_ERROR, id="max-frame-16383"),
        pytest.param(0x5, 16777216, PROTOCOL_ERROR, id="max-frame-2^24"),
    ],
)
def test_bad_settings_after_the_first_are_connection_errors(
    setting: int, value: int, expected: int
) -> None:
    assert error_of(probe(settings_frame((setting, value))), 0) == ("goaway", expected)


def test_unknown_settings_and_frame_types_are_ignored() -> None:
    payload = settings_frame((0xFF, 7)) + frame(0xEE, 0xFF, 0, b"ext") + headers(1)
    frames = probe(payload, done=lambda f: f[0] == HEADERS and f[2] == 1)
    assert frames[-1][0] == HEADERS and frames[-1][1] & END_STREAM
    assert not [f for f in frames if f[0] == GOAWAY]
    assert sum(1 for f in frames if f[0] == SETTINGS and f[1] & ACK) == 2


def test_ping_ack_is_not_answered_and_ping_is() -> None:
    payload = frame(PING, ACK, 0, b"ackedack") + frame(PING, 0, 0, b"answerme")
    frames = probe(payload, done=lambda f: f[0] == PING)
    pings = [f for f in frames if f[0] == PING]
    assert pings == [(PING, ACK, 0, b"answerme")]


# -- stream errors on open streams (an upstream that is still working) ----------------


@pytest.mark.parametrize(
    ("payload", "sid", "expected"),
    [
        pytest.param(
            headers(1, end=False) + window_update(1, 0),
            1,
            PROTOCOL_ERROR,
            id="window-update-0-on-stream",
        ),
        pytest.param(
            headers(1, end=False) + frame(PRIORITY, 0, 1, bytes(4)),
            1,
            FRAME_SIZE_ERROR,
            id="priority-len-4",
        ),
        pytest.param(
            headers(1, end=False) + frame(PRIORITY, 0, 1, b"\x00\x00\x00\x01\x10"),
            1,
            PROTOCOL_ERROR,
            id="priority-self-dependency",
        ),
        pytest.param(
            frame(HEADERS, END_HEADERS | PRIO, 1, b"\x00\x00\x00\x01\x10" + block(GOOD)),
            1,
            PROTOCOL_ERROR,
            id="headers-self-dependency",
        ),
        pytest.param(
            headers(1, end=False) + headers(1, [(b"x-t", b"1")], end=False),
            1,
            PROTOCOL_ERROR,
            id="trailers-without-end-stream",
        ),
        pytest.param(
            headers(1, end=True) + headers(1, [(b"x-t", b"1")], end=True),
            1,
            STREAM_CLOSED,
            id="headers-on-half-closed-remote",
        ),
        pytest.param(
            headers(1, end=False) + frame(RST_STREAM, 0, 1, bytes(4)) + frame(DATA, 0, 1, b"x"),
            1,
            STREAM_CLOSED,
            id="data-after-rst",
        ),
        pytest.param(
            headers(1, end=False) + window_update(1, 0x7FFFFFFF),
            1,
            FLOW_CONTROL_ERROR,
            id="stream-window-overflow",
        ),
        pytest.param(
            headers(1, [*GOOD, (b"content-length", b"2")], end=False)
            + frame(DATA, 0, 1, b"a")
            + frame(DATA, END_STREAM, 1, b"bc"),
            1,
            PROTOCOL_ERROR,
            id="content-length-over-two-data-frames",
        ),
    ],
)
def test_stream_errors_on_open_streams(payload: bytes, sid: int, expected: int) -> None:
    assert error_of(probe(payload, upstream="silent"), sid)[1] == expected


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([(b":method", b"CONNECT"), (b":path", b"/")], id="connect-no-authority"),
        pytest.param([f for f in GOOD if f[0] != b":scheme"], id="missing-scheme"),
        pytest.param([*GOOD[:3], (b":path", b"/x"), *GOOD[3:]], id="duplicate-path"),
        pytest.param([*GOOD[:1], (b":scheme", b"https"), *GOOD[1:]], id="duplicate-scheme"),
        pytest.param([*GOOD[:5], (b"te", b"trailers, deflate")], id="te-list"),
        pytest.param([*GOOD, (b"Content-Type", b"x")], id="uppercase-regular"),
        pytest.param([(b":Method", b"POST"), *GOOD[1:]], id="uppercase-pseudo"),
        pytest.param([*GOOD, (b"upgrade", b"h2c")], id="upgrade"),
        pytest.param([*GOOD, (b"x-a", b" lead")], id="leading-space-value"),
        pytest.param([*GOOD, (b"x a", b"1")], id="space-in-name"),
    ],
)
def test_malformed_requests_are_stream_protocol_errors(fields: list[tuple[bytes, bytes]]) -> None:
    frames = probe(
        headers(1, fields) + headers(3), done=lambda f: f[2] == 3 and f[1] & END_STREAM != 0
    )
    assert error_of(frames, 1) == ("rst", PROTOCOL_ERROR)
    assert any(f[0] == HEADERS and f[2] == 3 for f in frames), "stream 3 must still be served"


# -- HPACK (RFC 7541) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\x80", id="index-0"),
        pytest.param(b"\xbe", id="index-62-empty-dynamic-table"),
        pytest.param(b"\x7f\x80\x01\x01a", id="literal-name-index-beyond-table"),
        pytest.param(b"\x3f\xe2\x1f", id="table-size-update-above-settings"),
        pytest.param(b"\x82\x3f\xe1\x0f", id="table-size-update-not-at-start"),
        pytest.param(b"\x00\x84\xff\xff\xff\xff\x01a", id="huffman-eos-symbol"),
        pytest.param(b"\x00\x82\x1f\xff\x01a", id="huffman-padding-over-7-bits"),
        pytest.param(b"\x00\x81\x00\x01a", id="huffman-padding-not-eos-prefix"),
        pytest.param(b"\xff" + b"\xff" * 12 + b"\x01", id="integer-overflow"),
        pytest.param(b"\x00\x05ab", id="truncated-string"),
    ],
)
def test_hpack_errors_are_compression_errors(raw: bytes) -> None:
    frames = probe(frame(HEADERS, END_HEADERS | END_STREAM, 1, raw))
    assert error_of(frames, 1) == ("goaway", COMPRESSION_ERROR)


def test_dynamic_table_entries_are_remembered_across_streams() -> None:
    encoder = Encoder()  # indexes x-custom in the shared dynamic table
    first = encoder.encode([*GOOD, (b"x-custom", b"v")])
    second = encoder.encode([*GOOD, (b"x-custom", b"v")])
    assert len(second) < len(first)
    payload = frame(HEADERS, END_HEADERS | END_STREAM, 1, first) + frame(
        HEADERS, END_HEADERS | END_STREAM, 3, second
    )
    frames = probe(payload, done=lambda f: f[0] == HEADERS and f[2] == 3)
    assert [f[2] for f in frames if f[0] == HEADERS] == [1, 3]


# -- SETTINGS_MAX_CONCURRENT_STREAMS and flow control ----------------------------------


def test_streams_beyond_max_concurrent_streams_are_refused() -> None:
    opening = b"".join(headers(sid, end=False) for sid in range(1, 2002, 2))  # 1001 streams
    frames = probe(opening, upstream="silent", done=lambda f: f[0] == RST_STREAM)
    assert error_of(frames, 2001) == ("rst", REFUSED_STREAM)
    assert [f[2] for f in frames if f[0] == RST_STREAM] == [2001]


@pytest.fixture(scope="module")
def app() -> Any:
    with EchoApp() as server:
        yield server


def response_data(frames: list[Frame], sid: int) -> list[int]:
    return [len(f[3]) for f in frames if f[0] == DATA and f[2] == sid]


def test_response_data_waits_for_the_clients_window(app: EchoApp) -> None:
    """A client granting 1 byte per stream gets DATA a byte at a time, as it opens the window."""
    body = grpc_message(b"0123456789")  # 15 bytes echoed back

    async def scenario() -> None:
        async with relay(app.address) as listener:
            reader, writer = await h2_connect(listener, settings_frame((0x4, 1)))
            writer.write(headers(1, end=False) + frame(DATA, END_STREAM, 1, body))
            first = await read_until(reader, lambda f: f[0] == DATA, wait=5)
            assert response_data(first, 1) == [1]
            assert response_data(await read_until(reader, lambda f: False, wait=0.3), 1) == []
            writer.write(window_update(1, 4))
            more = await read_until(reader, lambda f: f[0] == DATA, wait=3)
            assert response_data(more, 1) == [4]
            # a larger initial window applies to the open stream at once (RFC 9113 6.9.2)
            writer.write(settings_frame((0x4, 11)))
            rest = await read_until(reader, lambda f: f[0] == HEADERS and f[1] & END_STREAM != 0)
            assert sum(response_data(rest, 1)) == len(body) - 5
            trailers = [f for f in rest if f[0] == HEADERS and f[1] & END_STREAM]
            assert trailers, "trailers follow the last DATA"
            writer.close()

    run(scenario)


def test_negative_stream_window_from_settings_is_honoured(app: EchoApp) -> None:
    """h2spec 6.9.2: SETTINGS shrink an open stream's window below zero; DATA waits until > 0."""
    body = grpc_message(b"abcdefgh")  # 13 bytes back

    async def scenario() -> None:
        async with relay(app.address) as listener:
            reader, writer = await h2_connect(listener, settings_frame((0x4, 3)))
            writer.write(headers(1, end=False) + frame(DATA, END_STREAM, 1, body))
            first = await read_until(reader, lambda f: f[0] == DATA, wait=5)
            assert response_data(first, 1) == [3]
            writer.write(settings_frame((0x4, 1)))  # the stream's window: 3 - 3 - 2 = -2
            writer.write(window_update(1, 2))  # back to 0: still nothing
            assert response_data(await read_until(reader, lambda f: False, wait=0.3), 1) == []
            writer.write(window_update(1, 1))
            more = await read_until(reader, lambda f: f[0] == DATA, wait=3)
            assert response_data(more, 1) == [1]
            writer.close()

    run(scenario)


# -- the listener survives garbage -------------------------------------------------------


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    garbage=st.lists(
        st.one_of(
            st.binary(min_size=1, max_size=64),
            st.builds(
                frame,
                st.integers(min_value=0, max_value=12),
                st.integers(min_value=0, max_value=255),
                st.sampled_from([0, 1, 2, 3, 0x7FFFFFFF]),
                st.binary(max_size=32),
            ),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_listener_serves_a_grpc_call_after_garbage(app: EchoApp, garbage: list[bytes]) -> None:
    async def scenario() -> None:
        async with relay(app.address) as listener:
            reader, writer = await h2_connect(listener)
            writer.write(b"".join(garbage))
            await read_until(reader, lambda f: f[0] == GOAWAY, wait=0.2)
            writer.close()
            async with grpc.aio.insecure_channel("{}:{}".format(*listener.address)) as channel:
                call = channel.unary_unary("/test.Echo/Unary")
                assert await call(b"still here", timeout=5) == b"still here"

    run(scenario)


# -- misbehaving upstream servers ---------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
TRAILERS = [(b"grpc-status", b"0")]


async def read_request(reader: asyncio.StreamReader) -> int:
    """Read the relay's preface and frames up to a complete request header block; its stream."""
    assert await reader.readexactly(24) == PREFACE
    while True:
        kind, flags, sid, _ = await read_frame(reader)
        if kind == HEADERS and flags & END_HEADERS:
            return sid


def upstream_script(script: Script) -> Script:
    """Run `script`, then hold the connection open until the relay closes it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await script(reader, writer)
            await writer.drain()
            while await reader.read(65536):
                pass
        writer.close()

    return serve


async def call_through(
    script: Script, pool: UpstreamPool | None = None, wait: float = 5.0
) -> tuple[grpc.StatusCode, str, float]:
    """One unary gRPC call (no deadline) through a relay to `script`: code, details, seconds."""
    pool = pool or UpstreamPool()
    async with scripted_upstream_server(upstream_script(script)) as address:
        listener = await start_listener(
            "127.0.0.1", 0, StaticDispatcher(address), pool, name="upstream-adversarial"
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with grpc.aio.insecure_channel("{}:{}".format(*listener.address)) as channel:
                call = channel.unary_unary("/test.Echo/Unary")
                try:
                    async with asyncio.timeout(wait):
                        await call(b"hello")
                except grpc.aio.AioRpcError as exc:
                    return exc.code(), exc.details() or "", loop.time() - started
                except TimeoutError:
                    raise AssertionError(f"the call hung for {wait} s") from None
            return grpc.StatusCode.OK, "", loop.time() - started
        finally:
            await listener.close(grace=0.3)
            await pool.close()


def outcome(script: Script, **kwargs: Any) -> tuple[grpc.StatusCode, str, float]:
    result: list[tuple[grpc.StatusCode, str, float]] = []

    async def scenario() -> None:
        result.append(await call_through(script, **kwargs))

    run(scenario)
    return result[0]


def test_upstream_sending_garbage_is_unavailable() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")

    code, details, _ = outcome(script)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "protocol error" in details and "127.0.0.1:" in details


def test_upstream_push_promise_is_unavailable() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sid = await read_request(reader)
        promise = struct.pack(">I", 2) + block(GOOD)
        writer.write(settings_frame() + frame(PUSH_PROMISE, END_HEADERS, sid, promise))

    code, details, _ = outcome(script)
    assert code == grpc.StatusCode.UNAVAILABLE and "PUSH_PROMISE" in details


def test_upstream_response_without_status_is_a_clear_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sid = await read_request(reader)
        writer.write(settings_frame() + headers(sid, [(b"content-type", b"application/grpc")]))

    code, details, _ = outcome(script)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert ":status" in details and "127.0.0.1:" in details


def test_upstream_huge_header_block_is_unavailable() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sid = await read_request(reader)
        fragment = block([*RESPONSE, (b"x-huge", b"v" * 200_000)], huffman=False)
        chunks = [fragment[i : i + 16384] for i in range(0, len(fragment), 16384)]
        out = [frame(HEADERS, 0, sid, chunks[0])]
        out += [frame(CONTINUATION, 0, sid, c) for c in chunks[1:-1]]
        out.append(frame(CONTINUATION, END_HEADERS, sid, chunks[-1]))
        writer.write(settings_frame() + b"".join(out))

    code, details, elapsed = outcome(script)
    assert code == grpc.StatusCode.UNAVAILABLE and "too large" in details
    assert elapsed < 3


def test_upstream_goaway_below_in_flight_stream_is_refused_not_hung() -> None:
    """The upstream never processed the stream: the caller learns at once (REFUSED_STREAM or
    UNAVAILABLE), and may retry safely; the upstream connection is not used again."""
    connections = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(settings_frame() + frame(GOAWAY, 0, 0, struct.pack(">II", 0, NO_ERROR)))

    code, _, elapsed = outcome(script)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert elapsed < 3


def test_upstream_that_never_sends_settings_fails_the_call() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # and then silence

    code, details, elapsed = outcome(script, pool=UpstreamPool(handshake_timeout=0.5))
    assert code == grpc.StatusCode.UNAVAILABLE and "SETTINGS" in details
    assert 0.4 < elapsed < 3


def test_upstream_exceeding_our_stream_window_ends_the_call_with_an_error() -> None:
    """The caller (a raw client granting only the default 64 KiB) keeps the relay from acking
    more than that, so 1 MiB + 128 KiB of response DATA must exceed what we granted upstream."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sid = await read_request(reader)
        writer.write(settings_frame() + headers(sid, RESPONSE, end=False))
        chunk = frame(DATA, 0, sid, bytes(16384))
        writer.write(chunk * (((1 << 20) + (128 << 10)) // 16384))

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            address = await stack.enter_async_context(
                scripted_upstream_server(upstream_script(script))
            )
            listener = await stack.enter_async_context(relay(address))
            reader, writer = await h2_connect(listener)
            writer.write(headers(1))
            frames = await read_until(
                reader, lambda f: f[2] == 1 and (f[0] == RST_STREAM or f[1] & END_STREAM != 0)
            )
            writer.close()
        last = frames[-1]
        assert last[2] == 1
        if last[0] == HEADERS:  # trailers: a gRPC status naming the upstream
            fields = dict(Decoder().decode(last[3], raw=True))
            assert fields[b"grpc-status"] == b"14"
            assert b"window" in fields[b"grpc-message"]
        else:
            assert last[0] == RST_STREAM

    run(scenario)


def answer(sid: int, body: bytes) -> bytes:
    """A complete gRPC response on `sid`: headers, one message, OK trailers."""
    return (
        headers(sid, RESPONSE, end=False)
        + frame(DATA, 0, sid, grpc_message(body))
        + headers(sid, TRAILERS, end=True)
    )


def test_streams_queued_for_a_goaway_connection_move_to_a_new_one() -> None:
    """Upstream allows 1 concurrent stream, then sends GOAWAY (last = the 1st stream) while a
    2nd call waits: the 1st finishes on the old connection, the 2nd goes out on a new one
    (never on a connection the peer no longer serves)."""
    first_seen = asyncio.Event()
    go = asyncio.Event()
    connections = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            writer.write(settings_frame((0x3, 1)))
            sid = await read_request(reader)
            first_seen.set()
            await go.wait()
            writer.write(frame(GOAWAY, 0, 0, struct.pack(">II", sid, NO_ERROR)) + answer(sid, b"1"))
        else:
            writer.write(settings_frame())
            sid = await read_request(reader)
            writer.write(answer(sid, b"2"))

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            address = await stack.enter_async_context(
                scripted_upstream_server(upstream_script(script))
            )
            listener = await stack.enter_async_context(relay(address))
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel("{}:{}".format(*listener.address))
            )
            call = channel.unary_unary("/test.Echo/Unary")
            one = asyncio.ensure_future(call(b"a", timeout=5))
            await first_seen.wait()
            await asyncio.sleep(0.05)  # the relay has applied MAX_CONCURRENT_STREAMS = 1
            two = asyncio.ensure_future(call(b"b", timeout=5))
            await asyncio.sleep(0.2)  # the 2nd call is queued on the first connection
            go.set()
            assert await one == b"1"
            assert await two == b"2"

    run(scenario)
    assert connections == 2


@pytest.mark.parametrize(
    ("response", "trailers"),
    [
        pytest.param([(b":status", b"abc"), *RESPONSE[1:]], TRAILERS, id="status-not-a-number"),
        pytest.param([(b":status", b"20"), *RESPONSE[1:]], TRAILERS, id="status-two-digits"),
        pytest.param([*RESPONSE[:1], (b":path", b"/x"), *RESPONSE[1:]], TRAILERS, id="path"),
        pytest.param([*RESPONSE[:1], *RESPONSE], TRAILERS, id="status-twice"),
        pytest.param([*RESPONSE, (b"connection", b"close")], TRAILERS, id="connection-header"),
        pytest.param([*RESPONSE, (b"X-Upper", b"1")], TRAILERS, id="uppercase-name"),
        pytest.param([*RESPONSE, (b"x-a", b"a\r\nb")], TRAILERS, id="crlf-in-value"),
        pytest.param(RESPONSE, [(b":status", b"200"), *TRAILERS], id="pseudo-in-trailers"),
        pytest.param(RESPONSE, [*TRAILERS, (b"Grpc-Message", b"x")], id="uppercase-trailer"),
    ],
)
def test_malformed_upstream_response_is_unavailable_not_relayed(
    response: list[tuple[bytes, bytes]], trailers: list[tuple[bytes, bytes]]
) -> None:
    """RFC 9113 8.1.1: a malformed response is a stream error; the relay must not pass it on
    (the caller would see it as our protocol error) but answer UNAVAILABLE naming the upstream."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sid = await read_request(reader)
        writer.write(
            settings_frame()
            + headers(sid, response, end=False)
            + frame(DATA, 0, sid, grpc_message(b"hello"))
            + headers(sid, trailers, end=True)
        )

    code, details, _ = outcome(script)
    assert code == grpc.StatusCode.UNAVAILABLE, details
    assert "malformed" in details and "127.0.0.1:" in details
