"""parse_snapshot: builds the frozen model, or names the resource at fault."""

from __future__ import annotations

import dataclasses

import pytest

from skein.config import Algorithm, Protocol, parse_snapshot
from skein.config.model import (
    BreakerConfig,
    BudgetConfig,
    ClusterConfig,
    Direction,
    HashConfig,
    HealthCheckConfig,
    LoadBalancerConfig,
    LocalConfig,
    MethodConfig,
    OutlierConfig,
    RateLimitAlgorithm,
    RateLimitConfig,
    RateLimitScope,
    RetryConfig,
)
from skein.errors import ConfigError
from skein.v1 import discovery_pb2, resources_pb2


def snapshot() -> discovery_pb2.Snapshot:
    snap = discovery_pb2.Snapshot()
    c = snap.clusters.add(name="orders")
    c.service.metadata.name = "orders"
    c.service.spec.protocol = resources_pb2.HTTP
    c.policy.metadata.name = "orders"
    c.policy.spec.service = "orders"
    c.policy.spec.load_balancer.algorithm = resources_pb2.LEAST_REQUEST
    c.policy.spec.timeout.seconds = 2
    for i, health in enumerate((resources_pb2.HEALTHY, resources_pb2.UNHEALTHY)):
        ep = c.endpoints.add()
        ep.metadata.name = f"orders-{i}"
        ep.spec.service = "orders"
        ep.spec.address = f"127.0.0.1:{9000 + i}"
        ep.spec.health = health
    snap.clusters.add(name="payments")
    snap.local_policy.metadata.name = "web"
    snap.local_policy.spec.service = "web"
    snap.local_policy.spec.timeout.nanos = 500_000_000
    return snap


def test_builds_frozen_config() -> None:
    cfg = parse_snapshot("7", snapshot())
    assert cfg.version == "7"
    orders = cfg.clusters["orders"]
    assert (orders.protocol, orders.algorithm, orders.timeout) == (
        Protocol.HTTP,
        Algorithm.LEAST_REQUEST,
        2.0,
    )
    assert [(e.instance, e.port, e.weight, e.healthy) for e in orders.endpoints] == [
        ("orders-0", 9000, 1, True),
        ("orders-1", 9001, 1, False),
    ]
    payments = cfg.clusters["payments"]
    assert (payments.algorithm, payments.timeout, payments.endpoints) == (
        Algorithm.ROUND_ROBIN,
        None,
        (),
    )
    assert cfg.local == LocalConfig(timeout=0.5)
    assert cfg.local_timeout == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        orders.timeout = 1.0  # type: ignore[misc]


def test_bad_policy_names_resource_and_field() -> None:
    snap = snapshot()
    snap.clusters[0].policy.spec.timeout.seconds = -1
    with pytest.raises(ConfigError) as info:
        parse_snapshot("8", snap)
    assert str(info.value) == "TrafficPolicy/orders: spec.timeout: must be positive, got -1s"


def test_bad_endpoint_and_mismatches() -> None:
    snap = snapshot()
    snap.clusters[0].endpoints[1].spec.address = "nowhere"
    with pytest.raises(ConfigError, match=r"^Endpoint/orders-1: spec.address: "):
        parse_snapshot("9", snap)
    snap = snapshot()
    snap.clusters[0].endpoints[1].spec.service = "users"
    with pytest.raises(ConfigError, match="must equal the cluster name"):
        parse_snapshot("9", snap)
    snap = snapshot()
    snap.clusters.add(name="orders")
    with pytest.raises(ConfigError, match="duplicate cluster"):
        parse_snapshot("9", snap)
    snap = snapshot()
    snap.local_policy.spec.service = ""
    with pytest.raises(ConfigError, match=r"^TrafficPolicy/web: spec.service: required"):
        parse_snapshot("9", snap)


def test_unset_policy_gives_every_default() -> None:
    """No policy, an empty policy and a policy of empty messages build the same defaults."""
    snap = discovery_pb2.Snapshot()
    snap.clusters.add(name="a")
    b = snap.clusters.add(name="b")
    b.policy.metadata.name = "b"
    b.policy.spec.service = "b"
    c = snap.clusters.add(name="c")
    c.policy.metadata.name = "c"
    c.policy.spec.service = "c"
    for name in (
        "load_balancer",
        "retry",
        "retry_budget",
        "circuit_breaker",
        "outlier_detection",
        "health_check",
    ):
        getattr(c.policy.spec, name).SetInParent()
    cfg = parse_snapshot("1", snap)
    for name in "abc":
        assert cfg.clusters[name] == ClusterConfig(name)
    assert cfg.clusters["a"].retry == RetryConfig(
        max_attempts=3,
        retry_on=("connect-failure", "refused-stream", "unavailable"),
        base_interval=0.025,
        max_interval=0.25,
    )
    assert cfg.local == LocalConfig(timeout=None, health_check=None)


