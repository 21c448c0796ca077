"""Per-cluster request metrics for the relay.

Children are resolved once per cluster (and once per status value), so the hot
path does attribute arithmetic only: no label tuples per request.
"""

from __future__ import annotations

import weakref

from sidecar.transport.contract import (
    FAIL_CONNECT,
    FAIL_GRPC,
    FAIL_HTTP,
    FAIL_PER_TRY_TIMEOUT,
    FAIL_REFUSED,
    FAIL_RESET,
)
from skein.metrics import Counter, Gauge, Histogram, Registry

__all__ = ["RETRY_REASONS", "ClusterStats", "RelayMetrics", "relay_metrics"]

# The `reason` label of skein_sidecar_retries_total, by FAIL_* kind (0: transparent).
RETRY_REASONS = {
    0: "transparent",
    FAIL_GRPC: "grpc_status",
    FAIL_HTTP: "http_status",
    FAIL_RESET: "reset",
    FAIL_CONNECT: "connect_failure",
    FAIL_REFUSED: "refused_stream",
    FAIL_PER_TRY_TIMEOUT: "per_try_timeout",
}


class ClusterStats:
    """The metric children of one cluster."""

    __slots__ = (
        "_by_status",
        "_cluster",
        "_family",
        "_retries",
        "_retry_family",
        "committed_failures",
        "duration",
        "in_flight",
        "per_try_timeouts",
        "requests",
    )

    def __init__(self, metrics: RelayMetrics, cluster: str) -> None:
        self._cluster = cluster
        self._family = metrics.responses
        self._by_status: dict[int, object] = {}
        self._retry_family = metrics.retries
        self._retries: dict[int, object] = {}
        self.requests = metrics.requests.labels(cluster)
        self.in_flight = metrics.in_flight.labels(cluster)
        self.duration = metrics.duration.labels(cluster)
        self.per_try_timeouts = metrics.per_try_timeouts.labels(cluster)
        self.committed_failures = metrics.committed_failures.labels(cluster)

    def retried(self, failure: int) -> None:
        """Count one retry of a `failure` kind (FAIL_*; 0 for a transparent retry)."""
        child = self._retries.get(failure)
        if child is None:
            reason = RETRY_REASONS.get(failure, str(failure))
            child = self._retries[failure] = self._retry_family.labels(self._cluster, reason)
        child.inc()  # type: ignore[attr-defined]

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
        self.retries: Counter = registry.counter(
            f"{prefix}_retries_total",
            "Attempts retried, by cluster and what failed (transparent: never reached the peer)",
            ("cluster", "reason"),
        )
        self.per_try_timeouts: Counter = registry.counter(
            f"{prefix}_per_try_timeouts_total",
            "Attempts that outlived their per-try timeout, by cluster",
            ("cluster",),
        )
        self.committed_failures: Counter = registry.counter(
            f"{prefix}_committed_failures_total",
            "Calls with a retry policy that failed after their response began (not retried)",
            ("cluster",),
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
