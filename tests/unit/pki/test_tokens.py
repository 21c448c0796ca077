"""Join tokens and trust bundles: pure checks, time passed in."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from skein.pki import (
    CertificateAuthority,
    JoinTokenRecord,
    bundle_pem,
    check_token,
    fingerprint,
    new_token,
    parse_bundle,
    parse_token,
    with_anchor,
    without_anchor,
)

NOW = 1_800_000_000.0


def test_new_token_parses_back_and_stores_only_a_digest() -> None:
    text, record = new_token("orders", NOW, 3600)
    assert text.startswith(f"skt_{record.id}.")
    token_id, secret = parse_token(text) or ("", "")
    assert token_id == record.id
    assert secret not in record.encode().decode()
    assert JoinTokenRecord.decode(record.encode()) == record
    assert record.expires_at == NOW + 3600
    assert check_token(record, secret, "orders", NOW + 10) is None


def test_each_refusal_says_why() -> None:
    text, record = new_token("orders", NOW, 60)
    _, secret = parse_token(text) or ("", "")
    wrong = check_token(record, secret[:-1] + ("A" if secret[-1] != "A" else "B"), "orders", NOW)
    assert wrong is not None and "secret does not match" in wrong.reason and not wrong.denied
    expired = check_token(record, secret, "orders", NOW + 61)
    assert expired is not None and "expired 1s ago" in expired.reason and not expired.denied
    other = check_token(record, secret, "payments", NOW)
    assert other is not None and other.denied
    assert "is for service 'orders', not 'payments'" in other.reason
    revoked = dataclasses.replace(record, revoked=True)
    refusal = check_token(revoked, secret, "orders", NOW)
    assert refusal is not None and "was revoked" in refusal.reason


@given(st.text(max_size=80))
def test_garbage_never_parses_as_a_token(text: str) -> None:
    parsed = parse_token(text)
    if parsed is not None:  # only the exact shape is accepted
        assert text.strip() == f"skt_{parsed[0]}.{parsed[1]}"


def test_malformed_tokens() -> None:
    for bad in ("", "skt_", "skt_abc.def", "skt_0123456789abcdef", "tok_0123456789abcdef.x" * 2):
        assert parse_token(bad) is None


def test_bundle_adds_once_and_drops_by_fingerprint() -> None:
    a = CertificateAuthority.generate("skein.local", NOW).certificate
    b = CertificateAuthority.generate("skein.local", NOW).certificate
    anchors = with_anchor(with_anchor([a], b), a)
    assert anchors == [a, b]
    assert parse_bundle(bundle_pem(anchors)) == [a, b]
    fp = fingerprint(a)
    colon = ":".join(fp[i : i + 2] for i in range(0, len(fp), 2)).upper()
    assert without_anchor(anchors, colon) == [b]
    assert parse_bundle(b"") == []
