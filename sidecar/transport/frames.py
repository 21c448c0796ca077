"""HTTP/2 frame layout (RFC 9113 section 4 and 6): codes and serializers (sans-IO).

Frames are built with `struct` straight into the connection's output buffer;
no frame objects exist on the hot path.
"""

from __future__ import annotations

import struct

__all__ = [
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONTINUATION",
    "DATA",
    "ENHANCE_YOUR_CALM",
    "FLAG_ACK",
    "FLAG_END_HEADERS",
    "FLAG_END_STREAM",
    "FLAG_PADDED",
    "FLAG_PRIORITY",
    "FLOW_CONTROL_ERROR",
    "FRAME_HEADER",
    "FRAME_SIZE_ERROR",
    "GOAWAY",
    "HEADERS",
    "INTERNAL_ERROR",
    "MAX_WINDOW",
    "NO_ERROR",
    "PING",
    "PREFACE",
    "PRIORITY",
    "PROTOCOL_ERROR",
    "PUSH_PROMISE",
    "REFUSED_STREAM",
    "RST_STREAM",
    "SETTINGS",
    "SETTINGS_ENABLE_PUSH",
    "SETTINGS_HEADER_TABLE_SIZE",
    "SETTINGS_INITIAL_WINDOW_SIZE",
    "SETTINGS_MAX_CONCURRENT_STREAMS",
    "SETTINGS_MAX_FRAME_SIZE",
    "SETTINGS_MAX_HEADER_LIST_SIZE",
    "STREAM_CLOSED",
    "WINDOW_UPDATE",
    "frame_header",
    "goaway_frame",
    "ping_ack",
    "rst_frame",
    "settings_frame",
    "window_update_frame",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_WINDOW = (1 << 31) - 1

# Frame types (RFC 9113 section 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

# Error codes (RFC 9113 section 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

# SETTINGS identifiers (RFC 9113 section 6.5.2).
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

# 24-bit length, type, flags, 31-bit stream id: packed as one 32-bit word
# (length << 8 | type), flags, stream id.
FRAME_HEADER = struct.Struct(">IBI")
_U32 = struct.Struct(">I")
_GOAWAY = struct.Struct(">II")
_SETTING = struct.Struct(">HI")


def frame_header(length: int, kind: int, flags: int, sid: int) -> bytes:
    """The 9-byte header of a frame."""
    return FRAME_HEADER.pack(length << 8 | kind, flags, sid)


def settings_frame(values: dict[int, int]) -> bytes:
    """A SETTINGS frame carrying `values` (identifier -> value)."""
    body = b"".join(_SETTING.pack(k, v) for k, v in values.items())
    return frame_header(len(body), SETTINGS, 0, 0) + body


def ping_ack(opaque: bytes) -> bytes:
    return frame_header(8, PING, FLAG_ACK, 0) + opaque


def goaway_frame(last_sid: int, code: int, debug: bytes = b"") -> bytes:
    return frame_header(8 + len(debug), GOAWAY, 0, 0) + _GOAWAY.pack(last_sid, code) + debug


def rst_frame(sid: int, code: int) -> bytes:
    return frame_header(4, RST_STREAM, 0, sid) + _U32.pack(code)


def window_update_frame(sid: int, increment: int) -> bytes:
    return frame_header(4, WINDOW_UPDATE, 0, sid) + _U32.pack(increment)
