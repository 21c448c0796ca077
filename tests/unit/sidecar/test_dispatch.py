"""Dispatchers and clusters over a ConfigHolder: the outbound pipeline, NoRoute reasons,
state kept across pushes. Time is a ManualClock; nothing sleeps."""

from __future__ import annotations

import dataclasses
import random

import pytest

from sidecar.dispatch import (
    AuthorityDispatcher,
    ConfigHolder,
    InboundDispatcher,
    UpstreamDispatcher,
)
from sidecar.transport.contract import FAIL_CONNECT, FAIL_GRPC, NoRoute, Pick
from skein.clock import ManualClock
from skein.config.model import (
    Algorithm,
    BreakerConfig,
    BudgetConfig,
    ClusterConfig,
    EndpointConfig,
    HashConfig,
    LoadBalancerConfig,
    LocalConfig,
    MethodConfig,
    OutlierConfig,
    RateLimitConfig,
    RateLimitScope,
    RetryConfig,
    SidecarConfig,
)

NO_HEADERS: tuple[tuple[bytes, bytes], ...] = ()


def ep(name: str, port: int, healthy: bool = True, reason: str = "") -> EndpointConfig:
    return EndpointConfig(name, "127.0.0.1", port, healthy=healthy, health_reason=reason)


def config(
    version: str = "1", local: LocalConfig | None = None, **clusters: ClusterConfig
) -> SidecarConfig:
    return SidecarConfig(version, dict(clusters), local or LocalConfig(timeout=2.5))


ORDERS = ClusterConfig("orders", timeout=1.0, endpoints=(ep("o1", 9001), ep("o2", 9002)))


def holder_with(cfg: SidecarConfig, clock: ManualClock | None = None) -> ConfigHolder:
    clock = clock or ManualClock(100.0)
    holder = ConfigHolder(random.Random(0), now=clock.now)
    holder.apply(cfg, "control")
    return holder


def pick(dispatcher: UpstreamDispatcher, path: str = "/x.Y/Z", peer: str = "") -> Pick:
    return dispatcher.pick("", path, NO_HEADERS, peer)


def test_upstream_dispatcher_round_robins_with_policy_timeout() -> None:
    holder = holder_with(config(orders=ORDERS))
    dispatcher = UpstreamDispatcher(holder, "orders")
    picks = [pick(dispatcher) for _ in range(4)]
    assert {p.address for p in picks} == {("127.0.0.1", 9001), ("127.0.0.1", 9002)}
    assert all(p.cluster == "orders" and p.timeout == 1.0 for p in picks)
    assert all(p.retry is not None and p.retry.max_attempts == 3 for p in picks)
    # a pick hands out the prebuilt object: no allocation per stream
    assert picks[0] is picks[2]


def test_done_releases_in_flight_and_counts_failures() -> None:
    holder = holder_with(config(orders=ORDERS))
    chosen = pick(UpstreamDispatcher(holder, "orders"))
    assert holder.current is not None
    dump = holder.current.dump_clusters()["orders"]
    assert sum(e["in_flight"] for e in dump["endpoints"]) == 1
    assert dump["circuit_breaker"]["in_flight"] == 1
    assert chosen.done is not None
    chosen.done(False, 100.0, 0.01)
    dump = holder.current.dump_clusters()["orders"]
    assert sum(e["in_flight"] for e in dump["endpoints"]) == 0
    assert dump["circuit_breaker"]["in_flight"] == 0
    assert sum(e["failures"] for e in dump["endpoints"]) == 1


@pytest.mark.parametrize(
    ("cluster", "reason"),
    [
        (ClusterConfig("orders"), "none discovered"),
        (
            ClusterConfig("orders", endpoints=(ep("o1", 1, False, "3 checks failed: refused"),)),
            "none healthy (1 registered, all failing health checks: o1: 3 checks failed",
        ),
    ],
)
def test_no_endpoints_names_service_and_reason(cluster: ClusterConfig, reason: str) -> None:
    holder = holder_with(config(orders=cluster))
    with pytest.raises(NoRoute) as info:
        pick(UpstreamDispatcher(holder, "orders"))
    assert "'orders'" in info.value.message and reason in info.value.message
    assert info.value.grpc_status == 14


