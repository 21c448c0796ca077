"""A tiny test CA (no tests here): mesh certificates with SPIFFE URI SANs, written as PEM files."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sidecar.tls import service_id

TRUST_DOMAIN = "skein.local"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class MeshCA:
    """A self-signed P-256 CA issuing leaf certificates for `spiffe://skein.local/service/<name>`."""

    def __init__(self, name: str = "test mesh CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, service: str, *, valid_for: float = 3600.0, expired: bool = False
    ) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for `service`; `expired`: ended an hour ago."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = _now() - datetime.timedelta(minutes=5)
        end = start + datetime.timedelta(seconds=valid_for)
        if expired:
            start = _now() - datetime.timedelta(hours=2)
            end = _now() - datetime.timedelta(hours=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(service_id(TRUST_DOMAIN, service))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
                    ]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_files(
    directory: Path, name: str, cert_key: tuple[bytes, bytes], bundle: bytes
) -> tuple[str, str, str]:
    """Write cert, key and bundle atomically (rename) under `directory`; their paths."""
    paths = (directory / f"{name}.crt", directory / f"{name}.key", directory / f"{name}-bundle.pem")
    for path, data in zip(paths, (*cert_key, bundle), strict=True):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(paths[0]), str(paths[1]), str(paths[2])
