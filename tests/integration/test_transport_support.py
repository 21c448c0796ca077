"""Helpers for the transport tests (no tests here): a recording gRPC echo app on
its own loop thread, a static dispatcher, and a runner for async scenarios."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import grpc
import uvloop

from sidecar.transport.contract import NoRoute, Pick, PoolLimits, Retrier

SERVICE = "test.Echo"
DETAILS = b"\x08\x09\x00\xffdetails"  # an opaque grpc-status-details-bin value


def run(scenario: Callable[[], Coroutine[Any, Any, None]], timeout: float = 30.0) -> None:
    """Run an async scenario on uvloop (the data plane's loop), bounded in time."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await scenario()

    uvloop.run(bounded())


class StaticDispatcher:
    """Sends every stream to one address; records `done(ok, ...)` calls and what it saw."""

    def __init__(
        self,
        address: tuple[str, int] | None,
        timeout: float | None = None,
        cluster: str = "echo",
        *,
        retry: Retrier | None = None,
        delay: float = 0.0,
        limits: PoolLimits | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.cluster = cluster
        self.done: list[bool] = []
        self.seen: list[tuple[str, str]] = []
        self.headers: list[Sequence[tuple[bytes, bytes]]] = []
        self.peers: list[str] = []
        self.pick_ = (
            None
            if address is None
            else Pick(cluster, address, timeout, self.record, retry, delay, limits)
        )

    def record(self, ok: bool, now: float, elapsed: float) -> None:
        assert elapsed >= 0.0 and now > 0.0
        self.done.append(ok)

    def pick(
        self, authority: str, path: str, headers: Sequence[tuple[bytes, bytes]], peer_ip: str
    ) -> Pick:
        self.seen.append((authority, path))
        self.headers.append(headers)
        self.peers.append(peer_ip)
        if self.pick_ is None:
            raise NoRoute("no endpoints for service echo (test)")
        return self.pick_


class EchoApp:
    """A grpc.aio server with bytes handlers for all four call kinds; records what it saw."""

    def __init__(self, options: tuple[tuple[str, Any], ...] = ()) -> None:
        self.options = options
        self.metadata: list[dict[str, Any]] = []
        self.time_remaining: list[float | None] = []
        self.cancelled = threading.Event()
        self.sleeping = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None
        self.port = 0

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def __enter__(self) -> EchoApp:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> int:
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0), *self.options])
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "Sleep": grpc.unary_unary_rpc_method_handler(self._sleep),
            "Big": grpc.unary_unary_rpc_method_handler(self._big),
            "Slow": grpc.unary_unary_rpc_method_handler(self._slow),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi),
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        port = int(self._server.add_insecure_port("127.0.0.1:0"))
        await self._server.start()
        return port

    def _record(self, context: Any) -> tuple[tuple[str, Any], ...]:
        md = tuple(context.invocation_metadata())
        self.metadata.append(dict(md))
        self.time_remaining.append(context.time_remaining())
        return tuple((k, v) for k, v in md if k.startswith("x-"))

    async def _unary(self, request: bytes, context: Any) -> bytes:
        echoed = self._record(context)
        if request.startswith(b"fail"):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "refused: état invalide 100%",
                trailing_metadata=(
                    *echoed,
                    ("grpc-status-details-bin", b"\x08\x09\x00\xffdetails"),
                ),
            )
        await context.send_initial_metadata(echoed)
        context.set_trailing_metadata(
            (*echoed, ("x-trailer", "t1"), ("x-trailer-bin", b"\x00\x01"))
        )
        return request

    async def _sleep(self, request: bytes, context: Any) -> bytes:
        self._record(context)
        self.sleeping.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b""

    async def _slow(self, request: bytes, context: Any) -> bytes:
        await asyncio.sleep(float(request))
        return request

    async def _big(self, request: bytes, context: Any) -> bytes:
        self._record(context)
        return bytes(reversed(request))

    async def _server_stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self._record(context)
        for i in range(int(request)):
            yield b"%d" % i

    async def _client_stream(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        self._record(context)
        parts = [r async for r in requests]
        return b"+".join(parts)

    async def _bidi(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        self._record(context)
        async for r in requests:
            yield r.upper()
