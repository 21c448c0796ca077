"""The mesh CA: generation, loading an operator's CA, signing CSRs into SPIFFE leaves."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skein.pki import (
    BACKDATE,
    DEFAULT_LEAF_TTL,
    CaRecord,
    CertificateAuthority,
    CertificateRequestError,
    KeyPassphraseError,
    PkiError,
    certificates_pem,
    encrypt_key,
    generate_key,
    key_pem,
    load_csr,
    make_csr,
    parse_spiffe_id,
    spiffe_id,
)

NOW = 1_800_000_000.0
SPIFFE = "spiffe://skein.local/service/orders"


def _csr_with_names(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """A CSR asking for an identity of its own choosing (the CA must ignore it)."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://skein.local/service/admin")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def _verify(leaf: x509.Certificate, issuer: x509.Certificate) -> None:
    leaf.verify_directly_issued_by(issuer)


def test_generated_ca_is_a_p256_leaf_only_ca_for_ten_years() -> None:
    ca = CertificateAuthority.generate("skein.local", NOW)
    cert = ca.certificate
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    assert ca.key.curve.name == "secp256r1"
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert cert.issuer == cert.subject
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365
    assert 9.9 < years < 10.1
    ca.check(NOW)
    assert ca.anchor is cert


def test_two_generated_cas_have_distinct_subjects() -> None:
    a = CertificateAuthority.generate("skein.local", NOW)
    b = CertificateAuthority.generate("skein.local", NOW)
    assert a.certificate.subject != b.certificate.subject


def test_leaf_carries_the_spiffe_id_the_ca_chose_not_the_csrs() -> None:
    ca = CertificateAuthority.generate("skein.local", NOW)
    key = generate_key()
    leaf = ca.sign(_csr_with_names(key), SPIFFE, NOW)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE]
    assert san.value.get_values_for_type(x509.DNSName) == []
    assert list(leaf.subject) == []  # the CSR's CN=admin is gone
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not basic.ca
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    _verify(leaf, ca.certificate)
    assert parse_spiffe_id(SPIFFE) == ("skein.local", "orders")


def test_leaf_lifetime_is_backdated_24h_by_default_and_capped_by_the_ca() -> None:
    ca = CertificateAuthority.generate("skein.local", NOW, lifetime=2 * 86400)
    csr = make_csr(generate_key())
    leaf = ca.sign(csr, SPIFFE, NOW)
    assert leaf.not_valid_before_utc.timestamp() == NOW - BACKDATE
    assert leaf.not_valid_after_utc.timestamp() == NOW + DEFAULT_LEAF_TTL
    short = ca.sign(csr, SPIFFE, NOW, ttl=600)
    assert short.not_valid_after_utc.timestamp() == NOW + 600
    late = ca.sign(csr, SPIFFE, NOW + 1.5 * 86400)  # 24 h would outlive the CA
    assert late.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_signing_refuses_an_expired_ca_and_a_too_long_ttl() -> None:
    ca = CertificateAuthority.generate("skein.local", NOW, lifetime=3600)
    csr = make_csr(generate_key())
    with pytest.raises(PkiError, match="expired"):
        ca.sign(csr, SPIFFE, NOW + 3601)
    with pytest.raises(CertificateRequestError, match="ttl_seconds"):
        ca.sign(csr, SPIFFE, NOW, ttl=365 * 86400)


def test_csr_signature_is_checked() -> None:
    good = make_csr(generate_key()).public_bytes(serialization.Encoding.DER)
    assert load_csr(x509.load_der_x509_csr(good).public_bytes(serialization.Encoding.PEM))
    forged = x509.load_der_x509_csr(_tamper_signature(good))
    with pytest.raises(CertificateRequestError, match="does not verify"):
        load_csr(forged.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CertificateRequestError, match="not a PEM"):
        load_csr("hello")


def _tamper_signature(der: bytes) -> bytes:
    """The same CSR with a different, well-formed ECDSA signature of the same length."""
    original = x509.load_der_x509_csr(der).signature
    r, s = decode_dss_signature(original)
    replacement = encode_dss_signature(r, s ^ 1)
    if len(replacement) != len(original):
        replacement = encode_dss_signature(r ^ 1, s)
    assert len(replacement) == len(original) and replacement != original
    return der[: -len(original)] + replacement


def test_operator_intermediate_ca_loads_and_chains_to_its_root() -> None:
    root = CertificateAuthority.generate("skein.local", NOW)
    inter_key = generate_key()
    root_cert = root.certificate
    inter = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intermediate")]))
        .issuer_name(root_cert.subject)
        .public_key(inter_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(NOW - 10, tz=datetime.UTC))
        .not_valid_after(datetime.datetime.fromtimestamp(NOW + 86400 * 30, tz=datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.key, hashes.SHA256())  # type: ignore[arg-type]
    )
    chain_pem = certificates_pem([inter, root_cert])
    ca = CertificateAuthority.from_pem(chain_pem, encrypt_key(inter_key, b"pw"), b"pw", now=NOW)
    assert ca.anchor == root_cert
    leaf = ca.sign(make_csr(generate_key()), SPIFFE, NOW)
    _verify(leaf, inter)
    assert ca.intermediates_pem() == certificates_pem([inter])


def test_operator_ca_errors_name_the_problem() -> None:
    ca = CertificateAuthority.generate("skein.local", NOW)
    cert = ca.chain_pem()
    with pytest.raises(PkiError, match="does not belong"):
        CertificateAuthority.from_pem(cert, key_pem(generate_key()), now=NOW)
    with pytest.raises(KeyPassphraseError, match="encrypted"):
        CertificateAuthority.from_pem(cert, encrypt_key(ca.key, b"pw"), None, now=NOW)
    leaf_key = generate_key()
    leaf = ca.sign(make_csr(leaf_key), SPIFFE, NOW)
    with pytest.raises(PkiError, match="not a CA"):
        CertificateAuthority.from_pem(certificates_pem([leaf]), key_pem(leaf_key), now=NOW)
    with pytest.raises(PkiError, match="not now"):
        CertificateAuthority.from_pem(cert, key_pem(ca.key), now=NOW + 11 * 365 * 86400)
    with pytest.raises(PkiError, match="no readable PEM"):
        CertificateAuthority.from_pem(b"junk", key_pem(ca.key), now=NOW)


def test_sealed_record_round_trips_with_the_passphrase_only() -> None:
    ca = CertificateAuthority.generate("skein.local", NOW)
    record = CaRecord.seal(ca, b"correct horse", NOW)
    assert "ENCRYPTED PRIVATE KEY" in record.key_pem
    stored = CaRecord.decode(record.encode())
    opened = stored.open(b"correct horse")
    assert opened.certificate == ca.certificate
    leaf = opened.sign(make_csr(generate_key()), SPIFFE, NOW)
    _verify(leaf, ca.certificate)
    with pytest.raises(KeyPassphraseError, match="does not decrypt with the passphrase"):
        stored.open(b"wrong")
    with pytest.raises(PkiError, match="does not parse"):
        CaRecord.decode(b"{}")


def test_spiffe_id_shape() -> None:
    assert spiffe_id("example.org", "web") == "spiffe://example.org/service/web"
    assert parse_spiffe_id("spiffe://example.org/service/web") == ("example.org", "web")
    for bad in (
        "https://x/service/web",
        "spiffe://EX/service/web",
        "spiffe://x/ns/web",
        "spiffe://x/service/",
    ):
        assert parse_spiffe_id(bad) is None
