"""Who may call the operator API, and with which role.

Operators authenticate with a bearer token (`authorization: Bearer <token>`
call metadata). The control daemon holds only each token's SHA-256, read
from the `--operators` YAML file, so the file is no secret worth stealing.
Roles are ordered: viewer (read: Get, Status, Audit) < operator (+ changes:
Apply, Delete, API keys, join tokens) < admin (everything).

Without an operators file the API is open: every caller is the admin
`anonymous` (the demo and a single-developer setup), and control warns at
start. A client-certificate identity can be added in `Authorizer.from_peer`
without touching the handlers: they all go through `Authorizer.authorize`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from skein.errors import ConfigError

__all__ = [
    "ANONYMOUS",
    "Authorizer",
    "OperatorTable",
    "Principal",
    "Role",
    "hash_token",
    "load_operators",
    "new_token",
    "parse_operators",
]


class Role(enum.IntEnum):
    """Ordered: a role may do everything the roles below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str, field: str = "role") -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ConfigError(
                field, f"unknown role {text!r}; expected viewer, operator or admin"
            ) from None


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the name the audit log records, and its role."""

    name: str
    role: Role


ANONYMOUS = Principal("anonymous", Role.ADMIN)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.@]*[A-Za-z0-9])?")
_TOKEN_PREFIX = "skop_"


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token, the form the operators file stores."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random operator token (256 bits)."""
    return _TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class OperatorTable:
    """Token digest -> principal, as loaded from the operators file."""

    by_digest: Mapping[str, Principal]
    source: str = ""

    def lookup(self, token: str) -> Principal | None:
        digest = hash_token(token)
        for known, principal in self.by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None


def parse_operators(data: Any, source: str) -> OperatorTable:
    """Check the parsed YAML; raises ConfigError naming the entry and the fix.

    Accepts a list of {name, role, token_sha256} or {operators: [...]}.
    """
    if isinstance(data, dict) and "operators" in data:
        data = data["operators"]
    if not isinstance(data, list) or not data:
        raise ConfigError(
            "operators",
            "expected a non-empty list of {name, role, token_sha256}",
            where=source,
        )
    by_digest: dict[str, Principal] = {}
    names: set[str] = set()
    for index, entry in enumerate(data):
        where = f"{source}: operators[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError("operators", "expected {name, role, token_sha256}", where=where)
        unknown = sorted(set(entry) - {"name", "role", "token_sha256"})
        if unknown:
            raise ConfigError(
                unknown[0], "unknown field; expected name, role, token_sha256", where=where
            )
        name = str(entry.get("name") or "")
        if not _NAME.fullmatch(name):
            raise ConfigError("name", f"required: letters, digits, -_.@; got {name!r}", where=where)
        if name in names:
            raise ConfigError("name", f"{name!r} appears twice; names must be unique", where=where)
        names.add(name)
        try:
            role = Role.parse(str(entry.get("role") or ""), "role")
        except ConfigError as err:
            raise ConfigError(err.field, err.reason, where=where) from None
        digest = str(entry.get("token_sha256") or "").strip().lower()
        if not _HEX64.fullmatch(digest):
            raise ConfigError(
                "token_sha256",
                "must be the 64-hex-digit SHA-256 of the token; make one with "
                "`skein operator-token hash`",
                where=where,
            )
        if digest in by_digest:
            raise ConfigError(
                "token_sha256",
                f"same token as {by_digest[digest].name!r}; give every operator its own token",
                where=where,
            )
        by_digest[digest] = Principal(name, role)
    return OperatorTable(by_digest, source)


def load_operators(path: str) -> OperatorTable:
    """Read and check the operators file; raises ConfigError on any problem."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as err:
        raise ConfigError("--operators", f"cannot read {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError("--operators", f"{path} is not valid YAML: {err}") from None
    return parse_operators(data, path)


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of the `authorization: Bearer ...` metadata entry, if any."""
    for key, value in metadata or ():
        if key != "authorization":
            continue
        text = value.decode() if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return ""
    return None


class Authorizer:
    """The one check every operator-API handler makes before doing anything.

    `table` None means open: every call is ANONYMOUS (admin).
    """

    __slots__ = ("table",)

    def __init__(self, table: OperatorTable | None) -> None:
        self.table = table

    @property
    def open(self) -> bool:
        return self.table is None

    def from_peer(self, context: grpc.aio.ServicerContext) -> Principal | None:
        """Hook for client-certificate identities (mTLS on the operator port): none yet."""
        return None

    def authenticate(self, context: grpc.aio.ServicerContext) -> Principal | str:
        """The caller's principal, or why it is not authenticated."""
        if self.table is None:
            return ANONYMOUS
        peer = self.from_peer(context)
        if peer is not None:
            return peer
        token = bearer_token(context.invocation_metadata())
        if token is None:
            return (
                "no credentials: this control daemon requires an operator token; "
                "pass --token or set SKEIN_TOKEN"
            )
        principal = self.table.lookup(token) if token else None
        if principal is None:
            return (
                "the bearer token is not known to this control daemon; check --token / "
                "SKEIN_TOKEN against the operators file"
            )
        return principal

    async def authorize(self, context: grpc.aio.ServicerContext, required: Role) -> Principal:
        """The principal when it holds `required` or more; else aborts the call.

        UNAUTHENTICATED without valid credentials, PERMISSION_DENIED naming
        the role needed when the role is too low. Call it first: nothing
        must have happened when it aborts.
        """
        found = self.authenticate(context)
        if isinstance(found, str):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, found)
            raise AssertionError("unreachable")
        if found.role < required:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{found.name} has role {found.role.label}; this call needs role "
                f"{required.label} or higher",
            )
            raise AssertionError("unreachable")
        return found
