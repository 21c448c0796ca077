"""`grpc-timeout` parsing and formatting (sans-IO).

Invariants:
- a parsed timeout is a non-negative number of seconds;
- a formatted timeout never rounds down (the upstream must not give up before
  this hop does) and always fits the spec's 8 digits.
"""

from __future__ import annotations

import math

__all__ = ["GrpcTimeoutError", "effective_timeout", "format_grpc_timeout", "parse_grpc_timeout"]

_UNIT_SECONDS = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}
# Finest unit first: the finest one that fits 8 digits loses the least.
_FORMAT_UNITS = (
    (b"n", 1e9),
    (b"u", 1e6),
    (b"m", 1e3),
    (b"S", 1.0),
    (b"M", 1 / 60),
    (b"H", 1 / 3600),
)
_MAX_DIGITS_VALUE = 99_999_999


class GrpcTimeoutError(ValueError):
    """A `grpc-timeout` header value does not follow the gRPC spec."""


def parse_grpc_timeout(value: bytes) -> float:
    """Seconds from a `grpc-timeout` value such as b"1240m".

    The spec: 1 to 8 ASCII digits followed by one of H M S m u n.
    """
    if not 2 <= len(value) <= 9:
        raise GrpcTimeoutError(
            f"grpc-timeout {value!r}: expected 1-8 digits and a unit (H, M, S, m, u, n)"
        )
    unit = _UNIT_SECONDS.get(value[-1])
    digits = value[:-1]
    if unit is None:
        raise GrpcTimeoutError(
            f"grpc-timeout {value!r}: unknown unit {chr(value[-1])!r}, use one of H M S m u n"
        )
    if not digits.isdigit():
        raise GrpcTimeoutError(f"grpc-timeout {value!r}: {digits!r} is not a decimal number")
    return int(digits) * unit


def format_grpc_timeout(seconds: float) -> bytes:
    """The `grpc-timeout` value for `seconds`, rounded up in the finest unit that fits."""
    if seconds <= 0:
        return b"1n"
    for unit, per_second in _FORMAT_UNITS:
        count = math.ceil(seconds * per_second)
        if count <= _MAX_DIGITS_VALUE:
            return b"%d%s" % (count, unit)
    return b"%dH" % _MAX_DIGITS_VALUE


def effective_timeout(caller: float | None, policy: float | None) -> float | None:
    """The tighter of the caller's deadline and the route's timeout (None: no limit)."""
    if caller is None:
        return policy
    if policy is None:
        return caller
    return caller if caller < policy else policy
