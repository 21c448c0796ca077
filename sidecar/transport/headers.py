"""Header handling for the relay (sans-IO).

Invariants:
- HTTP/2 header blocks are relayed verbatim (bytes, order kept); only
  `grpc-timeout` is rewritten, and only by the caller of `scan_request`.
- HTTP/1.1 requests become valid HTTP/2 requests: names lowercased,
  connection-specific fields (RFC 9113 section 8.2.2) and the fields the
  `Connection` header names are dropped, `Host` becomes `:authority`.
- Synthetic answers (no route, upstream down, deadline) use gRPC's
  trailers-only form for gRPC callers and a plain-text status for others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from http import HTTPStatus

__all__ = [
    "CONNECTION_SPECIFIC",
    "Header",
    "HeaderError",
    "RequestHead",
    "grpc_error_headers",
    "grpc_status_of",
    "h1_request_to_h2",
    "h2_response_to_h1",
    "http_error_response",
    "parse_pushback",
    "percent_encode_grpc_message",
    "response_error",
    "scan_request",
    "status_of",
    "trailers_error",
]

Header = tuple[bytes, bytes]

# RFC 9113 8.2.2 plus the HTTP/1.1 hop-by-hop fields (RFC 9110 7.6.1).
CONNECTION_SPECIFIC = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"http2-settings",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"trailer",
    }
)

_GRPC_CT = b"application/grpc"
_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}


class HeaderError(ValueError):
    """A request's headers cannot be relayed; the message says which and why."""


class RequestHead:
    """What the relay needs from a request's header block, found in one pass.

    `error` is empty for a well-formed block, else why it is malformed (RFC 9113
    8.2/8.3): the stream must then be reset with PROTOCOL_ERROR. Read-only once
    made: the HTTP/2 front end shares one among identical header blocks.
    """

    __slots__ = ("authority", "error", "is_grpc", "path", "timeout_index")

    def __init__(self) -> None:
        self.authority = b""
        self.path = b""
        self.is_grpc = False
        self.timeout_index = -1
        self.error = ""


# RFC 9110 5.1 token characters, lowercase only (RFC 9113 8.2.1).
_BAD_NAME = re.compile(rb"[^a-z0-9!#$%&'*+\-.^_`|~]")
# RFC 9113 8.2.1: no NUL/CR/LF, no leading or trailing whitespace.
_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
_PSEUDO_BIT = {b":method": 1, b":scheme": 2, b":authority": 4, b":path": 8}
_CONNECT_PSEUDO = 1 | 4


# Fields already found well-formed (value, and for regular fields the name and
# the connection-specific rule): clients repeat the same fields on every
# request, so most fields skip the regexes. Bounded; cleared when full.
_checked: set[Header] = set()
_CHECKED_LIMIT = 4096


def _field_error(name: bytes, value: bytes) -> str:
    """Why one field is malformed on its own (RFC 9113 8.2.1, 8.2.2), or ""."""
    if _BAD_VALUE.search(value) is not None:
        return f"header {name!r} has a value with CR, LF, NUL or edge whitespace"
    if name[:1] == b":":
        return ""
    if name in CONNECTION_SPECIFIC and (name != b"te" or value != b"trailers"):
        return f"connection-specific header {name!r} is not allowed in HTTP/2"
    if _BAD_NAME.search(name) is not None:
        return f"header name {name!r} is not a lowercase token"
    return ""


