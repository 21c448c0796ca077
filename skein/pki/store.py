"""Stored forms of CA material (values of `ca/current` and `ca/bundle` in etcd).

`ca/current` is JSON {chain_pem, key_pem, created_at}: the key is PKCS#8
encrypted with the operator's passphrase, so reading etcd is not enough to
issue certificates. `ca/bundle` is plain PEM, every trusted anchor: what
workloads are told to trust.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography import x509

from skein.pki.bundle import bundle_pem, parse_bundle
from skein.pki.ca import CertificateAuthority
from skein.pki.errors import PkiError
from skein.pki.pem import decrypt_key, encrypt_key, load_certificates

__all__ = ["CaRecord", "decode_bundle", "encode_bundle"]


@dataclass(frozen=True, slots=True)
class CaRecord:
    chain_pem: str
    key_pem: str  # encrypted PKCS#8
    created_at: float

    @classmethod
    def seal(cls, ca: CertificateAuthority, passphrase: bytes, now: float) -> CaRecord:
        return cls(ca.chain_pem().decode(), encrypt_key(ca.key, passphrase).decode(), now)

    def open(self, passphrase: bytes) -> CertificateAuthority:
        """The CA; KeyPassphraseError when the passphrase is not the one it was sealed with."""
        key = decrypt_key(self.key_pem.encode(), passphrase, where="the CA key stored in etcd")
        chain = load_certificates(self.chain_pem.encode(), where="the CA stored in etcd")
        return CertificateAuthority(key, tuple(chain))  # type: ignore[arg-type]

    def encode(self) -> bytes:
        value = {
            "chain_pem": self.chain_pem,
            "key_pem": self.key_pem,
            "created_at": self.created_at,
        }
        return json.dumps(value, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> CaRecord:
        try:
            raw = json.loads(data)
            return cls(str(raw["chain_pem"]), str(raw["key_pem"]), float(raw["created_at"]))
        except (ValueError, KeyError, TypeError) as err:
            raise PkiError(f"the CA record stored in etcd does not parse: {err!r}") from None

    def certificate(self) -> x509.Certificate:
        return load_certificates(self.chain_pem.encode(), where="the CA stored in etcd")[0]

    def anchor(self) -> x509.Certificate:
        return load_certificates(self.chain_pem.encode(), where="the CA stored in etcd")[-1]


def encode_bundle(anchors: list[x509.Certificate]) -> bytes:
    return bundle_pem(anchors)


def decode_bundle(data: bytes) -> list[x509.Certificate]:
    return parse_bundle(data, where="the trust bundle stored in etcd")
