"""parse_snapshot: builds the frozen model, or names the resource at fault."""

from __future__ import annotations

import dataclasses

import pytest

from skein.config import Algorithm, Protocol, parse_snapshot
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
