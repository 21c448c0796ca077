"""ROUND_ROBIN: candidates in turn, weights ignored beyond 0 (WEIGHTED_ROUND_ROBIN honours them).

Invariants:
- over any n consecutive picks with no set change and no `avoid`, each of the
  n candidates is chosen once.
- every rebuild restarts at a random offset, so sidecars that received the
  same update do not all hit the same endpoint first.
"""

from __future__ import annotations

from sidecar.policy.balancers.base import Balancer
from sidecar.policy.balancers.slot import EndpointSlot
from skein.config.model import Algorithm

__all__ = ["RoundRobinBalancer"]


class RoundRobinBalancer(Balancer):
    __slots__ = ("_next",)

    algorithm = Algorithm.ROUND_ROBIN

    def _rebuilt(self) -> None:
        self._next = int(self._random() * len(self._available))

    def acquire(
        self, hash_key: bytes | None = None, avoid: EndpointSlot | None = None
    ) -> EndpointSlot | None:
        available = self._available
        n = len(available)
        if n == 0:
            return None
        i = self._next
        if i >= n:
            i = 0
        slot = available[i]
        i += 1
        if slot is avoid and n > 1:
            if i >= n:
                i = 0
            slot = available[i]
            i += 1
        self._next = i
        slot.in_flight += 1
        slot.requests += 1
        return slot
