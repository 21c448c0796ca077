"""The sidecar's own grpc.health.v1 on its admin port, for gRPC liveness probes (k8s `grpc:`).

The admin port speaks HTTP/1.1; `skein.adminhttp.AdminServer` hands a
connection that opens with the HTTP/2 preface to `serve_connection`, which
speaks h2c with the relay's sans-IO codec (`H2Connection(client=False)`),
one small request at a time. The codec lives in the sidecar, so the shared
admin server only knows "a handler for h2c connections" (control has none).

- Check: service "" or the sidecar's own service name -> SERVING while
  `serving()` holds (a config is applied and the sidecar is not draining),
  NOT_SERVING otherwise; any other name -> status NOT_FOUND, as the health
  protocol asks.
- Watch: UNIMPLEMENTED. The verdict changes twice in a sidecar's life (first
  config, drain), probes poll Check, and gRPC's client-side health checking
  treats UNIMPLEMENTED as "no health checking" rather than as a failure.
- anything else: UNIMPLEMENTED; a request that is not gRPC: HTTP 415.
Requests are tiny: a body over MAX_REQUEST bytes resets the stream.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from sidecar.transport.frames import ENHANCE_YOUR_CALM, NO_ERROR
from sidecar.transport.h2conn import (
    EV_DATA,
    EV_DATA_END,
    EV_GOAWAY,
    EV_HEADERS,
    EV_RESET,
    EV_TRAILERS,
    ConnectionFailed,
    H2Connection,
    StreamGone,
)
from sidecar.transport.headers import grpc_error_headers
from skein.logging import get_logger
from skein.v1 import health_pb2

__all__ = ["CHECK", "WATCH", "AdminHealthService"]

log = get_logger("admin.grpc")

CHECK = b"/grpc.health.v1.Health/Check"
WATCH = b"/grpc.health.v1.Health/Watch"
MAX_REQUEST = 4096
IDLE_TIMEOUT = 300.0  # an idle h2c connection is closed (GOAWAY) after this many seconds

_OK, _INVALID_ARGUMENT, _NOT_FOUND, _UNIMPLEMENTED = 0, 3, 5, 12
_PREFIX = struct.Struct(">BI")
Header = tuple[bytes, bytes]
_RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc"))
_OK_TRAILERS = ((b"grpc-status", b"0"),)
_NOT_GRPC = ((b":status", b"415"), (b"content-type", b"text/plain; charset=utf-8"))
_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
_NOT_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)


class _Request:
    __slots__ = ("body", "grpc", "path")

    def __init__(self, headers: Sequence[Header]) -> None:
        self.path = b""
        self.grpc = False
        self.body = bytearray()
        method = b""
        for name, value in headers:
            if name == b":path":
                self.path = value
            elif name == b":method":
                method = value
            elif name == b"content-type":
                self.grpc = value.startswith(b"application/grpc")
        self.grpc = self.grpc and method == b"POST"


class AdminHealthService:
    """Answers grpc.health.v1 for the sidecar itself; `serving()` is read per call."""

    def __init__(self, service: str, serving: Callable[[], bool]) -> None:
        self.service = service
        self.serving = serving

    # -- the answer --------------------------------------------------------------------

    def check(self, body: bytes | bytearray) -> tuple[int, str, bytes]:
        """(grpc status, message, response message) for one Check request body."""
        if len(body) < 5:
            return _INVALID_ARGUMENT, "expected one length-prefixed HealthCheckRequest", b""
        compressed, length = _PREFIX.unpack_from(body)
        if compressed:
            return _UNIMPLEMENTED, "compressed requests are not supported here", b""
        if length != len(body) - 5:
            return _INVALID_ARGUMENT, "expected exactly one HealthCheckRequest", b""
        try:
            request = health_pb2.HealthCheckRequest.FromString(bytes(body[5:]))
        except DecodeError:
            return _INVALID_ARGUMENT, "the request is not a grpc.health.v1.HealthCheckRequest", b""
        if request.service not in ("", self.service):
            return (
                _NOT_FOUND,
                f"unknown service {request.service!r}: this sidecar answers for '' "
                f"and {self.service!r}",
                b"",
            )
        reply = _SERVING if self.serving() else _NOT_SERVING
        data = reply.SerializeToString()
        return _OK, "", _PREFIX.pack(0, len(data)) + data

    # -- one h2c connection ------------------------------------------------------------

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: bytes
    ) -> None:
        """Serve one h2c connection; `received` is what was read of it already."""
        conn = H2Connection(client=False)
        requests: dict[int, _Request] = {}
        data = received
        while data:
            try:
                events = conn.receive_data(data)
            except ConnectionFailed as err:
                log.info("h2c client broke the protocol", error=str(err))
                writer.write(conn.data_to_send())
                return
            ended = False
            for kind, sid, payload, arg in events:
                if kind == EV_HEADERS:
                    requests[sid] = _Request(payload)
                    if arg:
                        self._answer(conn, sid, requests.pop(sid))
                elif kind in (EV_DATA, EV_DATA_END):
                    conn.ack(sid, arg)
                    request = requests.get(sid)
                    if request is None:
                        continue
                    request.body += payload
                    if len(request.body) > MAX_REQUEST:
                        del requests[sid]
                        conn.reset(sid, ENHANCE_YOUR_CALM)
                    elif kind == EV_DATA_END:
                        self._answer(conn, sid, requests.pop(sid))
                elif kind == EV_TRAILERS:
                    request = requests.pop(sid, None)
                    if request is not None:
                        self._answer(conn, sid, request)
                elif kind == EV_RESET:
                    requests.pop(sid, None)
                elif kind == EV_GOAWAY:
                    ended = True
            out = conn.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
            if ended:
                return
            try:
                data = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT)
            except TimeoutError:
                conn.close(NO_ERROR)
                writer.write(conn.data_to_send())
                return

    def _answer(self, conn: H2Connection, sid: int, request: _Request) -> None:
        try:
            if not request.grpc:
                conn.send_headers(sid, _NOT_GRPC, False)
                conn.send_data(sid, b"send gRPC (grpc.health.v1.Health) over h2c\n", True)
                return
            if request.path == CHECK:
                status, message, reply = self.check(request.body)
            elif request.path == WATCH:
                status, message, reply = (
                    _UNIMPLEMENTED,
                    "Watch is not served by the sidecar; poll Check",
                    b"",
                )
            else:
                path = request.path.decode("latin-1")
                status, message, reply = _UNIMPLEMENTED, f"unknown method {path}", b""
            if status != _OK:
                conn.send_headers(sid, grpc_error_headers(status, message), True)
                return
            conn.send_headers(sid, _RESPONSE_HEADERS, False)
            conn.send_data(sid, reply, False)
            conn.send_headers(sid, _OK_TRAILERS, True)
        except StreamGone:
            pass  # the client reset it meanwhile
