"""The grpcio-free client against a real grpc.aio server over real sockets.

The server side is grpcio (what the control daemon runs); every call kind
and failure the sidecar depends on goes through real HTTP/2.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st

from skein.grpcclient import GrpcChannel, RpcError, StatusCode, format_timeout
from skein.grpcclient.status import status_from_headers
from skein.localetcd import free_port
from skein.v1 import discovery_pb2

SERVICE = "test.v1.Probe"
Runner = Callable[[Coroutine[Any, Any, None]], None]
RegisterRequest = discovery_pb2.RegisterRequest
RegisterResponse = discovery_pb2.RegisterResponse


class Probe:
    """Handlers whose behaviour each test picks through the request's `service` field."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float | None, str]] = []
        self.cancelled = asyncio.Event()
        self.produced = 0

    async def unary(self, request: Any, context: Any) -> Any:
        self.seen.append((request.service, context.time_remaining(), context.peer()))
        if request.service == "fail":
            await context.abort(grpc.StatusCode.NOT_FOUND, "lease 7 not found: ünï 100% gone")
        if request.service == "slow":
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return RegisterResponse(lease_id=42, ttl_seconds=request.ttl_seconds)

    async def flood(self, request: Any, context: Any) -> AsyncIterator[Any]:
        """`request.weight` messages of 64 KiB each, counting how many were produced."""
        for i in range(request.weight):
            self.produced = i + 1
            yield RegisterRequest(address="z" * 65536, weight=i)

    async def bidi(self, requests: Any, context: Any) -> AsyncIterator[Any]:
        """Echoes every request with its weight doubled."""
        async for request in requests:
            request.weight *= 2
            yield request


