"""Authorization evaluation, Istio semantics: deny wins, default-deny, patterns."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sidecar.auth.authz import Authorizer, AuthzRequest
from skein.config.model import AuthzAction, AuthzPolicyConfig, AuthzRuleConfig

ORDERS = "spiffe://skein.local/service/orders"
SHOP = "spiffe://skein.local/service/shop"
ALLOW, DENY = AuthzAction.ALLOW, AuthzAction.DENY


def policy(name: str, action: AuthzAction, *rules: AuthzRuleConfig) -> AuthzPolicyConfig:
    return AuthzPolicyConfig(name=name, action=action, rules=rules)


def req(
    identity: str = "", path: str = "/shop.Cart/Get", method: str = "POST", **kw: object
) -> AuthzRequest:
    return AuthzRequest(identity, path, method, **kw)  # type: ignore[arg-type]


def test_no_policies_allows() -> None:
    assert Authorizer(()).evaluate(req()).allowed


def test_allow_policy_without_rules_denies_everything() -> None:
    decision = Authorizer((policy("lockdown", ALLOW),)).evaluate(req(SHOP))
    assert not decision.allowed
    assert decision.reason == "no ALLOW policy matched"


def test_only_deny_policies_allow_what_they_do_not_match() -> None:
    authz = Authorizer((policy("no-admin", DENY, AuthzRuleConfig(paths=("/admin*",))),))
    assert authz.evaluate(req(path="/orders")).allowed
    denied = authz.evaluate(req(path="/admin/users"))
    assert not denied.allowed
    assert denied.reason == "denied by AuthorizationPolicy/no-admin rules[0]"
    assert denied.policy == "no-admin"


def test_deny_wins_over_a_matching_allow() -> None:
    authz = Authorizer(
        (
            policy("readers", ALLOW, AuthzRuleConfig(sources=("shop",))),
            policy("block-delete", DENY, AuthzRuleConfig(paths=("/shop.Cart/Delete",))),
        )
    )
    assert authz.evaluate(req(SHOP, "/shop.Cart/Get")).allowed
    decision = authz.evaluate(req(SHOP, "/shop.Cart/Delete"))
    assert not decision.allowed
    assert "block-delete rules[0]" in decision.reason


def test_allowed_decision_names_the_rule() -> None:
    authz = Authorizer(
        (
            policy(
                "readers",
                ALLOW,
                AuthzRuleConfig(sources=("payments",)),
                AuthzRuleConfig(sources=(ORDERS,)),
            ),
        )
    )
    decision = authz.evaluate(req(ORDERS))
    assert decision.allowed
    assert decision.reason == "allowed by AuthorizationPolicy/readers rules[1]"
    assert not authz.evaluate(req(SHOP)).allowed


def test_sources_by_id_name_prefix_and_star() -> None:
    def allows(source: str, identity: str) -> bool:
        rule = AuthzRuleConfig(sources=(source,))
        return Authorizer((policy("p", ALLOW, rule),)).evaluate(req(identity)).allowed

    assert allows(ORDERS, ORDERS) and not allows(ORDERS, SHOP)
    assert allows("orders", ORDERS) and not allows("orders", SHOP)
    assert allows("ord*", ORDERS) and not allows("ord*", SHOP)
    assert allows("spiffe://skein.local/*", SHOP)
    assert not allows("spiffe://other.domain/*", SHOP)
    assert allows("*", SHOP)
    # a plaintext caller (no identity) matches no source, not even '*'
    assert not allows("*", "")
    assert not allows("orders", "")


def test_paths_exact_and_prefix() -> None:
    rule = AuthzRuleConfig(paths=("/shop.Cart/Get", "/shop.Catalog/*"))
    authz = Authorizer((policy("p", ALLOW, rule),))
    assert authz.evaluate(req(path="/shop.Cart/Get")).allowed
    assert authz.evaluate(req(path="/shop.Catalog/List")).allowed
    assert not authz.evaluate(req(path="/shop.Cart/GetAll")).allowed
    assert not authz.evaluate(req(path="/shop.Cart/Delete")).allowed


def test_fields_and_values_or() -> None:
    rule = AuthzRuleConfig(sources=("shop",), http_methods=("GET", "HEAD"))
    authz = Authorizer((policy("p", ALLOW, rule),))
    assert authz.evaluate(req(SHOP, method="GET")).allowed
    assert authz.evaluate(req(SHOP, method="HEAD")).allowed
    assert not authz.evaluate(req(SHOP, method="POST")).allowed
    assert not authz.evaluate(req(ORDERS, method="GET")).allowed


def test_headers_exact_values() -> None:
    rule = AuthzRuleConfig(headers=(("x-tenant", "acme"),))
    authz = Authorizer((policy("p", ALLOW, rule),))
    assert authz.evaluate(req(headers={"x-tenant": "acme"})).allowed
    assert not authz.evaluate(req(headers={"x-tenant": "other"})).allowed
    assert not authz.evaluate(req(headers={})).allowed


def test_claims_exact_and_list_claims() -> None:
    rule = AuthzRuleConfig(claims=(("role", "admin"), ("sub", "alice")))
    authz = Authorizer((policy("p", ALLOW, rule),))
    assert authz.evaluate(req(claims={"role": "admin", "sub": "alice"})).allowed
    assert authz.evaluate(req(claims={"role": ["user", "admin"], "sub": "alice"})).allowed
    assert not authz.evaluate(req(claims={"role": "user", "sub": "alice"})).allowed
    assert not authz.evaluate(req(claims={"sub": "alice"})).allowed


def test_api_key_names() -> None:
    rule = AuthzRuleConfig(api_keys=("ci-bot",))
    authz = Authorizer((policy("p", ALLOW, rule),))
    assert authz.evaluate(req(api_key="ci-bot")).allowed
    assert not authz.evaluate(req(api_key="other")).allowed
    assert not authz.evaluate(req()).allowed


_names = st.sampled_from(["orders", "shop", "payments"])


@given(
    deny_sources=st.lists(_names, max_size=2),
    allow_sources=st.lists(st.lists(_names, min_size=1, max_size=2), max_size=2),
    caller=_names,
)
def test_decision_follows_the_three_steps(
    deny_sources: list[str], allow_sources: list[list[str]], caller: str
) -> None:
    policies = []
    if deny_sources:
        policies.append(policy("d", DENY, AuthzRuleConfig(sources=tuple(deny_sources))))
    if allow_sources:
        rules = tuple(AuthzRuleConfig(sources=tuple(s)) for s in allow_sources)
        policies.append(policy("a", ALLOW, *rules))
    identity = f"spiffe://skein.local/service/{caller}"
    expected = caller not in deny_sources and (
        not allow_sources or any(caller in s for s in allow_sources)
    )
    assert Authorizer(tuple(policies)).evaluate(req(identity)).allowed is expected


def test_paths_are_normalised_before_matching() -> None:
    authz = Authorizer((policy("no-admin", DENY, AuthzRuleConfig(paths=("/admin*",))),))
    for sneaky in ("//admin", "/x/../admin", "/%61dmin/users", "/./admin", "/public/..%2Fadmin"):
        assert not authz.evaluate(req(path=sneaky)).allowed, sneaky
    exact = Authorizer((policy("p", ALLOW, AuthzRuleConfig(paths=("/orders",))),))
    assert exact.evaluate(req(path="/orders?page=2")).allowed
    assert not exact.evaluate(req(path="/orders/../admin")).allowed


@given(st.text(alphabet="/.%a2F?", max_size=12))
def test_normalised_paths_start_with_a_slash_and_have_no_dot_segments(raw: str) -> None:
    from sidecar.auth.authz import normalize_path

    got = normalize_path("/" + raw)
    assert got.startswith("/")
    if "%" not in raw:  # decoding may reveal more '%' text, which is data, not a segment
        assert "/../" not in got and "//" not in got.split("?")[0]
