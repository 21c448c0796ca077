"""JWT verification, case by case: each refusal says why; each algorithm passes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from sidecar.auth.jwks import FileJwks, JwksError, StaticJwks, parse_jwks
from sidecar.auth.jwt import JwtError, JwtVerifier
from skein.config.model import JwtRuleConfig
from tests.unit.sidecar.auth.tokens import (
    ISSUER,
    NOW,
    OTHER_RSA_KEY,
    RSA_KEY,
    b64,
    claims,
    ec_jwk,
    jwks,
    mint,
    oct_jwk,
    rsa_jwk,
)

RULE = JwtRuleConfig(issuer=ISSUER, audiences=("orders",), jwks_file="unused")
KEYS = StaticJwks(parse_jwks(jwks(rsa_jwk(), ec_jwk(), oct_jwk())))


def verify(token: str, rule: JwtRuleConfig = RULE, now: float = NOW) -> dict[str, object]:
    return JwtVerifier(rule, KEYS).verify(token, now, 0.0)


def refused(token: str, rule: JwtRuleConfig = RULE, now: float = NOW) -> str:
    with pytest.raises(JwtError) as info:
        verify(token, rule, now)
    return info.value.reason


@pytest.mark.parametrize(("alg", "kid"), [("RS256", "rsa-1"), ("ES256", "ec-1"), ("HS256", "hs-1")])
def test_each_algorithm_passes(alg: str, kid: str) -> None:
    got = verify(mint(claims(), alg, kid))
    assert got["sub"] == "alice"
    assert got["iss"] == ISSUER


def test_without_kid_the_key_of_the_algorithm_is_tried() -> None:
    assert verify(mint(claims(), "ES256", kid=None))["sub"] == "alice"


def test_wrong_issuer() -> None:
    assert refused(mint(claims(iss="https://evil.example"))) == "wrong issuer"


def test_wrong_audience() -> None:
    assert refused(mint(claims(aud="payments"))) == "wrong audience"


def test_audience_list_with_one_match_passes() -> None:
    assert verify(mint(claims(aud=["payments", "orders"])))["sub"] == "alice"


def test_any_audience_when_the_rule_names_none() -> None:
    rule = JwtRuleConfig(issuer=ISSUER, jwks_file="unused")
    assert verify(mint(claims(aud="payments")), rule)["sub"] == "alice"


def test_expired_beyond_the_clock_skew() -> None:
    token = mint(claims(exp=int(NOW) - 61))
    assert refused(token) == "expired"


def test_expired_within_the_clock_skew_passes() -> None:
    assert verify(mint(claims(exp=int(NOW) - 59)))["sub"] == "alice"


def test_not_yet_valid() -> None:
    assert refused(mint(claims(nbf=int(NOW) + 120))) == "not yet valid (nbf)"


def test_issued_in_the_future() -> None:
    assert refused(mint(claims(iat=int(NOW) + 120))) == "issued in the future (iat)"


def test_missing_exp_claim() -> None:
    assert refused(mint(claims(exp=None))) == "missing claim 'exp'"


def test_bad_signature_from_another_key() -> None:
    assert refused(mint(claims(), key=OTHER_RSA_KEY)) == "bad signature"


def test_tampered_payload_is_a_bad_signature() -> None:
    head, _payload, sig = mint(claims()).split(".")
    forged = b64(b'{"iss":"%s","sub":"root","exp":%d}' % (ISSUER.encode(), int(NOW) + 60))
    assert refused(f"{head}.{forged}.{sig}") == "bad signature"


def test_alg_none_is_refused() -> None:
    token = mint(claims(), alg="none", kid=None)
    assert refused(token) == "alg none is not accepted"
    assert refused(mint(claims(), alg="None", kid=None)) == "alg none is not accepted"


def test_unsupported_alg_is_refused() -> None:
    assert refused(mint(claims(), alg="HS512", kid="hs-1")).startswith("alg HS512 is not accepted")


def test_alg_confusion_hs256_signed_with_the_rsa_public_key() -> None:
    """The classic attack: HMAC keyed with the RSA public key's PEM, under the RSA kid."""
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = mint(claims(), alg="HS256", kid="rsa-1", key=pem)
    assert refused(token) == "alg HS256 does not match the issuer's key type"


def test_unknown_kid() -> None:
    assert refused(mint(claims(), kid="rotated-away")) == "unknown kid 'rotated-away'"


def test_malformed_tokens() -> None:
    assert refused("a.b").startswith("malformed token")
    assert refused("!!.e30.e30").startswith("malformed token")


def test_jwk_alg_must_fit_its_key_type() -> None:
    bad = dict(rsa_jwk(), alg="HS256")
    with pytest.raises(JwksError, match="does not fit kty"):
        parse_jwks(jwks(bad))


def test_no_keys_names_the_source_error() -> None:
    empty = StaticJwks()
    empty.error = "keys.json: No such file or directory"
    with pytest.raises(JwtError, match="No such file"):
        JwtVerifier(RULE, empty).verify(mint(claims()), NOW, 0.0)


def test_file_source_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(rsa_jwk(kid="old")))
    source = FileJwks(str(path))
    verifier = JwtVerifier(RULE, source)
    assert verifier.verify(mint(claims(), kid="old"), NOW, 0.0)["sub"] == "alice"
    path.write_bytes(jwks(rsa_jwk(kid="new"), ec_jwk()))
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    # within a second of the last check the old set is still served
    with pytest.raises(JwtError, match="unknown kid 'new'"):
        verifier.verify(mint(claims(), kid="new"), NOW, 0.5)
    assert verifier.verify(mint(claims(), kid="new"), NOW, 1.5)["sub"] == "alice"


def test_file_source_keeps_the_last_good_set_when_the_file_breaks(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(rsa_jwk()))
    source = FileJwks(str(path))
    path.write_bytes(b"{not json")
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    keys = source.current(10.0)
    assert [k.kid for k in keys] == ["rsa-1"]
    assert "not JSON" in source.error


def test_a_remembered_token_still_expires() -> None:
    verifier = JwtVerifier(RULE, KEYS)
    token = mint(claims())
    assert verifier.verify(token, NOW, 0.0)["sub"] == "alice"
    assert verifier.verify(token, NOW + 1, 0.0)["sub"] == "alice"
    with pytest.raises(JwtError, match="expired"):
        verifier.verify(token, NOW + 3600, 0.0)


def test_a_remembered_token_is_forgotten_when_its_key_goes(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(rsa_jwk()))
    verifier = JwtVerifier(RULE, FileJwks(str(path)))
    token = mint(claims())
    assert verifier.verify(token, NOW, 0.0)["sub"] == "alice"
    path.write_bytes(jwks(ec_jwk()))
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))
    with pytest.raises(JwtError, match="unknown kid 'rsa-1'"):
        verifier.verify(token, NOW, 5.0)
