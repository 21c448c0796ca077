"""The mesh certificate authority: generate or load it, and sign workload CSRs.

Invariants:
- A leaf's identity is decided here, never by the requester: the CSR gives
  only its public key (its subject and SANs are ignored); the one URI SAN is
  the SPIFFE ID of the service being signed for.
- Leaves are short-lived (24 h by default), never outlive their CA, and are
  back-dated 60 s so a peer whose clock is slightly behind still accepts them.
- `chain[0]` issues leaves; `chain[-1]` is the trust anchor that goes into the
  bundle (the root when the operator supplies one, else the issuing CA itself).
Time is passed in (unix seconds), so tests choose it.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skein.pki.errors import CertificateRequestError, PkiError
from skein.pki.pem import certificates_pem, generate_key, load_certificates, load_key

__all__ = [
    "BACKDATE",
    "CA_LIFETIME",
    "DEFAULT_LEAF_TTL",
    "MAX_LEAF_TTL",
    "CertificateAuthority",
    "load_csr",
    "make_csr",
]

CA_LIFETIME = 10 * 365 * 86400.0
DEFAULT_LEAF_TTL = 86400.0
MAX_LEAF_TTL = 30 * 86400.0
BACKDATE = 60.0


def _time(unix: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(unix, tz=datetime.UTC)


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    """Ed25519/Ed448 sign without a separate digest; everything else uses SHA-256."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _ski(cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ext.value)


def load_csr(pem: bytes | str) -> x509.CertificateSigningRequest:
    """A PEM CSR whose self-signature verifies (proof the requester holds the key)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as err:
        raise CertificateRequestError(
            f"csr_pem is not a PEM certificate signing request: {err}"
        ) from None
    if not csr.is_signature_valid:
        raise CertificateRequestError(
            "csr_pem: the CSR's signature does not verify with its own public key; "
            "sign it with the private key it carries"
        )
    return csr


def make_csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """A minimal CSR: only the public key matters, the CA sets the identity."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, hashes.SHA256())


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A signing key and its chain (issuing CA first)."""

    key: CertificateIssuerPrivateKeyTypes
    chain: tuple[x509.Certificate, ...]

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def anchor(self) -> x509.Certificate:
        return self.chain[-1]

    @property
    def not_after(self) -> float:
        return self.certificate.not_valid_after_utc.timestamp()

    def chain_pem(self) -> bytes:
        return certificates_pem(list(self.chain))

    def intermediates_pem(self) -> bytes:
        """What follows a leaf on the wire: every chain certificate but the anchor."""
        return certificates_pem(list(self.chain[:-1]))

    @classmethod
    def generate(
        cls, trust_domain: str, now: float, lifetime: float = CA_LIFETIME
    ) -> CertificateAuthority:
        """A fresh self-signed P-256 CA that may sign leaves only (pathlen 0)."""
        key = generate_key()
        tag = secrets.token_hex(4)  # distinct subjects for CAs rotated in the same domain
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "skein"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"skein mesh CA {trust_domain} {tag}"),
            ]
        )
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_time(now - BACKDATE))
            .not_valid_after(_time(now + lifetime))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, (cert,))

    @classmethod
    def from_pem(
        cls,
        cert_pem: bytes,
        key_pem: bytes,
        passphrase: bytes | None = None,
        *,
        now: float,
        where: str = "--ca-cert/--ca-key",
    ) -> CertificateAuthority:
        """An operator's CA (root or intermediate, chain in issuing-first order), checked."""
        chain = load_certificates(cert_pem, where=f"{where} certificate")
        key = load_key(key_pem, passphrase, where=f"{where} key")
        if not isinstance(
            key,
            ec.EllipticCurvePrivateKey
            | rsa.RSAPrivateKey
            | ed25519.Ed25519PrivateKey
            | ed448.Ed448PrivateKey,
        ):
            raise PkiError(f"{where}: a CA key must be EC, RSA or EdDSA, got {type(key).__name__}")
        ca = cls(key, tuple(chain))
        ca.check(now, where=where)
        return ca

    def check(self, now: float, *, where: str = "CA") -> None:
        """PkiError unless the key matches, the certificate may sign certificates and is valid."""
        cert = self.certificate
        if _public_bytes(self.key.public_key()) != _public_bytes(cert.public_key()):
            raise PkiError(f"{where}: the key does not belong to the first certificate")
        try:
            basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            basic = None
        if basic is None or not basic.ca:
            raise PkiError(
                f"{where}: {cert.subject.rfc4514_string()} is not a CA certificate "
                "(basicConstraints CA:TRUE is required)"
            )
        if basic.path_length is not None and basic.path_length < 0:
            raise PkiError(f"{where}: invalid path length")
        try:
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is not None and not usage.key_cert_sign:
            raise PkiError(f"{where}: keyUsage lacks keyCertSign; it cannot sign certificates")
        if not cert.not_valid_before_utc.timestamp() <= now < self.not_after:
            raise PkiError(
                f"{where}: the CA certificate is valid from {cert.not_valid_before_utc} to "
                f"{cert.not_valid_after_utc}, not now; rotate to a current CA"
            )

    def sign(
        self,
        csr: x509.CertificateSigningRequest,
        spiffe: str,
        now: float,
        ttl: float = DEFAULT_LEAF_TTL,
    ) -> x509.Certificate:
        """A leaf for `spiffe` holding the CSR's key (the CSR's names are ignored)."""
        if not csr.is_signature_valid:
            raise CertificateRequestError("csr_pem: the CSR's signature does not verify")
        if ttl <= 0:
            ttl = DEFAULT_LEAF_TTL
        if ttl > MAX_LEAF_TTL:
            raise CertificateRequestError(
                f"ttl_seconds: at most {MAX_LEAF_TTL:.0f} ({MAX_LEAF_TTL / 86400:.0f} days), "
                f"got {ttl:.0f}"
            )
        if now >= self.not_after:
            raise PkiError("the CA certificate has expired; rotate to a new CA")
        public = csr.public_key()
        if not isinstance(
            public,
            ec.EllipticCurvePublicKey
            | rsa.RSAPublicKey
            | ed25519.Ed25519PublicKey
            | ed448.Ed448PublicKey,
        ):
            raise CertificateRequestError(
                f"csr_pem: the key must be EC, RSA or EdDSA, got {type(public).__name__}"
            )
        return self.issue(
            public,
            [x509.UniformResourceIdentifier(spiffe)],
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            now,
            min(now + ttl, self.not_after),
        )

    def issue(
        self,
        public: CertificatePublicKeyTypes,
        names: Sequence[x509.GeneralName],
        usages: Sequence[x509.ObjectIdentifier],
        now: float,
        not_after: float,
    ) -> x509.Certificate:
        """A leaf for `public`: an empty subject, `names` as its (critical) SAN, the
        extended key `usages`; every certificate the mesh issues is built here."""
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))  # SPIFFE: the identity is the URI SAN alone
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_time(now - BACKDATE))
            .not_valid_after(_time(not_after))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(list(names)),
                critical=True,  # the subject is empty: the SAN must be understood
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(_ski(self.certificate), critical=False)
        )
        return builder.sign(self.key, _hash_for(self.key))


def _public_bytes(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
