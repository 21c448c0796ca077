"""JSON Web Key Sets: parsing keys, and where a verifier gets its current set.

Invariants:
- a parsed key knows its type (RSA, EC P-256, oct) and the one algorithm it
  verifies (RS256, ES256, HS256); a JWK whose `alg` names another algorithm
  is refused, so a key is never used with an algorithm it was not made for;
- a source keeps serving its last good set when a reload fails (stale while
  error), and says why in `error`.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # cryptography loads on the first key parsed: a sidecar without JWT
    from cryptography.hazmat.primitives.asymmetric import ec, rsa  # never pays its ~10 MB

__all__ = ["FileJwks", "Jwk", "JwksError", "StaticJwks", "b64url_decode", "parse_jwks"]

# key type -> the algorithm it verifies
_ALG_OF_KTY = {"RSA": "RS256", "EC": "ES256", "oct": "HS256"}


class JwksError(Exception):
    """A JWKS document or key that can not be used; the message says why."""


def b64url_decode(text: str) -> bytes:
    """Base64url without padding (RFC 7515 section 2); raises ValueError when malformed."""
    if not isinstance(text, str) or "=" in text:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int(value: Any) -> int:
    return int.from_bytes(b64url_decode(value), "big")


@dataclass(frozen=True, slots=True)
class Jwk:
    """One verification key: `key` is an RSA/EC public key or the HMAC secret bytes."""

    kid: str
    alg: str
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | bytes


def _parse_key(doc: dict[str, Any], index: int) -> Jwk:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    kty = doc.get("kty")
    alg = _ALG_OF_KTY.get(kty) if isinstance(kty, str) else None
    if alg is None:
        raise JwksError(f"keys[{index}]: unsupported kty {kty!r}; expected RSA, EC or oct")
    declared = doc.get("alg")
    if declared is not None and declared != alg:
        raise JwksError(f"keys[{index}]: alg {declared!r} does not fit kty {kty!r} ({alg})")
    kid = doc.get("kid", "")
    if not isinstance(kid, str):
        raise JwksError(f"keys[{index}]: kid must be a string")
    try:
        if kty == "RSA":
            return Jwk(kid, alg, rsa.RSAPublicNumbers(_int(doc["e"]), _int(doc["n"])).public_key())
        if kty == "EC":
            if doc.get("crv") != "P-256":
                raise JwksError(f"keys[{index}]: EC keys must use crv P-256 (ES256)")
            numbers = ec.EllipticCurvePublicNumbers(_int(doc["x"]), _int(doc["y"]), ec.SECP256R1())
            return Jwk(kid, alg, numbers.public_key())
        secret = b64url_decode(doc["k"])
    except JwksError:
        raise
    except (KeyError, ValueError, TypeError) as err:
        raise JwksError(f"keys[{index}]: malformed {kty} key ({err!r})") from None
    if not secret:
        raise JwksError(f"keys[{index}]: empty oct key")
    return Jwk(kid, alg, secret)


def parse_jwks(data: bytes) -> tuple[Jwk, ...]:
    """Keys of a JWKS document (`{"keys": [...]}`); raises JwksError naming the problem."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise JwksError(f"not JSON: {err}") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise JwksError('expected a JSON object with a "keys" list')
    return tuple(_parse_key(k if isinstance(k, dict) else {}, i) for i, k in enumerate(keys))


class StaticJwks:
    """A fixed key set (tests, and the base of the refreshing sources)."""

    def __init__(self, keys: tuple[Jwk, ...] = ()) -> None:
        self.keys = keys
        self.error = ""

    def current(self, now: float) -> tuple[Jwk, ...]:
        return self.keys


class FileJwks(StaticJwks):
    """A JWKS file, re-read when its mtime or size changes (checked at most once a second)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._checked = float("-inf")
        self.reload()

    def reload(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            with open(self.path, "rb") as fh:
                self.keys = parse_jwks(fh.read())
        except OSError as err:
            self.error = f"{self.path}: {err.strerror}"
            return
        except JwksError as err:
            self.error = f"{self.path}: {err}"
            self._stamp = stamp
            return
        self._stamp = stamp
        self.error = ""

    def current(self, now: float) -> tuple[Jwk, ...]:
        if now - self._checked >= 1.0:
            self._checked = now
            self.reload()
        return self.keys
