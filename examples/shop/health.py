"""`grpc.health.v1.Health` without grpcio-health-checking.

The two messages have one field each, so they are encoded by hand and served
through a generic handler: Check answers SERVING for the server ("") and for
every service it hosts, NOT_FOUND otherwise (as the health protocol says);
Watch sends the status once and then holds the stream until the server stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import grpc

__all__ = ["SERVICE_UNKNOWN", "SERVING", "health_handler", "parse_service_name"]

SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}
SERVICE_UNKNOWN = b"\x08\x03"  # HealthCheckResponse{status: SERVICE_UNKNOWN}


def parse_service_name(request: bytes) -> str:
    """`service` (field 1) of a HealthCheckRequest; unknown fields are skipped."""
    pos, name = 0, ""
    while pos < len(request):
        key, pos = _varint(request, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(request, pos)
        elif wire == 2:
            length, pos = _varint(request, pos)
            if key >> 3 == 1:
                name = request[pos : pos + length].decode("utf-8", "replace")
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire} in HealthCheckRequest")
    if pos > len(request):
        raise ValueError("truncated HealthCheckRequest")
    return name


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint in HealthCheckRequest")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def health_handler(services: Iterable[str]) -> grpc.GenericRpcHandler:
    """A handler for grpc.aio servers hosting `services` (full names, e.g. shop.v1.Users)."""
    known = frozenset(["", *services])

    def _name(request: bytes) -> str | None:
        try:
            return parse_service_name(request)
        except ValueError:
            return None

    async def check(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        name = _name(request)
        if name is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed HealthCheckRequest")
        if name not in known:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {name!r}")
        return SERVING

    async def watch(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        yield SERVING if _name(request) in known else SERVICE_UNKNOWN
        await asyncio.Event().wait()  # held until the client cancels or the server stops

    return grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {
            "Check": grpc.unary_unary_rpc_method_handler(check),
            "Watch": grpc.unary_stream_rpc_method_handler(watch),
        },
    )
