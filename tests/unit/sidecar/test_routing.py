"""Authority → cluster mapping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.policy.routing import AuthorityRouter, cluster_for_authority

CLUSTERS = frozenset({"orders", "inventory", "payments.v2"})


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("orders", "orders"),
        ("orders:8003", "orders"),
        ("ORDERS", "orders"),
        ("orders.skein", "orders"),
        ("orders.default.svc.cluster.local", "orders"),
        ("orders.default.svc.cluster.local:443", "orders"),
        ("orders.", "orders"),
        ("payments.v2:80", "payments.v2"),
        ("inventory", "inventory"),
        ("users", None),
        ("127.0.0.1:15001", None),
        ("[::1]:15001", None),
        ("", None),
        ("ordersx", None),
    ],
)
def test_authority_maps_to_cluster(authority: str, expected: str | None) -> None:
    assert cluster_for_authority(authority, CLUSTERS) == expected
    assert AuthorityRouter(CLUSTERS).route(authority) == expected


@given(st.text(max_size=40))
def test_result_is_always_a_known_cluster_or_none(authority: str) -> None:
    assert cluster_for_authority(authority, CLUSTERS) in {*CLUSTERS, None}


def test_router_cache_is_bounded() -> None:
    router = AuthorityRouter(CLUSTERS, limit=3)
    for k in range(10):
        router.route(f"host{k}")
    assert len(router._cache) == 3
    assert router.route("orders:1") == "orders"
