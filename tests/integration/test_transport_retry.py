"""Retries in the relay, over real sockets: real gRPC callers (grpc.aio), raw HTTP/1.1 and
HTTP/2 callers, scripted h2 upstreams. The Retrier is a small real one written here (the
production rules live in sidecar.policy), recording every question the relay asks it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from sidecar.transport import Listener, UpstreamPool, start_listener
from sidecar.transport.contract import (
    FAIL_CONNECT,
    FAIL_GRPC,
    FAIL_HTTP,
    FAIL_PER_TRY_TIMEOUT,
    FAIL_REFUSED,
    FAIL_RESET,
    NoRoute,
    Pick,
    PoolLimits,
)
from sidecar.transport.downstream import H2Downstream
from sidecar.transport.h2conn import CONNECTION_WINDOW
from skein.launch import free_port
from skein.metrics import Registry
from tests.integration.test_transport_support import (
    ScriptedUpstream,
    StaticDispatcher,
    UpstreamRequest,
    assert_pool_idle,
    grpc_frame,
    run,
)

pytestmark = pytest.mark.integration

UNAVAILABLE = 14
Decision = tuple[int, int, int, float | None]


class Retrier:
    """Retries UNAVAILABLE, HTTP 5xx, resets, connect failures, refusals and per-try
    timeouts up to `max_attempts`; honours pushback; repicks round the `picks` it was given."""

    def __init__(
        self,
        max_attempts: int = 3,
        *,
        per_try_timeout: float | None = None,
        buffer_limit: int = 1 << 20,
        backoff: float = 0.0,
        budget: int | None = None,
    ) -> None:
        self.max_attempts = max_attempts
        self.per_try_timeout = per_try_timeout
        self.buffer_limit = buffer_limit
        self.backoff = backoff
        self.budget = budget
        self.picks: list[Pick] = []
        self.decisions: list[Decision] = []
        self.repicked: list[tuple[str, int]] = []
        self.active = 0  # retry slots held
        self.no_route: NoRoute | None = None

    def decide(self, attempts: int, failure: int, code: int, pushback: float | None) -> float | str:
        self.decisions.append((attempts, failure, code, pushback))
        if attempts >= self.max_attempts:
            return f"{attempts} of {self.max_attempts} attempts made"
        if pushback is not None and pushback < 0:
            return "the server asked not to retry (grpc-retry-pushback-ms)"
        if failure == FAIL_GRPC and code != UNAVAILABLE:
            return f"grpc-status {code} is not in retry_on"
        if self.budget is not None:
            if self.budget <= 0:
                return "retry budget for 'echo' exhausted: 0 retries left"
            self.budget -= 1
        self.active += 1
        return pushback if pushback is not None else self.backoff

    def repick(self, previous: Pick) -> Pick:
        if self.no_route is not None:
            raise self.no_route
        others = [p for p in self.picks if p.address != previous.address] or self.picks
        self.repicked.append(others[0].address)
        return others[0]

    def retry_done(self) -> None:
        self.active -= 1
        assert self.active >= 0


class Setup:
    """Dispatcher + retrier over endpoints: the first pick goes to `first`, repicks rotate."""

    def __init__(
        self, first: tuple[str, int], others: list[tuple[str, int]], retrier: Retrier, **kw: Any
    ) -> None:
        self.retrier = retrier
        self.dispatcher = StaticDispatcher(first, retry=retrier, **kw)
        assert self.dispatcher.pick_ is not None
        retrier.picks = [self.dispatcher.pick_] + [
            Pick("echo", address, kw.get("timeout"), self.dispatcher.record, retrier)
            for address in others
        ]
        self.registry = Registry()

    def metric(self, line: str) -> float:
        for text in self.registry.render().splitlines():
            if text.startswith(line + " "):
                return float(text.rsplit(" ", 1)[1])
        return 0.0


@contextlib.asynccontextmanager
async def relay(
    setup: Setup, handshake_timeout: float = 10.0
) -> AsyncIterator[tuple[Listener, UpstreamPool]]:
    pool = UpstreamPool(handshake_timeout=handshake_timeout)
    listener = await start_listener(
        "127.0.0.1", 0, setup.dispatcher, pool, name="retry", metrics=setup.registry
    )
    try:
        yield listener, pool
        assert_pool_idle(pool)
        assert listener.stats()["streams"] == 0, "an exchange outlived its call"
        assert setup.retrier.active == 0, "a retry slot was never released"
        assert setup.metric('skein_sidecar_requests_in_flight{cluster="echo"}') == 0
    finally:
        await listener.close(grace=0.5)
        await pool.close()


@contextlib.asynccontextmanager
async def channel_to(listener: Listener) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel("{}:{}".format(*listener.address)) as channel:
        yield channel


def unary(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary("/test.Echo/Unary")


def answer_ok(req: UpstreamRequest) -> None:
    req.grpc_ok()


def unavailable(req: UpstreamRequest) -> None:
    req.trailers_only(UNAVAILABLE, b"shedding load")


# -- gRPC status, commit, replay ------------------------------------------------------


def test_trailers_only_unavailable_is_retried_on_another_endpoint() -> None:
    async def scenario() -> None:
        async with ScriptedUpstream(unavailable) as a, ScriptedUpstream(answer_ok) as b:
            setup = Setup(a.address, [b.address], Retrier())
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                call = unary(channel)(b"hello", timeout=5)
                assert await call == b"hello"
                initial = dict(await call.initial_metadata())
                assert initial["grpc-previous-rpc-attempts"] == "1"
            assert [r.headers.get(b"grpc-previous-rpc-attempts") for r in a.requests] == [None]
            assert [r.headers[b"grpc-previous-rpc-attempts"] for r in b.requests] == [b"1"]
            assert setup.retrier.decisions == [(1, FAIL_GRPC, UNAVAILABLE, None)]
            assert setup.dispatcher.done == [False, True]
            assert (
                setup.metric('skein_sidecar_retries_total{cluster="echo",reason="grpc_status"}')
                == 1
            )

    run(scenario)


def test_an_upstreams_own_failure_passes_unchanged_after_the_last_attempt() -> None:
    async def scenario() -> None:
        async with ScriptedUpstream(unavailable) as a, ScriptedUpstream(unavailable) as b:
            setup = Setup(a.address, [b.address], Retrier(max_attempts=2))
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await unary(channel)(b"x", timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert err.value.details() == "shedding load"
                trailing = dict(err.value.trailing_metadata())
                assert trailing["grpc-previous-rpc-attempts"] == "1"
            assert len(a.requests) == len(b.requests) == 1
            assert setup.retrier.decisions == [
                (1, FAIL_GRPC, UNAVAILABLE, None),
                (2, FAIL_GRPC, UNAVAILABLE, None),
            ]

    run(scenario)


def test_a_call_whose_response_headers_were_forwarded_is_never_retried() -> None:
    def head_then_fail(req: UpstreamRequest) -> None:
        req.head()
        req.trailers(UNAVAILABLE, b"gave up midway")

    def head_then_reset(req: UpstreamRequest) -> None:
        req.head()
        req.reset(2)  # INTERNAL_ERROR

    async def scenario() -> None:
        for script in (head_then_fail, head_then_reset):
            async with ScriptedUpstream(script) as a, ScriptedUpstream(answer_ok) as b:
                setup = Setup(a.address, [b.address], Retrier())
                async with relay(setup) as (listener, _), channel_to(listener) as channel:
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await unary(channel)(b"x", timeout=5)
                    assert err.value.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.INTERNAL,
                    )
                assert b.requests == []
                assert setup.retrier.decisions == []
                assert setup.dispatcher.done == [False]
                committed = 'skein_sidecar_committed_failures_total{cluster="echo"}'
                assert setup.metric(committed) == 1

    run(scenario)


def test_a_request_over_the_buffer_limit_is_not_retried() -> None:
    async def scenario() -> None:
        async with ScriptedUpstream(unavailable) as a, ScriptedUpstream(answer_ok) as b:
            setup = Setup(a.address, [b.address], Retrier(buffer_limit=1000))
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                assert await unary(channel)(b"s" * 900, timeout=5) == b"s" * 900  # fits: retried
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await unary(channel)(b"b" * 2000, timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert err.value.details() == "shedding load"  # the upstream's, unchanged
            assert len(a.requests) == 2 and len(b.requests) == 1
            assert len(setup.retrier.decisions) == 1

    run(scenario)


def test_client_streaming_request_is_replayed_byte_exact() -> None:
    """~300 KiB in 40 messages: past the upstream's 64 KiB window, so the replay is sent in
    pieces as windows open; the retry must carry exactly the bytes the first attempt got."""
    messages = [bytes([i]) * (1000 + 7 * i * i) for i in range(40)]

    async def scenario() -> None:
        async with ScriptedUpstream(unavailable) as a, ScriptedUpstream(answer_ok) as b:
            setup = Setup(a.address, [b.address], Retrier())
            async with relay(setup) as (listener, _), channel_to(listener) as channel:

                async def parts() -> AsyncIterator[bytes]:
                    for m in messages:
                        yield m
                        await asyncio.sleep(0)

                call = channel.stream_unary("/test.Echo/ClientStream")
                assert await call(parts(), timeout=10) == b"".join(messages)
                # the caller's bytes were acknowledged once each: its window is whole again
                (conn,) = listener._conns
                assert isinstance(conn, H2Downstream)
                assert conn.h2.recv_window + conn.h2.recv_pending == CONNECTION_WINDOW
            expected = b"".join(grpc_frame(m) for m in messages)
            assert bytes(a.requests[0].body) == expected
            assert bytes(b.requests[0].body) == expected

    run(scenario)


# -- timeouts, pushback -----------------------------------------------------------------


def test_per_try_timeout_is_retried_and_the_call_deadline_still_holds() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with ScriptedUpstream() as hung, ScriptedUpstream(answer_ok) as b:
            setup = Setup(hung.address, [b.address], Retrier(per_try_timeout=0.2))
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                started = loop.time()
                assert await unary(channel)(b"ok", timeout=5) == b"ok"
                assert 0.19 < loop.time() - started < 2.0
                assert setup.retrier.decisions == [(1, FAIL_PER_TRY_TIMEOUT, 0, None)]
                await asyncio.sleep(0.1)
                assert hung.requests[0].reset_code == 8  # CANCEL: the attempt was ended
                # grpc-timeout upstream is the per-try one when it is the smaller
                sent = b.requests[0].headers[b"grpc-timeout"]
                assert sent.endswith(b"u") or sent.endswith(b"m")

            # every endpoint hangs: the caller's deadline ends the call, whatever is left
            setup = Setup(hung.address, [hung.address], Retrier(10, per_try_timeout=0.2))
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                started = loop.time()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await unary(channel)(b"x", timeout=0.5)
                elapsed = loop.time() - started
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert 0.45 < elapsed < 1.5
            assert setup.metric('skein_sidecar_per_try_timeouts_total{cluster="echo"}') >= 2

            # no retry left: the per-try timeout answers DEADLINE_EXCEEDED naming it
            setup = Setup(hung.address, [], Retrier(1, per_try_timeout=0.2))
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await unary(channel)(b"x", timeout=5)
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "per-try timeout (0.2 s)" in (err.value.details() or "")
            assert setup.dispatcher.done == [False]

    run(scenario)


def test_pushback_negative_stops_retries_and_a_value_sets_the_delay() -> None:
    def refuse(req: UpstreamRequest) -> None:
        req.trailers_only(UNAVAILABLE, b"go away", [(b"grpc-retry-pushback-ms", b"-1")])

    def later(req: UpstreamRequest) -> None:
        req.trailers_only(UNAVAILABLE, b"later", [(b"grpc-retry-pushback-ms", b"300")])

    async def scenario() -> None:
        async with ScriptedUpstream(refuse) as a, ScriptedUpstream(answer_ok) as b:
            setup = Setup(a.address, [b.address], Retrier())
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await unary(channel)(b"x", timeout=5)
                assert err.value.details() == "go away"
            assert setup.retrier.decisions == [(1, FAIL_GRPC, UNAVAILABLE, -1.0)]
            assert b.requests == []

        async with ScriptedUpstream(later) as a, ScriptedUpstream(answer_ok) as b:
            setup = Setup(a.address, [b.address], Retrier())
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                assert await unary(channel)(b"x", timeout=5) == b"x"
            assert setup.retrier.decisions == [(1, FAIL_GRPC, UNAVAILABLE, 0.3)]
            assert b.requests[0].at - a.requests[0].at >= 0.3

    run(scenario)


# -- connections -----------------------------------------------------------------------


def test_a_dead_endpoint_is_retried_on_another_and_the_reason_is_told_when_not() -> None:
    dead = ("127.0.0.1", free_port())

    async def scenario() -> None:
        async with ScriptedUpstream(answer_ok) as b:
            setup = Setup(dead, [b.address], Retrier())
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                assert await unary(channel)(b"x", timeout=5) == b"x"
            assert setup.retrier.decisions == [(1, FAIL_CONNECT, 0, None)]
            assert setup.dispatcher.done == [False, True]

            setup = Setup(dead, [b.address], Retrier(budget=0))
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await unary(channel)(b"x", timeout=5)
                details = err.value.details() or ""
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "connect failed" in details
                assert details.endswith(
                    "; not retried: retry budget for 'echo' exhausted: 0 retries left"
                )

    run(scenario)


def test_no_settings_and_a_connection_lost_mid_call_are_retried() -> None:
    """An upstream that never says SETTINGS is a connect failure; one that drops the
    connection after reading the request is a reset (code 0): both retried elsewhere."""

    def drop(req: UpstreamRequest) -> None:
        req.proto.transport.abort()

    writers: list[asyncio.StreamWriter] = []

    async def hear_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    async def scenario() -> None:
        silent = await asyncio.start_server(hear_nothing, "127.0.0.1", 0)
        mute = silent.sockets[0].getsockname()[:2]
        try:
            async with ScriptedUpstream(drop) as a, ScriptedUpstream(answer_ok) as b:
                setup = Setup(mute, [b.address], Retrier())
                quick = relay(setup, handshake_timeout=0.3)
                async with quick as (listener, _), channel_to(listener) as channel:
                    assert await unary(channel)(b"x", timeout=5) == b"x"
                assert setup.retrier.decisions == [(1, FAIL_CONNECT, 0, None)]

                setup = Setup(a.address, [b.address], Retrier())
                async with relay(setup) as (listener, _), channel_to(listener) as channel:
                    assert await unary(channel)(b"y", timeout=5) == b"y"
                assert setup.retrier.decisions == [(1, FAIL_RESET, 0, None)]
                assert len(a.requests) == 1 and a.requests[0].ended
        finally:
            for writer in writers:
                writer.close()
            silent.close()
            await silent.wait_closed()

    run(scenario)


def test_a_pooled_connection_the_upstream_closed_while_idle_is_retried_transparently() -> None:
    """The caller's next request reaches the relay in the same loop turn as the upstream's
    close of the idle pooled connection: the stream is opened on that connection and never
    written. It goes out again on a new connection, without counting as an attempt."""

    async def scenario() -> None:
        async with ScriptedUpstream(answer_ok) as upstream:
            setup = Setup(upstream.address, [upstream.address], Retrier(max_attempts=1))
            async with relay(setup) as (listener, _):
                client = RawClient()
                await client.connect(listener.address)
                assert await client.call(1, b"one") == (b"200", b"0", grpc_frame(b"one"))
                await asyncio.sleep(0.05)  # the pooled connection is idle
                client.send(3, b"two")  # reaches the relay's socket now...
                upstream.shutdown(0)  # ...and so does the upstream's FIN
                assert await client.response(3) == (b"200", b"0", grpc_frame(b"two"))
                client.close()
            assert [r.connection for r in upstream.requests] == [0, 1]
            assert setup.retrier.decisions == []
            assert setup.dispatcher.done == [True, True, True]
            assert (
                setup.metric('skein_sidecar_retries_total{cluster="echo",reason="transparent"}')
                == 1
            )

    run(scenario)


def test_streams_refused_by_goaway_are_retried() -> None:
    """The first connection's GOAWAY refuses the stream (transparent retry, no attempt
    counted); the second connection refuses it too (now an attempt: FAIL_REFUSED)."""
    refused = 0

    def refuse_first_two(req: UpstreamRequest) -> None:
        nonlocal refused
        if refused < 2:
            refused += 1
            req.server.goaway(req.proto, 0)
        else:
            req.grpc_ok()

    async def scenario() -> None:
        async with ScriptedUpstream(on_headers=None, on_end=refuse_first_two) as upstream:
            setup = Setup(upstream.address, [upstream.address], Retrier(max_attempts=2))
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                assert await unary(channel)(b"x", timeout=5) == b"x"
            assert [r.connection for r in upstream.requests] == [0, 1, 2]
            assert setup.retrier.decisions == [(1, FAIL_REFUSED, 0, None)]
            previous = [r.headers.get(b"grpc-previous-rpc-attempts") for r in upstream.requests]
            assert previous == [None, None, b"1"]

    run(scenario)


def test_an_upstream_reset_before_the_response_is_retried() -> None:
    resets = 0

    def reset_once(req: UpstreamRequest) -> None:
        nonlocal resets
        if resets == 0:
            resets += 1
            req.reset(7)  # REFUSED_STREAM
        elif resets == 1:
            resets += 1
            req.reset(2)  # INTERNAL_ERROR
        else:
            req.grpc_ok()

    async def scenario() -> None:
        async with ScriptedUpstream(reset_once) as upstream:
            setup = Setup(upstream.address, [upstream.address], Retrier())
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                assert await unary(channel)(b"x", timeout=5) == b"x"
            assert setup.retrier.decisions == [(1, FAIL_REFUSED, 7, None), (2, FAIL_RESET, 2, None)]
            assert len(upstream.requests) == 3

    run(scenario)


# -- HTTP/1.1, NoRoute, delay, limits ----------------------------------------------------


async def http1(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


def test_http1_caller_503_then_200() -> None:
    def busy(req: UpstreamRequest) -> None:
        req.http(503, b"busy, try later", [(b"content-type", b"text/plain")])

    def fine(req: UpstreamRequest) -> None:
        req.http(200, b"got " + bytes(req.body), [(b"content-type", b"text/plain")])

    async def scenario() -> None:
        async with ScriptedUpstream(busy) as a, ScriptedUpstream(fine) as b:
            setup = Setup(a.address, [b.address], Retrier())
            async with relay(setup) as (listener, _):
                reply = await http1(
                    listener.address[1],
                    b"POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n"
                    b"Connection: close\r\n\r\nhello",
                )
            assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply
            assert b"x-skein-attempt-count: 2\r\n" in reply
            assert reply.endswith(b"got hello\r\n0\r\n\r\n") or reply.endswith(b"got hello")
            assert a.requests[0].headers.get(b"x-skein-attempt-count") is None
            assert b.requests[0].headers[b"x-skein-attempt-count"] == b"2"
            assert setup.retrier.decisions == [(1, FAIL_HTTP, 503, None)]
            assert setup.dispatcher.done == [False, True]

    run(scenario)


def test_no_route_with_retry_after_answers_429_and_pushback() -> None:
    limited = NoRoute(
        "rate limit for 'echo': 10 per second; retry after 1.2 s",
        grpc_status=8,
        http_status=429,
        retry_after=1.2,
    )

    class Limited(StaticDispatcher):
        def pick(self, *args: Any) -> Pick:
            raise limited

    async def scenario() -> None:
        pool = UpstreamPool()
        listener = await start_listener("127.0.0.1", 0, Limited(None), pool, name="limited")
        try:
            async with channel_to(listener) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await unary(channel)(b"x", timeout=5)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert err.value.details() == limited.message
                trailing = dict(err.value.trailing_metadata())
                assert trailing["retry-after"] == "2"
                assert trailing["grpc-retry-pushback-ms"] == "1200"
            reply = await http1(
                listener.address[1], b"GET / HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n"
            )
            assert reply.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
            assert b"retry-after: 2\r\n" in reply
            assert b"grpc-retry-pushback-ms" not in reply
        finally:
            await listener.close(grace=0.5)
            await pool.close()

    run(scenario)


def test_a_picks_delay_is_honoured_within_the_deadline() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with ScriptedUpstream(answer_ok) as upstream:
            setup = Setup(upstream.address, [], Retrier(), delay=0.3)
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                started = loop.time()
                assert await unary(channel)(b"x", timeout=5) == b"x"
                assert loop.time() - started >= 0.3
                assert upstream.requests[0].at - started >= 0.29
                # the deadline keeps running while the call waits; the upstream never sees it
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await unary(channel)(b"x", timeout=0.1)
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                # a cancel meanwhile cleans up
                call = unary(channel)(b"x", timeout=5)
                await asyncio.sleep(0.1)
                call.cancel()
                await asyncio.sleep(0.4)
            assert len(upstream.requests) == 1
            # the delayed calls that never started did not count against the endpoint
            assert setup.dispatcher.done == [True, True, True]

    run(scenario)


def test_pool_limits_wait_on_the_connection_then_fail_fast_naming_the_limit() -> None:
    held: list[UpstreamRequest] = []

    def hold(req: UpstreamRequest) -> None:
        held.append(req)

    async def scenario() -> None:
        limits = PoolLimits("echo", max_connections=1, max_pending=1)
        async with ScriptedUpstream(hold, max_streams=1) as upstream:
            setup = Setup(upstream.address, [], Retrier(), limits=limits)
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                first = asyncio.ensure_future(unary(channel)(b"1", timeout=5))
                await asyncio.sleep(0.2)
                second = asyncio.ensure_future(unary(channel)(b"2", timeout=5))
                await asyncio.sleep(0.2)
                assert limits.pending == 1 and limits.connections == 1
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await unary(channel)(b"3", timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert err.value.details() == (
                    "circuit breaker for 'echo': max_pending_requests (1) reached"
                )
                assert limits.overflows == 1
                held.pop().grpc_ok()
                assert await first == b"1"
                await asyncio.sleep(0.1)
                held.pop().grpc_ok()
                assert await second == b"2"
                assert limits.pending == 0
            assert len(upstream.protos) == 1  # the second call waited, no second connection
        assert limits.connections == 0

        # max_connections reached and no connection to this address: fail fast
        limits = PoolLimits("echo", max_connections=1, max_pending=10)
        async with ScriptedUpstream(hold) as a, ScriptedUpstream(answer_ok) as b:
            setup = Setup(a.address, [], Retrier(), limits=limits)
            other = StaticDispatcher(b.address, limits=limits)
            async with relay(setup) as (listener, pool):
                listener_b = await start_listener("127.0.0.1", 0, other, pool, name="b")
                try:
                    async with channel_to(listener) as channel, channel_to(listener_b) as to_b:
                        first = asyncio.ensure_future(unary(channel)(b"1", timeout=5))
                        await asyncio.sleep(0.2)
                        with pytest.raises(grpc.aio.AioRpcError) as err:
                            await unary(to_b)(b"2", timeout=5)
                        assert err.value.details() == (
                            "circuit breaker for 'echo': max_connections (1) reached"
                        )
                        held.pop().grpc_ok()
                        assert await first == b"1"
                finally:
                    await listener_b.close(grace=0.5)
            assert b.requests == []
            assert other.done == [True]  # refused by our own limit: not the endpoint's fault

    run(scenario)


def test_no_route_on_repick_answers_with_its_status() -> None:
    async def scenario() -> None:
        async with ScriptedUpstream(unavailable) as a:
            retrier = Retrier()
            retrier.no_route = NoRoute("no endpoints for service 'echo': none healthy")
            setup = Setup(a.address, [], retrier)
            async with relay(setup) as (listener, _), channel_to(listener) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await unary(channel)(b"x", timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert err.value.details() == "no endpoints for service 'echo': none healthy"
            assert setup.dispatcher.done == [False]

    run(scenario)


# -- a raw HTTP/2 caller, for ordering the relay's reads ----------------------------------


class RawClient:
    """An h2 (library) client over asyncio streams: send a unary gRPC request in one write,
    read the response."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.done: dict[int, tuple[bytes, bytes, bytes]] = {}
        self._status: dict[int, bytes] = {}
        self._body: dict[int, bytearray] = {}

    async def connect(self, address: tuple[str, int]) -> None:
        self.reader, self.writer = await asyncio.open_connection(*address)
        self.conn.initiate_connection()
        self.writer.write(self.conn.data_to_send())

    def send(self, sid: int, payload: bytes) -> None:
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/test.Echo/Unary"),
            (b":authority", b"echo"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
        self.conn.send_headers(sid, headers)
        self.conn.send_data(sid, grpc_frame(payload), end_stream=True)
        assert self.writer is not None
        self.writer.write(self.conn.data_to_send())

    async def response(self, sid: int) -> tuple[bytes, bytes, bytes]:
        assert self.reader is not None and self.writer is not None
        async with asyncio.timeout(5):
            while sid not in self.done:
                data = await self.reader.read(65536)
                assert data, "the relay closed the connection"
                for ev in self.conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        fields = dict(ev.headers)
                        self._status[ev.stream_id] = fields[b":status"]
                        self._body[ev.stream_id] = bytearray()
                        if b"grpc-status" in fields:  # trailers-only
                            status = fields[b"grpc-status"]
                            self.done[ev.stream_id] = (fields[b":status"], status, b"")
                    elif isinstance(ev, h2.events.DataReceived):
                        self._body[ev.stream_id] += ev.data
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.TrailersReceived):
                        status = dict(ev.headers)[b"grpc-status"]
                        body = bytes(self._body[ev.stream_id])
                        self.done[ev.stream_id] = (self._status[ev.stream_id], status, body)
                self.writer.write(self.conn.data_to_send())
        return self.done[sid]

    async def call(self, sid: int, payload: bytes) -> tuple[bytes, bytes, bytes]:
        self.send(sid, payload)
        return await self.response(sid)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def test_a_caller_timing_out_counts_against_the_endpoint_an_early_cancel_does_not() -> None:
    """A gRPC client resets the stream when its deadline passes, often a hair before the
    proxy's own timer for the same deadline: that is the endpoint not answering, not the
    caller changing its mind. A cancel well before the deadline blames nobody."""

    def never_answer(req: UpstreamRequest) -> None:
        return None

    async def cancel_after(client: RawClient, sid: int, seconds: float) -> None:
        client.conn.send_headers(
            sid,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/test.Echo/Unary"),
                (b":authority", b"echo"),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"grpc-timeout", b"400m"),
            ],
        )
        client.conn.send_data(sid, grpc_frame(b"x"), end_stream=True)
        assert client.writer is not None
        client.writer.write(client.conn.data_to_send())
        await asyncio.sleep(seconds)
        client.conn.reset_stream(sid, 8)  # CANCEL, as a client's deadline does
        client.writer.write(client.conn.data_to_send())

    async def scenario() -> None:
        async with ScriptedUpstream(never_answer) as a:
            setup = Setup(a.address, [], Retrier(max_attempts=1))
            async with relay(setup) as (listener, _):
                client = RawClient()
                await client.connect(listener.address)
                try:
                    await cancel_after(client, 1, 0.39)  # the caller's deadline
                    await cancel_after(client, 3, 0.05)  # the caller changed its mind
                    for _ in range(100):
                        if len(setup.dispatcher.done) == 2:
                            break
                        await asyncio.sleep(0.01)
                finally:
                    client.close()
                assert setup.dispatcher.done == [False, True]

    run(scenario)
