"""gRPC status codes, the typed call error, and the header conventions of gRPC over HTTP/2.

Pure functions and values, no I/O: how a deadline becomes `grpc-timeout`,
how trailers (or a trailers-only response, or a bare HTTP status, or an
RST_STREAM) become one status code and a decoded message.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

__all__ = [
    "RpcError",
    "StatusCode",
    "format_timeout",
    "status_from_headers",
    "status_from_http",
    "status_from_reset",
]


class StatusCode(enum.IntEnum):
    """The canonical gRPC status codes (same numbers as grpc.StatusCode)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RpcError(Exception):
    """A call ended with a non-OK status. `code` tells callers what to do next.

    `address` names the server (or the address that could not be reached), so
    a message in a log says where the trouble is.
    """

    def __init__(self, code: StatusCode, message: str, address: str = "") -> None:
        self.code = code
        self.message = message
        self.address = address
        where = f" ({address})" if address else ""
        super().__init__(f"{code.name}: {message}{where}")


# Largest value grpc-timeout allows: at most 8 ASCII digits.
_MAX_DIGITS = 99_999_999
_UNITS = (("n", 1e9), ("u", 1e6), ("m", 1e3), ("S", 1.0), ("M", 1 / 60), ("H", 1 / 3600))


def format_timeout(seconds: float) -> bytes:
    """The `grpc-timeout` value for `seconds`, in the finest unit that fits 8 digits.

    Rounds up, so the server never sees less time than the caller has; a
    non-positive timeout becomes `1n` (already expired, the server fails fast).
    """
    if seconds <= 0:
        return b"1n"
    for unit, per_second in _UNITS:
        value = math.ceil(seconds * per_second)
        if value <= _MAX_DIGITS:
            return f"{value}{unit}".encode()
    return f"{_MAX_DIGITS}H".encode()


def _decode_message(raw: bytes) -> str:
    """grpc-message is percent-encoded UTF-8; a malformed one is shown, never fatal."""
    return unquote_to_bytes(raw).decode("utf-8", "replace")


def status_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[StatusCode, str] | None:
    """(code, message) from trailers; None when they carry no grpc-status.

    An unknown number maps to UNKNOWN, as gRPC's own clients do.
    """
    code: StatusCode | None = None
    message = ""
    for name, value in headers:
        if name == b"grpc-status":
            try:
                code = StatusCode(int(value))
            except ValueError:
                return StatusCode.UNKNOWN, f"invalid grpc-status {value!r}"
        elif name == b"grpc-message":
            message = _decode_message(value)
    if code is None:
        return None
    return code, message


# The gRPC spec's mapping of HTTP status (when no grpc-status came) to codes.
_HTTP = {
    400: StatusCode.INTERNAL,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.UNIMPLEMENTED,
    429: StatusCode.UNAVAILABLE,
    502: StatusCode.UNAVAILABLE,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.UNAVAILABLE,
}


def status_from_http(status: int) -> tuple[StatusCode, str]:
    """The status of a response whose HTTP status was not 200 and had no grpc-status."""
    return _HTTP.get(status, StatusCode.UNKNOWN), f"HTTP status {status} instead of gRPC"


# RST_STREAM error codes (RFC 9113 section 7) as gRPC's clients map them.
_RESET = {
    0x0: StatusCode.INTERNAL,  # NO_ERROR before the trailers
    0x7: StatusCode.UNAVAILABLE,  # REFUSED_STREAM: safe to retry elsewhere
    0x8: StatusCode.CANCELLED,  # CANCEL
    0xB: StatusCode.RESOURCE_EXHAUSTED,  # ENHANCE_YOUR_CALM
    0xC: StatusCode.PERMISSION_DENIED,  # INADEQUATE_SECURITY
}


def status_from_reset(error_code: int) -> tuple[StatusCode, str]:
    """The status of a stream the server reset before sending trailers."""
    code = _RESET.get(error_code, StatusCode.INTERNAL)
    return code, f"stream reset by the server (HTTP/2 error code {error_code})"
