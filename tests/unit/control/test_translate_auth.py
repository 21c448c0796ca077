"""AuthorizationPolicies and ApiKeys reach the snapshots of the service they protect."""

from __future__ import annotations

from google.protobuf import json_format  # type: ignore[import-untyped]

from control.mirror import Mirror
from control.store import KeyLayout, KeyValue, WatchBatch
from control.translate import node_key, translate
from skein.v1 import resources_pb2

L = KeyLayout("/t/")


def kv(key: bytes, message: object, rev: int) -> KeyValue:
    return KeyValue(key, json_format.MessageToJson(message).encode(), rev)


def authz(name: str, service: str) -> resources_pb2.AuthorizationPolicy:
    ap = resources_pb2.AuthorizationPolicy()
    ap.metadata.name, ap.spec.service = name, service
    ap.spec.rules.add(sources=["shop"])
    return ap


def api_key(name: str, service: str) -> resources_pb2.ApiKey:
    key = resources_pb2.ApiKey()
    key.metadata.name, key.spec.service, key.spec.sha256 = name, service, "ab" * 32
    return key


def test_policies_and_keys_go_to_their_service_only() -> None:
    m = Mirror(L)
    m.load(
        10,
        [
            kv(L.resource("AuthorizationPolicy", "b-readers"), authz("b-readers", "cart"), 4),
            kv(L.resource("AuthorizationPolicy", "a-deny"), authz("a-deny", "cart"), 5),
            kv(L.resource("AuthorizationPolicy", "other"), authz("other", "orders"), 6),
            kv(L.resource("ApiKey", "ci"), api_key("ci", "cart"), 7),
        ],
    )
    assert m.config_revision == 7
    snap = translate(m, node_key("cart", ["orders"]))
    assert [p.metadata.name for p in snap.authorization] == ["a-deny", "b-readers"]
    assert snap.authorization[0].metadata.version == 5
    assert [k.metadata.name for k in snap.api_keys] == ["ci"]
    shop = translate(m, node_key("shop", ["cart"]))
    assert not shop.authorization and not shop.api_keys
    # the policy in a caller's cluster is not sent (the callee enforces it)
    assert [p.metadata.name for p in translate(m, node_key("orders", [])).authorization] == [
        "other"
    ]


def test_watch_events_move_delete_and_revoke() -> None:
    m = Mirror(L)
    m.load(1, [])
    moved = authz("p", "orders")
    batch = WatchBatch(
        revision=3,
        events=(
            (
                L.resource("AuthorizationPolicy", "p"),
                kv(b"", authz("p", "cart"), 2).value,
                2,
                False,
            ),
            (L.resource("AuthorizationPolicy", "p"), kv(b"", moved, 3).value, 3, False),
        ),
    )
    assert m.apply(batch)
    assert not translate(m, node_key("cart", [])).authorization
    assert len(translate(m, node_key("orders", [])).authorization) == 1
    revoked = api_key("ci", "orders")
    revoked.spec.revoked = True
    m.apply(
        WatchBatch(
            revision=5,
            events=(
                (L.resource("ApiKey", "ci"), kv(b"", revoked, 4).value, 4, False),
                (L.resource("AuthorizationPolicy", "p"), b"", 5, True),
            ),
        )
    )
    snap = translate(m, node_key("orders", []))
    assert not snap.authorization
    assert snap.api_keys[0].spec.revoked
    assert m.config_revision == 5