async def start_server(probe: Probe, port: int = 0) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(
            probe.unary,
            request_deserializer=RegisterRequest.FromString,
            response_serializer=RegisterResponse.SerializeToString,
        ),
        "Flood": grpc.unary_stream_rpc_method_handler(
            probe.flood,
            request_deserializer=RegisterRequest.FromString,
            response_serializer=RegisterRequest.SerializeToString,
        ),
        "Bidi": grpc.stream_stream_rpc_method_handler(
            probe.bidi,
            request_deserializer=RegisterRequest.FromString,
            response_serializer=RegisterRequest.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, f"127.0.0.1:{bound}"


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Runs a coroutine on asyncio's loop or on uvloop (what the sidecar runs)."""
    if request.param == "uvloop":
        return uvloop.run
    return asyncio.run


def run(
    loop_run: Runner,
    body: Callable[[Probe, GrpcChannel, grpc.aio.Server], Awaitable[None]],
) -> None:
    async def main() -> None:
        probe = Probe()
        server, address = await start_server(probe)
        channel = GrpcChannel(address)
        try:
            await body(probe, channel, server)
        finally:
            await channel.close()
            await server.stop(None)

    loop_run(asyncio.wait_for(main(), 20))


def test_unary_ok_sends_the_deadline_and_reuses_one_connection(loop_run: Runner) -> None:
    async def body(probe: Probe, channel: GrpcChannel, _: Any) -> None:
        reply = await channel.unary(
            f"/{SERVICE}/Unary",
            RegisterRequest(service="ok", ttl_seconds=9),
            RegisterResponse,
            timeout=5.0,
        )
        assert (reply.lease_id, reply.ttl_seconds) == (42, 9)
        replies = await asyncio.gather(
            *(
                channel.unary(f"/{SERVICE}/Unary", RegisterRequest(service="ok"), RegisterResponse)
                for _ in range(5)
            )
        )
        assert [r.lease_id for r in replies] == [42] * 5
        remaining = probe.seen[0][1]
        assert remaining is not None and 4.0 < remaining <= 5.0
        assert probe.seen[1][1] is None  # no timeout given, none sent
        assert len({peer for _, _, peer in probe.seen}) == 1  # one connection for all calls

    run(loop_run, body)


def test_error_status_carries_code_and_decoded_message(loop_run: Runner) -> None:
    async def body(probe: Probe, channel: GrpcChannel, _: Any) -> None:
        with pytest.raises(RpcError) as info:
            await channel.unary(
                f"/{SERVICE}/Unary", RegisterRequest(service="fail"), RegisterResponse, timeout=5
            )
        assert info.value.code is StatusCode.NOT_FOUND
        assert info.value.message == "lease 7 not found: ünï 100% gone"
        assert info.value.address == channel.address
        with pytest.raises(RpcError) as info:
            await channel.unary(f"/{SERVICE}/Nope", RegisterRequest(), RegisterResponse)
        assert info.value.code is StatusCode.UNIMPLEMENTED

    run(loop_run, body)


def test_deadline_exceeded_fails_fast_and_cancels_the_server_side(loop_run: Runner) -> None:
    async def body(probe: Probe, channel: GrpcChannel, _: Any) -> None:
        start = time.monotonic()
        with pytest.raises(RpcError) as info:
            await channel.unary(
                f"/{SERVICE}/Unary", RegisterRequest(service="slow"), RegisterResponse, timeout=0.2
            )
        assert info.value.code is StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - start < 1.5
        await asyncio.wait_for(probe.cancelled.wait(), 3)
        # the connection survives a deadline: the next call works on it
        reply = await channel.unary(f"/{SERVICE}/Unary", RegisterRequest(), RegisterResponse)
        assert reply.lease_id == 42

    run(loop_run, body)


def test_bidi_exchange_half_close_and_large_messages_both_ways(loop_run: Runner) -> None:
    big = "x" * (3 << 20)  # beyond every default flow-control window

    async def body(probe: Probe, channel: GrpcChannel, _: Any) -> None:
        async with await channel.stream(f"/{SERVICE}/Bidi") as stream:
            for n in (1, 2, 3):
                await stream.send(RegisterRequest(weight=n))
                reply = await stream.recv()
                assert reply is not None and RegisterRequest.FromString(reply).weight == 2 * n
            await stream.send(RegisterRequest(address=big, weight=5))
            reply = await stream.recv()
            assert reply is not None
            echoed = RegisterRequest.FromString(reply)
            assert echoed.address == big and echoed.weight == 10
            stream.close_send()
            assert await stream.recv() is None
            assert await stream.recv() is None  # stays ended

    run(loop_run, body)


def test_a_reader_that_falls_behind_closes_the_servers_window(loop_run: Runner) -> None:
    async def body(probe: Probe, channel: GrpcChannel, _: Any) -> None:
        count = 300  # 19 MiB if nothing pushed back
        async with await channel.stream(f"/{SERVICE}/Flood") as stream:
            await stream.send(RegisterRequest(weight=count))
            stream.close_send()
            await asyncio.sleep(0.5)  # not reading
            assert probe.produced < count // 3
            got = []
            while (raw := await stream.recv()) is not None:
                got.append(RegisterRequest.FromString(raw).weight)
            assert got == list(range(count))

    run(loop_run, body)


def test_oversized_response_is_resource_exhausted(loop_run: Runner) -> None:
    async def body(probe: Probe, channel: GrpcChannel, _: Any) -> None:
        small = GrpcChannel(channel.address, max_message=64)
        try:
            async with await small.stream(f"/{SERVICE}/Bidi") as stream:
                await stream.send(RegisterRequest(weight=1))
                assert await stream.recv() is not None
                await stream.send(RegisterRequest(address="y" * 100))
                with pytest.raises(RpcError) as info:
                    await stream.recv()
                assert info.value.code is StatusCode.RESOURCE_EXHAUSTED
                assert "64" in info.value.message
            # the connection itself is fine
            reply = await small.unary(f"/{SERVICE}/Unary", RegisterRequest(), RegisterResponse)
            assert reply.lease_id == 42
        finally:
            await small.close()

    run(loop_run, body)


def test_server_going_away_ends_open_calls_unavailable_then_reconnects(loop_run: Runner) -> None:
    async def main() -> None:
        probe = Probe()
        server, address = await start_server(probe)
        channel = GrpcChannel(address)
        try:
            stream = await channel.stream(f"/{SERVICE}/Bidi")
            await stream.send(RegisterRequest(weight=1))
            assert await stream.recv() is not None
            await server.stop(None)
            with pytest.raises(RpcError) as info:
                while True:
                    await stream.recv()
            assert info.value.code in (StatusCode.UNAVAILABLE, StatusCode.CANCELLED)
            assert info.value.address == address
            with pytest.raises(RpcError) as info:
                await channel.unary(f"/{SERVICE}/Unary", RegisterRequest(), RegisterResponse)
            assert info.value.code is StatusCode.UNAVAILABLE
            # a server on the same port again: the channel dials anew
            server, _ = await start_server(probe, int(address.rsplit(":", 1)[1]))
            reply = await channel.unary(f"/{SERVICE}/Unary", RegisterRequest(), RegisterResponse)
            assert reply.lease_id == 42
        finally:
            await channel.close()
            await server.stop(None)

    loop_run(asyncio.wait_for(main(), 20))


def test_nothing_listening_is_unavailable_naming_the_address(loop_run: Runner) -> None:
    async def main() -> None:
        address = f"127.0.0.1:{free_port()}"
        channel = GrpcChannel(address)
        with pytest.raises(RpcError) as info:
            await channel.unary("/x.Y/Z", RegisterRequest(), RegisterResponse, timeout=2)
        assert info.value.code is StatusCode.UNAVAILABLE
        assert address in str(info.value) and "refused" in info.value.message.lower()
        with pytest.raises(RpcError) as info:
            await channel.stream("/x.Y/Z", connect_timeout=2)
        assert info.value.code is StatusCode.UNAVAILABLE

    loop_run(main())


def test_a_server_that_closes_at_once_is_unavailable(loop_run: Runner) -> None:
    async def main() -> None:
        async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(slam, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        channel = GrpcChannel(f"127.0.0.1:{port}")
        try:
            with pytest.raises(RpcError) as info:
                await channel.unary("/x.Y/Z", RegisterRequest(), RegisterResponse, timeout=2)
            assert info.value.code is StatusCode.UNAVAILABLE
        finally:
            await channel.close()
            server.close()
            await server.wait_closed()

    loop_run(main())


def test_bad_address_is_a_precise_error() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        GrpcChannel("localhost")


_UNIT_SECONDS = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "S": 1.0, "M": 60.0, "H": 3600.0}


@given(st.floats(min_value=1e-9, max_value=1e9, allow_nan=False))
def test_format_timeout_never_shortens_and_fits_eight_digits(seconds: float) -> None:
    text = format_timeout(seconds).decode()
    digits, unit = text[:-1], text[-1]
    assert digits.isdigit() and 1 <= len(digits) <= 8
    value = int(digits) * _UNIT_SECONDS[unit]
    assert value >= seconds * (1 - 1e-12)
    assert value <= seconds * (1 + 1e-6) + _UNIT_SECONDS[unit]


@given(st.text(max_size=64), st.integers(min_value=0, max_value=16))
def test_grpc_message_percent_decoding_round_trips(message: str, code: int) -> None:
    encoded = quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()
    status = status_from_headers([(b"grpc-status", str(code).encode()), (b"grpc-message", encoded)])
    assert status == (StatusCode(code), message)


def test_unknown_or_missing_grpc_status() -> None:
    assert status_from_headers([(b"grpc-message", b"x")]) is None
    status = status_from_headers([(b"grpc-status", b"99")])
    assert status is not None and status[0] is StatusCode.UNKNOWN


def test_connection_has_tcp_keepalive(loop_run: Runner) -> None:
    async def body(probe: Probe, channel: GrpcChannel, _: Any) -> None:
        sock = (await channel.connect(2)).socket
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10

    run(loop_run, body)


def _self_signed(directory: Path) -> tuple[str, str]:
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=control.test",
            "-addext",
            "subjectAltName=DNS:control.test,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(key), str(cert)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_with_alpn_h2_and_a_server_refusing_h2(loop_run: Runner, tmp_path: Path) -> None:
    key, cert = _self_signed(tmp_path)
    pem = (Path(key).read_bytes(), Path(cert).read_bytes())

    async def main() -> None:
        probe = Probe()
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "Unary": grpc.unary_unary_rpc_method_handler(
                            probe.unary,
                            request_deserializer=RegisterRequest.FromString,
                            response_serializer=RegisterResponse.SerializeToString,
                        )
                    },
                ),
            )
        )
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([pem]))
        await server.start()
        context = ssl.create_default_context(cafile=cert)
        channel = GrpcChannel(f"127.0.0.1:{port}", ssl=context, server_hostname="control.test")
        try:
            reply = await channel.unary(
                f"/{SERVICE}/Unary", RegisterRequest(), RegisterResponse, timeout=5
            )
            assert reply.lease_id == 42
        finally:
            await channel.close()
            await server.stop(None)

        # a TLS server that only speaks HTTP/1.1
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        server_ctx.set_alpn_protocols(["http/1.1"])

        async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()

        h1 = await asyncio.start_server(idle, "127.0.0.1", 0, ssl=server_ctx)
        h1_port = h1.sockets[0].getsockname()[1]
        channel = GrpcChannel(
            f"127.0.0.1:{h1_port}",
            ssl=ssl.create_default_context(cafile=cert),
            server_hostname="control.test",
        )
        try:
            with pytest.raises(RpcError) as info:
                await channel.unary("/x.Y/Z", RegisterRequest(), RegisterResponse, timeout=5)
            assert info.value.code is StatusCode.UNAVAILABLE and "ALPN" in info.value.message
        finally:
            await channel.close()
            h1.close()
            await h1.wait_closed()

    loop_run(asyncio.wait_for(main(), 20))
