"""Dispatchers: where each downstream stream goes, from the config now applied.

Invariants:
- `ConfigHolder.current` is replaced whole (one attribute store) by `apply`;
  a dispatcher reads it once per pick, so a pick never sees half a config.
- each subscribed service has one UpstreamCluster for as long as it stays in
  the config; `apply` reconfigures it in place, so breaker, budget, buckets,
  ejections and in-flight counts survive endpoint and policy pushes (an
  unchanged cluster is a no-op, as in Envoy).
- NoRoute always names the service and why: not configured yet, unknown
  service, none discovered, none healthy, all ejected, breaker open, limit
  reached, rate-limited.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from sidecar.auth.inbound import AuthStats, InboundAuth
from sidecar.auth.sources import JwksSources
from sidecar.cluster import LocalPolicy, UpstreamCluster
from sidecar.policy.routing import AuthorityRouter
from sidecar.transport.contract import NoRoute, Pick
from skein.config.model import LocalConfig, SidecarConfig

__all__ = [
    "AppliedConfig",
    "AuthorityDispatcher",
    "ConfigHolder",
    "InboundDispatcher",
    "LocalRetries",
    "UpstreamDispatcher",
]

LOCAL_CLUSTER = "local"
Header = tuple[bytes, bytes]
# Request bytes the inbound side keeps so a call that never reached the app
# (its pooled connection closed while idle) can be sent again.
_LOCAL_REPLAY_BYTES = 65536


class AppliedConfig:
    """One applied SidecarConfig with the clusters that serve it (read-only once built)."""

    __slots__ = ("applied_at", "clusters", "config", "router", "source")

    def __init__(
        self,
        config: SidecarConfig,
        source: str,
        clusters: dict[str, UpstreamCluster],
        applied_at: float,
    ) -> None:
        self.config = config
        self.source = source
        self.clusters = clusters
        self.router = AuthorityRouter(frozenset(config.clusters))
        self.applied_at = applied_at

    def pick_cluster(self, name: str, path: str, headers: Sequence[Header], peer_ip: str) -> Pick:
        cluster = self.clusters.get(name)
        if cluster is None:
            raise NoRoute(
                f"no endpoints for service '{name}': unknown service (not in this sidecar's "
                f"configuration; subscribe to it with --upstream {name}=HOST:PORT or "
                f"--subscribe {name})"
            )
        return cluster.pick(path, headers, peer_ip)

    def dump_clusters(self) -> dict[str, Any]:
        return {name: cluster.dump() for name, cluster in sorted(self.clusters.items())}


class ConfigHolder:
    """The config every dispatcher reads; the discovery client swaps it atomically."""

    def __init__(
        self, rng: random.Random | None = None, now: Callable[[], float] | None = None
    ) -> None:
        self.current: AppliedConfig | None = None
        self._rng = rng if rng is not None else random.Random()
        self._now = now if now is not None else time.monotonic
        self.local = LocalPolicy(self._now)
        self._listeners: list[Callable[[AppliedConfig], None]] = []

    def on_apply(self, callback: Callable[[AppliedConfig], None]) -> None:
        """Call `callback` after every apply (health checker, metrics)."""
        self._listeners.append(callback)

    def apply(self, config: SidecarConfig, source: str) -> AppliedConfig:
        """Reconfigure clusters for `config` and make it current; never raises for valid config."""
        old = self.current.clusters if self.current is not None else {}
        clusters: dict[str, UpstreamCluster] = {}
        for name, cluster_config in config.clusters.items():
            cluster = old.get(name)
            if cluster is None:
                cluster = UpstreamCluster(cluster_config, now=self._now, rng=self._rng)
            else:
                cluster.reconfigure(cluster_config)
            clusters[name] = cluster
        self.local.reconfigure(config.local.rate_limits, config.local.methods)
        applied = AppliedConfig(config, source, clusters, time.time())
        self.current = applied
        for callback in self._listeners:
            callback(applied)
        return applied

    def tick(self) -> None:
        """Periodic policy work (ejection expiry, success-rate sweeps, breaker logs)."""
        current = self.current
        if current is not None:
            for cluster in current.clusters.values():
                cluster.tick()


def _service_of(authority: str) -> str:
    return authority.rsplit(":", 1)[0] if authority else "(no authority)"


def _not_configured(service: str) -> NoRoute:
    return NoRoute(
        f"no endpoints for service '{service}': no configuration yet (the sidecar has not "
        "received one from control and has none cached on disk)"
    )


class LocalRetries:
    """The local app's Retrier: no policy retries (the caller's sidecar owns those),
    only the transport's transparent retry of a call that never reached the app."""

    __slots__ = ("buffer_limit", "max_attempts", "per_try_timeout")

    def __init__(self) -> None:
        self.max_attempts = 1
        self.per_try_timeout: float | None = None
        self.buffer_limit = _LOCAL_REPLAY_BYTES

    def decide(self, attempts: int, failure: int, code: int, pushback: float | None) -> float | str:
        return "retries toward the local app are left to the calling sidecar"

    def repick(self, previous: Pick) -> Pick:
        return previous

    def retry_done(self) -> None:
        return None


