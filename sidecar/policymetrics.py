"""Prometheus view of the policy state: breakers, ejections, budgets, rate limits.

The policy objects keep plain integer counters on the hot path; this module
copies them into metric children when /metrics is rendered, so a call pays
nothing for being observable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from skein.metrics import Registry

if TYPE_CHECKING:
    from sidecar.auth.inbound import AuthStats
    from sidecar.cluster import LocalPolicy, UpstreamCluster
    from sidecar.dispatch import AppliedConfig
    from sidecar.policy.ratelimit import RateLimits

__all__ = ["PolicyMetrics"]

_STATES = ("closed", "open", "half_open")


class PolicyMetrics:
    """Policy metric families in the sidecar's registry; `collect` refreshes them."""

    def __init__(self, registry: Registry, prefix: str = "skein_sidecar") -> None:
        self.breaker_state = registry.gauge(
            f"{prefix}_circuit_breaker_state",
            "1 for the breaker's current state (closed, open, half_open), by cluster",
            ("cluster", "state"),
        )
        self.breaker_opened = registry.counter(
            f"{prefix}_circuit_breaker_opened_total", "Times the breaker opened", ("cluster",)
        )
        self.rejections = registry.counter(
            f"{prefix}_circuit_breaker_rejections_total",
            "Calls failed fast by the breaker or a limit, by cluster and reason",
            ("cluster", "reason"),
        )
        self.ejections = registry.counter(
            f"{prefix}_outlier_ejections_total",
            "Endpoints ejected by outlier detection, by cluster and rule",
            ("cluster", "rule"),
        )
        self.ejected = registry.gauge(
            f"{prefix}_endpoints_ejected", "Endpoints ejected now, by cluster", ("cluster",)
        )
        self.healthy = registry.gauge(
            f"{prefix}_endpoints_healthy",
            "Endpoints passing their health checks, by cluster",
            ("cluster",),
        )
        self.budget_exhausted = registry.counter(
            f"{prefix}_retry_budget_exhausted_total",
            "Retries refused because the retry budget was spent, by cluster",
            ("cluster",),
        )
        self.rate_limit_hits = registry.counter(
            f"{prefix}_rate_limit_hits_total",
            "Calls a rate limit rule applied to, by direction, service and rule",
            ("direction", "service", "rule"),
        )
        self.rate_limit_blocks = registry.counter(
            f"{prefix}_rate_limit_blocks_total",
            "Calls a rate limit rule rejected, by direction, service and rule",
            ("direction", "service", "rule"),
        )
        self._auth_families(registry, prefix)

    def _auth_families(self, registry: Registry, prefix: str) -> None:
        self.authz_denied = registry.counter(
            f"{prefix}_authz_denied_total",
            "Inbound calls refused by authorization (PERMISSION_DENIED / 403), by deciding "
            "policy ('(default-deny)' when no ALLOW policy matched)",
            ("policy",),
        )
        self.jwt_validations = registry.counter(
            f"{prefix}_jwt_validations_total",
            "Inbound JWT checks by result: ok, missing, or the refusal reason",
            ("result",),
        )
        self.api_key_failures = registry.counter(
            f"{prefix}_api_key_failures_total",
            "Inbound calls refused for a missing, unknown or revoked API key",
            (),
        )

    def collect_auth(self, stats: AuthStats) -> None:
        """Copy the inbound auth counters (kept by the inbound dispatcher)."""
        for policy, count in stats.denied.items():
            self.authz_denied.labels(policy or "(default-deny)").set(count)
        for result, count in stats.jwt.items():
            self.jwt_validations.labels(result).set(count)
        if stats.api_key_failures:
            self.api_key_failures.labels().set(stats.api_key_failures)

    def collect(
        self,
        applied: AppliedConfig | None,
        local: LocalPolicy,
        service: str,
        auth: AuthStats | None = None,
    ) -> None:
        if auth is not None:
            self.collect_auth(auth)
        if applied is not None:
            for name, cluster in applied.clusters.items():
                self._cluster(name, cluster)
        self._rate_limits("inbound", service, local.rate_limits)

    def _cluster(self, name: str, cluster: UpstreamCluster) -> None:
        now = cluster._now()
        state = cluster.breaker.state(now)
        for candidate in _STATES:
            self.breaker_state.labels(name, candidate).set(1.0 if candidate == state else 0.0)
        self.breaker_opened.labels(name).set(cluster.breaker.opened)
        self.rejections.labels(name, "breaker_open").set(cluster.breaker_rejections)
        for reason, count in cluster.overflows.items():
            self.rejections.labels(name, reason).set(count)
        self.rejections.labels(name, "max_pending_or_connections").set(cluster.limits.overflows)
        for rule, count in cluster.outlier.ejections_total.items():
            self.ejections.labels(name, rule).set(count)
        self.ejected.labels(name).set(len(cluster.outlier.ejected()))
        self.healthy.labels(name).set(cluster.balancer.healthy_count)
        self.budget_exhausted.labels(name).set(cluster.budget_exhausted)
        self._rate_limits("outbound", name, cluster.rate_limits)

    def _rate_limits(self, direction: str, service: str, limits: RateLimits | None) -> None:
        if limits is None:
            return
        for rule in limits.rules:
            label = rule.config.name
            self.rate_limit_hits.labels(direction, service, label).set(rule.hits)
            self.rate_limit_blocks.labels(direction, service, label).set(rule.blocks)
