"""SPIFFE identities: `spiffe://<trust-domain>/service/<name>`, read from a URI SAN.

A peer's identity is taken only from a certificate the TLS layer verified
against the trust bundle (Python's `getpeercert()` is empty otherwise).
"""

from __future__ import annotations

from typing import Any

__all__ = ["XFCC", "service_id", "spiffe_id_of", "xfcc_value"]

XFCC = b"x-forwarded-client-cert"


def service_id(trust_domain: str, service: str) -> str:
    """The SPIFFE ID of every instance of `service`."""
    return f"spiffe://{trust_domain}/service/{service}"


def spiffe_id_of(peercert: Any) -> str:
    """The first spiffe:// URI SAN of a verified peer certificate ("" when none)."""
    if not isinstance(peercert, dict):
        return ""
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "URI" and isinstance(value, str) and value.startswith("spiffe://"):
            return value
    return ""


def xfcc_value(own: str, peer: str) -> bytes:
    """Envoy's x-forwarded-client-cert shape: who terminated TLS (By) and who called (URI)."""
    return f"By={own};URI={peer}".encode("ascii", "replace")
