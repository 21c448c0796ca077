"""The inbound check through InboundDispatcher: 401 / 403 with reasons, claims forwarded,
rate limits after auth, nothing done when nothing is configured."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.dispatch import ConfigHolder, InboundDispatcher
from sidecar.transport.contract import NoRoute, Pick
from skein.config.model import (
    ApiKeyAuthConfig,
    AuthzAction,
    AuthzPolicyConfig,
    AuthzRuleConfig,
    JwtRuleConfig,
    LocalConfig,
    RateLimitConfig,
    SidecarConfig,
)
from tests.unit.sidecar.auth.tokens import ISSUER, NOW, claims, jwks, mint, rsa_jwk

Headers = list[tuple[bytes, bytes]]
APP = ("127.0.0.1", 9000)


def dispatcher(local: LocalConfig) -> InboundDispatcher:
    holder = ConfigHolder(random.Random(0), now=lambda: 100.0)
    holder.apply(SidecarConfig("1", {}, local), "control")
    return InboundDispatcher(holder, APP, wall=lambda: NOW)


def call(d: InboundDispatcher, headers: Headers, path: str = "/shop.Cart/Get") -> Pick:
    return d.pick("cart", path, [(b":method", b"POST"), (b":path", path.encode()), *headers], "")


def refusal(d: InboundDispatcher, headers: Headers, path: str = "/shop.Cart/Get") -> NoRoute:
    with pytest.raises(NoRoute) as info:
        call(d, headers, path)
    return info.value


@pytest.fixture
def jwks_file(tmp_path: Path) -> str:
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(rsa_jwk()))
    return str(path)


def jwt_local(jwks_file: str, required: bool = True, **more: object) -> LocalConfig:
    rule = JwtRuleConfig(
        issuer=ISSUER,
        audiences=("orders",),
        jwks_file=jwks_file,
        forward_claims=(("role", "x-user-role"), ("sub", "x-user")),
        required=required,
    )
    return LocalConfig(jwt=(rule,), **more)  # type: ignore[arg-type]


def bearer(token: str) -> Headers:
    return [(b"authorization", f"Bearer {token}".encode())]


def test_nothing_configured_is_the_plain_pick() -> None:
    d = dispatcher(LocalConfig())
    first = call(d, [])
    assert first is call(d, [(b"authorization", b"Bearer junk")])
    assert first.headers is None


def test_good_token_forwards_claims_and_keeps_authorization(jwks_file: str) -> None:
    d = dispatcher(jwt_local(jwks_file))
    token = mint(claims(role="admin"))
    spoof = [(b"x-user", b"root")]
    got = call(d, [*bearer(token), *spoof])
    assert got.headers is not None
    sent = list(got.headers)
    assert (b"x-user", b"alice") in sent
    assert (b"x-user", b"root") not in sent
    assert (b"x-user-role", b"admin") in sent
    assert (b"authorization", f"Bearer {token}".encode()) in sent
    assert d.auth_stats.jwt == {"ok": 1}


@pytest.mark.parametrize(
    ("token_claims", "reason"),
    [
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"aud": "payments"}, "wrong audience"),
        ({"exp": int(NOW) - 3600}, "expired"),
    ],
)
def test_bad_token_is_unauthenticated_with_the_reason(
    jwks_file: str, token_claims: dict[str, object], reason: str
) -> None:
    d = dispatcher(jwt_local(jwks_file, required=False))
    err = refusal(d, bearer(mint(claims(**token_claims))))
    assert (err.grpc_status, err.http_status) == (16, 401)
    assert err.message == f"unauthenticated: JWT refused: {reason}"
    assert d.auth_stats.jwt == {reason: 1}


def test_missing_required_token(jwks_file: str) -> None:
    err = refusal(dispatcher(jwt_local(jwks_file)), [])
    assert (err.grpc_status, err.http_status) == (16, 401)
    assert "a JWT is required" in err.message


def test_optional_token_absent_passes_but_strips_spoofed_claim_headers(jwks_file: str) -> None:
    got = call(dispatcher(jwt_local(jwks_file, required=False)), [(b"x-user", b"root")])
    assert got.headers is not None
    assert all(name != b"x-user" for name, _ in got.headers)


def test_denied_call_names_the_rule(jwks_file: str) -> None:
    readers = AuthzPolicyConfig(
        "admins-only", AuthzAction.ALLOW, (AuthzRuleConfig(claims=(("role", "admin"),)),)
    )
    d = dispatcher(jwt_local(jwks_file, authorization=(readers,)))
    assert call(d, bearer(mint(claims(role="admin")))).headers is not None
    err = refusal(d, bearer(mint(claims(role="user"))))
    assert (err.grpc_status, err.http_status) == (7, 403)
    assert err.message == "permission denied: no ALLOW policy matched"
    assert d.auth_stats.denied == {"": 1}


def test_deny_policy_on_a_path_names_the_rule() -> None:
    deny = AuthzPolicyConfig(
        "no-delete", AuthzAction.DENY, (AuthzRuleConfig(paths=("/shop.Cart/Delete",)),)
    )
    d = dispatcher(LocalConfig(authorization=(deny,)))
    assert call(d, []).headers is None
    err = refusal(d, [], path="/shop.Cart/Delete")
    assert err.message == "permission denied: denied by AuthorizationPolicy/no-delete rules[0]"
    assert d.auth_stats.denied == {"no-delete": 1}


def test_peer_identity_comes_from_xfcc_only_when_the_listener_owns_it() -> None:
    allow = AuthzPolicyConfig("shop", AuthzAction.ALLOW, (AuthzRuleConfig(sources=("shop",)),))
    d = dispatcher(LocalConfig(authorization=(allow,)))
    xfcc = [
        (
            b"x-forwarded-client-cert",
            b"By=spiffe://skein.local/service/cart;URI=spiffe://skein.local/service/shop",
        )
    ]
    assert refusal(d, xfcc).grpc_status == 7  # plaintext: a forged header proves nothing
    d.identity_from_xfcc = True
    assert call(d, xfcc).cluster == "local"
    assert refusal(d, []).grpc_status == 7


def test_api_keys() -> None:
    digest = hashlib.sha256(b"sk_good").hexdigest()
    keys = ApiKeyAuthConfig(required=True, keys=((digest, "ci-bot"),))
    only_bot = AuthzPolicyConfig(
        "bots", AuthzAction.ALLOW, (AuthzRuleConfig(api_keys=("ci-bot",)),)
    )
    d = dispatcher(LocalConfig(api_keys=keys, authorization=(only_bot,)))
    assert call(d, [(b"x-api-key", b"sk_good")]).cluster == "local"
    err = refusal(d, [(b"x-api-key", b"sk_bad")])
    assert (err.grpc_status, err.http_status) == (16, 401)
    assert "unknown or revoked API key" in err.message
    assert "an API key is required" in refusal(d, []).message
    assert d.auth_stats.api_key_failures == 2


def test_auth_runs_before_rate_limits(jwks_file: str) -> None:
    limit = RateLimitConfig(name="one", requests=1, period=60.0, burst=1)
    d = dispatcher(jwt_local(jwks_file, rate_limits=(limit,)))
    for _ in range(3):  # refused calls spend no tokens
        assert refusal(d, []).grpc_status == 16
    call(d, bearer(mint(claims())))
    assert refusal(d, bearer(mint(claims()))).grpc_status != 16


def test_a_sidecar_without_jwt_never_loads_cryptography() -> None:
    """cryptography costs ~10 MB of RSS; only a sidecar that verifies tokens pays it."""
    code = (
        "import sys, random\n"
        "from sidecar.dispatch import ConfigHolder, InboundDispatcher\n"
        "from skein.config.model import *\n"
        "h = ConfigHolder(random.Random(0))\n"
        "rule = AuthzRuleConfig(paths=('/a',))\n"
        "pol = AuthzPolicyConfig('p', AuthzAction.DENY, (rule,))\n"
        "h.apply(SidecarConfig('1', {}, LocalConfig(authorization=(pol,))), 'x')\n"
        "InboundDispatcher(h, ('127.0.0.1', 1)).pick('a', '/b', [], '')\n"
        "print('cryptography' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_claim_values_can_not_split_headers(jwks_file: str) -> None:
    d = dispatcher(jwt_local(jwks_file))
    got = call(d, bearer(mint(claims(sub="alice\r\nx-admin: yes", role=["a", "b"]))))
    assert got.headers is not None
    sent = dict(got.headers)
    assert sent[b"x-user"] == b"alicex-admin: yes"
    assert sent[b"x-user-role"] == b'["a","b"]'


def test_a_credential_header_sent_twice_is_refused(jwks_file: str) -> None:
    d = dispatcher(jwt_local(jwks_file, required=False))
    good = bearer(mint(claims()))
    err = refusal(d, [*good, (b"authorization", b"Bearer forged")])
    assert (err.grpc_status, err.http_status) == (16, 401)
    assert err.message == "unauthenticated: header 'authorization' is sent more than once"


def test_dump_shows_rules_keys_and_counters(jwks_file: str) -> None:
    deny = AuthzPolicyConfig("no-delete", AuthzAction.DENY, (AuthzRuleConfig(paths=("/d",)),))
    d = dispatcher(jwt_local(jwks_file, authorization=(deny,)))
    dump = d.dump_auth()
    assert dump is not None
    assert dump["jwt"] == [
        {
            "issuer": ISSUER,
            "required": True,
            "jwks": jwks_file,
            "keys": ["rsa-1"],
            "jwks_error": "",
        }
    ]
    assert dump["authorization"] == ["DENY AuthorizationPolicy/no-delete rules[0]"]
    refusal(d, [])
    assert d.dump_auth()["counters"]["jwt"] == {"missing": 1}  # type: ignore[index]
    assert dispatcher(LocalConfig()).dump_auth() is None
