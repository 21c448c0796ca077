"""Helpers for the transport tests (no tests here): a recording gRPC echo app on
its own loop thread, a static dispatcher, and a runner for async scenarios."""

from __future__ import annotations

import asyncio
import os
import socket
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


def grpc_frame(payload: bytes) -> bytes:
    """One length-prefixed gRPC message."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def grpc_payloads(body: bytes) -> list[bytes]:
    """The messages of a gRPC request or response body."""
    out: list[bytes] = []
    at = 0
    while at + 5 <= len(body):
        size = int.from_bytes(body[at + 1 : at + 5], "big")
        out.append(body[at + 5 : at + 5 + size])
        at += 5 + size
    return out


class UpstreamRequest:
    """One request as the scripted upstream saw it; answer it with the methods below."""

    def __init__(self, server: ScriptedUpstream, proto: Any, sid: int, headers: Any) -> None:
        self.server = server
        self.proto = proto
        self.sid = sid
        self.connection = proto.number
        self.header_list: list[tuple[bytes, bytes]] = list(headers)
        self.headers = dict(self.header_list)
        self.body = bytearray()
        self.ended = False
        self.reset_code: int | None = None
        self.at = asyncio.get_running_loop().time()

    def _send(self) -> None:
        self.proto.flush()

    def grpc_ok(
        self, payload: bytes | None = None, extra: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """200, one message (the request's messages joined by default), grpc-status 0."""
        if payload is None:
            payload = b"".join(grpc_payloads(bytes(self.body)))
        conn = self.proto.conn
        conn.send_headers(
            self.sid, [(b":status", b"200"), (b"content-type", b"application/grpc"), *extra]
        )
        frame = grpc_frame(payload)
        for at in range(0, len(frame), 16384):  # within the relay's windows (1 MiB)
            conn.send_data(self.sid, frame[at : at + 16384])
        conn.send_headers(self.sid, [(b"grpc-status", b"0")], end_stream=True)
        self._send()

    def trailers_only(
        self, status: int, message: bytes = b"", extra: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        block = [
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", b"%d" % status),
            (b"grpc-message", message),
            *extra,
        ]
        self.proto.conn.send_headers(self.sid, block, end_stream=True)
        self._send()

    def head(self) -> None:
        """Response headers only (the call commits at the relay)."""
        self.proto.conn.send_headers(
            self.sid, [(b":status", b"200"), (b"content-type", b"application/grpc")]
        )
        self._send()

    def trailers(self, status: int, message: bytes = b"") -> None:
        self.proto.conn.send_headers(
            self.sid,
            [(b"grpc-status", b"%d" % status), (b"grpc-message", message)],
            end_stream=True,
        )
        self._send()

    def http(self, status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
        conn = self.proto.conn
        conn.send_headers(self.sid, [(b":status", b"%d" % status), *extra], end_stream=not body)
        if body:
            conn.send_data(self.sid, body, end_stream=True)
        self._send()

    def reset(self, code: int) -> None:
        self.proto.conn.reset_stream(self.sid, code)
        self._send()


class ScriptedUpstream:
    """An h2c server (the h2 library) on the test's loop that records every request and hands
    it to `on_end` once its body is complete (`on_headers` first, if given).

    `max_streams` is the MAX_CONCURRENT_STREAMS it advertises (None: h2's default).
    """

    def __init__(
        self,
        on_end: Callable[[UpstreamRequest], None] | None = None,
        on_headers: Callable[[UpstreamRequest], None] | None = None,
        max_streams: int | None = None,
    ) -> None:
        self.on_end = on_end
        self.on_headers = on_headers
        self.max_streams = max_streams
        self.requests: list[UpstreamRequest] = []
        self.protos: list[Any] = []
        self.server: asyncio.Server | None = None
        self.address: tuple[str, int] = ("", 0)

    async def __aenter__(self) -> ScriptedUpstream:
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions

        outer = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport
                self.number = len(outer.protos)
                outer.protos.append(self)
                self.conn = h2.connection.H2Connection(
                    h2.config.H2Configuration(client_side=False, header_encoding=None)
                )
                self.conn.initiate_connection()
                if outer.max_streams is not None:
                    self.conn.update_settings({0x3: outer.max_streams})
                self.streams: dict[int, UpstreamRequest] = {}
                self.flush()

            def flush(self) -> None:
                data = self.conn.data_to_send()
                if data and not self.transport.is_closing():
                    self.transport.write(data)

            def data_received(self, data: bytes) -> None:
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    self.flush()
                    self.transport.close()
                    return
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        req = UpstreamRequest(outer, self, ev.stream_id, ev.headers)
                        self.streams[ev.stream_id] = req
                        outer.requests.append(req)
                        if outer.on_headers is not None:
                            outer.on_headers(req)
                    elif isinstance(ev, h2.events.DataReceived):
                        req = self.streams[ev.stream_id]
                        req.body += ev.data
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        req = self.streams[ev.stream_id]
                        req.ended = True
                        if outer.on_end is not None:
                            outer.on_end(req)
                    elif isinstance(ev, h2.events.StreamReset):
                        gone = self.streams.get(ev.stream_id)
                        if gone is not None:
                            gone.reset_code = int(ev.error_code)
                self.flush()

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(Proto, "127.0.0.1", 0)
        self.address = self.server.sockets[0].getsockname()[:2]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proto in self.protos:
            proto.transport.abort()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def shutdown(self, number: int) -> None:
        """Send FIN on connection `number` now (a transport's close waits for the loop)."""
        transport = self.protos[number].transport
        fd = transport.get_extra_info("socket").fileno()
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        transport.abort()

    def goaway(self, proto: Any, last_stream_id: int) -> None:
        proto.conn.close_connection(last_stream_id=last_stream_id)
        proto.flush()


def assert_pool_idle(pool: Any) -> None:
    """No stream and no waiting call left on any upstream connection."""
    for label, conns in pool.stats().items():
        for conn in conns:
            assert conn["streams"] == 0 and conn["waiting"] == 0, (label, conn)
