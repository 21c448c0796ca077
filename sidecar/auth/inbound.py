"""The inbound side's per-call check: JWT, API key, then authorization.

Order (Envoy's jwt_authn then rbac): a token that is present is verified
(a bad one is refused even when tokens are optional, as Istio does), a
required one must be present; an API key likewise; then the
AuthorizationPolicies decide with the peer identity, path, method, headers,
the verified claims and the key's name. Refusals raise NoRoute:
UNAUTHENTICATED (16) / 401 with the reason, PERMISSION_DENIED (7) / 403
naming the deciding rule.

Claims named in forward_claims reach the app as headers; the same header
names arriving from the caller are always removed first, so a caller can
not pose as a verified claim. The Authorization header passes unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from sidecar.auth.authz import Authorizer, AuthzRequest
from sidecar.auth.jwt import JwtError, JwtVerifier, KeySource, decode_unverified
from sidecar.transport.contract import NoRoute
from skein.config.model import JwtRuleConfig, LocalConfig

__all__ = ["PERMISSION_DENIED", "UNAUTHENTICATED", "AuthStats", "InboundAuth"]

Header = tuple[bytes, bytes]
UNAUTHENTICATED = 16
PERMISSION_DENIED = 7
_BEARER = "bearer "


class AuthStats:
    """Plain counters the metrics view copies at scrape time (kept across config pushes)."""

    __slots__ = ("allowed", "api_key_failures", "denied", "jwt")

    def __init__(self) -> None:
        self.denied: dict[str, int] = {}  # policy name ("" = no ALLOW matched) -> refusals
        self.jwt: dict[str, int] = {}  # result ("ok", "missing", reason) -> count
        self.api_key_failures = 0
        self.allowed = 0

    def count_jwt(self, result: str) -> None:
        self.jwt[result] = self.jwt.get(result, 0) + 1


def _unauthenticated(reason: str) -> NoRoute:
    return NoRoute(f"unauthenticated: {reason}", UNAUTHENTICATED, 401)


def _claim_header(value: Any) -> bytes:
    """A claim as a header value: strings as they are, other values as JSON; control
    characters (CR, LF, NUL, ...) dropped so a claim can never split a header."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    raw = text.encode("utf-8", "replace")
    return raw.translate(None, _CONTROL) if _has_control(raw) else raw


_CONTROL = bytes(range(32)) + b"\x7f"


def _has_control(raw: bytes) -> bool:
    return any(b < 32 or b == 127 for b in raw)


