"""gRPC through the frame relay: a real grpc.aio server and client, real sockets."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from sidecar.accesslog import AccessLog
from sidecar.transport import Listener, UpstreamPool, start_listener
from skein.launch import free_port
from skein.metrics import Registry
from tests.integration.test_transport_support import EchoApp, StaticDispatcher, run

pytestmark = pytest.mark.integration

Scenario = Callable[[grpc.aio.Channel], Coroutine[Any, Any, None]]


@asynccontextmanager
async def proxy(
    dispatcher: StaticDispatcher,
    metrics: Registry | None = None,
    access_log: AccessLog | None = None,
) -> AsyncIterator[tuple[Listener, grpc.aio.Channel]]:
    pool = UpstreamPool()
    listener = await start_listener(
        "127.0.0.1", 0, dispatcher, pool, name="test", metrics=metrics, access_log=access_log
    )
    host, port = listener.address
    channel = grpc.aio.insecure_channel(f"{host}:{port}")
    try:
        yield listener, channel
    finally:
        await channel.close()
        await listener.close(grace=1.0)
        await pool.close()


def unary(channel: grpc.aio.Channel, method: str = "Unary") -> Any:
    return channel.unary_unary(f"/test.Echo/{method}")


@pytest.fixture(scope="module")
def app() -> Any:
    with EchoApp() as server:
        yield server


def test_all_four_call_kinds(app: EchoApp) -> None:
    dispatcher = StaticDispatcher(app.address)

    async def scenario() -> None:
        async with proxy(dispatcher) as (_, channel):
            assert await unary(channel)(b"hello") == b"hello"
            stream = channel.unary_stream("/test.Echo/ServerStream")(b"5")
            assert [m async for m in stream] == [b"0", b"1", b"2", b"3", b"4"]

            async def parts() -> AsyncIterator[bytes]:
                for p in (b"a", b"b", b"c"):
                    yield p

            assert await channel.stream_unary("/test.Echo/ClientStream")(parts()) == b"a+b+c"
            call = channel.stream_stream("/test.Echo/Bidi")()
            for word in (b"x", b"yz"):
                await call.write(word)
                assert await call.read() == word.upper()
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK

    run(scenario)
    assert dispatcher.done == [True, True, True, True]
    assert dispatcher.seen[0][1] == "/test.Echo/Unary"
    # the dispatcher sees the request's header block and the caller's address
    assert dispatcher.peers == ["127.0.0.1"] * 4
    assert (b"content-type", b"application/grpc") in dispatcher.headers[0]


def test_metadata_trailers_and_status_details_round_trip(app: EchoApp) -> None:
    dispatcher = StaticDispatcher(app.address)
    metadata = (("x-plain", "v1"), ("x-blob-bin", b"\x00\xff\x10"))

    async def scenario() -> None:
        async with proxy(dispatcher) as (_, channel):
            call = unary(channel)(b"ok", metadata=metadata)
            assert await call == b"ok"
            initial = dict(await call.initial_metadata())
            trailing = dict(await call.trailing_metadata())
            assert initial["x-blob-bin"] == b"\x00\xff\x10"
            assert trailing["x-plain"] == "v1"
            assert trailing["x-trailer-bin"] == b"\x00\x01"
            assert trailing["x-trailer"] == "t1"

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(channel)(b"fail", metadata=metadata)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert err.value.details() == "refused: état invalide 100%"
            trailing = dict(err.value.trailing_metadata())
            assert trailing["grpc-status-details-bin"] == b"\x08\x09\x00\xffdetails"
            assert trailing["x-blob-bin"] == b"\x00\xff\x10"

    run(scenario)
    assert app.metadata[-1]["x-blob-bin"] == b"\x00\xff\x10"
    # FAILED_PRECONDITION is the application answering: the endpoint worked
    assert dispatcher.done == [True, True]


def test_deadline_rewritten_and_expiry_cancels_server(app: EchoApp) -> None:
    dispatcher = StaticDispatcher(app.address, timeout=0.4)

    async def scenario() -> None:
        async with proxy(dispatcher) as (_, channel):
            app.cancelled.clear()
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(channel, "Sleep")(b"", timeout=5.0)
            elapsed = loop.time() - started
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert 0.35 < elapsed < 2.0
            await asyncio.to_thread(app.cancelled.wait, 5.0)
            assert app.cancelled.is_set()

    run(scenario)
    remaining = app.time_remaining[-1]
    assert remaining is not None and remaining <= 0.41
    assert dispatcher.done == [False]


def test_caller_deadline_shorter_than_policy(app: EchoApp) -> None:
    dispatcher = StaticDispatcher(app.address, timeout=10.0)

    async def scenario() -> None:
        async with proxy(dispatcher) as (_, channel):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(channel, "Sleep")(b"", timeout=0.3)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    run(scenario)
    remaining = app.time_remaining[-1]
    assert remaining is not None and remaining <= 0.31


def test_client_cancellation_reaches_server(app: EchoApp) -> None:
    dispatcher = StaticDispatcher(app.address)

    async def scenario() -> None:
        async with proxy(dispatcher) as (_, channel):
            app.cancelled.clear()
            app.sleeping.clear()
            call = unary(channel, "Sleep")(b"")
            await asyncio.to_thread(app.sleeping.wait, 5.0)
            call.cancel()
            await asyncio.to_thread(app.cancelled.wait, 5.0)
            assert app.cancelled.is_set()

    run(scenario)
    assert dispatcher.done == [True]  # the caller's cancel is not the endpoint's failure


def test_nothing_listening_is_unavailable_naming_the_address() -> None:
    port = free_port()
    dispatcher = StaticDispatcher(("127.0.0.1", port))

    async def scenario() -> None:
        async with proxy(dispatcher) as (_, channel):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(channel)(b"x", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert f"127.0.0.1:{port}" in (err.value.details() or "")
            assert "connect failed" in (err.value.details() or "")

    run(scenario)


def test_no_route_is_unavailable_with_the_message() -> None:
    dispatcher = StaticDispatcher(None)

    async def scenario() -> None:
        async with proxy(dispatcher) as (_, channel):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(channel)(b"x", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert err.value.details() == "no endpoints for service echo (test)"

    run(scenario)


class _Lines:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


def test_access_log_records_relayed_and_refused_streams(app: EchoApp) -> None:
    """One line per stream: route, upstream, status, duration; refusals say why."""
    sink = _Lines()

    async def scenario() -> None:
        clock = asyncio.get_running_loop().time
        log = AccessLog(1.0, sink, listener="test", rng=random.Random(0), clock=clock)
        async with proxy(StaticDispatcher(app.address), access_log=log) as (_, channel):
            assert await unary(channel)(b"hi") == b"hi"
            with pytest.raises(grpc.aio.AioRpcError):
                await unary(channel, "Fail")(b"x")
        async with proxy(StaticDispatcher(None), access_log=log) as (_, channel):
            with pytest.raises(grpc.aio.AioRpcError):
                await unary(channel)(b"x", timeout=5)

    run(scenario)
    ok, failed, refused = sink.lines
    host, port = app.address
    assert ok["path"] == "/test.Echo/Unary" and ok["method"] == "POST"
    assert (ok["cluster"], ok["upstream"], ok["grpc_status"]) == ("echo", f"{host}:{port}", 0)
    assert 0 < ok["duration_ms"] < 5000 and "detail" not in ok
    assert failed["path"] == "/test.Echo/Fail" and failed["grpc_status"] != 0
    assert (refused["upstream"], refused["grpc_status"]) == ("-", 14)
    assert refused["detail"] == "no endpoints for service echo (test)"


def test_one_mebibyte_both_ways(app: EchoApp) -> None:
    dispatcher = StaticDispatcher(app.address)
    payload = bytes(range(256)) * 4096 * 4  # 4 MiB: beyond every window on the path

    async def scenario() -> None:
        options = [("grpc.max_receive_message_length", 8 << 20)]
        async with proxy(dispatcher) as (listener, _):
            host, port = listener.address
            async with grpc.aio.insecure_channel(f"{host}:{port}", options=options) as channel:
                results = await asyncio.gather(
                    *(unary(channel, "Big")(payload[: (1 << 20) * (i + 1)]) for i in range(4))
                )
            for i, result in enumerate(results):
                assert result == bytes(reversed(payload[: (1 << 20) * (i + 1)]))

    run(scenario, timeout=60)


def test_two_proxies_chained(app: EchoApp) -> None:
    inbound_dispatcher = StaticDispatcher(app.address, cluster="inbound")

    async def scenario() -> None:
        pool = UpstreamPool()
        inbound = await start_listener("127.0.0.1", 0, inbound_dispatcher, pool, name="in")
        outbound_dispatcher = StaticDispatcher(inbound.address, timeout=5.0, cluster="out")
        registry = Registry()
        async with proxy(outbound_dispatcher, metrics=registry) as (outbound, channel):
            metadata = (("x-hop-bin", b"\x01\x02"),)
            call = unary(channel)(b"twice", metadata=metadata, timeout=30.0)
            assert await call == b"twice"
            assert dict(await call.trailing_metadata())["x-hop-bin"] == b"\x01\x02"
            call2 = channel.stream_stream("/test.Echo/Bidi")()
            await call2.write(b"q")
            assert await call2.read() == b"Q"
            await call2.done_writing()
            assert await call2.code() == grpc.StatusCode.OK
            stats = outbound.stats()
            assert stats["connections"] == 1
            assert list(stats["upstream"]) == ["{}:{}".format(*inbound.address)]
        await inbound.close(grace=1.0)
        await pool.close()
        text = registry.render()
        assert 'skein_sidecar_requests_total{cluster="out"} 2' in text
        assert 'skein_sidecar_responses_total{cluster="out",protocol="grpc",status="0"} 2' in text
        assert 'skein_sidecar_requests_in_flight{cluster="out"} 0' in text

    run(scenario)
    remaining = app.time_remaining[-2]  # the caller said 30 s, the outbound policy 5 s
    assert remaining is not None and 4.0 < remaining <= 5.0


def test_many_concurrent_calls_share_one_upstream_connection(app: EchoApp) -> None:
    dispatcher = StaticDispatcher(app.address)

    async def scenario() -> None:
        async with proxy(dispatcher) as (listener, channel):
            results = await asyncio.gather(*(unary(channel)(b"%d" % i) for i in range(200)))
            assert results == [b"%d" % i for i in range(200)]
            upstream = listener.stats()["upstream"]
            assert len(upstream[f"127.0.0.1:{app.port}"]) == 1

    run(scenario)
