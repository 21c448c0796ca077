"""PEM helpers: certificate lists, keys encrypted for storage, fresh workload keys."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from skein.pki.errors import KeyPassphraseError, PkiError

__all__ = [
    "certificates_pem",
    "decrypt_key",
    "encrypt_key",
    "generate_key",
    "key_pem",
    "load_certificates",
    "load_key",
]


def generate_key() -> ec.EllipticCurvePrivateKey:
    """An EC P-256 key: small, fast, accepted by every TLS stack."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKeyTypes) -> bytes:
    """Unencrypted PKCS#8 PEM (for a workload key written 0600 next to its certificate)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def encrypt_key(key: PrivateKeyTypes, passphrase: bytes) -> bytes:
    """PKCS#8 PEM encrypted with the best scheme cryptography offers (for etcd)."""
    if not passphrase:
        raise PkiError("the CA key passphrase is empty; set a non-empty passphrase")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def decrypt_key(data: bytes, passphrase: bytes, *, where: str = "the CA key") -> PrivateKeyTypes:
    """Open an encrypted PEM key; KeyPassphraseError when the passphrase is wrong."""
    try:
        return serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:  # the key is not encrypted
        return load_key(data, where=where)
    except ValueError as err:
        raise KeyPassphraseError(
            f"{where} does not decrypt with the passphrase given ({err}); pass the passphrase "
            "it was stored with (--ca-key-passphrase-file or SKEIN_CA_PASSPHRASE)"
        ) from None


def load_key(
    data: bytes, passphrase: bytes | None = None, *, where: str = "key"
) -> PrivateKeyTypes:
    """A PEM private key, encrypted or not (a passphrase is used only when it is encrypted)."""
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted
        if not passphrase:
            raise KeyPassphraseError(
                f"{where} is encrypted; give its passphrase with --ca-key-passphrase-file "
                "or SKEIN_CA_PASSPHRASE"
            ) from None
        return decrypt_key(data, passphrase, where=where)
    except ValueError as err:
        raise PkiError(f"{where} is not a PEM private key: {err}") from None


def load_certificates(data: bytes, *, where: str = "certificate") -> list[x509.Certificate]:
    """Every certificate of a PEM file, in order; PkiError when there is none."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as err:
        raise PkiError(f"{where} holds no readable PEM certificate: {err}") from None
    return certs


def certificates_pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
