"""Protobuf → frozen model for the security fields of the own service.

Called by parse_snapshot after validation; the snapshot's AuthorizationPolicy
and ApiKey resources are validated here too, each error naming the resource.
"""

from __future__ import annotations

from collections.abc import Iterable

from skein.config.checks import check_name, seconds
from skein.config.kinds import make_resource
from skein.config.model import (
    ApiKeyAuthConfig,
    AuthzAction,
    AuthzPolicyConfig,
    AuthzRuleConfig,
    JwtRuleConfig,
    MtlsMode,
)
from skein.config.validate import validate_resource
from skein.errors import ConfigError
from skein.v1 import resources_pb2

__all__ = ["api_key_auth_config", "authorization_configs", "jwt_configs", "mtls_mode"]

_JWT = JwtRuleConfig(issuer="")
_HEX = frozenset("0123456789abcdef")


def mtls_mode(spec: resources_pb2.TrafficPolicySpec) -> MtlsMode:
    return MtlsMode.STRICT if spec.mtls == resources_pb2.STRICT else MtlsMode.PERMISSIVE


def _jwt(rule: resources_pb2.JwtRule) -> JwtRuleConfig:
    return JwtRuleConfig(
        issuer=rule.issuer,
        audiences=tuple(rule.audiences),
        jwks_file=rule.jwks_file,
        jwks_uri=rule.jwks_uri,
        jwks_refresh=(
            seconds(rule.jwks_refresh) if rule.HasField("jwks_refresh") else _JWT.jwks_refresh
        ),
        clock_skew=seconds(rule.clock_skew) if rule.HasField("clock_skew") else _JWT.clock_skew,
        header=rule.header or _JWT.header,
        forward_claims=tuple(sorted(rule.forward_claims.items())),
        required=rule.required,
    )


def jwt_configs(spec: resources_pb2.TrafficPolicySpec) -> tuple[JwtRuleConfig, ...]:
    return tuple(_jwt(rule) for rule in spec.jwt)


def _check_api_key(key: resources_pb2.ApiKey, service: str) -> None:
    where = f"ApiKey/{key.metadata.name or '?'}"
    try:
        check_name(key.metadata.name, "metadata.name")
        if key.spec.service != service:
            raise ConfigError(
                "spec.service", f"must equal the own service {service!r}, got {key.spec.service!r}"
            )
        digest = key.spec.sha256
        if len(digest) != 64 or not set(digest) <= _HEX:
            raise ConfigError("spec.sha256", "must be 64 lowercase hex digits (a SHA-256 digest)")
    except ConfigError as err:
        raise ConfigError(err.field, err.reason, where=where) from None


def api_key_auth_config(
    spec: resources_pb2.TrafficPolicySpec | None,
    keys: Iterable[resources_pb2.ApiKey],
    service: str,
    rules_name_keys: bool,
) -> ApiKeyAuthConfig | None:
    """None unless the policy sets api_keys or an authorization rule names a key."""
    stored = []
    for key in keys:
        _check_api_key(key, service)
        if not key.spec.revoked:
            stored.append((key.spec.sha256, key.metadata.name))
    if spec is not None and spec.HasField("api_keys"):
        auth = spec.api_keys
        return ApiKeyAuthConfig(
            header=auth.header or "x-api-key", required=auth.required, keys=tuple(sorted(stored))
        )
    if rules_name_keys:
        return ApiKeyAuthConfig(keys=tuple(sorted(stored)))
    return None


def _rule(rule: resources_pb2.AuthorizationRule) -> AuthzRuleConfig:
    return AuthzRuleConfig(
        sources=tuple(rule.sources),
        paths=tuple(rule.paths),
        http_methods=tuple(rule.http_methods),
        headers=tuple(sorted(rule.headers.items())),
        claims=tuple(sorted(rule.claims.items())),
        api_keys=tuple(rule.api_keys),
    )


def authorization_configs(
    policies: Iterable[resources_pb2.AuthorizationPolicy], service: str
) -> tuple[AuthzPolicyConfig, ...]:
    """Validated policies protecting `service`, sorted by name."""
    out: dict[str, AuthzPolicyConfig] = {}
    for policy in policies:
        name = policy.metadata.name
        where = f"AuthorizationPolicy/{name or '?'}"
        try:
            validate_resource(make_resource("AuthorizationPolicy", policy))
        except ConfigError as err:
            raise ConfigError(err.field, err.reason, where=where) from None
        if policy.spec.service != service:
            raise ConfigError(
                "spec.service",
                f"must equal the own service {service!r}, got {policy.spec.service!r}",
                where=where,
            )
        if name in out:
            raise ConfigError("metadata.name", "duplicate policy in the snapshot", where=where)
        action = AuthzAction.DENY if policy.spec.action == resources_pb2.DENY else AuthzAction.ALLOW
        out[name] = AuthzPolicyConfig(
            name=name, action=action, rules=tuple(_rule(r) for r in policy.spec.rules)
        )
    return tuple(out[name] for name in sorted(out))