def test_unknown_and_unconfigured_services() -> None:
    empty = ConfigHolder()
    with pytest.raises(NoRoute, match="no configuration yet"):
        pick(UpstreamDispatcher(empty, "orders"))
    holder = holder_with(config(orders=ORDERS))
    with pytest.raises(NoRoute, match=r"'payments': unknown service.*--subscribe payments"):
        pick(UpstreamDispatcher(holder, "payments"))
    with pytest.raises(NoRoute, match="'payments': unknown service"):
        AuthorityDispatcher(holder).pick("payments:80", "/", NO_HEADERS, "")


def test_authority_dispatcher_routes_by_host() -> None:
    holder = holder_with(config(orders=ORDERS))
    chosen = AuthorityDispatcher(holder).pick(
        "orders.default.svc.cluster.local:8003", "/", NO_HEADERS, ""
    )
    assert chosen.cluster == "orders"


def test_inbound_goes_to_app_with_local_timeout_and_method_override() -> None:
    holder = ConfigHolder()
    dispatcher = InboundDispatcher(holder, ("127.0.0.1", 7000))
    before = dispatcher.pick("svc", "/", NO_HEADERS, "")
    assert before.address == ("127.0.0.1", 7000) and before.timeout is None
    assert before.retry is not None and before.retry.max_attempts == 1
    local = LocalConfig(timeout=2.5, methods=(MethodConfig("/shop.Orders/Slow", timeout=9.0),))
    holder.apply(config(local=local), "disk")
    assert dispatcher.pick("svc", "/shop.Orders/Get", NO_HEADERS, "").timeout == 2.5
    assert dispatcher.pick("svc", "/shop.Orders/Slow", NO_HEADERS, "").timeout == 9.0


def test_swap_keeps_cluster_state_and_in_flight_of_staying_endpoints() -> None:
    holder = holder_with(config(orders=ORDERS))
    dispatcher = UpstreamDispatcher(holder, "orders")
    pick(dispatcher)
    pick(dispatcher)
    assert holder.current is not None
    first = holder.current.clusters["orders"]
    breaker, balancer = first.breaker, first.balancer
    holder.apply(config("2", orders=ORDERS), "control")
    assert holder.current.clusters["orders"] is first
    assert first.balancer is balancer and first.breaker is breaker  # unchanged: no-op
    changed = ClusterConfig(
        "orders",
        load_balancer=LoadBalancerConfig(Algorithm.LEAST_REQUEST),
        timeout=3.0,
        endpoints=(ep("o2", 9002), ep("o3", 9003)),
    )
    holder.apply(config("3", orders=changed), "control")
    assert first.breaker is breaker  # breaker config unchanged: its state stays
    dump = {e["instance"]: e for e in holder.current.dump_clusters()["orders"]["endpoints"]}
    assert dump["o2"]["in_flight"] == 1 and dump["o3"]["in_flight"] == 0
    assert holder.current.dump_clusters()["orders"]["algorithm"] == "LEAST_REQUEST"
    assert {pick(dispatcher).timeout for _ in range(4)} == {3.0}


def test_method_overrides_pick_timeout_and_retry_by_longest_prefix() -> None:
    cluster = ClusterConfig(
        "orders",
        timeout=1.0,
        endpoints=(ep("o1", 9001),),
        methods=(
            MethodConfig("/shop.Orders/", timeout=5.0),
            MethodConfig("/shop.Orders/Place", retry=RetryConfig(max_attempts=1)),
        ),
    )
    dispatcher = UpstreamDispatcher(holder_with(config(orders=cluster)), "orders")
    assert pick(dispatcher, "/shop.Users/Get").timeout == 1.0
    get = pick(dispatcher, "/shop.Orders/Get")
    place = pick(dispatcher, "/shop.Orders/Place")
    assert get.timeout == 5.0 and get.retry is not None and get.retry.max_attempts == 3
    assert place.timeout == 1.0 and place.retry is not None and place.retry.max_attempts == 1


