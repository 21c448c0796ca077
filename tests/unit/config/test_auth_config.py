"""Security config: validation names the field; snapshots build the auth model."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from skein.config import (
    make_resource,
    parse_kind,
    parse_manifest,
    parse_snapshot,
    validate_resource,
)
from skein.config.model import (
    ApiKeyAuthConfig,
    AuthzAction,
    AuthzPolicyConfig,
    AuthzRuleConfig,
    JwtRuleConfig,
    LocalConfig,
    MtlsMode,
)
from skein.errors import ConfigError
from skein.v1 import discovery_pb2, resources_pb2


def traffic_policy(**spec: object) -> resources_pb2.TrafficPolicy:
    tp = resources_pb2.TrafficPolicy()
    tp.metadata.name = "cart"
    tp.spec.service = "cart"
    for name, value in spec.items():
        if name == "jwt":
            for rule in value:  # type: ignore[attr-defined]
                tp.spec.jwt.add(**rule)
        elif name == "api_keys":
            tp.spec.api_keys.CopyFrom(resources_pb2.ApiKeyAuth(**value))  # type: ignore[arg-type]
        else:
            setattr(tp.spec, name, value)
    return tp


def authz(action: int = resources_pb2.ALLOW, **rule: Any) -> resources_pb2.AuthorizationPolicy:
    ap = resources_pb2.AuthorizationPolicy()
    ap.metadata.name = "cart-readers"
    ap.spec.service = "cart"
    ap.spec.action = action  # type: ignore[assignment]
    if rule:
        ap.spec.rules.add(**rule)
    return ap


def error(message: object, kind: str) -> tuple[str, str]:
    with pytest.raises(ConfigError) as info:
        validate_resource(make_resource(kind, message))  # type: ignore[arg-type]
    return info.value.field, info.value.reason


GOOD_RULE = {"issuer": "https://issuer.example", "jwks_file": "/etc/jwks.json"}


def test_valid_security_fields_pass() -> None:
    validate_resource(
        make_resource(
            "TrafficPolicy",
            traffic_policy(
                mtls=resources_pb2.STRICT,
                jwt=[dict(GOOD_RULE, forward_claims={"sub": "x-user"}, audiences=["cart"])],
                api_keys={"header": "x-key", "required": True},
            ),
        )
    )
    validate_resource(make_resource("AuthorizationPolicy", authz(paths=["/shop.Cart/*"])))


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ({"jwks_file": "/j"}, "spec.jwt[0].issuer", "required"),
        ({"issuer": "i"}, "spec.jwt[0].jwks_file", "neither"),
        (
            {"issuer": "i", "jwks_file": "/j", "jwks_uri": "http://x/j"},
            "spec.jwt[0].jwks_file",
            "both",
        ),
        ({"issuer": "i", "jwks_uri": "https://x/j"}, "spec.jwt[0].jwks_uri", "http://"),
        (dict(GOOD_RULE, header="Authorization"), "spec.jwt[0].header", "lowercase"),
        (
            dict(GOOD_RULE, forward_claims={"sub": "X-User"}),
            "spec.jwt[0].forward_claims['sub']",
            "lowercase",
        ),
        (dict(GOOD_RULE, clock_skew={"seconds": -1}), "spec.jwt[0].clock_skew", "positive"),
    ],
)
def test_jwt_rule_errors_name_the_field(rule: dict[str, object], field: str, words: str) -> None:
    got_field, reason = error(traffic_policy(jwt=[rule]), "TrafficPolicy")
    assert got_field == field
    assert words in reason


def test_one_rule_per_issuer() -> None:
    field, reason = error(traffic_policy(jwt=[GOOD_RULE, GOOD_RULE]), "TrafficPolicy")
    assert field == "spec.jwt[1].issuer"
    assert "one rule per issuer" in reason


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ({"paths": ["shop.Cart/Get"]}, "spec.rules[0].paths[0]", "must start with '/'"),
        ({"paths": ["/shop*/Get"]}, "spec.rules[0].paths[0]", "only at the end"),
        ({"http_methods": ["get"]}, "spec.rules[0].http_methods[0]", "unknown HTTP method"),
        ({"headers": {"X-Tenant": "a"}}, "spec.rules[0].headers['X-Tenant']", "lowercase"),
        ({"sources": ["Not A Name"]}, "spec.rules[0].sources[0]", "whitespace"),
        ({"sources": ["Shop"]}, "spec.rules[0].sources[0]", "SPIFFE ID"),
        ({"api_keys": ["Bad_Key"]}, "spec.rules[0].api_keys[0]", "DNS label"),
    ],
)
def test_authorization_rule_errors_name_the_field(
    rule: dict[str, Any], field: str, words: str
) -> None:
    got_field, reason = error(authz(**rule), "AuthorizationPolicy")
    assert got_field == field
    assert words in reason


def test_authorization_kind_aliases_and_manifest() -> None:
    assert parse_kind("authz") == parse_kind("AuthorizationPolicies") == "AuthorizationPolicy"
    assert parse_kind("apikey") == "ApiKey"
    res = parse_manifest(
        {
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "cart-readers"},
            "spec": {"service": "cart", "action": "DENY", "rules": [{"paths": ["/admin*"]}]},
        }
    )
    assert res.authorization_policy.spec.action == resources_pb2.DENY
    with pytest.raises(ConfigError, match="not applied from a manifest"):
        parse_manifest({"kind": "ApiKey", "metadata": {"name": "k"}, "spec": {}})


def test_snapshot_builds_the_auth_model() -> None:
    snap = discovery_pb2.Snapshot()
    snap.local_policy.CopyFrom(
        traffic_policy(
            mtls=resources_pb2.STRICT,
            jwt=[dict(GOOD_RULE, forward_claims={"sub": "x-user"}, required=True)],
            api_keys={"required": True},
        )
    )
    snap.authorization.append(authz(sources=["shop"], api_keys=["ci"]))
    deny = authz(resources_pb2.DENY, paths=["/admin*"])
    deny.metadata.name = "a-deny"
    snap.authorization.append(deny)
    digest = hashlib.sha256(b"sk_x").hexdigest()
    for name, revoked in (("ci", False), ("old", True)):
        key = snap.api_keys.add()
        key.metadata.name, key.spec.service, key.spec.sha256 = name, "cart", digest
        key.spec.revoked = revoked
    local = parse_snapshot("1", snap).local
    assert local.mtls is MtlsMode.STRICT
    assert local.jwt == (
        JwtRuleConfig(
            issuer="https://issuer.example",
            jwks_file="/etc/jwks.json",
            forward_claims=(("sub", "x-user"),),
            required=True,
        ),
    )
    assert local.api_keys == ApiKeyAuthConfig(required=True, keys=((digest, "ci"),))
    assert local.authorization == (
        AuthzPolicyConfig("a-deny", AuthzAction.DENY, (AuthzRuleConfig(paths=("/admin*",)),)),
        AuthzPolicyConfig(
            "cart-readers",
            AuthzAction.ALLOW,
            (AuthzRuleConfig(sources=("shop",), api_keys=("ci",)),),
        ),
    )
    assert local.has_auth


def test_snapshot_without_auth_has_none() -> None:
    local = parse_snapshot("1", discovery_pb2.Snapshot()).local
    assert local == LocalConfig()
    assert not local.has_auth


def test_snapshot_refuses_a_policy_for_another_service() -> None:
    snap = discovery_pb2.Snapshot()
    snap.local_policy.CopyFrom(traffic_policy())
    other = authz()
    other.spec.service = "orders"
    snap.authorization.append(other)
    with pytest.raises(ConfigError) as info:
        parse_snapshot("1", snap)
    assert info.value.where == "AuthorizationPolicy/cart-readers"
    assert "own service 'cart'" in info.value.reason


def test_snapshot_refuses_a_malformed_api_key_digest() -> None:
    snap = discovery_pb2.Snapshot()
    key = snap.api_keys.add()
    key.metadata.name, key.spec.service, key.spec.sha256 = "k", "cart", "xyz"
    snap.authorization.append(authz(api_keys=["k"]))
    with pytest.raises(ConfigError) as info:
        parse_snapshot("1", snap)
    assert (info.value.where, info.value.field) == ("ApiKey/k", "spec.sha256")
