"""HealthChecker against real apps on real sockets: a grpc.aio health server, an HTTP server.

The apps are test doubles of the user's application (another process's
code); the checker, its probes, the gRPC client and the sockets are real.
Intervals are a few tens of milliseconds, so the whole file runs in about a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from sidecar.health.checker import OFF_REASON, HealthChecker
from skein.config.model import HealthCheckConfig
from skein.localetcd import free_port
from skein.metrics import Registry
from skein.v1 import health_pb2

Status = health_pb2.HealthCheckResponse.ServingStatus


class HealthApp:
    """A gRPC app serving grpc.health.v1 Check with a switchable status (or a stall)."""

    def __init__(self, with_health: bool = True) -> None:
        self.status: Status = health_pb2.HealthCheckResponse.SERVING
        self.stall = 0.0
        self.asked: list[str] = []
        self.with_health = with_health
        self._asked = asyncio.Event()

    async def wait_asked(self, count: int) -> None:
        """Until `count` checks have arrived in all."""
        while len(self.asked) < count:
            self._asked.clear()
            await asyncio.wait_for(self._asked.wait(), 5)

    async def _check(self, request: Any, context: Any) -> Any:
        self.asked.append(request.service)
        self._asked.set()
        if self.stall:
            await asyncio.sleep(self.stall)
        return health_pb2.HealthCheckResponse(status=self.status)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[tuple[str, int]]:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        if self.with_health:
            handler = grpc.unary_unary_rpc_method_handler(
                self._check,
                request_deserializer=health_pb2.HealthCheckRequest.FromString,
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
            )
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": handler}),)
            )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            yield "127.0.0.1", port
        finally:
            await server.stop(None)


class HttpApp:
    """An HTTP/1.1 app answering every request with `status`."""

    def __init__(self) -> None:
        self.status = 200
        self.paths: list[str] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.paths.append(head.split()[1].decode())
        writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % self.status)
        await writer.drain()
        writer.close()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[tuple[str, int]]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield "127.0.0.1", server.sockets[0].getsockname()[1]
        finally:
            server.close()
            await server.wait_closed()


class Changes:
    """Records on_change calls; `next()` waits for one."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()

    def __call__(self, healthy: bool, reason: str) -> None:
        self.queue.put_nowait((healthy, reason))

    async def next(self) -> tuple[bool, str]:
        return await asyncio.wait_for(self.queue.get(), 5)


def config(**kw: Any) -> HealthCheckConfig:
    values: dict[str, Any] = {
        "interval": 0.03,
        "timeout": 0.5,
        "healthy_threshold": 1,
        "unhealthy_threshold": 2,
    }
    values.update(kw)
    return HealthCheckConfig(**values)


@asynccontextmanager
async def running(checker: HealthChecker) -> AsyncIterator[HealthChecker]:
    task = asyncio.create_task(checker.run())
    try:
        yield checker
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def metric(metrics: Registry, line_start: str) -> float:
    for line in metrics.render().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric line {line_start!r}")


def test_grpc_not_serving_turns_unhealthy_after_threshold_and_back() -> None:
    async def scenario() -> None:
        app = HealthApp()
        async with app.serving() as address:
            metrics, changes = Registry(), Changes()
            checker = HealthChecker(address, metrics, changes)
            async with running(checker):
                checker.configure(config(grpc_service="shop.v1.Orders"))
                await app.wait_asked(3)
                assert checker.healthy and changes.queue.empty()
                app.status = health_pb2.HealthCheckResponse.NOT_SERVING
                assert await changes.next() == (False, "2 checks in a row failed: NOT_SERVING")
                assert metric(metrics, "skein_sidecar_local_healthy") == 0
                app.status = health_pb2.HealthCheckResponse.SERVING
                assert await changes.next() == (True, "1 check passed")
                assert metric(metrics, "skein_sidecar_local_healthy") == 1
                assert metric(metrics, 'skein_sidecar_health_checks_total{result="fail"}') >= 2
            assert set(app.asked) == {"shop.v1.Orders"}

    asyncio.run(scenario())


def test_grpc_refused_connection_fails_the_first_check_at_once() -> None:
    async def scenario() -> None:
        changes = Changes()
        checker = HealthChecker(("127.0.0.1", free_port()), Registry(), changes)
        async with running(checker):
            checker.configure(config(unhealthy_threshold=3))
            healthy, reason = await changes.next()
            assert not healthy
            assert reason.startswith("first check failed: UNAVAILABLE: cannot connect")
            assert "refused" in reason.lower()

    asyncio.run(scenario())


