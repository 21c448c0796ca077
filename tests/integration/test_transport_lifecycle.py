"""Connection lifecycle through the relay: upstream GOAWAY drains, listener shutdown drains."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from sidecar.transport import UpstreamPool, start_listener
from tests.integration.test_transport_support import EchoApp, StaticDispatcher, run

pytestmark = pytest.mark.integration


def test_upstream_goaway_drains_in_flight_and_moves_new_streams() -> None:
    # The app sends GOAWAY 0.3 s into every connection and lets streams finish.
    options = (("grpc.max_connection_age_ms", 300), ("grpc.max_connection_age_grace_ms", 5000))
    with EchoApp(options) as app:
        dispatcher = StaticDispatcher(app.address)

        async def scenario() -> None:
            pool = UpstreamPool()
            listener = await start_listener("127.0.0.1", 0, dispatcher, pool, name="goaway")
            channel = grpc.aio.insecure_channel("{}:{}".format(*listener.address))
            try:
                slow = channel.unary_unary("/test.Echo/Slow")
                # in flight across the GOAWAY
                assert await slow(b"0.8", timeout=5) == b"0.8"
                for _ in range(8):  # new streams keep working across more GOAWAYs
                    assert await slow(b"0.1", timeout=5) == b"0.1"
            finally:
                await channel.close()
                await listener.close(grace=1.0)
                await pool.close()

        run(scenario)
        assert dispatcher.done == [True] * 9


def test_listener_close_lets_in_flight_finish_and_refuses_new_connections() -> None:
    with EchoApp() as app:
        dispatcher = StaticDispatcher(app.address)

        async def scenario() -> None:
            pool = UpstreamPool()
            listener = await start_listener("127.0.0.1", 0, dispatcher, pool, name="drain")
            target = "{}:{}".format(*listener.address)
            channel = grpc.aio.insecure_channel(target)
            try:
                slow = channel.unary_unary("/test.Echo/Slow")
                assert await slow(b"0", timeout=5) == b"0"  # connection up
                call = slow(b"0.5", timeout=5)
                await asyncio.sleep(0.1)
                loop = asyncio.get_running_loop()
                started = loop.time()
                await listener.close(grace=5.0)
                assert loop.time() - started < 2.0  # closed when the stream ended
                assert await call == b"0.5"
                with pytest.raises(OSError):
                    await asyncio.open_connection(*target.split(":"))
            finally:
                await channel.close()
                await pool.close()

        run(scenario)
        assert dispatcher.done == [True, True]


def test_listener_close_cancels_what_outlives_the_grace() -> None:
    with EchoApp() as app:
        dispatcher = StaticDispatcher(app.address)

        async def scenario() -> None:
            pool = UpstreamPool()
            listener = await start_listener("127.0.0.1", 0, dispatcher, pool, name="grace")
            channel = grpc.aio.insecure_channel("{}:{}".format(*listener.address))
            try:
                app.cancelled.clear()
                app.sleeping.clear()
                call = channel.unary_unary("/test.Echo/Sleep")(b"", timeout=10)
                await asyncio.to_thread(app.sleeping.wait, 5.0)
                await listener.close(grace=0.2)
                with pytest.raises(grpc.aio.AioRpcError):
                    await call
                await asyncio.to_thread(app.cancelled.wait, 5.0)
                assert app.cancelled.is_set()
                assert listener.stats()["connections"] == 0
            finally:
                await channel.close()
                await pool.close()

        run(scenario)
        assert dispatcher.done == [True]  # cut short by our shutdown, not the endpoint


class ResettingUpstream(asyncio.Protocol):
    """An h2c upstream that answers every request with RST_STREAM(CANCEL)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                self.conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.CANCEL)
        self.transport.write(self.conn.data_to_send())


def test_upstream_reset_reaches_the_caller() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        upstream = await loop.create_server(ResettingUpstream, "127.0.0.1", 0)
        dispatcher = StaticDispatcher(upstream.sockets[0].getsockname()[:2])
        pool = UpstreamPool()
        listener = await start_listener("127.0.0.1", 0, dispatcher, pool, name="rst")
        channel = grpc.aio.insecure_channel("{}:{}".format(*listener.address))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await channel.unary_unary("/test.Echo/Unary")(b"x", timeout=5)
            assert err.value.code() == grpc.StatusCode.CANCELLED
        finally:
            await channel.close()
            await listener.close(grace=0.5)
            await pool.close()
            upstream.close()
        assert dispatcher.done == [False]

    run(scenario)
