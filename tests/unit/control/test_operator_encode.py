"""The stored form of a resource is the same for the same content, whatever the order of
its map fields, so reapplying an unchanged manifest writes (and pushes) nothing."""

from __future__ import annotations

from control.operator import encode_resource
from skein.v1 import resources_pb2


def policy(weights: list[tuple[str, int]], labels: list[tuple[str, str]]) -> object:
    tp = resources_pb2.TrafficPolicy()
    tp.metadata.name = "products"
    for key, value in labels:
        tp.metadata.labels[key] = value
    tp.spec.service = "products"
    tp.spec.load_balancer.algorithm = resources_pb2.WEIGHTED_ROUND_ROBIN
    for instance, weight in weights:
        tp.spec.load_balancer.weights[instance] = weight
    return tp


def test_map_order_does_not_change_the_stored_form() -> None:
    weights = [(f"products-{i}", i + 1) for i in range(8)]
    labels = [("tier", "web"), ("app", "shop"), ("zone", "a")]
    forward = encode_resource(policy(weights, labels))
    backward = encode_resource(policy(weights[::-1], labels[::-1]))
    assert forward == backward
    assert forward.index(b'"products-0"') < forward.index(b'"products-7"')
