"""LEAST_REQUEST: power of two choices over in-flight counts (Envoy, linkerd2-proxy p2c).

Two distinct candidates are drawn, each with probability in proportion to its
weight (uniformly when weights are equal), and the one with fewer requests in
flight wins, ties going to the first draw. Weights thus set how often an
endpoint is considered and load decides between the two: an idle cluster
splits by weight, a loaded one also steers away from the busy. (Dividing load
by weight instead would send every call to the heaviest endpoint whenever the
cluster is idle.)

Invariants:
- the two draws are distinct whenever there are two candidates; `avoid`
  takes the other of the pair.
- no allocation per pick: draws are ints from `random()`, weighted ones a
  bisect over cumulative weights built at rebuild time.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

from sidecar.policy.balancers.base import Balancer
from sidecar.policy.balancers.slot import EndpointSlot
from skein.config.model import Algorithm

__all__ = ["LeastRequestBalancer", "PowerOfTwoBalancer"]


class PowerOfTwoBalancer(Balancer):
    """Weighted draws of two distinct candidates; subclasses decide between them."""

    __slots__ = ("_cumulative", "_total")

    def _rebuilt(self) -> None:
        weights = [s.endpoint.weight for s in self._available]
        uniform = not weights or min(weights) == max(weights)
        self._cumulative: list[int] = [] if uniform else list(accumulate(weights))
        self._total = self._cumulative[-1] if self._cumulative else 0

    def draw(self) -> tuple[int, int]:
        """Two distinct indices into the candidates (needs at least two)."""
        if self._cumulative:
            first = self._draw_weighted()
            return first, self._draw_other_weighted(first)
        n = len(self._available)
        first = int(self._random() * n)
        second = int(self._random() * (n - 1))
        return first, second + 1 if second >= first else second

    def _draw_weighted(self) -> int:
        cumulative = self._cumulative
        i = bisect_right(cumulative, self._random() * self._total)
        return i if i < len(cumulative) else len(cumulative) - 1

    def _draw_other_weighted(self, first: int) -> int:
        """A weighted draw among the candidates other than `first`."""
        cumulative = self._cumulative
        end = cumulative[first]
        weight = end - (cumulative[first - 1] if first else 0)
        x = self._random() * (self._total - weight)
        if x >= end - weight:
            x += weight  # skip over first's interval
        j = bisect_right(cumulative, x)
        if j == first or j >= len(cumulative):  # float edge: only at the very end
            j = len(cumulative) - 1 if first != len(cumulative) - 1 else first - 1
        return j

    def acquire(
        self, hash_key: bytes | None = None, avoid: EndpointSlot | None = None
    ) -> EndpointSlot | None:
        """Draw two candidates (inlined `draw`: this is the hot path), skip `avoid`,
        and let the subclass prefer one."""
        available = self._available
        n = len(available)
        if n < 2:
            if n == 0:
                return None
            slot = available[0]
        else:
            if self._cumulative:
                i = self._draw_weighted()
                j = self._draw_other_weighted(i)
            else:
                r = self._random
                i = int(r() * n)
                j = int(r() * (n - 1))
                if j >= i:
                    j += 1
            a = available[i]
            b = available[j]
            if a is avoid:
                slot = b
            elif b is avoid:
                slot = a
            else:
                slot = self._prefer(a, b)
        slot.in_flight += 1
        slot.requests += 1
        return slot

    def _prefer(self, a: EndpointSlot, b: EndpointSlot) -> EndpointSlot:
        """Which of two distinct drawn candidates takes the call."""
        raise NotImplementedError


class LeastRequestBalancer(PowerOfTwoBalancer):
    __slots__ = ()

    algorithm = Algorithm.LEAST_REQUEST

    def _prefer(self, a: EndpointSlot, b: EndpointSlot) -> EndpointSlot:
        """Fewer requests in flight; ties go to the first draw."""
        return b if b.in_flight < a.in_flight else a
