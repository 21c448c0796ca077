"""The sidecar's own grpc.health.v1 on the admin port, asked by a real grpcio client.

The admin server, the h2c sniffing and the health service are real, on a
real socket; the client is grpc.aio with our generated health messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from sidecar.health.service import MAX_REQUEST, AdminHealthService
from skein.adminhttp import AdminServer, text_response
from skein.v1 import health_pb2

_CHECK = "/grpc.health.v1.Health/Check"
_WATCH = "/grpc.health.v1.Health/Watch"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Switch:
    def __init__(self) -> None:
        self.on = True

    def __call__(self) -> bool:
        return self.on


@asynccontextmanager
async def admin(serving: Switch) -> AsyncIterator[str]:
    service = AdminHealthService("orders", serving)
    server = AdminServer(
        {"/ready": lambda q: text_response("ready\n")}, h2c=service.serve_connection
    )
    host, port = await server.start("127.0.0.1", 0)
    try:
        yield f"{host}:{port}"
    finally:
        await server.stop()


def check_call(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary(
        _CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


async def http_get(address: str, path: str) -> bytes:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data


def test_check_follows_serving_and_knows_its_service() -> None:
    async def scenario() -> None:
        serving = Switch()
        async with admin(serving) as address, grpc.aio.insecure_channel(address) as channel:
            check = check_call(channel)
            reply = await check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == SERVING
            named = await check(health_pb2.HealthCheckRequest(service="orders"), timeout=5)
            assert named.status == SERVING
            serving.on = False  # draining, or no config yet
            reply = await check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await check(health_pb2.HealthCheckRequest(service="payments"), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "payments" in (info.value.details() or "")
            # the same HTTP/2 connection keeps serving after an error status
            serving.on = True
            reply = await check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == SERVING

    asyncio.run(scenario())


def test_watch_and_unknown_methods_are_unimplemented() -> None:
    async def scenario() -> None:
        async with admin(Switch()) as address, grpc.aio.insecure_channel(address) as channel:
            watch = channel.unary_stream(
                _WATCH,
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in watch(health_pb2.HealthCheckRequest(), timeout=5):
                    pass
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            other = channel.unary_unary("/skein.v1.Nope/Call")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await other(b"", timeout=5)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            garbage = channel.unary_unary(_CHECK)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await garbage(b"\xff\xff\xff", timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await garbage(b"\x0a" + bytes([120]) + b"x" * MAX_REQUEST, timeout=5)
            # reset with ENHANCE_YOUR_CALM, which gRPC reports as RESOURCE_EXHAUSTED
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    asyncio.run(scenario())


def test_http1_pages_still_answer_next_to_h2c() -> None:
    async def scenario() -> None:
        async with admin(Switch()) as address:
            page = await http_get(address, "/ready")
            assert page.startswith(b"HTTP/1.1 200") and page.endswith(b"ready\n")
            async with grpc.aio.insecure_channel(address) as channel:
                reply = await check_call(channel)(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == SERVING
            page = await http_get(address, "/nope")
            assert page.startswith(b"HTTP/1.1 404")

    asyncio.run(scenario())


def test_without_an_h2c_handler_the_preface_is_refused_as_http1() -> None:
    async def scenario() -> None:
        server = AdminServer({"/ready": lambda q: text_response("ready\n")})
        host, port = await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            data = await reader.read()
            writer.close()
            assert data.startswith(b"HTTP/1.1 405")
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_stop_closes_open_h2c_connections() -> None:
    async def scenario() -> None:
        service = AdminHealthService("orders", Switch())
        server = AdminServer({}, h2c=service.serve_connection)
        host, port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        first = await reader.read(9)
        assert first[3] == 0x04  # the server's SETTINGS
        await asyncio.wait_for(server.stop(), 5)
        rest = await asyncio.wait_for(reader.read(), 5)  # EOF: the server closed it
        assert isinstance(rest, bytes)
        writer.close()

    asyncio.run(scenario())
