"""Validation of the security fields: JWT rules, API key auth, AuthorizationPolicy.

Same contract as the rest of validation: the first problem found raises
ConfigError(field, reason) with the field path in proto names. Patterns in
authorization rules allow one `*`, at the end only (a prefix) or alone.
"""

from __future__ import annotations

from skein.config.checks import check_duration, check_enum, check_header, check_name
from skein.errors import ConfigError
from skein.v1 import resources_pb2

__all__ = ["HTTP_METHODS", "check_authorization_spec", "check_policy_auth"]

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_SPIFFE = "spiffe://"


def _check_jwt_rule(rule: resources_pb2.JwtRule, at: str) -> None:
    if not rule.issuer:
        raise ConfigError(f"{at}.issuer", "required: the `iss` value tokens must carry")
    if bool(rule.jwks_file) == bool(rule.jwks_uri):
        raise ConfigError(
            f"{at}.jwks_file",
            "set exactly one of jwks_file (a JWKS document on the sidecar's disk) and "
            f"jwks_uri (an http:// URL), got {'both' if rule.jwks_file else 'neither'}",
        )
    if rule.jwks_uri and not rule.jwks_uri.startswith("http://"):
        raise ConfigError(
            f"{at}.jwks_uri",
            f"must be an http:// URL (served inside the mesh), got {rule.jwks_uri!r}",
        )
    for name in ("jwks_refresh", "clock_skew"):
        if rule.HasField(name):
            check_duration(getattr(rule, name), f"{at}.{name}")
    if rule.header:
        check_header(rule.header, f"{at}.header")
    for index, audience in enumerate(rule.audiences):
        if not audience:
            raise ConfigError(f"{at}.audiences[{index}]", "must not be empty")
    for claim, header in sorted(rule.forward_claims.items()):
        if not claim:
            raise ConfigError(f"{at}.forward_claims", "a claim name must not be empty")
        check_header(header, f"{at}.forward_claims[{claim!r}]")


def check_policy_auth(spec: resources_pb2.TrafficPolicySpec) -> None:
    """The mtls, jwt and api_keys fields of a TrafficPolicySpec."""
    check_enum(spec.mtls, resources_pb2.MtlsMode, "spec.mtls")
    issuers: dict[str, int] = {}
    for index, rule in enumerate(spec.jwt):
        at = f"spec.jwt[{index}]"
        _check_jwt_rule(rule, at)
        if rule.issuer in issuers:
            raise ConfigError(
                f"{at}.issuer",
                f"issuer {rule.issuer!r} already has spec.jwt[{issuers[rule.issuer]}]; "
                "one rule per issuer",
            )
        issuers[rule.issuer] = index
    if spec.api_keys.header:
        check_header(spec.api_keys.header, "spec.api_keys.header")


def _check_pattern(value: str, field: str, *, path: bool) -> None:
    if not value:
        raise ConfigError(field, "must not be empty")
    star = value.find("*")
    if star != -1 and star != len(value) - 1:
        raise ConfigError(
            field, f"'*' is allowed only at the end (a prefix) or alone, got {value!r}"
        )
    if any(c.isspace() for c in value):
        raise ConfigError(field, f"must not contain whitespace, got {value!r}")
    if path and value != "*" and not value.startswith("/"):
        raise ConfigError(
            field,
            f"must start with '/' (a gRPC method '/pkg.Service/Method' or an HTTP path) "
            f"or be '*', got {value!r}",
        )


def _check_source(value: str, field: str) -> None:
    _check_pattern(value, field, path=False)
    if value.startswith(_SPIFFE) or value.endswith("*"):
        return
    try:
        check_name(value, field)
    except ConfigError:
        raise ConfigError(
            field,
            f"must be a SPIFFE ID (spiffe://TRUST-DOMAIN/service/NAME), a service name, "
            f"or end with '*', got {value!r}",
        ) from None


def _check_rule(rule: resources_pb2.AuthorizationRule, at: str) -> None:
    for index, source in enumerate(rule.sources):
        _check_source(source, f"{at}.sources[{index}]")
    for index, path in enumerate(rule.paths):
        _check_pattern(path, f"{at}.paths[{index}]", path=True)
    for index, method in enumerate(rule.http_methods):
        if method not in HTTP_METHODS:
            raise ConfigError(
                f"{at}.http_methods[{index}]",
                f"unknown HTTP method {method!r}; expected one of "
                f"{', '.join(sorted(HTTP_METHODS))} (uppercase)",
            )
    for name in sorted(rule.headers):
        check_header(name, f"{at}.headers[{name!r}]")
    for claim in sorted(rule.claims):
        if not claim:
            raise ConfigError(f"{at}.claims", "a claim name must not be empty")
    for index, key in enumerate(rule.api_keys):
        check_name(key, f"{at}.api_keys[{index}]")


def check_authorization_spec(spec: resources_pb2.AuthorizationPolicySpec) -> None:
    check_name(spec.service, "spec.service")
    check_enum(spec.action, resources_pb2.AuthorizationAction, "spec.action")
    for index, rule in enumerate(spec.rules):
        _check_rule(rule, f"spec.rules[{index}]")
