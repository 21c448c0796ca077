"""Errors of the PKI: each says what is wrong with which input and how to fix it."""

from __future__ import annotations

from skein.errors import SkeinError, _Code

__all__ = ["CertificateRequestError", "KeyPassphraseError", "PkiError"]


class PkiError(SkeinError):
    """CA material or a certificate is unusable (FAILED_PRECONDITION: fix the setup)."""

    code = _Code("FAILED_PRECONDITION")


class KeyPassphraseError(PkiError):
    """An encrypted CA key does not open with the passphrase given."""


class CertificateRequestError(PkiError):
    """A CSR does not parse or its signature does not verify (the caller's fault)."""

    code = _Code("INVALID_ARGUMENT")
