"""One health check of the local app: gRPC's grpc.health.v1 Check, or an HTTP GET.

A probe returns `(ok, detail)` and never raises for the app's trouble: a
refused connection, a timeout, a bad answer are all a failed check whose
detail says what went wrong ("UNAVAILABLE: cannot connect: Connection
refused", "HTTP 503", "no answer within 1s").

- gRPC: one persistent h2c connection (skein.grpcclient, not grpcio: the
  sidecar does not load it). SERVING passes; NOT_SERVING, any error status,
  a timeout or no connection fails. After a transport failure the
  connection is dropped and the next check dials again, so an app that
  restarted (or hung) is not judged on a dead connection.
- HTTP: a fresh HTTP/1.1 connection per check (`Connection: close`), as
  Envoy's HTTP checker without connection reuse; 2xx and 3xx pass.
"""

from __future__ import annotations

import asyncio
import os

from skein.addr import HostPort, format_hostport
from skein.grpcclient import GrpcChannel, RpcError, StatusCode
from skein.v1 import health_pb2

__all__ = ["GrpcProbe", "http_probe"]

_CHECK = "/grpc.health.v1.Health/Check"
_SERVING = health_pb2.HealthCheckResponse.SERVING
# Status codes after which the connection itself is suspect: dial afresh.
_REDIAL = frozenset(
    {
        StatusCode.UNAVAILABLE,
        StatusCode.DEADLINE_EXCEEDED,
        StatusCode.CANCELLED,
        StatusCode.INTERNAL,
    }
)
_MAX_STATUS_LINE = 8192


class GrpcProbe:
    """grpc.health.v1.Health/Check against one address, over a reused connection."""

    def __init__(self, address: HostPort) -> None:
        self.address = format_hostport(address)
        self._channel = GrpcChannel(self.address, user_agent="skein-health/1")

    async def check(self, service: str, timeout: float) -> tuple[bool, str]:  # noqa: ASYNC109
        try:
            response = await self._channel.unary(
                _CHECK,
                health_pb2.HealthCheckRequest(service=service),
                health_pb2.HealthCheckResponse,
                timeout=timeout,
            )
        except RpcError as err:
            if err.code in _REDIAL:
                await self._channel.close()
            return False, f"{err.code.name}: {err.message}"
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return response.status == _SERVING, status

    async def close(self) -> None:
        await self._channel.close()


def _reason(err: OSError) -> str:
    return os.strerror(err.errno) if err.errno else str(err) or type(err).__name__


async def http_probe(address: HostPort, path: str, timeout: float) -> tuple[bool, str]:  # noqa: ASYNC109
    """GET `path` on a new connection; 2xx/3xx pass. Waits at most `timeout` seconds."""
    host, port = address
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError as err:
                return False, f"cannot connect: {_reason(err)}"
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {format_hostport(address)}\r\n"
                "User-Agent: skein-health/1\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            )
            writer.write(request.encode("latin-1"))
            line = await reader.readline()
    except TimeoutError:
        return False, f"no answer within {timeout:g}s"
    except (OSError, ValueError) as err:  # reset, or a line past the reader's limit
        return False, f"GET {path} failed: {_reason(err) if isinstance(err, OSError) else err}"
    finally:
        if writer is not None:
            writer.close()
    return _judge(line[:_MAX_STATUS_LINE], path)


def _judge(line: bytes, path: str) -> tuple[bool, str]:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        shown = line.strip()[:80].decode("latin-1") or "nothing"
        return False, f"GET {path}: not an HTTP/1.x response (got {shown!r})"
    status = int(parts[1])
    return 200 <= status < 400, f"HTTP {status}"
