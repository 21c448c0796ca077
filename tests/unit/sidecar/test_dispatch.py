"""Dispatchers over a ConfigHolder: routes, NoRoute reasons, atomic swaps."""

from __future__ import annotations

import random

import pytest

from sidecar.dispatch import (
    AuthorityDispatcher,
    ConfigHolder,
    InboundDispatcher,
    UpstreamDispatcher,
)
from sidecar.transport.contract import NoRoute
from skein.config.model import Algorithm, ClusterConfig, EndpointConfig, SidecarConfig


def ep(name: str, port: int, healthy: bool = True) -> EndpointConfig:
    return EndpointConfig(name, "127.0.0.1", port, healthy=healthy)


def config(version: str = "1", **clusters: ClusterConfig) -> SidecarConfig:
    return SidecarConfig(version, dict(clusters), local_timeout=2.5)


ORDERS = ClusterConfig("orders", timeout=1.0, endpoints=(ep("o1", 9001), ep("o2", 9002)))


def holder_with(cfg: SidecarConfig) -> ConfigHolder:
    holder = ConfigHolder(random.Random(0))
    holder.apply(cfg, "control")
    return holder


def test_upstream_dispatcher_round_robins_with_policy_timeout() -> None:
    holder = holder_with(config(orders=ORDERS))
    dispatcher = UpstreamDispatcher(holder, "orders")
    picks = [dispatcher.pick("127.0.0.1:1", "/x.Y/Z") for _ in range(4)]
    assert {p.address for p in picks} == {("127.0.0.1", 9001), ("127.0.0.1", 9002)}
    assert all(p.cluster == "orders" and p.timeout == 1.0 for p in picks)
    # a pick hands out the prebuilt object: no allocation per stream
    assert picks[0] is picks[2]


def test_done_releases_in_flight() -> None:
    holder = holder_with(config(orders=ORDERS))
    pick = UpstreamDispatcher(holder, "orders").pick("", "/")
    assert holder.current is not None
    dump = holder.current.dump_clusters()["orders"]["endpoints"]
    assert sum(e["in_flight"] for e in dump) == 1
    assert pick.done is not None
    pick.done(False)
    dump = holder.current.dump_clusters()["orders"]["endpoints"]
    assert sum(e["in_flight"] for e in dump) == 0
    assert sum(e["failures"] for e in dump) == 1


@pytest.mark.parametrize(
    ("cluster", "reason"),
    [
        (ClusterConfig("orders"), "none discovered"),
        (ClusterConfig("orders", endpoints=(ep("o1", 1, healthy=False),)), "none healthy"),
    ],
)
def test_no_endpoints_names_service_and_reason(cluster: ClusterConfig, reason: str) -> None:
    holder = holder_with(config(orders=cluster))
    with pytest.raises(NoRoute) as info:
        UpstreamDispatcher(holder, "orders").pick("", "/")
    assert "'orders'" in info.value.message and reason in info.value.message
    assert info.value.grpc_status == 14


def test_unknown_and_unconfigured_services() -> None:
    empty = ConfigHolder()
    with pytest.raises(NoRoute, match="no configuration yet"):
        UpstreamDispatcher(empty, "orders").pick("", "/")
    holder = holder_with(config(orders=ORDERS))
    with pytest.raises(NoRoute, match=r"'payments': unknown service.*--subscribe payments"):
        UpstreamDispatcher(holder, "payments").pick("", "/")
    with pytest.raises(NoRoute, match="'payments': unknown service"):
        AuthorityDispatcher(holder).pick("payments:80", "/")


def test_authority_dispatcher_routes_by_host() -> None:
    holder = holder_with(config(orders=ORDERS))
    pick = AuthorityDispatcher(holder).pick("orders.default.svc.cluster.local:8003", "/")
    assert pick.cluster == "orders"


def test_inbound_always_goes_to_app_with_local_timeout() -> None:
    holder = ConfigHolder()
    dispatcher = InboundDispatcher(holder, ("127.0.0.1", 7000))
    before = dispatcher.pick("svc", "/")
    assert before.address == ("127.0.0.1", 7000) and before.timeout is None
    holder.apply(config(), "disk")
    assert dispatcher.pick("svc", "/").timeout == 2.5


def test_swap_keeps_unchanged_balancer_and_in_flight_of_staying_endpoints() -> None:
    holder = holder_with(config(orders=ORDERS))
    dispatcher = UpstreamDispatcher(holder, "orders")
    dispatcher.pick("", "/")
    dispatcher.pick("", "/")
    assert holder.current is not None
    first = holder.current.balancers["orders"]
    holder.apply(config("2", orders=ORDERS), "control")
    assert holder.current.balancers["orders"] is first  # unchanged: no-op
    changed = ClusterConfig(
        "orders",
        algorithm=Algorithm.LEAST_REQUEST,
        timeout=3.0,
        endpoints=(ep("o2", 9002), ep("o3", 9003)),
    )
    holder.apply(config("3", orders=changed), "control")
    dump = {e["instance"]: e for e in holder.current.dump_clusters()["orders"]["endpoints"]}
    assert dump["o2"]["in_flight"] == 1 and dump["o3"]["in_flight"] == 0
    assert holder.current.dump_clusters()["orders"]["algorithm"] == "LEAST_REQUEST"
    assert {dispatcher.pick("", "/").timeout for _ in range(4)} == {3.0}
