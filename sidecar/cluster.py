"""One upstream service's live policy state, and the pipeline a call runs through it.

For every call the outbound side runs, in order (DESIGN.md's request pipeline):
rate limit → request limit → circuit breaker → retry budget deposit → route
(per-method overrides) → balancer (health, outlier ejection). Each step is a
sans-IO object from `sidecar.policy`; this module only strings them together
and says, when the mesh answers a call itself, exactly why.

Invariants:
- a cluster object lives as long as its service is subscribed; a new config
  reconfigures it in place and keeps the state of every policy whose config
  did not change (an endpoint change must not reset a breaker or a bucket);
- picks allocate nothing on the common path: every endpoint slot carries one
  prebuilt Pick per route;
- every attempt that acquired a slot is released through `slot.done`, which
  feeds the breaker, the outlier detector and the request count.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any, cast

from sidecar.policy.balancer import Balancer, EndpointSlot, SlotKey, make_balancer
from sidecar.policy.breaker import CircuitBreaker
from sidecar.policy.budget import RetryBudget
from sidecar.policy.hashing import HashKeySource
from sidecar.policy.outlier import OutlierDetector
from sidecar.policy.ratelimit import RateLimits
from sidecar.policy.retry import RetryRule
from sidecar.transport.contract import NoRoute, Pick, PoolLimits
from skein.config.model import ClusterConfig, MethodConfig, RateLimitConfig, RetryConfig
from skein.logging import get_logger

__all__ = ["LocalPolicy", "MethodTable", "Retries", "UpstreamCluster"]

log = get_logger("cluster")

Header = tuple[bytes, bytes]
_RESOURCE_EXHAUSTED = 8


class MethodTable:
    """Longest-prefix match of a call's path onto per-method overrides (index 0 = none)."""

    __slots__ = ("_cache", "_prefixes")

    _CACHE_MAX = 4096

    def __init__(self, methods: Sequence[MethodConfig]) -> None:
        ordered = sorted(enumerate(methods, start=1), key=lambda item: -len(item[1].prefix))
        self._prefixes = tuple((m.prefix, index) for index, m in ordered)
        self._cache: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._prefixes)

    def route_of(self, path: str) -> int:
        index = self._cache.get(path)
        if index is not None:
            return index
        index = 0
        for prefix, candidate in self._prefixes:
            if path.startswith(prefix):
                index = candidate
                break
        if len(self._cache) < self._CACHE_MAX:
            self._cache[path] = index
        return index


class Retries:
    """The Retrier of one route of one cluster (see contract.Retrier)."""

    __slots__ = ("buffer_limit", "cluster", "max_attempts", "per_try_timeout", "route", "rule")

    def __init__(self, cluster: UpstreamCluster, route: int, config: RetryConfig) -> None:
        self.cluster = cluster
        self.route = route
        self.rule = RetryRule(config)
        self.max_attempts = self.rule.max_attempts
        self.per_try_timeout = self.rule.per_try_timeout
        self.buffer_limit = self.rule.buffer_limit

    def decide(self, attempts: int, failure: int, code: int, pushback: float | None) -> float | str:
        cluster = self.cluster
        if attempts >= self.max_attempts:
            return f"{attempts} of {self.max_attempts} attempts made"
        if not self.rule.retriable(failure, code):
            return "the failure is not one of the policy's retry_on conditions"
        if pushback is not None and pushback < 0:
            return "the server asked not to retry (grpc-retry-pushback-ms)"
        return cluster.take_retry(pushback if pushback is not None else -1.0, attempts, self.rule)

    def repick(self, previous: Pick) -> Pick:
        return self.cluster.repick(self.route, previous)

    def retry_done(self) -> None:
        self.cluster.retries_in_flight -= 1


