"""Verifying compact JWS tokens (RFC 7515/7519) against one issuer's rule.

Sans-IO: the key set comes from a source object and the wall-clock time is
passed in. Every refusal is a JwtError whose reason is what a caller reads
in the 401 (`expired`, `wrong issuer`, `bad signature`, ...).

Invariants:
- `alg: none` and any algorithm other than RS256 / ES256 / HS256 are refused;
- a key is used only with its own algorithm (no HS256 with an RSA key's
  bytes as the secret: the classic algorithm confusion);
- exp, nbf and iat are checked with the rule's clock skew; exp is required.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, Protocol

from sidecar.auth.jwks import Jwk, b64url_decode
from skein.config.model import JwtRuleConfig

__all__ = ["ALGORITHMS", "JwtError", "JwtVerifier", "KeySource", "decode_unverified"]

ALGORITHMS = frozenset({"RS256", "ES256", "HS256"})


class JwtError(Exception):
    """A token refused; `reason` is short and safe to send to the caller."""

    def __init__(self, reason: str, kind: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind or reason  # a fixed word for metrics (reasons may quote the token)


class KeySource(Protocol):
    error: str
    keys: tuple[Jwk, ...]

    def current(self, now: float) -> tuple[Jwk, ...]: ...


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(part))
    except (ValueError, UnicodeDecodeError):
        raise JwtError(f"malformed token: {what} is not base64url JSON", "malformed") from None
    if not isinstance(value, dict):
        raise JwtError(f"malformed token: {what} is not a JSON object", "malformed")
    return value


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any], str, bytes]:
    """(header, claims, signing input, signature) of a compact JWS, nothing checked."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("malformed token: expected three dot-separated parts", "malformed")
    header = _json_part(parts[0], "header")
    claims = _json_part(parts[1], "payload")
    try:
        signature = b64url_decode(parts[2])
    except ValueError:
        raise JwtError("malformed token: signature is not base64url", "malformed") from None
    return header, claims, f"{parts[0]}.{parts[1]}", signature


def _verify_signature(key: Jwk, signing_input: bytes, signature: bytes) -> bool:
    # loaded with the first key (jwks), so importing here costs a dict lookup
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    material = key.key
    try:
        if key.alg == "HS256" and isinstance(material, bytes):
            expected = hmac.new(material, signing_input, hashlib.sha256).digest()
            return hmac.compare_digest(expected, signature)
        if key.alg == "RS256" and isinstance(material, rsa.RSAPublicKey):
            material.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            return True
        if key.alg == "ES256" and isinstance(material, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            material.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    return False


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JwtError(f"malformed token: claim {name!r} is not a number", "malformed")
    return float(value)


class JwtVerifier:
    """Verifies tokens for one JwtRule; `verify` returns the claims or raises JwtError.

    A token that passed is remembered (up to CACHE_SIZE tokens, forgotten when
    the key set changes), so a client reusing its token costs a dict lookup
    and the time checks instead of an RSA/ECDSA verification per call.
    """

    __slots__ = ("_cache", "_cache_keys", "keys", "rule")

    CACHE_SIZE = 1024

    def __init__(self, rule: JwtRuleConfig, keys: KeySource) -> None:
        self.rule = rule
        self.keys = keys
        self._cache: dict[str, dict[str, Any]] = {}
        self._cache_keys: tuple[Jwk, ...] = ()

    def _select(self, header: Mapping[str, Any], alg: str, keys: tuple[Jwk, ...]) -> list[Jwk]:
        if not keys:
            why = f" ({self.keys.error})" if self.keys.error else ""
            raise JwtError(f"no keys available for issuer {self.rule.issuer!r}{why}", "no keys")
        kid = header.get("kid")
        if kid is not None:
            keys = tuple(k for k in keys if k.kid == kid)
            if not keys:
                raise JwtError(f"unknown kid {kid!r}", "unknown kid")
        fitting = [k for k in keys if k.alg == alg]
        if not fitting:
            raise JwtError(f"alg {alg} does not match the issuer's key type", "alg mismatch")
        return fitting

    def verify(self, token: str, now: float, monotonic: float) -> dict[str, Any]:
        """Claims of a valid token. `now`: wall-clock epoch seconds; `monotonic` for key reloads."""
        keys = self.keys.current(monotonic)
        if keys is not self._cache_keys:
            self._cache.clear()
            self._cache_keys = keys
        claims = self._cache.get(token)
        if claims is None:
            claims = self._verify_token(token, keys)
        self._check_times(claims, now)
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = claims
        return claims

    def _verify_token(self, token: str, keys: tuple[Jwk, ...]) -> dict[str, Any]:
        """Signature, issuer and audience: what never changes for a given token."""
        header, claims, signing_input, signature = decode_unverified(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise JwtError("alg none is not accepted", "alg none")
        if alg not in ALGORITHMS:
            raise JwtError(f"alg {alg} is not accepted (RS256, ES256, HS256)", "alg not accepted")
        data = signing_input.encode("ascii")
        if not any(_verify_signature(k, data, signature) for k in self._select(header, alg, keys)):
            raise JwtError("bad signature")
        rule = self.rule
        if claims.get("iss") != rule.issuer:
            raise JwtError("wrong issuer")
        if rule.audiences:
            aud = claims.get("aud")
            got = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(a in rule.audiences for a in got):
                raise JwtError("wrong audience")
        return claims

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        skew = self.rule.clock_skew
        exp = _number(claims, "exp")
        if exp is None:
            raise JwtError("missing claim 'exp'")
        if now > exp + skew:
            raise JwtError("expired")
        nbf = _number(claims, "nbf")
        if nbf is not None and now < nbf - skew:
            raise JwtError("not yet valid (nbf)")
        iat = _number(claims, "iat")
        if iat is not None and now < iat - skew:
            raise JwtError("issued in the future (iat)")
