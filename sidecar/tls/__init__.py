"""Mesh TLS for the sidecar: the certificate it holds, the contexts built from it, rotation.

Public API: `CertificateStore` (files, re-read when they change), `InboundTls`
(the inbound listener's view: context by mTLS mode, own identity), `MtlsPolicy`
(PERMISSIVE or STRICT, from the own service's TrafficPolicy), `OutboundTls`
(client contexts and the identity expected of each upstream service),
`spiffe_id_of`, `service_id`. Certificates from control's Identity.Sign (join
token, renewal at a share of the lifetime): `sidecar.tls.issuer.Issuer`.
"""

from __future__ import annotations

from sidecar.tls.identity import service_id, spiffe_id_of, xfcc_value
from sidecar.tls.mode import MtlsPolicy
from sidecar.tls.store import CertificateStore, InboundTls, OutboundTls, TlsError

__all__ = [
    "CertificateStore",
    "InboundTls",
    "MtlsPolicy",
    "OutboundTls",
    "TlsError",
    "service_id",
    "spiffe_id_of",
    "xfcc_value",
]
