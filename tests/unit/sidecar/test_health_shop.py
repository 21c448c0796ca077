"""The shop's grpc.health.v1 servicer: what a sidecar's check sees; Watch for grpcio clients."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from examples.shop.health import SERVING, HealthServicer
from sidecar.health.probes import GrpcProbe
from skein.v1 import health_pb2

Response = health_pb2.HealthCheckResponse


def test_sidecar_check_follows_the_servicer_and_watch_streams_changes() -> None:
    async def scenario() -> None:
        health = HealthServicer(["shop.v1.Orders"])
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers([health.handler()])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        probe = GrpcProbe(("127.0.0.1", port))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            assert await probe.check("", 2) == (True, "SERVING")
            assert await probe.check("shop.v1.Orders", 2) == (True, "SERVING")
            assert await probe.check("shop.v1.Users", 2) == (
                False,
                "NOT_FOUND: unknown service 'shop.v1.Users'",
            )
            raw = await channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=2)
            assert raw == SERVING  # what the demo's readiness wait compares with
            watch = channel.unary_stream(
                "/grpc.health.v1.Health/Watch",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=Response.FromString,
            )(health_pb2.HealthCheckRequest(service="shop.v1.Orders"), timeout=5)
            assert (await watch.read()).status == Response.SERVING
            health.set(Response.NOT_SERVING, "shop.v1.Orders")
            assert (await watch.read()).status == Response.NOT_SERVING
            assert await probe.check("shop.v1.Orders", 2) == (False, "NOT_SERVING")
            assert await probe.check("", 2) == (True, "SERVING")  # only that service changed
            health.set(Response.NOT_SERVING)
            assert await probe.check("", 2) == (False, "NOT_SERVING")
            health.set(Response.SERVING)
            assert (await watch.read()).status == Response.SERVING
            watch.cancel()
            with pytest.raises(KeyError):
                health.set(Response.SERVING, "shop.v1.Nope")
        finally:
            await probe.close()
            await channel.close()
            await server.stop(None)

    asyncio.run(scenario())
