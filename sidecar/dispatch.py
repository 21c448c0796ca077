"""Dispatchers: where each downstream stream goes, from the config now applied.

Invariants:
- `ConfigHolder.current` is replaced whole (one attribute store) by `apply`;
  a dispatcher reads it once per pick, so a pick never sees half a config.
- a pick does no awaiting and, on success, allocates nothing: every endpoint
  slot carries its prebuilt `Pick` (cluster, address, timeout, done).
- a cluster whose config did not change keeps its balancer object (an
  unchanged update is a no-op, as in Envoy); one that changed gets a new
  balancer that keeps the in-flight counts of endpoints that stay.
- NoRoute always names the service and why: not configured yet, unknown
  service, none discovered, none healthy.
"""

from __future__ import annotations

import random
import time
from typing import Any

from sidecar.policy.balancer import Balancer, make_balancer
from sidecar.policy.routing import AuthorityRouter
from sidecar.transport.contract import NoRoute, Pick
from skein.config.model import ClusterConfig, SidecarConfig

__all__ = [
    "AppliedConfig",
    "AuthorityDispatcher",
    "ConfigHolder",
    "InboundDispatcher",
    "UpstreamDispatcher",
]

LOCAL_CLUSTER = "local"


class AppliedConfig:
    """One applied SidecarConfig with the balancers built for it (read-only once built)."""

    __slots__ = ("applied_at", "balancers", "config", "router", "source")

    def __init__(
        self, config: SidecarConfig, source: str, balancers: dict[str, Balancer], applied_at: float
    ) -> None:
        self.config = config
        self.source = source
        self.balancers = balancers
        self.router = AuthorityRouter(frozenset(config.clusters))
        self.applied_at = applied_at

    def pick_cluster(self, name: str) -> Pick:
        balancer = self.balancers.get(name)
        if balancer is None:
            raise NoRoute(
                f"no endpoints for service '{name}': unknown service (not in this sidecar's "
                f"configuration; subscribe to it with --upstream {name}=HOST:PORT or "
                f"--subscribe {name})"
            )
        slot = balancer.acquire()
        if slot is None:
            total = len(balancer)
            if total == 0:
                why = "none discovered (no instance is registered)"
            else:
                why = f"none healthy ({total} registered, all unhealthy)"
            raise NoRoute(f"no endpoints for service '{name}': {why}")
        route: Pick = slot.route
        return route

    def dump_clusters(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, cluster in sorted(self.config.clusters.items()):
            balancer = self.balancers[name]
            out[name] = {
                "protocol": cluster.protocol.value,
                "timeout": cluster.timeout,
                "healthy_endpoints": balancer.healthy_count,
                **balancer.dump(),
            }
        return out


class ConfigHolder:
    """The config every dispatcher reads; the discovery client swaps it atomically."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.current: AppliedConfig | None = None
        self._rng = rng if rng is not None else random.Random()

    def apply(self, config: SidecarConfig, source: str) -> AppliedConfig:
        """Build balancers for `config` and make it current; never raises for valid config."""
        old = self.current
        old_balancers = old.balancers if old is not None else {}
        old_clusters = old.config.clusters if old is not None else {}
        balancers: dict[str, Balancer] = {}
        for name, cluster in config.clusters.items():
            previous = old_balancers.get(name)
            if previous is not None and old_clusters.get(name) == cluster:
                balancers[name] = previous
                continue
            balancer = make_balancer(cluster.algorithm, cluster.endpoints, self._rng, previous)
            _attach_routes(balancer, cluster)
            balancers[name] = balancer
        applied = AppliedConfig(config, source, balancers, time.time())
        self.current = applied
        return applied


def _attach_routes(balancer: Balancer, cluster: ClusterConfig) -> None:
    for slot in balancer.slots:
        slot.route = Pick(cluster.name, slot.endpoint.address, cluster.timeout, slot.done)


def _service_of(authority: str) -> str:
    return authority.rsplit(":", 1)[0] if authority else "(no authority)"


def _not_configured(service: str) -> NoRoute:
    return NoRoute(
        f"no endpoints for service '{service}': no configuration yet (the sidecar has not "
        "received one from control and has none cached on disk)"
    )


class InboundDispatcher:
    """Inbound streams all go to the local app, with the own service's policy timeout."""

    __slots__ = ("_app", "_holder", "_last", "_pick")

    def __init__(self, holder: ConfigHolder, app: tuple[str, int]) -> None:
        self._holder = holder
        self._app = app
        self._last: AppliedConfig | None = None
        self._pick = Pick(LOCAL_CLUSTER, app, None, None)

    def pick(self, authority: str, path: str) -> Pick:
        applied = self._holder.current
        if applied is not self._last:
            self._last = applied
            timeout = applied.config.local_timeout if applied is not None else None
            if timeout != self._pick.timeout:
                self._pick = Pick(LOCAL_CLUSTER, self._app, timeout, None)
        return self._pick


class UpstreamDispatcher:
    """A per-upstream local port (`--upstream NAME=HOST:PORT`): always cluster NAME."""

    __slots__ = ("_cluster", "_holder")

    def __init__(self, holder: ConfigHolder, cluster: str) -> None:
        self._holder = holder
        self._cluster = cluster

    def pick(self, authority: str, path: str) -> Pick:
        applied = self._holder.current
        if applied is None:
            raise _not_configured(self._cluster)
        return applied.pick_cluster(self._cluster)


class AuthorityDispatcher:
    """The outbound port: the cluster is named by `:authority` / `Host`."""

    __slots__ = ("_holder",)

    def __init__(self, holder: ConfigHolder) -> None:
        self._holder = holder

    def pick(self, authority: str, path: str) -> Pick:
        applied = self._holder.current
        if applied is None:
            raise _not_configured(_service_of(authority))
        name = applied.router.route(authority)
        if name is None:
            service = _service_of(authority)
            raise NoRoute(
                f"no endpoints for service '{service}': unknown service (authority "
                f"{authority!r} names no subscribed service; subscribe with --subscribe "
                f"NAME, and set the call's authority to the service name)"
            )
        return applied.pick_cluster(name)
