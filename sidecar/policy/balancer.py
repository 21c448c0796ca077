"""Load balancers over one cluster's endpoints (sans-IO, injected randomness).

Invariants:
- `acquire()` returns None only when no healthy endpoint exists; never raises.
- every acquired slot is released exactly once (`slot.done(ok)`), which
  decrements its in-flight count; a slot dropped by an update keeps counting
  on its own and no longer influences picks.
- `update()` keeps the slot (and so its in-flight count) of every endpoint
  that stays, keyed by (instance, host, port).
- RoundRobin visits healthy endpoints in order; LeastRequest draws two
  distinct endpoints and takes the one with fewer in-flight requests (power
  of two choices, as Envoy's LEAST_REQUEST and linkerd2-proxy's p2c).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from skein.config.model import Algorithm, EndpointConfig

__all__ = [
    "Balancer",
    "EndpointSlot",
    "LeastRequestBalancer",
    "RoundRobinBalancer",
    "make_balancer",
]

SlotKey = tuple[str, str, int]


def _key(endpoint: EndpointConfig) -> SlotKey:
    return endpoint.instance, endpoint.host, endpoint.port


class EndpointSlot:
    """One endpoint's live state. `done` is bound once, so releasing allocates nothing.

    `route` is free for the owner of the balancer (the dispatcher stores its
    prebuilt answer there).
    """

    __slots__ = ("done", "endpoint", "failures", "in_flight", "requests", "route")

    def __init__(self, endpoint: EndpointConfig) -> None:
        self.endpoint = endpoint
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.route: Any = None
        self.done: Callable[[bool], None] = self._done

    def _done(self, ok: bool) -> None:
        self.in_flight -= 1
        if not ok:
            self.failures += 1

    def dump(self) -> dict[str, Any]:
        ep = self.endpoint
        return {
            "instance": ep.instance,
            "address": f"{ep.host}:{ep.port}",
            "weight": ep.weight,
            "healthy": ep.healthy,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
        }


class Balancer:
    """Common interface: `pick`/`release` by endpoint, `acquire` by slot (hot path)."""

    algorithm: Algorithm = Algorithm.ROUND_ROBIN

    def __init__(
        self,
        endpoints: Iterable[EndpointConfig] = (),
        rng: random.Random | None = None,
        previous: Balancer | None = None,
    ) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._slots: dict[SlotKey, EndpointSlot] = {}
        self._healthy: list[EndpointSlot] = []
        self.update(endpoints, previous=previous)

    # -- set changes -----------------------------------------------------
    def update(self, endpoints: Iterable[EndpointConfig], previous: Balancer | None = None) -> None:
        """Replace the endpoint set, keeping the slots of endpoints that stay."""
        old = dict(previous._slots if previous is not None else self._slots)
        slots: dict[SlotKey, EndpointSlot] = {}
        for endpoint in endpoints:
            key = _key(endpoint)
            if key in slots:
                continue  # duplicates would skew the distribution
            slot = old.get(key)
            if slot is None:
                slot = EndpointSlot(endpoint)
            else:
                slot.endpoint = endpoint
            slots[key] = slot
        self._slots = slots
        self._healthy = [s for s in slots.values() if s.endpoint.healthy]
        self._rebuilt()

    def _rebuilt(self) -> None:
        """Hook for subclasses to reset their cursor."""

    # -- queries ---------------------------------------------------------
    @property
    def slots(self) -> list[EndpointSlot]:
        return list(self._slots.values())

    @property
    def healthy_count(self) -> int:
        return len(self._healthy)

    def __len__(self) -> int:
        return len(self._slots)

    # -- picking ---------------------------------------------------------
    def _choose(self) -> EndpointSlot | None:
        raise NotImplementedError

    def acquire(self) -> EndpointSlot | None:
        """Pick a healthy endpoint and count the request as in flight."""
        slot = self._choose()
        if slot is not None:
            slot.in_flight += 1
            slot.requests += 1
        return slot

    def pick(self) -> EndpointConfig | None:
        slot = self.acquire()
        return slot.endpoint if slot is not None else None

    def release(self, endpoint: EndpointConfig, ok: bool) -> None:
        """End a request started by `pick`; unknown endpoints (removed since) are ignored."""
        slot = self._slots.get(_key(endpoint))
        if slot is not None:
            slot.done(ok)

    def dump(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm.value,
            "endpoints": [slot.dump() for slot in self._slots.values()],
        }


class RoundRobinBalancer(Balancer):
    """Healthy endpoints in turn; starts at a random offset so sidecars spread out."""

    algorithm = Algorithm.ROUND_ROBIN

    def _rebuilt(self) -> None:
        n = len(self._healthy)
        self._next = self._rng.randrange(n) if n else 0

    def _choose(self) -> EndpointSlot | None:
        healthy = self._healthy
        n = len(healthy)
        if n == 0:
            return None
        index = self._next
        if index >= n:
            index = 0
        self._next = index + 1
        return healthy[index]


class LeastRequestBalancer(Balancer):
    """Power of two choices over in-flight counts; ties go to the first draw."""

    algorithm = Algorithm.LEAST_REQUEST

    def draw(self) -> tuple[int, int]:
        """Two distinct indices into the healthy list (needs at least two)."""
        n = len(self._healthy)
        first = self._rng.randrange(n)
        second = self._rng.randrange(n - 1)
        if second >= first:
            second += 1
        return first, second

    def _choose(self) -> EndpointSlot | None:
        healthy = self._healthy
        n = len(healthy)
        if n < 2:
            return healthy[0] if n else None
        i, j = self.draw()
        a, b = healthy[i], healthy[j]
        return b if b.in_flight < a.in_flight else a


def make_balancer(
    algorithm: Algorithm,
    endpoints: Iterable[EndpointConfig],
    rng: random.Random | None = None,
    previous: Balancer | None = None,
) -> Balancer:
    """Build the balancer for `algorithm`, carrying over in-flight counts from `previous`."""
    cls: type[Balancer] = (
        LeastRequestBalancer if algorithm is Algorithm.LEAST_REQUEST else RoundRobinBalancer
    )
    return cls(endpoints, rng=rng, previous=previous)
