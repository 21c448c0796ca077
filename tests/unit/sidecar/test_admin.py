"""Admin pages over live objects: /ready reasons, /config_dump, /clusters, /metrics."""

from __future__ import annotations

import json
import random

from sidecar.admin import SidecarAdmin
from sidecar.discovery import ControlEndpoints, DiscoveryClient, DiskCache
from sidecar.dispatch import ConfigHolder, UpstreamDispatcher
from sidecar.policymetrics import PolicyMetrics
from skein.config import parse_snapshot
from skein.config.model import ClusterConfig, EndpointConfig, SidecarConfig
from skein.metrics import Registry
from skein.v1 import discovery_pb2


def build(tmp_path: object) -> tuple[SidecarAdmin, ConfigHolder]:
    holder, metrics = ConfigHolder(random.Random(0)), Registry()
    policy_metrics = PolicyMetrics(metrics)
    cache = DiskCache(str(tmp_path))
    client = DiscoveryClient(
        ControlEndpoints([("127.0.0.1", 1)]),
        discovery_pb2.Node(service="web"),
        holder,
        cache,
        metrics,
        parse_snapshot,
    )
    admin = SidecarAdmin(
        service="web",
        instance="web-1",
        holder=holder,
        discovery=client,
        registration=None,
        metrics=metrics,
        listeners=dict,
        cache_path=cache.path,
        collect=lambda: policy_metrics.collect(holder.current, holder.local, "web"),
    )
    return admin, holder


def test_ready_only_after_a_config_is_applied(tmp_path: object) -> None:
    admin, holder = build(tmp_path)
    before = admin.ready({})
    assert before.status == 503 and b"no configuration applied yet" in before.body
    holder.apply(SidecarConfig("5"), "disk")
    after = admin.ready({})
    assert after.status == 200 and b"version 5 from disk" in after.body
    admin.draining = True
    assert admin.ready({}).status == 503


def test_config_dump_and_clusters_show_policy_endpoints_and_load(tmp_path: object) -> None:
    admin, holder = build(tmp_path)
    cluster = ClusterConfig(
        "orders", timeout=1.5, endpoints=(EndpointConfig("o1", "127.0.0.1", 9001),)
    )
    holder.apply(SidecarConfig("9", {"orders": cluster}), "control")
    UpstreamDispatcher(holder, "orders").pick("orders", "/", (), "")
    dump = json.loads(admin.config_dump({}).body)
    assert dump["version"] == "9" and dump["source"] == "control"
    assert dump["clusters"]["orders"]["timeout"] == 1.5
    clusters = json.loads(admin.clusters({}).body)["clusters"]
    assert clusters["orders"]["endpoints"][0]["in_flight"] == 1
    assert clusters["orders"]["algorithm"] == "ROUND_ROBIN"
    assert clusters["orders"]["circuit_breaker"]["state"] == "closed"
    assert clusters["orders"]["retry"]["max_attempts"] == 3
    assert clusters["orders"]["endpoints"][0]["ejected"] is False
    assert "retry_budget" in clusters["orders"] and "outlier_detection" in clusters["orders"]
    metrics = admin.render_metrics({}).body.decode()
    assert "skein_sidecar_config_applies_total" in metrics
    assert 'skein_sidecar_circuit_breaker_state{cluster="orders",state="closed"} 1' in metrics
    assert 'skein_sidecar_endpoints_healthy{cluster="orders"} 1' in metrics
