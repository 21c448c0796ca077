"""A minimal HTTP/1.1 server for admin endpoints (/healthz, /ready, /metrics...).

Admin traffic is rare and tiny, so this favours simplicity: one request per
connection read, `Connection: close`, GET/HEAD only.

A connection that opens with the HTTP/2 preface (`PRI * HTTP/2.0`, prior
knowledge h2c, as gRPC clients and k8s gRPC probes send it) goes to the
`h2c` handler when one is given: the sidecar serves grpc.health.v1 there
with its own HTTP/2 codec. This module knows no HTTP/2, so the dependency
points from the sidecar to here, never back; without a handler (control)
such a connection gets a plain 405.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from skein.logging import get_logger

__all__ = ["AdminServer", "H2cHandler", "Response", "json_response", "text_response"]

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
# Serves one h2c connection: (reader, writer, the bytes read so far). The
# server closes the writer when it returns.
H2cHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]

# What `readuntil(b"\r\n\r\n")` returns of the HTTP/2 connection preface.
_H2_PREFACE_HEAD = b"PRI * HTTP/2.0\r\n\r\n"


class AdminServer:
    """Routes exact paths to handlers; a handler gets the query parameters.

    `h2c`, when set, serves connections that open with the HTTP/2 preface.
    """

    def __init__(self, routes: dict[str, Handler], *, h2c: H2cHandler | None = None) -> None:
        self._routes = dict(routes)
        self.h2c = h2c
        self._server: asyncio.Server | None = None
        self._long_lived: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port)
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._long_lived):  # h2c connections stay open until told
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if head == _H2_PREFACE_HEAD and self.h2c is not None:
                await self._serve_h2c(self.h2c, reader, writer, head)
                return
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

    async def _serve_h2c(
        self,
        handler: H2cHandler,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
    ) -> None:
        self._long_lived.add(writer)
        try:
            await handler(reader, writer, head)
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
        ):
            pass
        except Exception:  # an admin connection must never take the daemon down
            log.exception("h2c admin connection failed")
        finally:
            self._long_lived.discard(writer)

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
