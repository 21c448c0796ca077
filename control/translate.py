"""Mirror + node -> the Snapshot one sidecar gets (pure: no I/O, no clock).

A sidecar gets only what it calls (istio#7912: memory must not grow with the
mesh): one cluster per name in node.upstreams, sorted, each with the Service,
the TrafficPolicy targeting it and all its endpoints (sorted by instance;
unhealthy ones too, marked, so callers can show why they skip them), plus
the policy for its own service as local_policy, and the AuthorizationPolicies
and ApiKeys protecting its own service (sorted by name).
Stored resources pass through unvalidated: validation is the sidecar's
(and Apply's) job, so a bad value in etcd is NACKed, not silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

from control.mirror import Mirror
from skein.v1 import discovery_pb2

__all__ = ["node_key", "translate"]

NodeKey = tuple[str, tuple[str, ...]]


def node_key(service: str, upstreams: Iterable[str]) -> NodeKey:
    """Nodes with equal keys get byte-identical snapshots (serialize once)."""
    return service, tuple(sorted(set(upstreams)))


def translate(mirror: Mirror, key: NodeKey) -> discovery_pb2.Snapshot:
    service, upstreams = key
    snap = discovery_pb2.Snapshot()
    for name in upstreams:
        cluster = snap.clusters.add()
        cluster.name = name
        svc = mirror.services.get(name)
        if svc is not None:
            cluster.service.CopyFrom(svc)
        policy = mirror.policy_for(name)
        if policy is not None:
            cluster.policy.CopyFrom(policy)
        instances = mirror.endpoints.get(name)
        if instances:
            for instance in sorted(instances):
                cluster.endpoints.append(instances[instance])
    snap.trust_bundle_pem = mirror.trust_bundle
    local = mirror.policy_for(service) if service else None
    if local is not None:
        snap.local_policy.CopyFrom(local)
    if service:
        for policy in mirror.for_service("AuthorizationPolicy", service):
            snap.authorization.add().CopyFrom(policy)
        for key in mirror.for_service("ApiKey", service):
            snap.api_keys.add().CopyFrom(key)
    return snap
