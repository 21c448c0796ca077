"""Validation of resources: the one place that decides what is valid.

The control daemon runs it on Apply and the sidecar runs it on every
snapshot, so both reject the same thing with the same words. Every error
names a field path in proto (snake_case) names and says what was expected
and what was found (protoc-gen-validate's field/reason shape).
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import duration_pb2  # type: ignore[import-untyped]

from skein.addr import parse_hostport
from skein.errors import AddressError, ConfigError
from skein.v1 import resources_pb2

__all__ = [
    "MAX_WEIGHT",
    "check_name",
    "format_duration",
    "validate_resource",
]

MAX_WEIGHT = 10_000
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_KEY = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


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


def format_duration(d: duration_pb2.Duration) -> str:
    """Duration as protobuf's JSON mapping writes it (`1.5s`, `-1s`)."""
    total = d.seconds + d.nanos / 1e9
    return f"{total:g}s"


def _check_enum(value: int, enum: Any, field: str) -> None:
    names = enum.keys()
    if value not in enum.values():
        known = ", ".join(n for n in names if not n.endswith("_UNSPECIFIED"))
        raise ConfigError(field, f"unknown value {value}; expected one of {known}")


def _check_meta(meta: resources_pb2.ObjectMeta) -> None:
    check_name(meta.name, "metadata.name")
    if meta.version < 0:
        raise ConfigError("metadata.version", f"must not be negative, got {meta.version}")
    for key, value in meta.labels.items():
        field = f"metadata.labels[{key!r}]"
        if not key or len(key) > 253 or not _LABEL_KEY.fullmatch(key):
            raise ConfigError(
                field,
                "label key must be 1-253 characters of letters, digits, '-', '_', '.', "
                "'/', starting and ending with a letter or digit",
            )
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise ConfigError(
                field,
                f"label value must be at most 63 characters of letters, digits, '-', "
                f"'_', '.', starting and ending with a letter or digit, got {value!r}",
            )


def _check_service(svc: resources_pb2.Service) -> None:
    spec = svc.spec
    _check_enum(spec.protocol, resources_pb2.Protocol, "spec.protocol")
    if spec.port > 65535:
        raise ConfigError("spec.port", f"must be 0-65535, got {spec.port}")
    if spec.http_path:
        if not spec.http_path.startswith("/"):
            raise ConfigError("spec.http_path", f"must start with '/', got {spec.http_path!r}")
        if any(c.isspace() for c in spec.http_path):
            raise ConfigError("spec.http_path", f"must not contain spaces, got {spec.http_path!r}")


def _check_duration(d: duration_pb2.Duration, field: str) -> None:
    if not -315_576_000_000 <= d.seconds <= 315_576_000_000 or not -999_999_999 <= d.nanos <= (
        999_999_999
    ):
        raise ConfigError(field, "duration out of range")
    if (d.seconds > 0 and d.nanos < 0) or (d.seconds < 0 and d.nanos > 0):
        raise ConfigError(field, "seconds and nanos must have the same sign")
    if d.seconds < 0 or d.nanos < 0 or (d.seconds == 0 and d.nanos == 0):
        raise ConfigError(field, f"must be positive, got {format_duration(d)}")


def _check_policy(tp: resources_pb2.TrafficPolicy) -> None:
    spec = tp.spec
    check_name(spec.service, "spec.service")
    _check_enum(
        spec.load_balancer.algorithm,
        resources_pb2.LoadBalancerAlgorithm,
        "spec.load_balancer.algorithm",
    )
    if spec.HasField("timeout"):
        _check_duration(spec.timeout, "spec.timeout")
    lb = spec.load_balancer
    if lb.algorithm in (resources_pb2.RING_HASH, resources_pb2.MAGLEV) and not lb.HasField("hash"):
        raise ConfigError(
            "spec.load_balancer.hash",
            "required for RING_HASH and MAGLEV: set `header: NAME` or `source_ip: true`",
        )
    for i, rl in enumerate(spec.rate_limits):
        at = f"spec.rate_limits[{i}]"
        _check_enum(rl.algorithm, resources_pb2.RateLimitAlgorithm, f"{at}.algorithm")
        _check_enum(rl.scope, resources_pb2.RateLimitScope, f"{at}.scope")
        _check_enum(rl.direction, resources_pb2.Direction, f"{at}.direction")
        if rl.requests == 0:
            raise ConfigError(f"{at}.requests", "must be positive, got 0")
        _check_duration(rl.period, f"{at}.period")


def _check_endpoint(ep: resources_pb2.Endpoint) -> None:
    spec = ep.spec
    check_name(spec.service, "spec.service")
    if not spec.address:
        raise ConfigError("spec.address", "required: HOST:PORT of the instance's inbound listener")
    try:
        _host, port = parse_hostport(spec.address)
    except AddressError as err:
        raise ConfigError("spec.address", err.reason) from None
    if port == 0:
        raise ConfigError("spec.address", f"port must be 1-65535, got 0 in {spec.address!r}")
    if spec.weight > MAX_WEIGHT:
        raise ConfigError("spec.weight", f"must be at most {MAX_WEIGHT}, got {spec.weight}")
    _check_enum(spec.health, resources_pb2.HealthState, "spec.health")


def validate_resource(res: resources_pb2.Resource) -> None:
    """Raise ConfigError(field, reason) for the first problem found.

    The error carries no `where`; callers add the resource (`TrafficPolicy/orders`)
    or the manifest position (`file.yaml#2`).
    """
    which = res.WhichOneof("kind")
    if which == "service":
        _check_meta(res.service.metadata)
        _check_service(res.service)
    elif which == "traffic_policy":
        _check_meta(res.traffic_policy.metadata)
        _check_policy(res.traffic_policy)
    elif which == "endpoint":
        _check_meta(res.endpoint.metadata)
        _check_endpoint(res.endpoint)
    else:
        raise ConfigError(
            "kind", "resource has no kind set; expected Service, TrafficPolicy or Endpoint"
        )
