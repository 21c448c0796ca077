"""Mirror and translate: what a sidecar is given, from what etcd holds."""

from __future__ import annotations

from google.protobuf import json_format  # type: ignore[import-untyped]

from control.mirror import Mirror
from control.store import KeyLayout, KeyValue, WatchBatch
from control.translate import node_key, translate
from skein.v1 import resources_pb2

L = KeyLayout("/t/")


def kv(key: bytes, message: object, rev: int) -> KeyValue:
    return KeyValue(key, json_format.MessageToJson(message).encode(), rev)


def policy(name: str, service: str, seconds: int) -> resources_pb2.TrafficPolicy:
    tp = resources_pb2.TrafficPolicy()
    tp.metadata.name, tp.spec.service, tp.spec.timeout.seconds = name, service, seconds
    return tp


def endpoint(name: str, service: str, health: int = 0) -> resources_pb2.Endpoint:
    ep = resources_pb2.Endpoint()
    ep.metadata.name, ep.spec.service, ep.spec.address = name, service, "127.0.0.1:1"
    ep.spec.health = health  # type: ignore[assignment]
    return ep


def loaded() -> tuple[Mirror, list[tuple[bytes, str]]]:
    bad: list[tuple[bytes, str]] = []
    m = Mirror(L, lambda key, err: bad.append((key, err)))
    svc = resources_pb2.Service()
    svc.metadata.name = "orders"
    m.load(
        10,
        [
            kv(L.resource("Service", "orders"), svc, 3),
            kv(
                L.resource("TrafficPolicy", "orders-policy"),
                policy("orders-policy", "orders", 2),
                4,
            ),
            kv(L.resource("TrafficPolicy", "web"), policy("web", "web", 1), 5),
            kv(L.endpoint("orders", "o-2"), endpoint("o-2", "orders"), 6),
            kv(L.endpoint("orders", "o-1"), endpoint("o-1", "orders"), 7),
            kv(L.endpoint("orders", "o-3"), endpoint("o-3", "orders", resources_pb2.UNHEALTHY), 8),
            kv(L.endpoint("users", "u-1"), endpoint("u-1", "users"), 9),
            kv(L.status_key("x"), endpoint("x", "x"), 9),
        ],
    )
    return m, bad


def test_only_upstreams_sorted_with_unhealthy_marked() -> None:
    m, bad = loaded()
    snap = translate(m, node_key("web", ["payments", "orders", "orders"]))
    assert [c.name for c in snap.clusters] == ["orders", "payments"]
    orders = snap.clusters[0]
    assert orders.service.metadata.name == "orders" and orders.service.metadata.version == 3
    assert orders.policy.metadata.name == "orders-policy"
    assert [e.metadata.name for e in orders.endpoints] == ["o-1", "o-2", "o-3"]
    assert [e.spec.health for e in orders.endpoints][2] == resources_pb2.UNHEALTHY
    assert not snap.clusters[1].HasField("service") and not snap.clusters[1].endpoints
    assert snap.local_policy.metadata.name == "web"
    assert bad == []


def test_translate_is_pure_and_deterministic() -> None:
    m, _ = loaded()
    key = node_key("web", ["orders", "users"])
    first = translate(m, key).SerializeToString()
    assert translate(m, key).SerializeToString() == first
    assert m.counts() == {"services": 1, "traffic_policies": 2, "endpoints": 4}


def test_invalid_stored_values_pass_through_unparseable_ones_are_skipped() -> None:
    m, bad = loaded()
    negative = policy("orders-policy", "orders", -1)
    changed = m.apply(
        WatchBatch(
            12,
            (
                (
                    L.resource("TrafficPolicy", "orders-policy"),
                    json_format.MessageToJson(negative).encode(),
                    11,
                    False,
                ),
                (L.resource("Service", "orders"), b"{not json", 12, False),
            ),
        )
    )
    assert changed and m.revision == 12
    snap = translate(m, node_key("web", ["orders"]))
    assert snap.clusters[0].policy.spec.timeout.seconds == -1  # the sidecar will NACK it
    assert not snap.clusters[0].HasField("service")
    assert [k for k, _ in bad] == [L.resource("Service", "orders")]


def test_deletes_and_status_keys() -> None:
    m, _ = loaded()
    assert not m.apply(WatchBatch(20, ((L.status_key("a"), b"{}", 20, False),)))
    assert m.revision == 10
    assert m.apply(
        WatchBatch(
            21,
            (
                (L.endpoint("orders", "o-1"), b"", 21, True),
                (L.resource("TrafficPolicy", "orders-policy"), b"", 21, True),
            ),
        )
    )
    snap = translate(m, node_key("web", ["orders"]))
    assert [e.metadata.name for e in snap.clusters[0].endpoints] == ["o-2", "o-3"]
    assert not snap.clusters[0].HasField("policy")
    assert m.revision == 21


def test_hand_written_kind_spelling_is_accepted() -> None:
    m = Mirror(L)
    m.load(1, [kv(b"/t/resources/trafficpolicy/p", policy("p", "orders", 1), 1)])
    assert m.policy_for("orders") is not None


def test_config_revision_ignores_status_writes_and_counts_deletes() -> None:
    m, _ = loaded()
    # The load's header revision (10) may be a status write; configuration last changed at 9.
    assert m.revision == 10 and m.config_revision == 9
    assert not m.apply(WatchBatch(30, ((L.status_key("a"), b"{}", 30, False),)))
    assert m.config_revision == 9
    assert m.apply(WatchBatch(31, ((L.endpoint("users", "u-1"), b"", 31, True),)))
    assert m.config_revision == 31
    # A reload (after compaction) keeps what was seen: the delete at 31 left no key behind.
    m.load(40, [kv(L.resource("TrafficPolicy", "web"), policy("web", "web", 1), 5)])
    assert m.revision == 40 and m.config_revision == 31


def test_the_trust_bundle_reaches_every_snapshot_and_follows_rotation() -> None:
    m, _ = loaded()
    assert translate(m, node_key("web", ["orders"])).trust_bundle_pem == ""
    old = "-----BEGIN CERTIFICATE-----\nOLD\n-----END CERTIFICATE-----\n"
    assert m.apply(WatchBatch(30, ((L.ca_bundle, old.encode(), 30, False),)))
    assert translate(m, node_key("web", ["orders"])).trust_bundle_pem == old
    assert translate(m, node_key("users", [])).trust_bundle_pem == old  # no upstreams too
    both = old + old.replace("OLD", "NEW")
    assert m.apply(WatchBatch(31, ((L.ca_bundle, both.encode(), 31, False),)))
    assert translate(m, node_key("web", ["orders"])).trust_bundle_pem == both
    assert m.config_revision == 31
