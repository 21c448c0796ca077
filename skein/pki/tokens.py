"""Join tokens: the bootstrap credential a workload trades for its first certificate.

Text form `skt_<id>.<secret>`; only sha256(secret) is stored, under
`tokens/<id>`, with the one service it is good for, an expiry and a revoked
flag. Checking is pure (time passed in) and returns the refusal's reason, so
the server logs and answers exactly why. The secret is compared in constant
time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import asdict, dataclass

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "MAX_TOKEN_TTL",
    "JoinTokenRecord",
    "TokenRefusal",
    "check_token",
    "new_token",
    "parse_token",
]

DEFAULT_TOKEN_TTL = 3600.0
MAX_TOKEN_TTL = 30 * 86400.0
_PREFIX = "skt_"
_TEXT = re.compile(r"skt_([0-9a-f]{16})\.([A-Za-z0-9_-]{20,})")


@dataclass(frozen=True, slots=True)
class JoinTokenRecord:
    """What etcd holds for one token (never the secret)."""

    id: str
    service: str
    sha256: str
    created_at: float
    expires_at: float
    revoked: bool = False

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> JoinTokenRecord:
        """Raises ValueError when the stored value is not a token record."""
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("a token record is a JSON object")
        return cls(
            id=str(raw["id"]),
            service=str(raw["service"]),
            sha256=str(raw["sha256"]),
            created_at=float(raw["created_at"]),
            expires_at=float(raw["expires_at"]),
            revoked=bool(raw.get("revoked", False)),
        )


@dataclass(frozen=True, slots=True)
class TokenRefusal:
    """Why a token was refused. `denied`: authenticated but not allowed (PERMISSION_DENIED);
    otherwise the credential itself is bad (UNAUTHENTICATED)."""

    reason: str
    denied: bool = False


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(
    service: str, now: float, ttl: float = DEFAULT_TOKEN_TTL
) -> tuple[str, JoinTokenRecord]:
    """(the token text, shown once; the record to store)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = JoinTokenRecord(token_id, service, _digest(secret), now, now + ttl)
    return f"{_PREFIX}{token_id}.{secret}", record


def parse_token(text: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token text, else None."""
    match = _TEXT.fullmatch(text.strip())
    return (match.group(1), match.group(2)) if match else None


def check_token(
    record: JoinTokenRecord, secret: str, service: str, now: float
) -> TokenRefusal | None:
    """None when the token may be used for `service` at `now`, else why not.

    The secret is checked first, so a caller without it learns nothing about
    the token's state.
    """
    if not hmac.compare_digest(_digest(secret), record.sha256):
        return TokenRefusal(f"join token {record.id}: the secret does not match")
    if record.revoked:
        return TokenRefusal(f"join token {record.id} was revoked; create a new one")
    if now >= record.expires_at:
        return TokenRefusal(
            f"join token {record.id} expired {now - record.expires_at:.0f}s ago; create a new one"
        )
    if record.service != service:
        return TokenRefusal(
            f"join token {record.id} is for service {record.service!r}, not {service!r}",
            denied=True,
        )
    return None
