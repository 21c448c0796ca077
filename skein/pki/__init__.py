"""Mesh PKI shared by control, the sidecar and the CLI: CA, CSRs, SPIFFE IDs, join tokens."""

from skein.pki.bundle import bundle_pem, fingerprint, parse_bundle, with_anchor, without_anchor
from skein.pki.ca import (
    BACKDATE,
    CA_LIFETIME,
    DEFAULT_LEAF_TTL,
    MAX_LEAF_TTL,
    CertificateAuthority,
    load_csr,
    make_csr,
)
from skein.pki.errors import CertificateRequestError, KeyPassphraseError, PkiError
from skein.pki.pem import (
    certificates_pem,
    decrypt_key,
    encrypt_key,
    generate_key,
    key_pem,
    load_certificates,
    load_key,
)
from skein.pki.spiffe import DEFAULT_TRUST_DOMAIN, check_trust_domain, parse_spiffe_id, spiffe_id
from skein.pki.store import CaRecord, decode_bundle, encode_bundle
from skein.pki.tokens import (
    DEFAULT_TOKEN_TTL,
    MAX_TOKEN_TTL,
    JoinTokenRecord,
    TokenRefusal,
    check_token,
    new_token,
    parse_token,
)

__all__ = [
    "BACKDATE",
    "CA_LIFETIME",
    "DEFAULT_LEAF_TTL",
    "DEFAULT_TOKEN_TTL",
    "DEFAULT_TRUST_DOMAIN",
    "MAX_LEAF_TTL",
    "MAX_TOKEN_TTL",
    "CaRecord",
    "CertificateAuthority",
    "CertificateRequestError",
    "JoinTokenRecord",
    "KeyPassphraseError",
    "PkiError",
    "TokenRefusal",
    "bundle_pem",
    "certificates_pem",
    "check_token",
    "check_trust_domain",
    "decode_bundle",
    "decrypt_key",
    "encode_bundle",
    "encrypt_key",
    "fingerprint",
    "generate_key",
    "key_pem",
    "load_certificates",
    "load_csr",
    "load_key",
    "make_csr",
    "new_token",
    "parse_bundle",
    "parse_spiffe_id",
    "parse_token",
    "spiffe_id",
    "with_anchor",
    "without_anchor",
]