def test_breaker_opens_and_fails_fast_naming_breaker() -> None:
    clock = ManualClock(100.0)
    breaker = BreakerConfig(minimum_requests=4, window=10.0, open_duration=30.0)
    cluster = ClusterConfig("orders", endpoints=(ep("o1", 9001),), breaker=breaker)
    holder = holder_with(config(orders=cluster), clock)
    dispatcher = UpstreamDispatcher(holder, "orders")
    for _ in range(4):
        chosen = pick(dispatcher)
        assert chosen.done is not None
        chosen.done(False, clock.now(), 0.001)
    with pytest.raises(NoRoute) as info:
        pick(dispatcher)
    assert "circuit breaker" in info.value.message and "'orders'" in info.value.message
    assert info.value.grpc_status == 14 and info.value.http_status == 503
    assert holder.current is not None
    assert holder.current.dump_clusters()["orders"]["circuit_breaker"]["rejected"] == 1
    clock.advance(31.0)
    assert pick(dispatcher).address == ("127.0.0.1", 9001)  # half-open trial


def test_retry_decisions_use_budget_and_avoid_previous_endpoint() -> None:
    clock = ManualClock(100.0)
    budget = BudgetConfig(ratio=0.2, min_retries_per_second=0, ttl=10.0)
    cluster = ClusterConfig(
        "orders",
        endpoints=(ep("o1", 9001), ep("o2", 9002)),
        budget=budget,
        breaker=BreakerConfig(enabled=False),
        outlier=OutlierConfig(enabled=False),
    )
    holder = holder_with(config(orders=cluster), clock)
    dispatcher = UpstreamDispatcher(holder, "orders")
    first = pick(dispatcher)
    retry = first.retry
    assert retry is not None
    # no retry on a non-retry_on failure
    assert isinstance(retry.decide(1, FAIL_GRPC, 5, None), str)  # NOT_FOUND
    for _ in range(9):
        pick(dispatcher)  # 10 requests deposited → 2 retries allowed
    delays = [retry.decide(1, FAIL_CONNECT, 0, None) for _ in range(2)]
    assert all(isinstance(d, float) and 0 <= d <= 0.025 for d in delays)
    refused = retry.decide(1, FAIL_CONNECT, 0, None)
    assert isinstance(refused, str) and "retry budget for 'orders' exhausted" in refused
    assert retry.repick(first).address != first.address
    assert retry.decide(3, FAIL_CONNECT, 0, None) == "3 of 3 attempts made"
    assert retry.decide(1, FAIL_GRPC, 14, -1.0) == (
        "the server asked not to retry (grpc-retry-pushback-ms)"
    )


def test_max_requests_limit_fails_fast() -> None:
    cluster = ClusterConfig(
        "orders", endpoints=(ep("o1", 9001),), breaker=BreakerConfig(max_requests=2)
    )
    dispatcher = UpstreamDispatcher(holder_with(config(orders=cluster)), "orders")
    pick(dispatcher)
    pick(dispatcher)
    with pytest.raises(NoRoute, match=r"max_requests \(2\)"):
        pick(dispatcher)