def scan_request(headers: Sequence[Header], validate: bool = True) -> RequestHead:
    """One pass over a request block: routing fields, gRPC-ness, `grpc-timeout`, validity."""
    head = RequestHead()
    host = b""
    method = b""
    scheme = b""
    seen_pseudo = 0  # bits of _PSEUDO_BIT: no set per request
    regular = False
    error = ""
    checked = _checked
    for index, field in enumerate(headers):
        name, value = field
        if validate and field not in checked:
            error = _field_error(name, value)
            if error:
                break
            if len(checked) >= _CHECKED_LIMIT:
                checked.clear()
            checked.add(field)
        if name[:1] == b":":
            if regular:
                error = f"pseudo-header {name!r} after a regular header"
                break
            bit = _PSEUDO_BIT.get(name, 0)
            if not bit or seen_pseudo & bit:
                error = f"pseudo-header {name!r} is unknown or repeated"
                break
            seen_pseudo |= bit
            if name == b":authority":
                head.authority = value
            elif name == b":path":
                head.path = value
            elif name == b":method":
                method = value
            else:
                scheme = value
            continue
        regular = True
        if name == b"content-type":
            head.is_grpc = value.startswith(_GRPC_CT)
        elif name == b"grpc-timeout":
            head.timeout_index = index
        elif name == b"host":
            host = value
    if validate and not error:
        if method == b"CONNECT":
            if seen_pseudo != _CONNECT_PSEUDO:
                error = "CONNECT needs :method and :authority only"
        elif not method or not scheme or not head.path:
            error = "request without :method, :scheme or a non-empty :path"
        elif host and head.authority and host != head.authority:
            error = "Host header differs from :authority"
    head.error = error
    if not head.authority:
        head.authority = host
    return head


def response_error(headers: Sequence[Header]) -> str:
    """Why a response header block is malformed (RFC 9113 8.2, 8.3.2), or "".

    Exactly one 3-digit `:status`, first; no other pseudo-header; well-formed
    regular fields (found well-formed before: a set lookup).
    """
    if not headers:
        return "no :status pseudo-header"
    name, value = headers[0]
    if name != b":status":
        return "no :status pseudo-header first"
    if len(value) != 3 or not value.isdigit():
        return f":status {value!r} is not a 3-digit code"
    checked = _checked
    for index in range(1, len(headers)):
        field = headers[index]
        name, value = field
        if name[:1] == b":":  # before the cache: it holds request pseudo-headers too
            return f"pseudo-header {name!r} not allowed here"
        if field in checked:
            continue
        error = _field_error(name, value)
        if error:
            return error
        if len(checked) >= _CHECKED_LIMIT:
            checked.clear()
        checked.add(field)
    return ""


def trailers_error(headers: Sequence[Header]) -> str:
    """Why a trailer block is malformed (pseudo-headers, bad names/values), or "".

    Checked on every relayed gRPC response: fields found well-formed before
    skip the regexes (the same memo as `scan_request`).
    """
    checked = _checked
    for field in headers:
        name, value = field
        if name[:1] == b":":
            return f"pseudo-header {name!r} in trailers"
        if name in CONNECTION_SPECIFIC:  # before the memo: `te: trailers` is fine in requests
            return f"header name {name!r} not allowed in trailers"
        if field in checked:
            continue
        if _BAD_NAME.search(name) is not None:
            return f"header name {name!r} not allowed in trailers"
        if _BAD_VALUE.search(value) is not None:
            return f"header {name!r} has a value with CR, LF, NUL or edge whitespace"
        if len(checked) >= _CHECKED_LIMIT:
            checked.clear()
        checked.add(field)
    return ""


def percent_encode_grpc_message(message: str) -> bytes:
    """gRPC's `grpc-message` encoding: UTF-8, then %XX for bytes outside 0x20-0x7E and '%'."""
    raw = message.encode("utf-8")
    return b"".join(bytes((b,)) if b in _UNRESERVED else b"%%%02X" % b for b in raw)


def grpc_error_headers(status: int, message: str, extra: Sequence[Header] = ()) -> list[Header]:
    """A trailers-only gRPC response (one HEADERS frame with END_STREAM), `extra` appended."""
    return [
        (b":status", b"200"),
        (b"content-type", _GRPC_CT),
        (b"grpc-status", b"%d" % status),
        (b"grpc-message", percent_encode_grpc_message(message)),
        *extra,
    ]


