"""The shop's manifests express the seed table, and their rate limits leave the demo alone."""

from __future__ import annotations

import pathlib

import pytest

from examples.shop.demo import INSTANCES, _parse
from skein.config import load_manifests, parse_snapshot
from skein.config.model import (
    Algorithm,
    BreakerConfig,
    ClusterConfig,
    HashConfig,
    HealthCheckConfig,
    LocalConfig,
    RateLimitAlgorithm,
    RateLimitScope,
)
from skein.v1 import discovery_pb2

SHOP = pathlib.Path(__file__).resolve().parents[3] / "examples" / "shop" / "manifests"

# service: (seed balancing as Skein spells it, seed per-hour limit, seed timeout)
SEEDS = {
    "users": (Algorithm.ROUND_ROBIN, 500, 10.0),
    "products": (Algorithm.WEIGHTED_ROUND_ROBIN, 1000, 15.0),
    "orders": (Algorithm.LEAST_REQUEST, 750, 20.0),
    "payments": (Algorithm.RING_HASH, 300, 25.0),
    "inventory": (Algorithm.PEAK_EWMA, 600, 12.0),  # "adaptive"; the seeds say round robin
    "notifications": (Algorithm.ROUND_ROBIN, 2000, 8.0),
    "analytics": (Algorithm.WEIGHTED_ROUND_ROBIN, 400, 30.0),
    "marketplace": (Algorithm.LEAST_REQUEST, 800, 18.0),
}

# Share of the demo gateway's calls each service receives (examples/shop/traffic.py: users,
# products twice, orders; each order calls inventory and payments once).
DEMO_SHARE = {"users": 0.25, "products": 0.5, "orders": 0.25, "inventory": 0.25, "payments": 0.25}


def configs() -> dict[str, tuple[ClusterConfig, LocalConfig]]:
    """service -> (its cluster as callers see it, its own sidecar's local config)."""
    policies = {
        r.traffic_policy.spec.service: r.traffic_policy
        for r in load_manifests(str(SHOP))
        if r.WhichOneof("kind") == "traffic_policy"
    }
    out = {}
    for service, tp in policies.items():
        snap = discovery_pb2.Snapshot()
        cluster = snap.clusters.add(name=service, policy=tp)
        for i in range(1, 6):
            ep = cluster.endpoints.add()
            ep.metadata.name = f"{service}-{i}"
            ep.spec.service = service
            ep.spec.address = f"127.0.0.1:{9000 + i}"
        snap.local_policy.CopyFrom(tp)
        cfg = parse_snapshot("1", snap)
        out[service] = (cfg.clusters[service], cfg.local)
    return out


def test_every_seed_service_has_its_row() -> None:
    built = configs()
    assert set(built) == set(SEEDS)
    for service, (algorithm, per_hour, timeout) in SEEDS.items():
        cluster, local = built[service]
        assert (cluster.algorithm, cluster.timeout) == (algorithm, timeout), service
        assert cluster.breaker == BreakerConfig(
            failure_rate_threshold=0.5, open_duration=60.0, half_open_max_calls=10
        )
        assert local.health_check == HealthCheckConfig(interval=5.0, timeout=3.0)
        limit = local.rate_limits[0]
        assert (limit.name, limit.scope, limit.algorithm) == (
            "per-service",
            RateLimitScope.SERVICE,
            RateLimitAlgorithm.TOKEN_BUCKET,
        )
        # The seeds' figure and 150% burst, over 10 s instead of an hour (see the manifests).
        assert (limit.requests, limit.burst, limit.period) == (per_hour, per_hour * 3 // 2, 10.0)


def test_balancer_details() -> None:
    built = configs()
    assert built["payments"][0].load_balancer.hash == HashConfig(source_ip=True)
    assert [e.weight for e in built["products"][0].endpoints] == [3, 2, 1, 1, 1]
    assert [e.weight for e in built["analytics"][0].endpoints] == [2, 2, 1, 1, 1]
    assert [e.weight for e in built["users"][0].endpoints] == [1] * 5
    # Non-idempotent calls retry only what never reached the app.
    assert built["orders"][0].retry.retry_on == ("connect-failure", "refused-stream")
    (charge,) = built["payments"][0].methods
    assert charge.prefix == "/shop.v1.Payments/Charge"
    assert charge.retry is not None
    assert charge.retry.retry_on == ("connect-failure", "refused-stream")


@pytest.mark.parametrize("service", sorted(DEMO_SHARE))
def test_demo_traffic_never_reaches_a_limit(service: str) -> None:
    """Even if one instance took all of its service's demo traffic, every limit holds it."""
    rate = _parse([]).rate * DEMO_SHARE[service]
    assert service in INSTANCES
    _, local = configs()[service]
    for limit in local.rate_limits:
        assert rate * 2 <= limit.requests / limit.period, (service, limit.name)
