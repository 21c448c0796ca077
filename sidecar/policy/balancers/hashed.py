"""What the two hashing balancers (RING_HASH, MAGLEV) share.

Both map a key's hash to a position in an array of owners (ordinals into
`_members`). Members are the endpoints with weight > 0, healthy or not,
sorted by key, so the array depends only on the endpoints' names and weights
and every sidecar builds the same one.

Invariants:
- the owner array is rebuilt only when the (key, weight) set changes; health
  and exclusion only flip `_usable`, so they never move another endpoint's
  keys. A balancer built with a `previous` of the same class and the same set
  adopts its arrays instead of rebuilding.
- a position whose owner is not a candidate (or is `avoid` while another
  candidate exists) walks on to the next position whose owner is: its keys
  spread over the others in proportion to their share of positions, and come
  back when it does.
- no key (None): a uniformly random candidate.
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable
from operator import attrgetter

from sidecar.policy.balancers.base import Balancer
from sidecar.policy.balancers.slot import EndpointSlot

__all__ = ["HashedBalancer"]

_by_key = attrgetter("key")


class HashedBalancer(Balancer):
    __slots__ = ("_members", "_owners", "_signature", "_usable")

    _members: list[EndpointSlot]  # ordinal -> slot
    _owners: array[int]  # position -> ordinal
    _usable: bytearray  # ordinal -> is a candidate
    _signature: tuple[Hashable, tuple[tuple[object, int], ...]]

    def _reshape(self, previous: Balancer | None) -> None:
        members = sorted((s for s in self._by_key.values() if s.endpoint.weight > 0), key=_by_key)
        signature = (self._shape(), tuple((s.key, s.endpoint.weight) for s in members))
        self._members = members
        donor = previous if previous is not None and type(previous) is type(self) else self
        if getattr(donor, "_signature", None) == signature:
            assert isinstance(donor, HashedBalancer)
            self._adopt(donor)
        else:
            self._build(members)
        self._signature = signature

    def _rebuilt(self) -> None:
        excluded = self._excluded
        self._usable = bytearray(
            s.endpoint.healthy and s.key not in excluded for s in self._members
        )

    def _shape(self) -> Hashable:
        """The config the arrays depend on besides the members."""
        raise NotImplementedError

    def _build(self, members: list[EndpointSlot]) -> None:
        raise NotImplementedError

    def _adopt(self, donor: HashedBalancer) -> None:
        self._owners = donor._owners

    def _walk(self, i: int, avoid: EndpointSlot | None, candidates: int) -> EndpointSlot:
        """The first usable owner after position `i` that is not `avoid` (if others exist)."""
        owners: array[int] = self._owners
        usable = self._usable
        members = self._members
        size = len(owners)
        for _ in range(size):
            i += 1
            if i == size:
                i = 0
            o = owners[i]
            if usable[o]:
                slot = members[o]
                if slot is not avoid or candidates == 1:
                    return slot
        return self._any(avoid)  # unreachable: every candidate owns a position
