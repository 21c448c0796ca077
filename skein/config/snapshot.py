"""Snapshot → SidecarConfig: validate everything, then build the frozen model.

A sidecar NACKs when this raises; the error names the resource
(`TrafficPolicy/orders: spec.timeout: must be positive, got -1s`).
"""

from __future__ import annotations

from skein.addr import parse_hostport
from skein.config.kinds import make_resource
from skein.config.model import (
    Algorithm,
    ClusterConfig,
    EndpointConfig,
    Protocol,
    SidecarConfig,
)
from skein.config.validate import check_name, validate_resource
from skein.errors import ConfigError
from skein.v1 import discovery_pb2, resources_pb2

__all__ = ["parse_snapshot"]

_PROTOCOLS = {
    resources_pb2.PROTOCOL_UNSPECIFIED: Protocol.GRPC,
    resources_pb2.GRPC: Protocol.GRPC,
    resources_pb2.HTTP: Protocol.HTTP,
}
_ALGORITHMS = {
    resources_pb2.LOAD_BALANCER_ALGORITHM_UNSPECIFIED: Algorithm.ROUND_ROBIN,
    resources_pb2.ROUND_ROBIN: Algorithm.ROUND_ROBIN,
    resources_pb2.LEAST_REQUEST: Algorithm.LEAST_REQUEST,
}


def _validate(kind: str, message: object, fallback: str) -> None:
    res = make_resource(kind, message)  # type: ignore[arg-type]
    name = getattr(message, "metadata").name or fallback  # noqa: B009
    try:
        validate_resource(res)
    except ConfigError as err:
        raise ConfigError(err.field, err.reason, where=f"{kind}/{name}") from None


def _check_cluster_name(field: str, got: str, cluster: str, where: str) -> None:
    """A resource inside a cluster must name that cluster (else control mixed them up)."""
    if got != cluster:
        raise ConfigError(
            field, f"must equal the cluster name {cluster!r}, got {got!r}", where=where
        )


def _timeout(policy: resources_pb2.TrafficPolicy) -> float | None:
    if not policy.spec.HasField("timeout"):
        return None
    d = policy.spec.timeout
    return float(d.seconds + d.nanos / 1e9)


def _cluster(index: int, cluster: discovery_pb2.Cluster) -> ClusterConfig:
    where = f"clusters[{index}]"
    try:
        check_name(cluster.name, "name")
    except ConfigError as err:
        raise ConfigError(err.field, err.reason, where=where) from None
    protocol = Protocol.GRPC
    if cluster.HasField("service"):
        _validate("Service", cluster.service, cluster.name)
        _check_cluster_name(
            "service.metadata.name",
            cluster.service.metadata.name,
            cluster.name,
            f"Cluster/{cluster.name}",
        )
        protocol = _PROTOCOLS[cluster.service.spec.protocol]
    algorithm = Algorithm.ROUND_ROBIN
    timeout = None
    if cluster.HasField("policy"):
        _validate("TrafficPolicy", cluster.policy, cluster.name)
        _check_cluster_name(
            "spec.service",
            cluster.policy.spec.service,
            cluster.name,
            f"TrafficPolicy/{cluster.policy.metadata.name}",
        )
        algorithm = _ALGORITHMS[cluster.policy.spec.load_balancer.algorithm]
        timeout = _timeout(cluster.policy)
    endpoints = []
    seen: set[str] = set()
    for ep in cluster.endpoints:
        _validate("Endpoint", ep, cluster.name)
        name = ep.metadata.name
        _check_cluster_name("spec.service", ep.spec.service, cluster.name, f"Endpoint/{name}")
        if name in seen:
            raise ConfigError(
                "metadata.name",
                f"duplicate endpoint in cluster {cluster.name!r}",
                where=f"Endpoint/{name}",
            )
        seen.add(name)
        host, port = parse_hostport(ep.spec.address)
        endpoints.append(
            EndpointConfig(
                instance=name,
                host=host,
                port=port,
                weight=ep.spec.weight or 1,
                healthy=ep.spec.health != resources_pb2.UNHEALTHY,
            )
        )
    return ClusterConfig(
        name=cluster.name,
        protocol=protocol,
        algorithm=algorithm,
        timeout=timeout,
        endpoints=tuple(endpoints),
    )


def parse_snapshot(version: str, snap: discovery_pb2.Snapshot) -> SidecarConfig:
    """Validate a whole snapshot and build the immutable config, or raise ConfigError."""
    clusters: dict[str, ClusterConfig] = {}
    for index, cluster in enumerate(snap.clusters):
        built = _cluster(index, cluster)
        if built.name in clusters:
            raise ConfigError(
                "name", f"duplicate cluster {built.name!r}", where=f"clusters[{index}]"
            )
        clusters[built.name] = built
    local_timeout = None
    if snap.HasField("local_policy"):
        _validate("TrafficPolicy", snap.local_policy, "local")
        local_timeout = _timeout(snap.local_policy)
    return SidecarConfig(version=version, clusters=clusters, local_timeout=local_timeout)
