"""Per-cluster request metrics for the relay.

Children are resolved once per cluster (and once per status value), so the hot
path does attribute arithmetic only: no label tuples per request.
"""

from __future__ import annotations

import weakref

from skein.metrics import Counter, Gauge, Histogram, Registry

__all__ = ["ClusterStats", "RelayMetrics", "relay_metrics"]


class ClusterStats:
    """The metric children of one cluster."""

    __slots__ = ("_by_status", "_cluster", "_family", "duration", "in_flight", "requests")

    def __init__(self, metrics: RelayMetrics, cluster: str) -> None:
        self._cluster = cluster
        self._family = metrics.responses
        self._by_status: dict[int, object] = {}
        self.requests = metrics.requests.labels(cluster)
        self.in_flight = metrics.in_flight.labels(cluster)
        self.duration = metrics.duration.labels(cluster)

    def response(self, grpc_status: int, http_status: int) -> None:
        """Count one answer: by gRPC status when it is a gRPC call, else by HTTP class."""
        key = grpc_status if grpc_status >= 0 else 1000 + http_status // 100
        child = self._by_status.get(key)
        if child is None:
            if grpc_status >= 0:
                labels = (self._cluster, "grpc", str(grpc_status))
            elif http_status:
                labels = (self._cluster, "http", f"{http_status // 100}xx")
            else:
                labels = (self._cluster, "reset", "")
            child = self._by_status[key] = self._family.labels(*labels)
        child.inc()  # type: ignore[attr-defined]


class RelayMetrics:
    """The relay's metric families in one registry; one per listener/pool set."""

    def __init__(self, registry: Registry, prefix: str = "skein_sidecar") -> None:
        self.requests: Counter = registry.counter(
            f"{prefix}_requests_total", "Streams received, by cluster", ("cluster",)
        )
        self.responses: Counter = registry.counter(
            f"{prefix}_responses_total",
            "Streams answered, by cluster, protocol and gRPC status or HTTP class",
            ("cluster", "protocol", "status"),
        )
        self.in_flight: Gauge = registry.gauge(
            f"{prefix}_requests_in_flight", "Streams in progress, by cluster", ("cluster",)
        )
        self.duration: Histogram = registry.histogram(
            f"{prefix}_request_duration_seconds", "Stream duration, by cluster", ("cluster",)
        )
        self._clusters: dict[str, ClusterStats] = {}

    def cluster(self, name: str) -> ClusterStats:
        stats = self._clusters.get(name)
        if stats is None:
            stats = self._clusters[name] = ClusterStats(self, name)
        return stats


_by_registry: weakref.WeakKeyDictionary[Registry, RelayMetrics] = weakref.WeakKeyDictionary()


def relay_metrics(registry: Registry | None) -> RelayMetrics | None:
    """The relay families of `registry`, registered once however many listeners share it."""
    if registry is None:
        return None
    metrics = _by_registry.get(registry)
    if metrics is None:
        metrics = _by_registry[registry] = RelayMetrics(registry)
    return metrics
