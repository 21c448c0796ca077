"""Test keys and JWT minting with `cryptography` (the code under test only verifies)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
HMAC_SECRET = b"a-shared-secret-of-reasonable-length!"
ISSUER = "https://issuer.example"
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def rsa_jwk(key: rsa.RSAPrivateKey = RSA_KEY, kid: str = "rsa-1") -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "n": _uint(numbers.n), "e": _uint(numbers.e)}


def ec_jwk(kid: str = "ec-1") -> dict[str, Any]:
    numbers = EC_KEY.public_key().public_numbers()
    return {
        "kty": "EC",
        "kid": kid,
        "crv": "P-256",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
    }


def oct_jwk(kid: str = "hs-1") -> dict[str, Any]:
    return {"kty": "oct", "kid": kid, "k": b64(HMAC_SECRET)}


def jwks(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": "orders",
        "sub": "alice",
        "iat": int(NOW) - 10,
        "exp": int(NOW) + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(
    payload: dict[str, Any],
    alg: str = "RS256",
    kid: str | None = "rsa-1",
    key: Any = None,
    header: dict[str, Any] | None = None,
) -> str:
    """A compact JWS signed with `alg` (key defaults to the module's key for it)."""
    head: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        head["kid"] = kid
    if header:
        head.update(header)
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(payload).encode())}"
    data = signing_input.encode()
    if alg == "RS256":
        signature = (key or RSA_KEY).sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        r, s = decode_dss_signature((key or EC_KEY).sign(data, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == "HS256":
        signature = hmac.new(key or HMAC_SECRET, data, hashlib.sha256).digest()
    else:
        signature = b""
    return f"{signing_input}.{b64(signature)}"
