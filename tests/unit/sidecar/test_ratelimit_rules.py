"""Rate-limit rules: scopes key their limiters, prefixes filter, rule sets combine and update."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.policy.ratelimit import RateLimitRule, RateLimits
from skein.config.model import RateLimitAlgorithm, RateLimitConfig, RateLimitScope

NOW = 500.0
NO_HEADERS: list[tuple[bytes, bytes]] = []


def rule_config(
    name: str = "r",
    requests: int = 2,
    period: float = 60.0,
    burst: int | None = None,
    **kw: object,
) -> RateLimitConfig:
    return RateLimitConfig(
        name,
        requests,
        period,
        requests if burst is None else burst,
        **kw,  # type: ignore[arg-type]
    )


def admitted(
    rule: RateLimitRule, calls: int, path: str = "/a", peer: str = "", **kw: object
) -> int:
    headers = kw.get("headers", NO_HEADERS)
    return sum(
        rule.check(path, headers, peer, NOW) >= 0  # type: ignore[arg-type]
        for _ in range(calls)
    )


def test_service_scope_shares_one_limiter_across_callers() -> None:
    rule = RateLimitRule(rule_config(), NOW)
    assert rule.check("/a", NO_HEADERS, "10.0.0.1", NOW) == 0.0
    assert rule.check("/b", NO_HEADERS, "10.0.0.2", NOW) == 0.0
    assert rule.check("/c", NO_HEADERS, "10.0.0.3", NOW) == pytest.approx(-30.0)
    assert (rule.hits, rule.blocks, rule.keys) == (3, 1, 0)


def test_client_ip_keys_are_independent() -> None:
    rule = RateLimitRule(rule_config(scope=RateLimitScope.CLIENT_IP), NOW)
    assert admitted(rule, 5, peer="10.0.0.1") == 2
    assert admitted(rule, 5, peer="10.0.0.2") == 2
    assert admitted(rule, 1, peer="10.0.0.1") == 0
    assert (rule.hits, rule.blocks, rule.keys) == (11, 7, 2)


def test_method_scope_keys_on_the_path_without_its_query() -> None:
    rule = RateLimitRule(rule_config(scope=RateLimitScope.METHOD), NOW)
    assert admitted(rule, 1, path="/pkg.Orders/Get") == 1
    assert admitted(rule, 1, path="/pkg.Orders/Get?x=1") == 1
    assert admitted(rule, 1, path="/pkg.Orders/Get?x=2") == 0
    assert admitted(rule, 2, path="/pkg.Orders/List") == 2
    assert rule.keys == 2


def test_header_scope_keys_on_the_value_and_skips_calls_without_it() -> None:
    rule = RateLimitRule(rule_config(scope=RateLimitScope.HEADER, header="x-tenant"), NOW)
    acme = [(b":path", b"/a"), (b"x-tenant", b"acme"), (b"x-tenant", b"other")]
    globex = [(b"x-tenant", b"globex")]
    assert admitted(rule, 3, headers=acme) == 2
    assert admitted(rule, 3, headers=globex) == 2
    hits = rule.hits
    # Absent header: the rule does not apply, and does not count the call.
    assert [rule.check("/a", [(b"x-other", b"acme")], "", NOW) for _ in range(5)] == [0.0] * 5
    assert rule.hits == hits
    assert rule.keys == 2


def test_client_identity_reads_x_skein_client_unless_told_otherwise() -> None:
    default = RateLimitRule(rule_config(requests=1, scope=RateLimitScope.CLIENT_IDENTITY), NOW)
    assert admitted(default, 2, headers=[(b"x-skein-client", b"billing")]) == 1
    assert admitted(default, 2, headers=[(b"x-caller", b"billing")]) == 2  # not applied
    custom = RateLimitRule(
        rule_config(requests=1, scope=RateLimitScope.CLIENT_IDENTITY, header="x-caller"), NOW
    )
    assert admitted(custom, 2, headers=[(b"x-caller", b"billing")]) == 1


def test_header_scope_without_a_header_name_is_refused() -> None:
    with pytest.raises(ValueError, match="rate limit 'r': scope HEADER needs `header`"):
        RateLimitRule(rule_config(scope=RateLimitScope.HEADER), NOW)


def test_prefix_limits_only_the_paths_under_it() -> None:
    rule = RateLimitRule(rule_config(requests=1, prefix="/api/v1/orders"), NOW)
    assert admitted(rule, 3, path="/api/v1/users/7") == 3
    assert rule.hits == 0
    assert admitted(rule, 3, path="/api/v1/orders/7") == 1
    assert (rule.hits, rule.blocks) == (3, 2)


@given(
    max_keys=st.integers(1, 5),
    keys=st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=80),
)
def test_keyed_limiters_stay_within_max_keys_and_evicted_keys_start_fresh(
    max_keys: int, keys: list[str]
) -> None:
    # One call per key per hour: a key is admitted only when it is not tracked.
    rule = RateLimitRule(
        rule_config(requests=1, period=3600.0, scope=RateLimitScope.CLIENT_IP, max_keys=max_keys),
        NOW,
    )
    model: OrderedDict[str, None] = OrderedDict()
    for key in keys:
        expect_admitted = key not in model
        assert (rule.check("/a", NO_HEADERS, key, NOW) >= 0) == expect_admitted
        model[key] = None
        model.move_to_end(key)
        if len(model) > max_keys:
            model.popitem(last=False)
        assert rule.keys == len(model) <= max_keys


def test_describe_says_which_limit_how_and_when_to_retry() -> None:
    rule = RateLimitRule(
        rule_config("per-ip", 200, 3600.0, 300, scope=RateLimitScope.CLIENT_IP), NOW
    )
    assert rule.describe(18.0) == (
        "rate limit 'per-ip' exceeded (token bucket, 200 per 3600 s, burst 300, "
        "per client IP); retry after 18 s"
    )
    shaped = RateLimitRule(
        rule_config(
            "orders",
            10,
            1.0,
            algorithm=RateLimitAlgorithm.LEAKY_BUCKET,
            scope=RateLimitScope.HEADER,
            header="x-tenant",
            prefix="/api/v1/orders",
        ),
        NOW,
    )
    assert shaped.describe(-0.25) == (
        "rate limit 'orders' exceeded (leaky bucket, 10 per 1 s, burst 10, per value of "
        "header x-tenant, on paths under /api/v1/orders); retry after 250 ms"
    )
    assert shaped.describe(17.2).endswith("retry after 18 s")


def test_dump_shows_config_counters_and_state() -> None:
    service = RateLimitRule(rule_config("all", 2), NOW)
    admitted(service, 3)
    dumped = service.dump(NOW)
    assert dumped["name"] == "all"
    assert (dumped["hits"], dumped["blocks"], dumped["state"]) == (3, 1, {"tokens": 0.0})
    keyed = RateLimitRule(rule_config("hdr", scope=RateLimitScope.HEADER, header="x-k"), NOW)
    for value in (b"one", b"two"):
        admitted(keyed, 1, headers=[(b"x-k", value)])
    dumped = keyed.dump(NOW)
    assert (dumped["keys"], dumped["max_keys"]) == (2, 10000)
    assert list(dumped["recent"]) == ["two", "one"]  # most recent first
    assert dumped["recent"]["one"] == {"tokens": 1.0}


# -- RateLimits --------------------------------------------------------------------


def test_no_rules_admit_everything() -> None:
    limits = RateLimits((), NOW)
    assert len(limits) == 0
    assert limits.check("/a", NO_HEADERS, "", NOW) == (0.0, None)
    assert limits.dump(NOW) == []


def test_the_first_rejecting_rule_wins_and_earlier_ones_are_not_refunded() -> None:
    wide = rule_config("wide", 5)
    narrow = rule_config("narrow", 1, scope=RateLimitScope.CLIENT_IP)
    limits = RateLimits([wide, narrow], NOW)
    assert limits.check("/a", NO_HEADERS, "10.0.0.1", NOW) == (0.0, None)
    result, rule = limits.check("/a", NO_HEADERS, "10.0.0.1", NOW)
    assert result == pytest.approx(-60.0)
    assert rule is limits.rules[1]
    assert [r.hits for r in limits.rules] == [2, 2]
    # The rejected call spent the wide rule's allowance: three more fit, not four.
    admitted_calls = [limits.check("/a", NO_HEADERS, f"10.0.1.{i}", NOW)[0] >= 0 for i in range(4)]
    assert admitted_calls == [True, True, True, False]
    assert limits.check("/a", NO_HEADERS, "10.0.2.1", NOW)[1] is limits.rules[0]


def test_the_largest_shaping_delay_wins() -> None:
    slow = rule_config("slow", 1, 1.0, 4, algorithm=RateLimitAlgorithm.LEAKY_BUCKET)
    fast = rule_config("fast", 4, 1.0, 4, algorithm=RateLimitAlgorithm.LEAKY_BUCKET)
    limits = RateLimits([fast, slow], NOW)
    assert limits.check("/a", NO_HEADERS, "", NOW) == (0.0, None)
    assert limits.check("/a", NO_HEADERS, "", NOW) == (1.0, None)
    assert limits.check("/a", NO_HEADERS, "", NOW) == (2.0, None)


def test_update_keeps_state_of_unchanged_rules_and_resets_changed_ones() -> None:
    kept = rule_config("kept", 1)
    changed = rule_config("changed", 1, scope=RateLimitScope.CLIENT_IP)
    dropped = rule_config("dropped", 1, prefix="/x")
    limits = RateLimits([kept, changed, dropped], NOW)
    limits.check("/a", NO_HEADERS, "10.0.0.1", NOW)
    assert limits.update([kept, changed, dropped], NOW + 1) is limits

    changed_now = rule_config("changed", 2, scope=RateLimitScope.CLIENT_IP)
    added = rule_config("added", 1, scope=RateLimitScope.METHOD)
    updated = limits.update([added, changed_now, kept], NOW + 1)
    assert [r.config.name for r in updated.rules] == ["added", "changed", "kept"]
    assert updated.rules[2] is limits.rules[0]
    assert updated.rules[1].hits == 0
    # "kept" is still spent; "changed" starts with a fresh bucket per IP.
    assert updated.rules[2].check("/a", NO_HEADERS, "10.0.0.1", NOW + 1) < 0
    assert updated.rules[1].check("/a", NO_HEADERS, "10.0.0.1", NOW + 1) == 0.0
    assert updated.rules[1].check("/a", NO_HEADERS, "10.0.0.1", NOW + 1) == 0.0


def test_update_with_a_bad_rule_raises_and_leaves_the_old_rules_serving() -> None:
    good = rule_config("good", 1)
    limits = RateLimits([good], NOW)
    limits.check("/a", NO_HEADERS, "", NOW)
    with pytest.raises(ValueError, match="rate limit 'bad': burst must be >= requests"):
        limits.update([good, rule_config("bad", 3, burst=1)], NOW)
    assert limits.rules[0].config is good
    assert limits.check("/a", NO_HEADERS, "", NOW)[0] < 0