def http_error_response(
    status: int, message: str, extra: Sequence[Header] = ()
) -> tuple[list[Header], bytes]:
    """Headers (`extra` appended) and body of a plain-text error answer for non-gRPC callers."""
    body = message.encode("utf-8") + b"\n"
    return (
        [
            (b":status", b"%d" % status),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            *extra,
        ],
        body,
    )


def parse_pushback(value: bytes) -> float:
    """Seconds from a `grpc-retry-pushback-ms` value; -1.0 when it is not a non-negative
    decimal integer, which gRFC A6 reads as "do not retry"."""
    if not value.isdigit() or len(value) > 12:
        return -1.0
    return int(value) / 1000.0


def status_of(headers: Iterable[Header]) -> int:
    """The `:status` of a response block (0 when missing or unparsable)."""
    for name, value in headers:
        if name == b":status":
            return int(value) if value.isdigit() else 0
    return 0


def grpc_status_of(headers: Iterable[Header]) -> int:
    """The `grpc-status` of a trailer block; -1 when absent (not a complete gRPC answer)."""
    for name, value in headers:
        if name == b"grpc-status":
            return int(value) if value.isdigit() else 2
    return -1


def h1_request_to_h2(
    method: bytes, target: bytes, fields: Sequence[Header], scheme: bytes = b"http"
) -> list[Header]:
    """An HTTP/2 header block for an HTTP/1.1 request.

    Raises HeaderError when the request cannot be expressed in HTTP/2 (no Host,
    CONNECT or an absolute-form target we cannot honour).
    """
    if method == b"CONNECT":
        raise HeaderError("CONNECT is not supported by this proxy; send the request directly")
    path = target
    authority = b""
    if target.startswith((b"http://", b"https://")):
        scheme, _, rest = target.partition(b"://")
        authority, slash, path = rest.partition(b"/")
        path = slash + path or b"/"
    if not path.startswith(b"/") and path != b"*":
        raise HeaderError(f"request target {target!r}: expected origin-form such as /path")
    dropped = set(CONNECTION_SPECIFIC)
    lowered: list[Header] = []
    for name, value in fields:
        lname = name.lower()
        if lname == b"connection":
            dropped.update(token.strip().lower() for token in value.split(b","))
        lowered.append((lname, value))
    regular: list[Header] = []
    for name, value in lowered:
        if name == b"host":
            if not authority:
                authority = value
            continue
        if name == b"te":
            if value.strip().lower() == b"trailers":
                regular.append((name, b"trailers"))
            continue
        if name in dropped:
            continue
        regular.append((name, value))
    if not authority:
        raise HeaderError("HTTP/1.1 request without Host header: add 'Host: <service>'")
    return [
        (b":method", method),
        (b":scheme", scheme),
        (b":authority", authority),
        (b":path", path),
        *regular,
    ]


def h2_response_to_h1(
    headers: Sequence[Header], *, keep_alive: bool, body_allowed: bool
) -> tuple[bytes, bool]:
    """The HTTP/1.1 status line and fields for an HTTP/2 response block.

    Returns (head bytes, chunked): chunked when a body may follow and its
    length is unknown.
    """
    status = 0
    has_length = False
    lines: list[bytes] = []
    for name, value in headers:
        if name[:1] == b":":
            if name == b":status" and value.isdigit():
                status = int(value)
            continue
        if name in CONNECTION_SPECIFIC:
            continue
        if name == b"content-length":
            has_length = True
        lines.append(name + b": " + value)
    try:
        reason = HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        reason = b""
    chunked = body_allowed and not has_length and status not in (204, 304) and status >= 200
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    if not keep_alive:
        lines.append(b"connection: close")
    head = b"HTTP/1.1 %d %s\r\n" % (status, reason) + b"".join(x + b"\r\n" for x in lines) + b"\r\n"
    return head, chunked