def test_outlier_ejection_takes_endpoint_out_and_reason_when_all_gone() -> None:
    clock = ManualClock(100.0)
    outlier = OutlierConfig(consecutive_failures=2, max_ejection_percent=100)
    cluster = ClusterConfig(
        "orders",
        endpoints=(ep("o1", 9001), ep("o2", 9002)),
        outlier=outlier,
        breaker=BreakerConfig(enabled=False),
    )
    holder = holder_with(config(orders=cluster), clock)
    dispatcher = UpstreamDispatcher(holder, "orders")
    for _ in range(8):
        chosen = pick(dispatcher)
        if chosen.address[1] == 9001:
            assert chosen.done is not None
            chosen.done(False, clock.now(), 0.001)
        elif chosen.done is not None:
            chosen.done(True, clock.now(), 0.001)
    assert {pick(dispatcher).address[1] for _ in range(6)} == {9002}
    assert holder.current is not None
    dump = {e["instance"]: e for e in holder.current.dump_clusters()["orders"]["endpoints"]}
    assert dump["o1"]["ejected"] and not dump["o2"]["ejected"]


def test_rate_limit_rejects_with_retry_after() -> None:
    clock = ManualClock(100.0)
    rule = RateLimitConfig("per-ip", 2, 10.0, 2, scope=RateLimitScope.CLIENT_IP)
    cluster = ClusterConfig("orders", endpoints=(ep("o1", 9001),), rate_limits=(rule,))
    dispatcher = UpstreamDispatcher(holder_with(config(orders=cluster), clock), "orders")
    pick(dispatcher, peer="10.0.0.1")
    pick(dispatcher, peer="10.0.0.1")
    pick(dispatcher, peer="10.0.0.2")  # another key
    with pytest.raises(NoRoute) as info:
        pick(dispatcher, peer="10.0.0.1")
    assert info.value.grpc_status == 8 and info.value.http_status == 429
    assert 0 < info.value.retry_after <= 5.0
    assert "per-ip" in info.value.message


def test_hash_on_header_is_sticky() -> None:
    lb = LoadBalancerConfig(Algorithm.RING_HASH, hash=HashConfig(header="x-user"))
    cluster = ClusterConfig(
        "orders", load_balancer=lb, endpoints=tuple(ep(f"o{i}", 9000 + i) for i in range(5))
    )
    dispatcher = UpstreamDispatcher(holder_with(config(orders=cluster)), "orders")
    for user in (b"alice", b"bob", b"carol"):
        headers = ((b":path", b"/x"), (b"x-user", user))
        seen = {dispatcher.pick("", "/x", headers, "").address for _ in range(5)}
        assert len(seen) == 1


def test_half_open_trial_permit_returns_when_no_endpoint_is_available() -> None:
    clock = ManualClock(100.0)
    breaker = BreakerConfig(minimum_requests=2, open_duration=10.0, half_open_max_calls=1)
    healthy = ClusterConfig("orders", endpoints=(ep("o1", 9001),), breaker=breaker)
    holder = holder_with(config(orders=healthy), clock)
    dispatcher = UpstreamDispatcher(holder, "orders")
    for _ in range(2):
        chosen = pick(dispatcher)
        assert chosen.done is not None
        chosen.done(False, clock.now(), 0.001)
    clock.advance(11.0)  # half-open: one trial permit
    down = ClusterConfig("orders", endpoints=(ep("o1", 9001, healthy=False),), breaker=breaker)
    holder.apply(config("2", orders=down), "control")
    for _ in range(3):  # each admitted call finds no endpoint and hands its permit back
        with pytest.raises(NoRoute, match="none healthy"):
            pick(dispatcher)
    holder.apply(config("3", orders=healthy), "control")
    assert pick(dispatcher).address == ("127.0.0.1", 9001)


def _in_flight(holder: ConfigHolder, name: str = "orders") -> tuple[int, int]:
    """(cluster in_flight, sum of endpoint in_flight) from /clusters."""
    assert holder.current is not None
    dump = holder.current.dump_clusters()[name]
    return dump["circuit_breaker"]["in_flight"], sum(e["in_flight"] for e in dump["endpoints"])


