"""etcd key layout under one prefix (default `/skein/v1/`).

    <prefix>resources/<Kind>/<name>          JSON of the Service / TrafficPolicy message
    <prefix>endpoints/<service>/<instance>   JSON of the Endpoint message, under a lease
    <prefix>status/<instance>                JSON of SidecarStatus, under the lease of the
                                             control replica holding the sidecar's stream
    <prefix>ca/current                       JSON of the issuing CA (key encrypted, PKCS#8)
    <prefix>ca/bundle                        PEM of every trusted CA certificate
    <prefix>tokens/<id>                      JSON of a join token (sha256 of its secret)

`<Kind>` is the canonical kind (`Service`, `TrafficPolicy`); readers accept any
spelling `parse_kind` accepts, so hand-written keys still load. A resource's
version is the key's etcd mod_revision.
"""

from __future__ import annotations

from dataclasses import dataclass

from skein.config import parse_kind
from skein.errors import ConfigError

__all__ = ["DEFAULT_PREFIX", "KeyLayout", "ParsedKey"]

DEFAULT_PREFIX = "/skein/v1/"


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """What a key under the prefix names. section: resources, endpoints, status, other."""

    section: str
    kind: str = ""  # canonical kind for resources; "Endpoint" for endpoints
    name: str = ""  # resource name, endpoint instance, status instance
    service: str = ""  # endpoints only


class KeyLayout:
    """Builds and parses keys; bytes because etcd keys are bytes."""

    __slots__ = (
        "ca",
        "ca_bundle",
        "ca_current",
        "endpoints",
        "prefix",
        "resources",
        "status",
        "tokens",
    )

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix
        self.resources = f"{prefix}resources/"
        self.endpoints = f"{prefix}endpoints/"
        self.status = f"{prefix}status/"
        self.ca = f"{prefix}ca/".encode()
        self.ca_current = f"{prefix}ca/current".encode()
        self.ca_bundle = f"{prefix}ca/bundle".encode()
        self.tokens = f"{prefix}tokens/".encode()

    def resource(self, kind: str, name: str) -> bytes:
        return f"{self.resources}{kind}/{name}".encode()

    def resource_kind_prefix(self, kind: str) -> bytes:
        return f"{self.resources}{kind}/".encode()

    def endpoint(self, service: str, instance: str) -> bytes:
        return f"{self.endpoints}{service}/{instance}".encode()

    def status_key(self, instance: str) -> bytes:
        return f"{self.status}{instance}".encode()

    def token(self, token_id: str) -> bytes:
        return self.tokens + token_id.encode()

    def parse(self, key: bytes) -> ParsedKey:
        text = key.decode("utf-8", "replace")
        if not text.startswith(self.prefix):
            return ParsedKey("other")
        rest = text[len(self.prefix) :]
        section, _, tail = rest.partition("/")
        if section == "resources":
            kind_text, _, name = tail.partition("/")
            try:
                kind = parse_kind(kind_text)
            except ConfigError:
                return ParsedKey("other")
            return ParsedKey("resources", kind, name)
        if section == "endpoints":
            service, _, instance = tail.partition("/")
            return ParsedKey("endpoints", "Endpoint", instance, service)
        if section == "status":
            return ParsedKey("status", "", tail)
        return ParsedKey("other")
