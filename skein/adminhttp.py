"""A minimal HTTP/1.1 server for admin endpoints (/healthz, /ready, /metrics...).

Admin traffic is rare and tiny, so this favours simplicity: one request per
connection read, `Connection: close`, GET/HEAD only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from skein.logging import get_logger

__all__ = ["AdminServer", "Response", "json_response", "text_response"]

log = get_logger("admin")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def text_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode())


def json_response(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
    return Response(status, body, "application/json")


Handler = Callable[[dict[str, str]], Awaitable[Response] | Response]


class AdminServer:
    """Routes exact paths to handlers; a handler gets the query parameters."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self._routes = dict(routes)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port)
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            response, method = await self._respond(head)
            reason = _REASONS.get(response.status, "")
            header = (
                f"HTTP/1.1 {response.status} {reason}\r\n"
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(header.encode() + (b"" if method == "HEAD" else response.body))
            await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
        ):
            pass
        finally:
            writer.close()

    async def _respond(self, head: bytes) -> tuple[Response, str]:
        try:
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except ValueError:
            return text_response("malformed request line\n", 400), "GET"
        if method not in ("GET", "HEAD"):
            return text_response(f"method {method} not allowed\n", 405), method
        path, _, query = target.partition("?")
        handler = self._routes.get(path)
        if handler is None:
            paths = ", ".join(sorted(self._routes))
            return text_response(f"no such path {path}; try one of: {paths}\n", 404), method
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        try:
            result = handler(params)
            response = await result if not isinstance(result, Response) else result
        except Exception:  # an admin page must never take the daemon down
            log.exception("admin handler failed", path=path)
            return text_response("internal error, see the daemon log\n", 500), method
        return response, method