class UpstreamCluster:
    """Policy state of one upstream service; `pick` is the outbound hot path."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        now: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.name = config.name
        self._now = now
        self.rng = rng if rng is not None else random.Random()
        self.config = config
        self.in_flight = 0
        self.retries_in_flight = 0
        self.overflows: dict[str, int] = {"max_requests": 0, "max_retries": 0}
        self.breaker_rejections = 0
        self.budget_exhausted = 0
        self.rate_limited = 0
        self.ejections_ignored = False  # every healthy endpoint is ejected: none applies
        self.limits = PoolLimits(
            config.name, config.breaker.max_connections, config.breaker.max_pending_requests
        )
        start = now()
        self.balancer: Balancer = make_balancer(config.load_balancer, config.endpoints, self.rng)
        self.breaker = CircuitBreaker(config.breaker, config.name)
        self.budget = RetryBudget(config.budget)
        self.outlier = OutlierDetector(config.outlier)
        self.outlier.set_endpoints([slot.key for slot in self.balancer.slots], start)
        self.rate_limits = RateLimits(config.rate_limits, start) if config.rate_limits else None
        self.methods = MethodTable(config.methods)
        self.retriers: tuple[Retries, ...] = ()
        self._by_address: dict[tuple[str, int], EndpointSlot] = {}
        self._build_routes()

    # -- configuration ---------------------------------------------------------------

    def reconfigure(self, config: ClusterConfig) -> None:
        """Apply a new config for the same service, keeping unchanged policies' state."""
        old = self.config
        if config == old:
            return
        now = self._now()
        self.config = config
        if config.load_balancer != old.load_balancer:
            self.balancer = make_balancer(
                config.load_balancer, config.endpoints, self.rng, previous=self.balancer
            )
        elif config.endpoints != old.endpoints:
            self.balancer.update(config.endpoints)
        if config.breaker != old.breaker:
            self.breaker = CircuitBreaker(config.breaker, config.name)
            self.limits.max_connections = config.breaker.max_connections
            self.limits.max_pending = config.breaker.max_pending_requests
        if config.budget != old.budget:
            self.budget = RetryBudget(config.budget)
        if config.outlier != old.outlier:
            self.outlier = OutlierDetector(config.outlier)
        self.outlier.set_endpoints([slot.key for slot in self.balancer.slots], now)
        if config.rate_limits != old.rate_limits:
            self.rate_limits = _limits(self.rate_limits, config.rate_limits, now)
        if config.methods != old.methods:
            self.methods = MethodTable(config.methods)
        self._build_routes()
        self._apply_ejections()

    def _build_routes(self) -> None:
        """Prebuild every slot's Pick per route, and the route retriers."""
        config = self.config
        hashing = config.load_balancer.hash
        self._hash_key = HashKeySource(hashing) if hashing is not None else None
        routes: list[tuple[float | None, RetryConfig]] = [(config.timeout, config.retry)]
        for method in config.methods:
            timeout = method.timeout if method.timeout is not None else config.timeout
            routes.append((timeout, method.retry if method.retry is not None else config.retry))
        self.retriers = tuple(Retries(self, i, retry) for i, (_t, retry) in enumerate(routes))
        self._by_address = {}
        for slot in self.balancer.slots:
            slot.observer = self._observe
            address = slot.endpoint.address
            slot.route = tuple(
                Pick(config.name, address, timeout, slot.done, self.retriers[i], 0.0, self.limits)
                for i, (timeout, _r) in enumerate(routes)
            )
            self._by_address[address] = slot

    # -- the hot path ---------------------------------------------------------------

    def pick(self, path: str, headers: Sequence[Header], peer_ip: str) -> Pick:
        """The first attempt of a call, or NoRoute saying why the mesh answers itself."""
        now = self._now()
        delay = 0.0
        limits = self.rate_limits
        if limits is not None:
            delay, rule = limits.check(path, headers, peer_ip, now)
            if delay < 0:
                self.rate_limited += 1
                assert rule is not None
                raise NoRoute(rule.describe(-delay), _RESOURCE_EXHAUSTED, 429, -delay)
        if self.in_flight >= self.config.breaker.max_requests:
            self.overflows["max_requests"] += 1
            raise NoRoute(
                f"circuit breaker for '{self.name}': max_requests "
                f"({self.config.breaker.max_requests}) calls already in flight"
            )
        if not self.breaker.allow(now):
            self.breaker_rejections += 1
            raise NoRoute(self.breaker.why(now))
        self.budget.deposit(now)
        route = self.methods.route_of(path) if self.methods else 0
        source = self._hash_key
        hash_key = source(headers, peer_ip) if source is not None else None
        pick = self._acquire(route, hash_key, None)
        if delay > 0:
            pick = dataclasses.replace(pick, delay=delay)
        return pick

    def _acquire(self, route: int, hash_key: bytes | None, avoid: EndpointSlot | None) -> Pick:
        """An endpoint for a call the breaker already admitted (its permit goes back if none)."""
        slot = self.balancer.acquire(hash_key, avoid)
        if slot is None:
            self.breaker.cancel()
            raise NoRoute(f"no endpoints for service '{self.name}': {self.why_no_endpoint()}")
        self.in_flight += 1
        picks: tuple[Pick, ...] = slot.route
        return picks[route]

    def repick(self, route: int, previous: Pick) -> Pick:
        """A retry's endpoint: through the breaker again, avoiding the last endpoint.

        `route` is the index the call's Retries had when it started; a push since
        may have removed that method (fewer routes now): the default route then
        serves, as only the endpoint of the new Pick matters to a retry.
        """
        if route >= len(self.retriers):
            route = 0
        now = self._now()
        if not self.breaker.allow(now):
            self.breaker_rejections += 1
            raise NoRoute(self.breaker.why(now))
        return self._acquire(route, None, self._by_address.get(previous.address))

    def take_retry(self, pushback: float, attempts: int, rule: RetryRule) -> float | str:
        """Charge one retry to the concurrency limit and the budget; the delay, or why not."""
        limit = self.config.breaker.max_retries
        if self.retries_in_flight >= limit:
            self.overflows["max_retries"] += 1
            return f"circuit breaker for '{self.name}': max_retries ({limit}) retries in flight"
        now = self._now()
        if not self.budget.withdraw(now):
            self.budget_exhausted += 1
            return f"retry budget for '{self.name}' exhausted ({self.budget.describe(now)})"
        self.retries_in_flight += 1
        return pushback if pushback >= 0 else rule.backoff(attempts, self.rng)

    def _observe(self, slot: EndpointSlot, ok: bool, now: float, elapsed: float) -> None:
        """Every attempt's end: free its request slot, teach the breaker and the detector."""
        self.in_flight -= 1
        self.breaker.record(ok, now)
        if self.outlier.record(slot.key, ok, now):
            self._apply_ejections()

    # -- time passing and reasons -----------------------------------------------------

    def tick(self) -> None:
        """Periodic work (about once a second): ejection expiry, success-rate sweep, logs."""
        if self.outlier.tick(self._now()):
            self._apply_ejections()
        for old, new, why in self.breaker.drain_events():
            event = log.warning if new == "open" else log.info
            event("circuit_breaker", service=self.name, state=new, previous=old, reason=why)

    def _apply_ejections(self) -> None:
        """Take ejected endpoints out of rotation, unless that leaves none to call.

        Ejection moves traffic, it cannot create capacity: when every healthy
        endpoint is ejected (the others failing health checks), ejections are
        ignored until one healthy endpoint is not ejected (Envoy's panic mode).
        """
        ejected: frozenset[SlotKey] = frozenset(self.outlier.ejected())  # type: ignore[arg-type]
        ignored = bool(ejected) and all(
            s.key in ejected
            for s in self.balancer.slots
            if s.endpoint.healthy and s.endpoint.weight > 0
        )
        if ignored and not self.ejections_ignored:
            log.warning(
                "outlier_ejections_ignored",
                service=self.name,
                reason="every healthy endpoint is ejected; calling them all until one returns",
            )
        self.ejections_ignored = ignored
        self.balancer.set_excluded(frozenset() if ignored else ejected)
        for kind, key, why in self.outlier.drain_events():
            event = log.warning if kind == "ejected" else log.info
            instance, host, port = cast(SlotKey, key)
            event(
                f"endpoint_{kind}",
                service=self.name,
                instance=instance,
                address=f"{host}:{port}",
                reason=why,
            )

    def why_no_endpoint(self) -> str:
        balancer = self.balancer
        total = len(balancer)
        if total == 0:
            return "none discovered (no instance is registered)"
        slots = balancer.slots
        unhealthy = [s for s in slots if not s.endpoint.healthy]
        if len(unhealthy) == total:
            first = unhealthy[0].endpoint
            detail = f": {first.instance}: {first.health_reason}" if first.health_reason else ""
            return f"none healthy ({total} registered, all failing health checks{detail})"
        ejected = self.outlier.ejected()
        candidates = [s for s in slots if s.endpoint.healthy and s.endpoint.weight > 0]
        if candidates and all(s.key in ejected for s in candidates):
            why = self.outlier.why(candidates[0].key, self._now())
            return (
                f"all {len(candidates)} healthy endpoints ejected by outlier detection "
                f"({candidates[0].endpoint.instance}: {why})"
            )
        if not candidates:
            if unhealthy:
                return (
                    f"none healthy with a weight above 0 ({total} registered: "
                    f"{len(unhealthy)} failing health checks, "
                    f"{total - len(unhealthy)} with weight 0)"
                )
            return f"none with a weight above 0 ({total} registered)"
        return "none available"

    def dump(self) -> dict[str, Any]:
        now = self._now()
        config = self.config
        ejected = self.outlier.ejected()
        endpoints = []
        for slot in self.balancer.slots:
            entry = slot.dump()
            entry["health_reason"] = slot.endpoint.health_reason
            entry["ejected"] = slot.key in ejected
            if slot.key in ejected:
                entry["ejection"] = self.outlier.why(slot.key)
            endpoints.append(entry)
        balancer = self.balancer.dump()
        balancer.pop("endpoints", None)
        return {
            "protocol": config.protocol.value,
            "timeout": config.timeout,
            "healthy_endpoints": self.balancer.healthy_count,
            "available_endpoints": self.balancer.available_count,
            "balancer": balancer,
            "algorithm": config.load_balancer.algorithm.value,
            "endpoints": endpoints,
            "circuit_breaker": {
                **self.breaker.dump(now),
                "rejected": self.breaker_rejections,
                "in_flight": self.in_flight,
                "retries_in_flight": self.retries_in_flight,
                "overflows": dict(self.overflows),
                "connections": self.limits.connections,
                "pending": self.limits.pending,
                "pool_overflows": self.limits.overflows,
            },
            "retry": dataclasses.asdict(config.retry),
            "retry_budget": {**self.budget.dump(now), "exhausted": self.budget_exhausted},
            "outlier_detection": {
                **self.outlier.dump(now),
                "ejections_ignored": self.ejections_ignored,
            },
            "rate_limits": self.rate_limits.dump(now) if self.rate_limits is not None else [],
            "methods": [dataclasses.asdict(m) for m in config.methods],
        }


