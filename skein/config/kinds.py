"""Resource kinds: canonical names, aliases and the Resource oneof.

Invariants:
- a kind has one canonical spelling (`Service`, `TrafficPolicy`, `Endpoint`),
  used in etcd keys, error messages and manifests;
- user input accepts any case and the plural/short aliases kubectl users expect.
"""

from __future__ import annotations

from google.protobuf.message import Message  # type: ignore[import-untyped]

from skein.errors import ConfigError
from skein.v1 import resources_pb2

__all__ = [
    "KINDS",
    "STORED_ONLY",
    "kind_field",
    "kind_message_class",
    "make_resource",
    "parse_kind",
    "resource_kind",
    "resource_message",
    "resource_name",
]

# canonical kind -> field of the Resource oneof
KINDS: dict[str, str] = {
    "Service": "service",
    "TrafficPolicy": "traffic_policy",
    "Endpoint": "endpoint",
    "AuthorizationPolicy": "authorization_policy",
}

_CLASSES: dict[str, type[Message]] = {
    "Service": resources_pb2.Service,
    "TrafficPolicy": resources_pb2.TrafficPolicy,
    "Endpoint": resources_pb2.Endpoint,
    "AuthorizationPolicy": resources_pb2.AuthorizationPolicy,
}
# Kinds stored under resources/ that are not applied as manifests (written by
# their own operator calls, e.g. CreateApiKey) but that key parsing must know.
STORED_ONLY: dict[str, type[Message]] = {"ApiKey": resources_pb2.ApiKey}

_FIELD_TO_KIND = {field: kind for kind, field in KINDS.items()}

_ALIASES: dict[str, str] = {
    "service": "Service",
    "services": "Service",
    "svc": "Service",
    "trafficpolicy": "TrafficPolicy",
    "trafficpolicies": "TrafficPolicy",
    "traffic_policy": "TrafficPolicy",
    "traffic-policy": "TrafficPolicy",
    "tp": "TrafficPolicy",
    "endpoint": "Endpoint",
    "endpoints": "Endpoint",
    "ep": "Endpoint",
    "authorizationpolicy": "AuthorizationPolicy",
    "authorizationpolicies": "AuthorizationPolicy",
    "authorization_policy": "AuthorizationPolicy",
    "authorization-policy": "AuthorizationPolicy",
    "authz": "AuthorizationPolicy",
    "ap": "AuthorizationPolicy",
    "apikey": "ApiKey",
    "apikeys": "ApiKey",
    "api_key": "ApiKey",
    "api-key": "ApiKey",
}


def parse_kind(text: str, *, field: str = "kind") -> str:
    """Canonical kind for user input (`svc`, `TrafficPolicies`, ...)."""
    kind = _ALIASES.get(text.strip().lower())
    if kind is None:
        raise ConfigError(
            field,
            f"unknown kind {text!r}; expected one of Service (svc), TrafficPolicy (tp), "
            "Endpoint (ep), AuthorizationPolicy (authz), ApiKey",
        )
    return kind


def kind_field(kind: str) -> str:
    """Name of the Resource oneof field for a canonical kind."""
    return KINDS[kind]


def kind_message_class(kind: str) -> type[Message]:
    return _CLASSES.get(kind) or STORED_ONLY[kind]


def resource_kind(res: resources_pb2.Resource) -> str:
    """Canonical kind of a Resource; "" when the oneof is unset."""
    which = res.WhichOneof("kind")
    return _FIELD_TO_KIND.get(which, "") if which else ""


def resource_message(res: resources_pb2.Resource) -> Message:
    """The inner message (Service, TrafficPolicy or Endpoint)."""
    which = res.WhichOneof("kind")
    if which is None:
        raise ConfigError(
            "kind",
            "resource has no kind set; expected Service, TrafficPolicy, Endpoint or "
            "AuthorizationPolicy",
        )
    message: Message = getattr(res, which)
    return message


def resource_name(res: resources_pb2.Resource) -> str:
    """metadata.name of the inner message; "" when the oneof is unset."""
    which = res.WhichOneof("kind")
    if which is None:
        return ""
    name: str = getattr(res, which).metadata.name
    return name


def make_resource(kind: str, message: Message) -> resources_pb2.Resource:
    """Wrap an inner message in a Resource."""
    res = resources_pb2.Resource()
    getattr(res, KINDS[kind]).CopyFrom(message)
    return res
