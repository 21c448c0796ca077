"""MAGLEV: Google's Maglev lookup table (NSDI 2016): a key sticks to an endpoint, O(1) pick.

Each member owns a permutation of a prime-sized table (offset + j x skip,
from two hashes of its name); members take turns claiming their next free
entry until the table is full, so each ends with a near-equal share of
entries. Weights: turns come in earliest-deadline order, the k-th turn of a
member due at k / weight, so entries follow weights (equal weights: plain
turns in member order). A key's CRC-32 modulo the size picks the entry.

Disruption: a membership or weight change refills the table; Maglev keeps
most entries with their owners (the paper measures a few percent beyond the
minimum), which is the price of an O(1) pick and the even spread a ring needs
many points for. Health and outlier exclusion do not refill it: an entry whose
owner is out walks on to the next entry, so nobody else's keys move and an
ejected endpoint's keys come back with it. (Refilling over the candidates, as
the paper does for backend changes, would move a few percent of everyone's
keys on each ejection and again on its return, and cost a full refill of
65537 entries, tens of milliseconds in Python, on the event loop each time.)
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Hashable, Iterator
from typing import Any

from sidecar.policy.balancers.hashed import HashedBalancer
from sidecar.policy.balancers.slot import EndpointSlot
from sidecar.policy.hashing import endpoint_name, key_hash, maglev_preferences
from skein.config.model import Algorithm

__all__ = ["TABLE_SIZE", "MaglevBalancer", "maglev_table"]

TABLE_SIZE = 65537  # prime; Envoy's default; keep it far above 100 x members


def maglev_table(names: list[bytes], weights: list[int], size: int = TABLE_SIZE) -> list[int]:
    """The filled table: entry -> index into `names` (all weights > 0, size prime)."""
    n = len(names)
    if n == 0:
        return []
    table = [-1] * size
    position: list[int] = []
    skips: list[int] = []
    for name in names:
        offset, skip = maglev_preferences(name, size)
        position.append(offset)
        skips.append(skip)
    for filled, o in enumerate(_turns(weights), 1):
        c = position[o]
        skip = skips[o]
        while table[c] >= 0:
            c += skip
            if c >= size:
                c -= size
        table[c] = o
        c += skip
        position[o] = c - size if c >= size else c
        if filled == size:
            break
    return table


def _turns(weights: list[int]) -> Iterator[int]:
    """Members in claiming order: the k-th turn of member o is due at k / weights[o]."""
    n = len(weights)
    if min(weights) == max(weights):
        while True:
            yield from range(n)
    due = [(0.0, o, 0) for o in range(n)]  # (due, member, turns taken)
    while True:
        _, o, k = due[0]
        yield o
        k += 1
        heapq.heapreplace(due, (k / weights[o], o, k))


class MaglevBalancer(HashedBalancer):
    __slots__ = ()

    algorithm = Algorithm.MAGLEV

    def _shape(self) -> Hashable:
        return TABLE_SIZE

    def _build(self, members: list[EndpointSlot]) -> None:
        names = [endpoint_name(s.key) for s in members]
        weights = [s.endpoint.weight for s in members]
        self._owners = array("I", maglev_table(names, weights))

    def acquire(
        self, hash_key: bytes | None = None, avoid: EndpointSlot | None = None
    ) -> EndpointSlot | None:
        n = len(self._available)
        if n == 0:
            return None
        if hash_key is None:
            slot = self._any(avoid)
        else:
            i = key_hash(hash_key) % TABLE_SIZE
            o = self._owners[i]
            slot = self._members[o]
            if not self._usable[o] or (slot is avoid and n > 1):
                slot = self._walk(i, avoid, n)
        slot.in_flight += 1
        slot.requests += 1
        return slot

    def _dump_state(self) -> dict[str, Any]:
        return {"table_size": len(self._owners)}