def _limits(
    current: RateLimits | None, configs: Sequence[RateLimitConfig], now: float
) -> RateLimits | None:
    """New rate limits keeping the state of unchanged rules; None when there are none."""
    if not configs:
        return None
    if current is None:
        return RateLimits(configs, now)
    return current.update(configs, now)


class LocalPolicy:
    """The inbound side's policy for the sidecar's own service: rate limits and timeouts."""

    __slots__ = ("_now", "config", "methods", "rate_limited", "rate_limits")

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self.rate_limits: RateLimits | None = None
        self.methods = MethodTable(())
        self.config: tuple[tuple[RateLimitConfig, ...], tuple[MethodConfig, ...]] = ((), ())
        self.rate_limited = 0

    def reconfigure(
        self, rate_limits: Sequence[RateLimitConfig], methods: Sequence[MethodConfig]
    ) -> None:
        config = (tuple(rate_limits), tuple(methods))
        if config == self.config:
            return
        self.config = config
        self.rate_limits = _limits(self.rate_limits, rate_limits, self._now())
        self.methods = MethodTable(methods)

    def admit(self, path: str, headers: Sequence[Header], peer_ip: str) -> float:
        """Delay before the call may start (0.0 now); raises NoRoute when rate-limited."""
        limits = self.rate_limits
        if limits is None:
            return 0.0
        delay, rule = limits.check(path, headers, peer_ip, self._now())
        if delay < 0:
            self.rate_limited += 1
            assert rule is not None
            raise NoRoute(rule.describe(-delay), _RESOURCE_EXHAUSTED, 429, -delay)
        return delay

    def dump(self) -> dict[str, Any]:
        limits = self.rate_limits
        return {
            "rate_limits": limits.dump(self._now()) if limits is not None else [],
            "rate_limited": self.rate_limited,
            "methods": [dataclasses.asdict(m) for m in self.config[1]],
        }
