"""Validation of resources: the one place that decides what is valid.

The control daemon runs it on Apply and the sidecar runs it on every
snapshot, so both reject the same thing with the same words. Every error
names a field path in proto (snake_case) names and says what was expected
and what was found (protoc-gen-validate's field/reason shape).
"""

from __future__ import annotations

import re

from skein.addr import parse_hostport
from skein.config.checks import check_enum, check_name, format_duration
from skein.config.validate_auth import check_authorization_spec
from skein.config.validate_policy import MAX_WEIGHT, check_policy_spec
from skein.errors import AddressError, ConfigError
from skein.v1 import resources_pb2

__all__ = [
    "MAX_WEIGHT",
    "check_name",
    "format_duration",
    "validate_resource",
]

MAX_HEALTH_REASON = 1024
_LABEL_KEY = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


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
    check_enum(spec.protocol, resources_pb2.Protocol, "spec.protocol")
    if spec.port > 65535:
        raise ConfigError("spec.port", f"must be 0-65535, got {spec.port}")
    if spec.http_path:
        if not spec.http_path.startswith("/"):
            raise ConfigError("spec.http_path", f"must start with '/', got {spec.http_path!r}")
        if any(c.isspace() for c in spec.http_path):
            raise ConfigError("spec.http_path", f"must not contain spaces, got {spec.http_path!r}")


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
    check_enum(spec.health, resources_pb2.HealthState, "spec.health")
    if len(spec.health_reason) > MAX_HEALTH_REASON:
        raise ConfigError(
            "spec.health_reason",
            f"must be at most {MAX_HEALTH_REASON} characters, got {len(spec.health_reason)}",
        )


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
        check_policy_spec(res.traffic_policy.spec)
    elif which == "endpoint":
        _check_meta(res.endpoint.metadata)
        _check_endpoint(res.endpoint)
    elif which == "authorization_policy":
        _check_meta(res.authorization_policy.metadata)
        check_authorization_spec(res.authorization_policy.spec)
    else:
        raise ConfigError(
            "kind",
            "resource has no kind set; expected Service, TrafficPolicy, Endpoint or "
            "AuthorizationPolicy",
        )
