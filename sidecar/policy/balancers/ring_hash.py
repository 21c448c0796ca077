"""RING_HASH: a consistent hash ring (ketama-style): a key sticks to an endpoint.

Each member gets weight x per_unit points on a 32-bit ring (see hashing.py),
per_unit = ring_size, lowered only when the ring would pass
max(ring_size, RING_CAP) points; a key's CRC-32 takes the first point at or
after it (wrapping round).

Why ring_size points per unit of weight rather than ring_size in all (Envoy):
below the cap an endpoint's points depend only on its own name and weight, so
adding or removing one moves exactly the keys it gains or loses. Scaling a
fixed total over the set also moves keys between the endpoints that stay, on
every change (about as many again as the change itself). The ring is still
never smaller than ring_size, and the cap bounds memory (12 bytes a point) and
build time (about 0.3 s per million points) for large sets.

Invariants: those of HashedBalancer; the ring is sorted by position, ties in
member order.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Hashable
from typing import Any

from sidecar.policy.balancers.hashed import HashedBalancer
from sidecar.policy.balancers.slot import EndpointSlot
from sidecar.policy.hashing import endpoint_name, key_hash, ring_points
from skein.config.model import Algorithm

__all__ = ["RING_CAP", "RingHashBalancer"]

RING_CAP = 1 << 16  # points, unless ring_size asks for more
# A key's bisect runs only within its bucket of the 32-bit space: a few probes
# instead of about 14 (half the cost of a ring pick).
_BUCKET_SHIFT = 20
_BUCKETS = 1 << (32 - _BUCKET_SHIFT)
_DEFAULT_RING_SIZE = 1024


class RingHashBalancer(HashedBalancer):
    __slots__ = ("_per_unit", "_points", "_starts")

    _points: array[int]  # sorted ring positions
    _starts: array[int]  # bucket (top bits of a position) -> its first point's index
    _per_unit: int

    algorithm = Algorithm.RING_HASH

    def _shape(self) -> Hashable:
        return self._ring_size()

    def _ring_size(self) -> int:
        size = self.config.ring_size
        return size if size > 0 else _DEFAULT_RING_SIZE

    def _build(self, members: list[EndpointSlot]) -> None:
        ring_size = self._ring_size()
        total = sum(s.endpoint.weight for s in members)
        per_unit = max(1, min(ring_size, max(ring_size, RING_CAP) // max(total, 1)))
        packed: list[int] = []
        for ordinal, slot in enumerate(members):
            own = ring_points(endpoint_name(slot.key), slot.endpoint.weight * per_unit)
            packed.extend([point << 32 | ordinal for point in own])
        packed.sort()
        points = array("I", [p >> 32 for p in packed])
        self._points = points
        self._owners = array("I", [p & 0xFFFFFFFF for p in packed])
        self._starts = array(
            "I", [bisect_left(points, b << _BUCKET_SHIFT) for b in range(_BUCKETS + 1)]
        )
        self._per_unit = per_unit

    def _adopt(self, donor: HashedBalancer) -> None:
        assert isinstance(donor, RingHashBalancer)
        self._owners = donor._owners
        self._points = donor._points
        self._starts = donor._starts
        self._per_unit = donor._per_unit

    def acquire(
        self, hash_key: bytes | None = None, avoid: EndpointSlot | None = None
    ) -> EndpointSlot | None:
        n = len(self._available)
        if n == 0:
            return None
        if hash_key is None:
            slot = self._any(avoid)
        else:
            h = key_hash(hash_key)
            starts = self._starts
            bucket = h >> _BUCKET_SHIFT
            i = bisect_left(self._points, h, starts[bucket], starts[bucket + 1])
            if i == len(self._points):
                i = 0
            o = self._owners[i]
            slot = self._members[o]
            if not self._usable[o] or (slot is avoid and n > 1):
                slot = self._walk(i, avoid, n)
        slot.in_flight += 1
        slot.requests += 1
        return slot

    def owner(self, position: int) -> EndpointSlot:
        """The member whose point comes first at or after a 32-bit position (tests, dumps)."""
        i = bisect_left(self._points, position)
        return self._members[self._owners[i if i < len(self._points) else 0]]

    def _dump_state(self) -> dict[str, Any]:
        return {"ring_points": len(self._points), "points_per_weight": self._per_unit}
