"""Trust bundles: the CA certificates a workload accepts, as one PEM.

During a CA rotation the bundle holds the old and the new anchor, so leaves
from either verify until every workload has renewed; then the old one is
dropped. Anchors are kept in the order they were added, without duplicates.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from skein.pki.pem import certificates_pem, load_certificates

__all__ = ["bundle_pem", "fingerprint", "parse_bundle", "with_anchor", "without_anchor"]


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex (how operators name an anchor)."""
    return cert.fingerprint(hashes.SHA256()).hex()


def parse_bundle(pem: bytes | str, *, where: str = "trust bundle") -> list[x509.Certificate]:
    data = pem.encode() if isinstance(pem, str) else pem
    return load_certificates(data, where=where) if data.strip() else []


def bundle_pem(anchors: list[x509.Certificate]) -> bytes:
    return certificates_pem(anchors)


def with_anchor(anchors: list[x509.Certificate], cert: x509.Certificate) -> list[x509.Certificate]:
    """`anchors` plus `cert`, unless it is already there."""
    if any(fingerprint(a) == fingerprint(cert) for a in anchors):
        return list(anchors)
    return [*anchors, cert]


def without_anchor(anchors: list[x509.Certificate], fp: str) -> list[x509.Certificate]:
    """`anchors` without the one whose fingerprint is `fp` (case-insensitive, ':' ignored)."""
    wanted = fp.replace(":", "").lower()
    return [a for a in anchors if fingerprint(a) != wanted]
