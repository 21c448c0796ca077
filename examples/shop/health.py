"""`grpc.health.v1.Health` for the shop services, without grpcio-health-checking.

Messages are Skein's own generated `skein.v1.health_pb2` (package
grpc.health.v1, so the wire names are the standard ones); the servicer is
registered through a generic handler. Check answers the status of the
server ("") or of a service it hosts, NOT_FOUND for any other name (as the
health protocol says); Watch sends the status at once and again on every
change, SERVICE_UNKNOWN for a name it does not host. Each sidecar's active
health check asks Check, so `set(...)` is how an instance takes itself out
of rotation (NOT_SERVING) and back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from skein.v1 import health_pb2

__all__ = ["SERVING", "HealthServicer", "health_handler", "parse_service_name"]

Response = health_pb2.HealthCheckResponse
# A serialized SERVING response (what a bytes-level Check call gets back).
SERVING: bytes = Response(status=Response.SERVING).SerializeToString()


def parse_service_name(request: bytes) -> str:
    """`service` of a serialized HealthCheckRequest; ValueError when it does not parse."""
    try:
        name: str = health_pb2.HealthCheckRequest.FromString(request).service
    except DecodeError as err:
        raise ValueError(f"malformed HealthCheckRequest: {err}") from None
    return name


class HealthServicer:
    """Serving status per service name ("" is the whole server); all SERVING at first."""

    def __init__(self, services: Iterable[str]) -> None:
        self._status = {name: Response.SERVING for name in ("", *services)}
        self._changed = asyncio.Event()

    def status(self, service: str = "") -> Any:
        return self._status[service]

    def set(self, status: Any, service: str | None = None) -> None:
        """Set one service's status, or (service None) the server's and every service's."""
        names = list(self._status) if service is None else [service]
        for name in names:
            if name not in self._status:
                raise KeyError(f"{name!r} is not hosted here; known: {sorted(self._status)}")
            self._status[name] = status
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()  # wakes every Watch

    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return Response(status=status)

    async def Watch(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        last = None
        while True:
            changed = self._changed
            status = self._status.get(request.service, Response.SERVICE_UNKNOWN)
            if status != last:
                last = status
                yield Response(status=status)
            await changed.wait()  # until a change, the client cancels or the server stops

    def handler(self) -> grpc.GenericRpcHandler:
        request = health_pb2.HealthCheckRequest.FromString
        response = Response.SerializeToString
        return grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health",
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self.Check, request_deserializer=request, response_serializer=response
                ),
                "Watch": grpc.unary_stream_rpc_method_handler(
                    self.Watch, request_deserializer=request, response_serializer=response
                ),
            },
        )


def health_handler(services: Iterable[str]) -> grpc.GenericRpcHandler:
    """A handler for grpc.aio servers hosting `services` (full names, e.g. shop.v1.Users)."""
    return HealthServicer(services).handler()
