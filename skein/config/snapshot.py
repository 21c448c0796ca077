"""Snapshot → SidecarConfig: validate everything, then build the frozen model.

A sidecar NACKs when this raises; the error names the resource
(`TrafficPolicy/orders: spec.timeout: must be positive, got -1s`).
"""

from __future__ import annotations

from skein.addr import parse_hostport
from skein.config.auth import (
    api_key_auth_config,
    authorization_configs,
    jwt_configs,
    mtls_mode,
)
from skein.config.kinds import make_resource
from skein.config.model import (
    ClusterConfig,
    Direction,
    EndpointConfig,
    LocalConfig,
    Protocol,
    SidecarConfig,
)
from skein.config.policy import (
    breaker_config,
    budget_config,
    endpoint_weight,
    health_check_config,
    load_balancer_config,
    method_configs,
    outlier_config,
    rate_limit_configs,
    retry_config,
    timeout_of,
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


def _endpoints(
    cluster: discovery_pb2.Cluster, lb: resources_pb2.LoadBalancer
) -> tuple[EndpointConfig, ...]:
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
                weight=endpoint_weight(lb, name, ep.spec.weight),
                healthy=ep.spec.health != resources_pb2.UNHEALTHY,
                health_reason=ep.spec.health_reason,
            )
        )
    return tuple(endpoints)


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
    # An absent policy reads as an empty one: every field at its default.
    policy = cluster.policy
    if cluster.HasField("policy"):
        _validate("TrafficPolicy", policy, cluster.name)
        _check_cluster_name(
            "spec.service",
            policy.spec.service,
            cluster.name,
            f"TrafficPolicy/{policy.metadata.name}",
        )
    spec = policy.spec
    return ClusterConfig(
        name=cluster.name,
        protocol=protocol,
        load_balancer=load_balancer_config(spec.load_balancer),
        timeout=timeout_of(spec),
        endpoints=_endpoints(cluster, spec.load_balancer),
        retry=retry_config(spec.retry),
        budget=budget_config(spec.retry_budget),
        breaker=breaker_config(spec.circuit_breaker),
        outlier=outlier_config(spec.outlier_detection),
        rate_limits=rate_limit_configs(spec, Direction.OUTBOUND),
        methods=method_configs(spec),
    )


def _own_service(snap: discovery_pb2.Snapshot) -> str:
    """The sidecar's service as the snapshot names it (policies all name the same one)."""
    if snap.HasField("local_policy"):
        return str(snap.local_policy.spec.service)
    for policy in snap.authorization:
        return str(policy.spec.service)
    for key in snap.api_keys:
        return str(key.spec.service)
    return ""


def _local(snap: discovery_pb2.Snapshot) -> LocalConfig:
    """The inbound side: the local policy's timeout, INBOUND limits, methods, checks, auth."""
    service = _own_service(snap)
    authorization = authorization_configs(snap.authorization, service)
    names_keys = any(rule.api_keys for policy in authorization for rule in policy.rules)
    if not snap.HasField("local_policy"):
        return LocalConfig(
            api_keys=api_key_auth_config(None, snap.api_keys, service, names_keys),
            authorization=authorization,
        )
    _validate("TrafficPolicy", snap.local_policy, "local")
    spec = snap.local_policy.spec
    return LocalConfig(
        timeout=timeout_of(spec),
        rate_limits=rate_limit_configs(spec, Direction.INBOUND),
        methods=method_configs(spec),
        health_check=(
            health_check_config(spec.health_check) if spec.HasField("health_check") else None
        ),
        mtls=mtls_mode(spec),
        jwt=jwt_configs(spec),
        api_keys=api_key_auth_config(spec, snap.api_keys, service, names_keys),
        authorization=authorization,
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
    return SidecarConfig(version=version, clusters=clusters, local=_local(snap))