class InboundAuth:
    """One LocalConfig's checks, compiled; `check` runs once per inbound call."""

    __slots__ = (
        "_api_header",
        "_api_keys",
        "_api_required",
        "_authorizer",
        "_forwarded",
        "_jwt_required",
        "_needed",
        "_several_issuers",
        "_single",
        "_verifiers",
        "_wall",
        "stats",
    )

    def __init__(
        self,
        local: LocalConfig,
        sources: Callable[[JwtRuleConfig], KeySource],
        stats: AuthStats,
        wall: Callable[[], float],
    ) -> None:
        self.stats = stats
        self._wall = wall
        self._verifiers = tuple(JwtVerifier(rule, sources(rule)) for rule in local.jwt)
        self._jwt_required = any(rule.required for rule in local.jwt)
        self._several_issuers = len(local.jwt) > 1
        self._forwarded = frozenset(
            header.encode() for rule in local.jwt for _claim, header in rule.forward_claims
        )
        api = local.api_keys
        self._api_header = api.header if api is not None else ""
        self._api_required = api is not None and api.required
        self._api_keys = {digest: name for digest, name in api.keys} if api is not None else {}
        self._authorizer = Authorizer(local.authorization) if local.authorization else None
        # the only header fields a check reads: decoded per call, the rest never
        needed = {rule.header for rule in local.jwt}
        if api is not None:
            needed.add(api.header)
        for policy in local.authorization:
            for r in policy.rules:
                if r.http_methods:
                    needed.add(":method")
                needed.update(name for name, _value in r.headers)
        self._needed = frozenset(name.encode() for name in needed)
        # credentials: one copy only (the token checked must be the one the app sees)
        single = {rule.header for rule in local.jwt}
        if api is not None:
            single.add(api.header)
        self._single = frozenset(name.encode() for name in single)

    def _jwt(
        self, headers: dict[str, str], now: float
    ) -> tuple[dict[str, Any], JwtVerifier] | None:
        error = ""
        for verifier in self._verifiers:
            rule = verifier.rule
            raw = headers.get(rule.header)
            if raw is None:
                continue
            if rule.header == "authorization":
                if raw[:7].lower() != _BEARER:
                    continue
                raw = raw[7:].strip()
            try:
                if self._several_issuers:
                    _header, unverified, _input, _sig = decode_unverified(raw)
                    if unverified.get("iss") != rule.issuer:
                        error = error or "wrong issuer"
                        continue
                return verifier.verify(raw, self._wall(), now), verifier
            except JwtError as err:
                self.stats.count_jwt(err.kind)
                raise _unauthenticated(f"JWT refused: {err.reason}") from None
        if error:
            self.stats.count_jwt(error)
            raise _unauthenticated(f"JWT refused: {error}")
        if self._jwt_required:
            self.stats.count_jwt("missing")
            raise _unauthenticated("a JWT is required (Authorization: Bearer <token>)")
        return None

    def _api_key(self, headers: dict[str, str]) -> str:
        value = headers.get(self._api_header)
        if value is None:
            if self._api_required:
                self.stats.api_key_failures += 1
                raise _unauthenticated(f"an API key is required in header {self._api_header!r}")
            return ""
        name = self._api_keys.get(hashlib.sha256(value.encode("utf-8", "replace")).hexdigest())
        if name is None:
            self.stats.api_key_failures += 1
            raise _unauthenticated(f"unknown or revoked API key in header {self._api_header!r}")
        return name

    def dump(self) -> dict[str, Any]:
        """For /config_dump: what is checked, the key sources' state, and the counters."""
        return {
            "jwt": [
                {
                    "issuer": v.rule.issuer,
                    "required": v.rule.required,
                    "jwks": v.rule.jwks_file or v.rule.jwks_uri,
                    "keys": [k.kid for k in v.keys.keys],
                    "jwks_error": v.keys.error,
                }
                for v in self._verifiers
            ],
            "api_keys": (
                {
                    "header": self._api_header,
                    "required": self._api_required,
                    "keys": len(self._api_keys),
                }
                if self._api_header
                else None
            ),
            "authorization": self._authorizer.dump() if self._authorizer is not None else [],
            "counters": {
                "allowed": self.stats.allowed,
                "denied": dict(self.stats.denied),
                "jwt": dict(self.stats.jwt),
                "api_key_failures": self.stats.api_key_failures,
            },
        }

    def check(
        self, path: str, block: Sequence[Header], identity: str, now: float
    ) -> Sequence[Header] | None:
        """Raise NoRoute to refuse; else the header block to forward (None: unchanged)."""
        headers: dict[str, str] = {}
        needed = self._needed
        for name, value in block:
            if name in needed:
                key = name.decode("latin-1")
                if key in headers and name in self._single:
                    # the app might read the other copy: refuse rather than guess
                    self.stats.count_jwt("repeated header")
                    raise _unauthenticated(f"header {key!r} is sent more than once")
                headers[key] = value.decode("latin-1")
        found = self._jwt(headers, now) if self._verifiers else None
        claims: dict[str, Any] = found[0] if found is not None else {}
        if found is not None:
            self.stats.count_jwt("ok")
        key_name = self._api_key(headers) if self._api_header else ""
        authorizer = self._authorizer
        if authorizer is not None:
            decision = authorizer.evaluate(
                AuthzRequest(identity, path, headers.get(":method", ""), headers, claims, key_name)
            )
            if not decision.allowed:
                denied = self.stats.denied
                denied[decision.policy] = denied.get(decision.policy, 0) + 1
                raise NoRoute(f"permission denied: {decision.reason}", PERMISSION_DENIED, 403)
        self.stats.allowed += 1
        forwarded = self._forwarded
        if not forwarded:
            return None
        out = [h for h in block if h[0] not in forwarded]
        if found is not None:
            for claim, header in found[1].rule.forward_claims:
                got = claims.get(claim)
                if got is not None:
                    out.append((header.encode(), _claim_header(got)))
        return out
