"""HTTP/1.1 callers through the relay: translated onto HTTP/2 upstream streams."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sidecar.transport import UpstreamPool, start_listener
from tests.integration.test_transport_support import StaticDispatcher, run

pytestmark = pytest.mark.integration


class H2EchoServer:
    """A tiny h2c upstream (h2 library) answering GET/POST; records request headers."""

    def __init__(self) -> None:
        self.requests: list[list[tuple[bytes, bytes]]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        import h2.config
        import h2.connection
        import h2.events

        outer = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.t = transport
                self.c = h2.connection.H2Connection(
                    h2.config.H2Configuration(client_side=False, header_encoding=None)
                )
                self.c.initiate_connection()
                self.bodies: dict[int, bytes] = {}
                self.heads: dict[int, list[tuple[bytes, bytes]]] = {}
                transport.write(self.c.data_to_send())

            def data_received(self, data: bytes) -> None:
                for ev in self.c.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        self.heads[ev.stream_id] = list(ev.headers)
                        self.bodies[ev.stream_id] = b""
                        outer.requests.append(list(ev.headers))
                    elif isinstance(ev, h2.events.DataReceived):
                        self.bodies[ev.stream_id] += ev.data
                        self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        self.respond(ev.stream_id)
                self.t.write(self.c.data_to_send())

            def respond(self, sid: int) -> None:
                head = dict(self.heads[sid])
                body = b"%s %s body=%s" % (head[b":method"], head[b":path"], self.bodies[sid])
                if head[b":path"] == b"/missing":
                    self.c.send_headers(sid, [(b":status", b"404")], end_stream=True)
                    return
                self.c.send_headers(sid, [(b":status", b"200"), (b"x-up", b"1")])
                self.c.send_data(sid, body, end_stream=True)

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(Proto, "127.0.0.1", 0)
        sock = self.server.sockets[0].getsockname()
        return sock[0], sock[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()  # until the proxy closes (Connection: close)
    writer.close()
    await writer.wait_closed()
    return data


def test_http1_get_and_post_keepalive() -> None:
    upstream = H2EchoServer()

    async def scenario() -> None:
        address = await upstream.start()
        dispatcher = StaticDispatcher(address, cluster="rest")
        pool = UpstreamPool()
        listener = await start_listener("127.0.0.1", 0, dispatcher, pool, name="h1")
        port = listener.address[1]
        try:
            raw = (
                b"GET /items?id=1 HTTP/1.1\r\nHost: shop\r\nX-Trace: a\r\n"
                b"Connection: keep-alive, x-hop\r\nX-Hop: secret\r\nKeep-Alive: 5\r\n\r\n"
                b"POST /items HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhello"
                b"POST /chunked HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
            reply = await exchange(port, raw)
            responses = reply.split(b"HTTP/1.1 ")[1:]
            assert len(responses) == 3, reply
            assert responses[0].startswith(b"200 OK\r\n")
            assert responses[0].endswith(b"GET /items?id=1 body=\r\n0\r\n\r\n")
            assert b"x-up: 1\r\n" in responses[0]
            assert b"transfer-encoding: chunked" in responses[0]
            assert responses[1].endswith(b"POST /items body=hello\r\n0\r\n\r\n")
            assert responses[2].endswith(b"POST /chunked body=abcde\r\n0\r\n\r\n")
            assert b"connection: close" in responses[2]

            first = dict(upstream.requests[0])
            assert first[b":authority"] == b"shop"
            assert first[b":scheme"] == b"http"
            assert first[b"x-trace"] == b"a"
            for hop in (b"connection", b"keep-alive", b"x-hop", b"host"):
                assert hop not in first
            assert b"transfer-encoding" not in dict(upstream.requests[2])

            missing = await exchange(
                port, b"GET /missing HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n"
            )
            assert missing.startswith(b"HTTP/1.1 404 Not Found\r\n")
            assert dispatcher.done == [True, True, True, True]
            assert dispatcher.peers == ["127.0.0.1"] * 4
            assert (b"x-trace", b"a") in dispatcher.headers[0]
        finally:
            await listener.close(grace=1.0)
            await pool.close()
            upstream.close()

    run(scenario)


def test_http1_errors() -> None:
    async def scenario() -> None:
        pool = UpstreamPool()
        listener = await start_listener(
            "127.0.0.1", 0, StaticDispatcher(None), pool, name="h1-errors"
        )
        port = listener.address[1]
        try:
            reply = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
            assert reply.endswith(b"no endpoints for service echo (test)\n")
            reply = await exchange(port, b"GET / HTTP/1.1\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
            assert b"without Host header" in reply
            reply = await exchange(port, b"GARBAGE\x00\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        finally:
            await listener.close(grace=1.0)
            await pool.close()

    run(scenario)