_XFCC = b"x-forwarded-client-cert"
_URI = b";URI="


def peer_identity_of(headers: Sequence[Header]) -> str:
    """The caller's SPIFFE ID from the `x-forwarded-client-cert` the inbound TLS layer set.

    Only meaningful when that layer replaces every caller's header (mesh TLS on
    the inbound listener); see InboundDispatcher.identity_from_xfcc.
    """
    for name, value in headers:
        if name == _XFCC:
            at = value.find(_URI)
            if at == -1:
                return ""
            return value[at + len(_URI) :].split(b";", 1)[0].decode("latin-1")
    return ""


class InboundDispatcher:
    """Inbound streams all go to the local app, under the own service's inbound policy.

    Authentication and authorization (JWT, API keys, AuthorizationPolicy) run
    first, then rate limits. With no auth configured `_auth` is None and a
    call pays one attribute test. `identity_from_xfcc` is set by the wiring
    when the inbound listener terminates mesh TLS (and so owns the header);
    without it every caller counts as plaintext (identity "").
    """

    __slots__ = (
        "_app",
        "_auth",
        "_holder",
        "_last",
        "_picks",
        "_retries",
        "_sources",
        "_wall",
        "auth_stats",
        "identity_from_xfcc",
    )

    def __init__(
        self,
        holder: ConfigHolder,
        app: tuple[str, int],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._holder = holder
        self._app = app
        self._last: AppliedConfig | None = None
        self._retries = LocalRetries()
        self._picks: tuple[Pick, ...] = (self._local_pick(None),)
        self._auth: InboundAuth | None = None
        self._sources = JwksSources()
        self._wall = wall
        self.auth_stats = AuthStats()
        self.identity_from_xfcc = False
        # Build the auth checks when a config is applied, not at its first call, so
        # JWKS URLs are being fetched before the first token arrives.
        holder.on_apply(self._applied)

    def _applied(self, applied: AppliedConfig) -> None:
        if applied is not self._last:
            self._last = applied
            self._rebuild(applied.config.local)

    def _local_pick(self, timeout: float | None) -> Pick:
        return Pick(LOCAL_CLUSTER, self._app, timeout, None, self._retries)

    def _rebuild(self, local: LocalConfig) -> None:
        picks = [self._local_pick(local.timeout)]
        for method in local.methods:
            timeout = method.timeout if method.timeout is not None else local.timeout
            picks.append(self._local_pick(timeout))
        self._picks = tuple(picks)
        self._sources.retain(local.jwt)
        self._auth = (
            InboundAuth(local, self._sources.get, self.auth_stats, self._wall)
            if local.has_auth
            else None
        )

    def dump_auth(self) -> dict[str, Any] | None:
        """The inbound auth state for /config_dump (None: nothing configured)."""
        applied = self._holder.current
        if applied is not self._last:
            self._last = applied
            self._rebuild(applied.config.local if applied is not None else LocalConfig())
        return self._auth.dump() if self._auth is not None else None

    def pick(self, authority: str, path: str, headers: Sequence[Header], peer_ip: str) -> Pick:
        holder = self._holder
        applied = holder.current
        if applied is not self._last:
            self._last = applied
            self._rebuild(applied.config.local if applied is not None else LocalConfig())
        forward: Sequence[Header] | None = None
        auth = self._auth
        if auth is not None:
            identity = peer_identity_of(headers) if self.identity_from_xfcc else ""
            forward = auth.check(path, headers, identity, time.monotonic())
        local = holder.local
        delay = local.admit(path, headers, peer_ip)
        methods = local.methods
        pick = self._picks[methods.route_of(path) if methods else 0]
        if delay > 0 or forward is not None:
            pick = Pick(
                pick.cluster, pick.address, pick.timeout, None, pick.retry, delay, headers=forward
            )
        return pick


class UpstreamDispatcher:
    """A per-upstream local port (`--upstream NAME=HOST:PORT`): always cluster NAME."""

    __slots__ = ("_cluster", "_holder")

    def __init__(self, holder: ConfigHolder, cluster: str) -> None:
        self._holder = holder
        self._cluster = cluster

    def pick(self, authority: str, path: str, headers: Sequence[Header], peer_ip: str) -> Pick:
        applied = self._holder.current
        if applied is None:
            raise _not_configured(self._cluster)
        return applied.pick_cluster(self._cluster, path, headers, peer_ip)


class AuthorityDispatcher:
    """The outbound port: the cluster is named by `:authority` / `Host`."""

    __slots__ = ("_holder",)

    def __init__(self, holder: ConfigHolder) -> None:
        self._holder = holder

    def pick(self, authority: str, path: str, headers: Sequence[Header], peer_ip: str) -> Pick:
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
        return applied.pick_cluster(name, path, headers, peer_ip)
