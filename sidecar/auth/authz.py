"""Authorization: does a call's who/what match the service's AuthorizationPolicies.

Sans-IO, evaluated as Istio does:
1. any matching rule of a DENY policy denies;
2. when ALLOW policies exist, a call must match a rule of one of them
   (an ALLOW policy without rules matches nothing: default-deny);
3. otherwise the call is allowed.
A rule matches when every non-empty field matches (fields AND, values OR).
Patterns are exact, `*` (anything), or `prefix*`. A source is a SPIFFE ID,
a service name (the SPIFFE ID's `/service/NAME`), or a pattern of either;
`*` matches any authenticated peer, never a plaintext one (identity "").
Every decision carries the rule that decided, for the 403 and the logs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from skein.config.model import AuthzAction, AuthzPolicyConfig, AuthzRuleConfig

__all__ = ["Authorizer", "AuthzRequest", "Decision", "Pattern", "normalize_path"]

_SPIFFE = "spiffe://"
_SERVICE = "/service/"
_SLASHES = re.compile(r"/{2,}")


def normalize_path(path: str) -> str:
    """The path rules match against: no query or fragment, percent-decoded, `//`
    merged and `.`/`..` resolved, so `/a/../admin` or `/%61dmin` can not slip past
    a rule for `/admin` (Envoy's normalize_path and merge_slashes). Plain paths,
    every gRPC method among them, come back as they are."""
    for mark in ("?", "#"):
        cut = path.find(mark)
        if cut != -1:
            path = path[:cut]
    if "%" not in path and "//" not in path and "/." not in path:
        return path
    decoded = _SLASHES.sub("/", unquote(path))
    normal = posixpath.normpath(decoded) if decoded else "/"
    if decoded.endswith("/") and not normal.endswith("/"):
        normal += "/"
    return normal if normal.startswith("/") else "/" + normal


class Pattern:
    """Compiled values of one rule field: exact strings and prefixes (OR)."""

    __slots__ = ("any", "exact", "prefixes")

    def __init__(self, values: tuple[str, ...]) -> None:
        self.any = "*" in values
        self.exact = frozenset(v for v in values if not v.endswith("*"))
        self.prefixes = tuple(v[:-1] for v in values if v.endswith("*") and v != "*")

    def match(self, value: str) -> bool:
        return self.any or value in self.exact or value.startswith(self.prefixes)


def _service_of(identity: str) -> str:
    """`orders` for spiffe://td/service/orders; "" when not of that shape."""
    at = identity.rfind(_SERVICE)
    return identity[at + len(_SERVICE) :] if at != -1 else ""


class _Sources:
    """Source patterns: full SPIFFE IDs (or prefixes) and service names (or prefixes)."""

    __slots__ = ("ids", "names")

    def __init__(self, values: tuple[str, ...]) -> None:
        self.ids = Pattern(tuple(v for v in values if v.startswith(_SPIFFE) or v == "*"))
        self.names = Pattern(tuple(v for v in values if not v.startswith(_SPIFFE) and v != "*"))

    def match(self, identity: str) -> bool:
        if not identity:
            return False
        if self.ids.match(identity):
            return True
        name = _service_of(identity)
        return bool(name) and self.names.match(name)


class AuthzRequest:
    """What a rule can look at. `headers`: lowercase names; `claims`: a verified JWT's."""

    __slots__ = ("api_key", "claims", "headers", "identity", "match_path", "method", "path")

    def __init__(
        self,
        identity: str = "",
        path: str = "",
        method: str = "",
        headers: Mapping[str, str] | None = None,
        claims: Mapping[str, Any] | None = None,
        api_key: str = "",
    ) -> None:
        self.identity = identity
        self.path = path
        self.match_path = normalize_path(path)
        self.method = method
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.claims: Mapping[str, Any] = claims if claims is not None else {}
        self.api_key = api_key


def _claim_text(value: Any) -> list[str]:
    """A claim's values as text: a list claim matches when any element does (Istio)."""
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    return [str(value)]


class _Rule:
    __slots__ = ("api_keys", "claims", "headers", "label", "methods", "paths", "sources")

    def __init__(self, rule: AuthzRuleConfig, label: str) -> None:
        self.label = label
        self.sources = _Sources(rule.sources) if rule.sources else None
        self.paths = Pattern(rule.paths) if rule.paths else None
        self.methods = frozenset(rule.http_methods)
        self.headers = rule.headers
        self.claims = rule.claims
        self.api_keys = frozenset(rule.api_keys)

    def match(self, req: AuthzRequest) -> bool:
        if self.sources is not None and not self.sources.match(req.identity):
            return False
        if self.paths is not None and not self.paths.match(req.match_path):
            return False
        if self.methods and req.method not in self.methods:
            return False
        if self.api_keys and req.api_key not in self.api_keys:
            return False
        for name, value in self.headers:
            if req.headers.get(name) != value:
                return False
        for name, value in self.claims:
            got = req.claims.get(name)
            if got is None or value not in _claim_text(got):
                return False
        return True


class Decision:
    """`allowed`, and `reason`: the rule that decided (or why none did)."""

    __slots__ = ("allowed", "policy", "reason")

    def __init__(self, allowed: bool, reason: str, policy: str = "") -> None:
        self.allowed = allowed
        self.reason = reason
        self.policy = policy  # the deciding policy's name ("" when none)

    def __repr__(self) -> str:
        return f"Decision({'allow' if self.allowed else 'deny'}, {self.reason!r})"


class Authorizer:
    """The compiled AuthorizationPolicies of one service."""

    __slots__ = ("_allow", "_allow_all", "_deny", "_none_matched")

    def dump(self) -> list[str]:
        """The rules in evaluation order, DENY first."""
        return [f"DENY {r.label}" for _n, r in self._deny] + [
            f"ALLOW {r.label}" for _n, r in self._allow
        ]

    def __init__(self, policies: tuple[AuthzPolicyConfig, ...]) -> None:
        deny: list[tuple[str, _Rule]] = []
        allow: list[tuple[str, _Rule]] = []
        has_allow = False
        for policy in policies:
            target = deny if policy.action is AuthzAction.DENY else allow
            has_allow = has_allow or policy.action is AuthzAction.ALLOW
            for index, rule in enumerate(policy.rules):
                label = f"AuthorizationPolicy/{policy.name} rules[{index}]"
                target.append((policy.name, _Rule(rule, label)))
        self._deny = tuple(deny)
        self._allow = tuple(allow)
        self._allow_all = Decision(True, "no ALLOW policy: allowed")
        self._none_matched: Decision | None = (
            Decision(False, "no ALLOW policy matched") if has_allow else None
        )

    def evaluate(self, req: AuthzRequest) -> Decision:
        for name, rule in self._deny:
            if rule.match(req):
                return Decision(False, f"denied by {rule.label}", name)
        if self._none_matched is None:
            return self._allow_all
        for name, rule in self._allow:
            if rule.match(req):
                return Decision(True, f"allowed by {rule.label}", name)
        return self._none_matched
