"""The admin server over a real socket."""

from __future__ import annotations

import asyncio

from skein.adminhttp import AdminServer, Response, json_response, text_response


async def _fetch(address: tuple[str, int], request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(request)
    data = await reader.read()
    writer.close()
    return data


def test_routes_errors_and_failing_handlers() -> None:
    def broken(_: dict[str, str]) -> Response:
        raise RuntimeError("boom")

    async def scenario() -> None:
        server = AdminServer(
            {
                "/ready": lambda q: text_response("ready\n"),
                "/dump": lambda q: json_response({"q": q}),
                "/broken": broken,
            }
        )
        address = await server.start("127.0.0.1", 0)
        try:
            ok = await _fetch(address, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
            assert ok.startswith(b"HTTP/1.1 200 OK") and ok.endswith(b"ready\n")
            dump = await _fetch(address, b"GET /dump?a=1 HTTP/1.1\r\n\r\n")
            assert b'"a": "1"' in dump
            missing = await _fetch(address, b"GET /nope HTTP/1.1\r\n\r\n")
            assert missing.startswith(b"HTTP/1.1 404") and b"/ready" in missing
            post = await _fetch(address, b"POST /ready HTTP/1.1\r\n\r\n")
            assert post.startswith(b"HTTP/1.1 405")
            failed = await _fetch(address, b"GET /broken HTTP/1.1\r\n\r\n")
            assert failed.startswith(b"HTTP/1.1 500")
            # the server survives a handler failure
            again = await _fetch(address, b"GET /ready HTTP/1.1\r\n\r\n")
            assert again.startswith(b"HTTP/1.1 200")
        finally:
            await server.stop()

    asyncio.run(scenario())
