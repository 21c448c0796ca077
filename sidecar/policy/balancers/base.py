"""What every balancer shares: the endpoint set, health, exclusion, and the pick contract.

Invariants:
- `slots` holds each endpoint once, in the order given, keyed by (instance,
  host, port); an update keeps the slot (counters, latency estimate, `route`,
  `observer`) of every key that stays, taking them from `previous` if given.
- candidates are the healthy endpoints with weight > 0 that are not excluded
  (`_available`, in `slots` order). `acquire` returns None exactly when there
  is none, never raises, and counts the attempt on the slot it returns.
- `avoid` is honoured whenever another candidate exists.
- whatever an algorithm derives from the set (cursor, cycle, ring, table) is
  rebuilt in `_reshape` (membership or weights changed) and `_rebuilt` (any
  change, health and exclusion included): never on the pick path.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any, ClassVar

from sidecar.policy.balancers.slot import EndpointSlot, SlotKey, slot_key
from skein.config.model import Algorithm, EndpointConfig, LoadBalancerConfig

__all__ = ["Balancer"]


class Balancer:
    """Base of every algorithm; subclasses implement `acquire` and may hook the rebuilds."""

    __slots__ = ("_available", "_by_key", "_excluded", "_healthy", "_random", "_rng", "config")

    algorithm: ClassVar[Algorithm]

    def __init__(
        self,
        config: LoadBalancerConfig,
        endpoints: Iterable[EndpointConfig] = (),
        rng: random.Random | None = None,
        previous: Balancer | None = None,
    ) -> None:
        self.config = config
        self._rng = rng if rng is not None else random.Random()
        self._random = self._rng.random
        self._by_key: dict[SlotKey, EndpointSlot] = {}
        self._healthy: list[EndpointSlot] = []
        self._available: list[EndpointSlot] = []
        self._excluded: frozenset[SlotKey] = frozenset()
        self.update(endpoints, previous)

    # -- set changes (rare: config pushes, health and outlier events) ------
    def update(self, endpoints: Iterable[EndpointConfig], previous: Balancer | None = None) -> None:
        """Replace the endpoint set, keeping the slots of the keys that stay.

        With `previous` (the balancer this one replaces, of any algorithm),
        slots and the excluded set are taken from it.
        """
        old = self._by_key if previous is None else previous._by_key
        if previous is not None:
            self._excluded = previous._excluded
        decay = self._latency_decay()
        by_key: dict[SlotKey, EndpointSlot] = {}
        for endpoint in endpoints:
            key = slot_key(endpoint)
            if key in by_key:
                continue  # a duplicate would skew the shares
            slot = old.get(key)
            if slot is None:
                slot = EndpointSlot(endpoint)
            else:
                slot.endpoint = endpoint
            slot.decay = decay
            by_key[key] = slot
        self._by_key = by_key
        self._reshape(previous)
        self._refresh()

    def set_excluded(self, keys: frozenset[SlotKey]) -> None:
        """Take `keys` (outlier-ejected endpoints) out of rotation; the rest come back."""
        if keys == self._excluded:
            return
        self._excluded = keys
        self._refresh()

    def _refresh(self) -> None:
        excluded = self._excluded
        healthy = [s for s in self._by_key.values() if s.endpoint.healthy and s.endpoint.weight > 0]
        self._healthy = healthy
        self._available = [s for s in healthy if s.key not in excluded] if excluded else healthy
        self._rebuilt()

    def _latency_decay(self) -> float:
        """Seconds over which slots' latency estimates fade; 0: slots keep none."""
        return 0.0

    def _reshape(self, previous: Balancer | None) -> None:
        """Hook: the set or the weights may have changed (health and exclusion aside)."""

    def _rebuilt(self) -> None:
        """Hook: `_available` changed; reset cursors and derived state."""

    # -- queries ----------------------------------------------------------
    @property
    def slots(self) -> list[EndpointSlot]:
        return list(self._by_key.values())

    @property
    def healthy_count(self) -> int:
        """Healthy endpoints with weight > 0, excluded or not."""
        return len(self._healthy)

    @property
    def available_count(self) -> int:
        """Candidates: healthy, weight > 0, not excluded."""
        return len(self._available)

    @property
    def excluded(self) -> frozenset[SlotKey]:
        return self._excluded

    def __len__(self) -> int:
        return len(self._by_key)

    def slot(self, key: SlotKey) -> EndpointSlot | None:
        return self._by_key.get(key)

    # -- picking ------------------------------------------------------------
    def acquire(
        self, hash_key: bytes | None = None, avoid: EndpointSlot | None = None
    ) -> EndpointSlot | None:
        """Choose a candidate and count the attempt on it (in_flight, requests).

        None only when no candidate exists. `avoid` (the previous attempt's
        slot) is not chosen when another candidate exists. `hash_key` matters
        only to the hashing algorithms.
        """
        raise NotImplementedError

    def _any(self, avoid: EndpointSlot | None) -> EndpointSlot:
        """A uniformly random candidate other than `avoid` when possible (needs one)."""
        available = self._available
        n = len(available)
        i = int(self._random() * n)
        slot = available[i]
        if slot is avoid and n > 1:
            j = int(self._random() * (n - 1))
            slot = available[j if j < i else j + 1]
        return slot

    def _after(self, avoid: EndpointSlot) -> EndpointSlot:
        """The candidate after `avoid` in list order (avoid must be a candidate)."""
        available = self._available
        i = available.index(avoid) + 1
        return available[i if i < len(available) else 0]

    # -- introspection ------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        excluded = self._excluded
        out: dict[str, Any] = {
            "algorithm": self.algorithm.value,
            "healthy": len(self._healthy),
            "available": len(self._available),
            "endpoints": [
                {**slot.dump(), "excluded": slot.key in excluded} for slot in self._by_key.values()
            ],
        }
        out.update(self._dump_state())
        return out

    def _dump_state(self) -> dict[str, Any]:
        return {}