def full_policy(tp: resources_pb2.TrafficPolicy, service: str) -> None:
    tp.metadata.name = service
    spec = tp.spec
    spec.service = service
    spec.load_balancer.algorithm = resources_pb2.WEIGHTED_ROUND_ROBIN
    spec.load_balancer.weights[f"{service}-0"] = 0
    spec.load_balancer.weights[f"{service}-1"] = 7
    spec.retry.max_attempts = 5
    spec.retry.retry_on.extend(["5xx", "reset"])
    spec.retry.per_try_timeout.nanos = 300_000_000
    spec.retry.base_interval.nanos = 50_000_000
    spec.retry.max_buffer_bytes = 1024
    spec.retry_budget.ratio = 0.5
    spec.retry_budget.ttl.seconds = 3
    spec.circuit_breaker.failure_rate_threshold = 0.25
    spec.circuit_breaker.open_duration.seconds = 5
    spec.circuit_breaker.max_requests = 7
    spec.circuit_breaker.disabled = True
    spec.outlier_detection.consecutive_failures = 2
    spec.outlier_detection.max_ejection_percent = 100
    spec.health_check.interval.seconds = 5
    spec.health_check.http_path = "/health"
    out = spec.rate_limits.add(name="out", requests=10, direction=resources_pb2.OUTBOUND)
    out.period.seconds = 1
    out.scope = resources_pb2.CLIENT_IDENTITY
    inn = spec.rate_limits.add(name="in", requests=100, burst=150)
    inn.period.seconds = 3600
    inn.scope = resources_pb2.HEADER
    inn.header = "x-tenant"
    inn.algorithm = resources_pb2.SLIDING_WINDOW
    inn.max_keys = 50
    inn.prefix = "/shop.Orders/"
    m = spec.methods.add(prefix="/shop.Orders/Create")
    m.timeout.seconds = 9
    m.retry.max_attempts = 1
    spec.methods.add(prefix="/shop.Orders/")


def test_full_policy_builds_cluster_and_local_model() -> None:
    snap = snapshot()
    full_policy(snap.clusters[0].policy, "orders")
    snap.clusters[0].endpoints[1].spec.weight = 3
    snap.clusters[0].endpoints[1].spec.health_reason = "3 failed checks"
    full_policy(snap.local_policy, "web")
    cfg = parse_snapshot("2", snap)
    orders = cfg.clusters["orders"]
    # The policy's weights override registration weights; 0 takes an instance out.
    assert [(e.instance, e.weight, e.healthy, e.health_reason) for e in orders.endpoints] == [
        ("orders-0", 0, True, ""),
        ("orders-1", 7, False, "3 failed checks"),
    ]
    assert orders.load_balancer == LoadBalancerConfig(algorithm=Algorithm.WEIGHTED_ROUND_ROBIN)
    assert orders.retry == RetryConfig(
        max_attempts=5,
        retry_on=("5xx", "reset"),
        per_try_timeout=0.3,
        base_interval=0.05,
        max_interval=0.5,
        max_buffer_bytes=1024,
    )
    assert orders.budget == BudgetConfig(ratio=0.5, ttl=3.0)
    assert orders.breaker == BreakerConfig(
        enabled=False, failure_rate_threshold=0.25, open_duration=5.0, max_requests=7
    )
    assert orders.outlier == OutlierConfig(consecutive_failures=2, max_ejection_percent=100)
    # Outbound rules go to callers' clusters, inbound ones to the service's own sidecar.
    assert orders.rate_limits == (
        RateLimitConfig(
            name="out",
            requests=10,
            period=1.0,
            burst=10,
            scope=RateLimitScope.CLIENT_IDENTITY,
            header="x-skein-client",
            direction=Direction.OUTBOUND,
        ),
    )
    methods = (
        MethodConfig("/shop.Orders/Create", timeout=9.0, retry=RetryConfig(max_attempts=1)),
        MethodConfig("/shop.Orders/"),
    )
    assert orders.methods == methods
    assert cfg.local == LocalConfig(
        timeout=0.5,
        rate_limits=(
            RateLimitConfig(
                name="in",
                requests=100,
                period=3600.0,
                burst=150,
                algorithm=RateLimitAlgorithm.SLIDING_WINDOW,
                scope=RateLimitScope.HEADER,
                prefix="/shop.Orders/",
                header="x-tenant",
                max_keys=50,
            ),
        ),
        methods=methods,
        health_check=HealthCheckConfig(interval=5.0, http_path="/health"),
    )


def test_registration_weight_used_without_policy_weight() -> None:
    snap = snapshot()
    snap.clusters[0].endpoints[0].spec.weight = 4
    snap.clusters[0].policy.spec.load_balancer.algorithm = resources_pb2.WEIGHTED_ROUND_ROBIN
    snap.clusters[0].policy.spec.load_balancer.weights["orders-1"] = 2
    orders = parse_snapshot("3", snap).clusters["orders"]
    assert [e.weight for e in orders.endpoints] == [4, 2]


def test_hash_policy_ring_size_and_decay() -> None:
    snap = snapshot()
    lb = snap.clusters[0].policy.spec.load_balancer
    lb.algorithm = resources_pb2.RING_HASH
    lb.hash.header = "x-user"
    lb.ring_size = 4096
    assert parse_snapshot("4", snap).clusters["orders"].load_balancer == LoadBalancerConfig(
        algorithm=Algorithm.RING_HASH, hash=HashConfig(header="x-user"), ring_size=4096
    )
    lb.algorithm = resources_pb2.MAGLEV
    lb.hash.source_ip = True
    lb.ring_size = 0
    assert parse_snapshot("4", snap).clusters["orders"].load_balancer == LoadBalancerConfig(
        algorithm=Algorithm.MAGLEV, hash=HashConfig(source_ip=True)
    )
    lb.algorithm = resources_pb2.PEAK_EWMA
    lb.ClearField("hash")
    lb.decay.nanos = 500_000_000
    assert parse_snapshot("4", snap).clusters["orders"].load_balancer == LoadBalancerConfig(
        algorithm=Algorithm.PEAK_EWMA, decay=0.5
    )
