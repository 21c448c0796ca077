"""Field checks shared by every resource's validation.

Each check raises ConfigError(field, reason) where the reason says what was
expected and what was found; callers pass the full field path in proto
(snake_case) names with indexes (`spec.rate_limits[1].period`).
"""

from __future__ import annotations

import math
import re
from typing import Any

from google.protobuf import duration_pb2  # type: ignore[import-untyped]

from skein.errors import ConfigError

__all__ = [
    "check_duration",
    "check_enum",
    "check_header",
    "check_name",
    "check_path_prefix",
    "check_ratio",
    "format_duration",
    "seconds",
]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# RFC 9110 token characters, lowercase only: HTTP/2 field names are lowercase.
_HEADER = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_MAX_SECONDS = 315_576_000_000  # protobuf Duration's range (10,000 years)


def check_name(value: str, field: str) -> None:
    """A lowercase DNS label (RFC 1123), at most 63 characters."""
    if not value:
        raise ConfigError(field, "required: a lowercase DNS label such as 'orders'")
    if len(value) > 63:
        raise ConfigError(field, f"must be at most 63 characters, got {len(value)}")
    if not _DNS_LABEL.fullmatch(value):
        raise ConfigError(
            field,
            f"must be a lowercase DNS label (a-z, 0-9, '-', starting and ending with a "
            f"letter or digit), got {value!r}",
        )


def seconds(d: duration_pb2.Duration) -> float:
    """A Duration as float seconds."""
    return float(d.seconds + d.nanos / 1e9)


def format_duration(d: duration_pb2.Duration | float) -> str:
    """Duration as protobuf's JSON mapping writes it (`1.5s`, `-1s`)."""
    total = d if isinstance(d, float | int) else seconds(d)
    return f"{total:g}s"


def check_duration(d: duration_pb2.Duration, field: str) -> None:
    """A set Duration must be well-formed and positive (unset is the caller's business)."""
    if not -_MAX_SECONDS <= d.seconds <= _MAX_SECONDS or not -999_999_999 <= d.nanos <= (
        999_999_999
    ):
        raise ConfigError(field, "duration out of range")
    if (d.seconds > 0 and d.nanos < 0) or (d.seconds < 0 and d.nanos > 0):
        raise ConfigError(field, "seconds and nanos must have the same sign")
    if d.seconds < 0 or d.nanos < 0:
        raise ConfigError(field, f"must be positive, got {format_duration(d)}")
    if d.seconds == 0 and d.nanos == 0:
        raise ConfigError(field, "must be positive, got 0s; leave it unset for the default")


def check_enum(value: int, enum: Any, field: str) -> None:
    """A known value of a generated protobuf enum."""
    if value not in enum.values():
        names = enum.keys()
        known = ", ".join(n for n in names if not n.endswith("_UNSPECIFIED"))
        raise ConfigError(field, f"unknown value {value}; expected one of {known}")


def check_header(value: str, field: str) -> None:
    """A header name as HTTP/2 carries it: a lowercase RFC 9110 token."""
    if not value:
        raise ConfigError(field, "required: a lowercase header name such as 'x-user'")
    if _HEADER.fullmatch(value):
        return
    if _HEADER.fullmatch(value.lower()):
        raise ConfigError(
            field,
            f"must be lowercase (HTTP/2 sends header names lowercase), got {value!r}; "
            f"write {value.lower()!r}",
        )
    raise ConfigError(
        field,
        f"must be a header name (letters, digits and !#$%&'*+-.^_`|~), got {value!r}",
    )


def check_path_prefix(value: str, field: str) -> None:
    """A path prefix: starts with '/', no whitespace."""
    if not value.startswith("/"):
        raise ConfigError(
            field,
            f"must start with '/' (a gRPC method '/pkg.Service/Method', a service "
            f"'/pkg.Service/' or an HTTP path), got {value!r}",
        )
    if any(c.isspace() for c in value):
        raise ConfigError(field, f"must not contain whitespace, got {value!r}")


def check_ratio(value: float, field: str, *, default: float) -> None:
    """A share in (0, 1]; 0 means the default."""
    if math.isnan(value) or not 0 <= value <= 1:
        raise ConfigError(
            field, f"must be in (0, 1] (0 or unset for the default {default:g}), got {value!r}"
        )