def test_retry_in_backoff_survives_a_push_that_drops_its_method() -> None:
    """A call on a per-method route waits out its backoff while a push removes the method:
    its retry still gets an endpoint, and the attempt is released as usual."""
    clock = ManualClock(100.0)
    two = (ep("o1", 9001), ep("o2", 9002))
    method = MethodConfig("/shop.Orders/Place", timeout=5.0)
    with_method = ClusterConfig("orders", endpoints=two, methods=(method,))
    holder = holder_with(config(orders=with_method), clock)
    first = pick(UpstreamDispatcher(holder, "orders"), "/shop.Orders/Place")
    assert first.retry is not None and first.done is not None
    assert isinstance(first.retry.decide(1, FAIL_CONNECT, 0, None), float)
    first.done(False, clock.now(), 0.001)
    holder.apply(config("2", orders=ClusterConfig("orders", endpoints=two)), "control")
    second = first.retry.repick(first)
    assert second.address != first.address
    assert _in_flight(holder) == (1, 1)
    assert second.done is not None
    second.done(True, clock.now(), 0.001)
    first.retry.retry_done()
    assert _in_flight(holder) == (0, 0)
    assert holder.current is not None
    assert holder.current.dump_clusters()["orders"]["circuit_breaker"]["retries_in_flight"] == 0


def test_ejection_never_takes_the_last_healthy_endpoint() -> None:
    """Outlier detection moves traffic; it must not turn a partial outage into a total
    one when the other endpoints are failing their health checks (Envoy's panic)."""
    clock = ManualClock(100.0)
    outlier = OutlierConfig(consecutive_failures=2, max_ejection_percent=100)
    breaker = BreakerConfig(enabled=False)
    one_down = ClusterConfig(
        "orders", endpoints=(ep("o1", 9001), ep("o2", 9002, False)), outlier=outlier,
        breaker=breaker,
    )  # fmt: skip
    holder = holder_with(config(orders=one_down), clock)
    dispatcher = UpstreamDispatcher(holder, "orders")
    for _ in range(2):
        chosen = pick(dispatcher)
        assert chosen.done is not None
        chosen.done(False, clock.now(), 0.001)
    assert holder.current is not None
    dump = {e["instance"]: e for e in holder.current.dump_clusters()["orders"]["endpoints"]}
    assert dump["o1"]["ejected"]  # the detector did eject it...
    assert pick(dispatcher).address == ("127.0.0.1", 9001)  # ...yet it still gets calls
    assert holder.current.dump_clusters()["orders"]["outlier_detection"]["ejections_ignored"]


def test_an_endpoint_ejected_before_the_others_go_unhealthy_still_serves() -> None:
    clock = ManualClock(100.0)
    outlier = OutlierConfig(consecutive_failures=2, max_ejection_percent=50)
    breaker = BreakerConfig(enabled=False)
    both = ClusterConfig(
        "orders", endpoints=(ep("o1", 9001), ep("o2", 9002)), outlier=outlier, breaker=breaker
    )
    holder = holder_with(config(orders=both), clock)
    dispatcher = UpstreamDispatcher(holder, "orders")
    while True:
        chosen = pick(dispatcher)
        assert chosen.done is not None
        failing = chosen.address[1] == 9001
        chosen.done(not failing, clock.now(), 0.001)
        assert holder.current is not None
        dump = {e["instance"]: e for e in holder.current.dump_clusters()["orders"]["endpoints"]}
        if dump["o1"]["ejected"]:
            break
    o2_down = dataclasses.replace(both, endpoints=(ep("o1", 9001), ep("o2", 9002, False)))
    holder.apply(config("2", orders=o2_down), "control")
    assert pick(dispatcher).address == ("127.0.0.1", 9001)


def test_no_endpoint_reason_names_both_unhealthy_and_zero_weight() -> None:
    weighted_out = EndpointConfig("o2", "127.0.0.1", 9002, weight=0)
    cluster = ClusterConfig("orders", endpoints=(ep("o1", 9001, False, "refused"), weighted_out))
    with pytest.raises(NoRoute) as info:
        pick(UpstreamDispatcher(holder_with(config(orders=cluster)), "orders"))
    message = info.value.message
    assert "1 failing health checks" in message and "1 with weight 0" in message, message