def test_grpc_app_without_the_health_service_fails() -> None:
    async def scenario() -> None:
        async with HealthApp(with_health=False).serving() as address:
            changes = Changes()
            checker = HealthChecker(address, Registry(), changes)
            async with running(checker):
                checker.configure(config())
                healthy, reason = await changes.next()
                assert not healthy and reason.startswith("first check failed: UNIMPLEMENTED")

    asyncio.run(scenario())


def test_grpc_check_slower_than_timeout_fails_then_recovers() -> None:
    async def scenario() -> None:
        app = HealthApp()
        async with app.serving() as address:
            changes = Changes()
            checker = HealthChecker(address, Registry(), changes)
            async with running(checker):
                app.stall = 1.0
                checker.configure(config(timeout=0.1, interval=0.15))
                healthy, reason = await changes.next()
                assert not healthy and "DEADLINE_EXCEEDED" in reason
                app.stall = 0.0
                assert await changes.next() == (True, "1 check passed")

    asyncio.run(scenario())


def test_http_check_passes_2xx_3xx_and_fails_others() -> None:
    async def scenario() -> None:
        app = HttpApp()
        async with app.serving() as address:
            changes = Changes()
            checker = HealthChecker(address, Registry(), changes)
            assert await checker.probe(config(http_path="/health")) == (True, "HTTP 200")
            app.status = 302
            assert await checker.probe(config(http_path="/health")) == (True, "HTTP 302")
            app.status = 503
            async with running(checker):
                checker.configure(config(http_path="/healthz"))
                assert await changes.next() == (False, "first check failed: HTTP 503")
                app.status = 204
                assert await changes.next() == (True, "1 check passed")
            assert app.paths[-1] == "/healthz"
        refused = await checker.probe(config(http_path="/health"))
        assert not refused[0] and refused[1].startswith("cannot connect: ")

    asyncio.run(scenario())


def test_http_check_times_out_and_rejects_non_http() -> None:
    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # never answers
            writer.close()

        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"SSH-2.0-OpenSSH\r\n")
            await writer.drain()
            writer.close()

        for handler, expected in ((silent, "no answer within 0.1s"), (garbage, "not an HTTP")):
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            checker = HealthChecker(("127.0.0.1", port), Registry(), Changes())
            ok, detail = await checker.probe(config(http_path="/health", timeout=0.1))
            server.close()
            assert not ok and expected in detail

    asyncio.run(scenario())


def test_turning_checks_off_restores_healthy_and_an_unchanged_config_is_a_no_op() -> None:
    async def scenario() -> None:
        app = HealthApp()
        app.status = health_pb2.HealthCheckResponse.NOT_SERVING
        async with app.serving() as address:
            metrics, changes = Registry(), Changes()
            checker = HealthChecker(address, metrics, changes)
            async with running(checker):
                slow = config(interval=30.0)
                checker.configure(slow)
                assert await changes.next() == (False, "first check failed: NOT_SERVING")
                asked = len(app.asked)
                checker.configure(slow)  # same config: no new check now
                checker.configure(dataclasses.replace(slow))  # an equal copy: also a no-op
                await asyncio.sleep(0.05)
                assert len(app.asked) == asked
                checker.configure(None)
                assert await changes.next() == (True, OFF_REASON)
                assert checker.healthy and checker.dump()["enabled"] is False
                assert metric(metrics, "skein_sidecar_local_healthy") == 1
                await asyncio.sleep(0.05)
                assert len(app.asked) == asked  # no checks while off

    asyncio.run(scenario())


def test_a_new_config_checks_at_once_and_keeps_the_verdict() -> None:
    async def scenario() -> None:
        app = HealthApp()
        app.status = health_pb2.HealthCheckResponse.NOT_SERVING
        async with app.serving() as address:
            changes = Changes()
            checker = HealthChecker(address, Registry(), changes)
            async with running(checker):
                checker.configure(config(interval=30.0))
                assert (await changes.next())[0] is False
                asked = len(app.asked)
                checker.configure(config(interval=30.0, grpc_service="other"))
                await app.wait_asked(asked + 1)
                assert app.asked[-1] == "other"
                assert not checker.healthy and changes.queue.empty()

    asyncio.run(scenario())
