"""gRPC length-prefixed messages, built once so the load generator replays bytes.

A unary gRPC request body is one message: a flag byte (0 = not compressed), the
message length as a 4-byte big-endian integer, then the message. The echo server
treats the message as opaque bytes, so any payload is a valid request.
"""

from __future__ import annotations

import struct

__all__ = ["ECHO_METHOD", "FrameError", "grpc_frame", "parse_grpc_frame", "payload"]

# The one method the echo server serves; a generic handler, no .proto needed.
ECHO_METHOD = "/skein.bench.Echo/Echo"

_PREFIX = struct.Struct(">BI")
_MAX_MESSAGE = 2**32 - 1


class FrameError(ValueError):
    """Bytes that are not exactly one uncompressed gRPC message."""


def payload(size: int) -> bytes:
    """A deterministic, non-repeating-looking payload of `size` bytes."""
    if size < 0:
        raise ValueError(f"payload size must be >= 0, got {size}")
    pattern = bytes(range(256))
    return (pattern * (size // 256 + 1))[:size]


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC message with its 5-byte prefix."""
    if len(message) > _MAX_MESSAGE:
        raise ValueError(f"message of {len(message)} bytes exceeds the 4-byte length prefix")
    return _PREFIX.pack(0, len(message)) + message


def parse_grpc_frame(data: bytes) -> bytes:
    """The message inside `data`, which must hold exactly one uncompressed message."""
    if len(data) < _PREFIX.size:
        raise FrameError(f"gRPC frame needs a 5-byte prefix, got {len(data)} bytes")
    flag, length = _PREFIX.unpack_from(data)
    if flag != 0:
        raise FrameError(f"compressed flag {flag} set; the benchmark sends uncompressed frames")
    if len(data) - _PREFIX.size != length:
        raise FrameError(f"prefix says {length} bytes, frame carries {len(data) - _PREFIX.size}")
    return data[_PREFIX.size :]
