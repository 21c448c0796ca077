"""SPIFFE IDs of mesh workloads: `spiffe://<trust-domain>/service/<name>`.

The trust domain names the mesh (default `skein.local`); a certificate's only
identity is its URI SAN, which the CA sets from the service it signs for.
"""

from __future__ import annotations

import re

from skein.errors import ConfigError

__all__ = ["DEFAULT_TRUST_DOMAIN", "check_trust_domain", "parse_spiffe_id", "spiffe_id"]

DEFAULT_TRUST_DOMAIN = "skein.local"

# SPIFFE-ID spec: trust domain is lowercase letters, digits, '.', '-', '_'.
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_SCHEME = "spiffe://"
_SERVICE_PATH = "/service/"


def check_trust_domain(value: str, field: str = "--trust-domain") -> str:
    """The trust domain, or ConfigError saying which characters are allowed."""
    if not _TRUST_DOMAIN.fullmatch(value):
        raise ConfigError(
            field,
            f"must be 1-255 of a-z, 0-9, '.', '-', '_' (for example 'skein.local'), got {value!r}",
        )
    return value


def spiffe_id(trust_domain: str, service: str) -> str:
    return f"{_SCHEME}{trust_domain}{_SERVICE_PATH}{service}"


def parse_spiffe_id(uri: str) -> tuple[str, str] | None:
    """(trust domain, service) of a mesh SPIFFE ID; None for any other URI."""
    if not uri.startswith(_SCHEME):
        return None
    domain, sep, rest = uri[len(_SCHEME) :].partition("/")
    if not sep or not _TRUST_DOMAIN.fullmatch(domain) or not rest.startswith("service/"):
        return None
    service = rest[len("service/") :]
    if not service or "/" in service:
        return None
    return domain, service
