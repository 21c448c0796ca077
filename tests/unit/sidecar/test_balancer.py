"""Balancer properties: even round robin, P2C never takes the busier draw, no empty picks."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from sidecar.policy.balancer import (
    LeastRequestBalancer,
    RoundRobinBalancer,
    make_balancer,
)
from skein.config.model import Algorithm, EndpointConfig


def endpoints(n: int, healthy: bool = True) -> list[EndpointConfig]:
    return [EndpointConfig(f"i{k}", "127.0.0.1", 9000 + k, healthy=healthy) for k in range(n)]


@given(n=st.integers(1, 12), rounds=st.integers(1, 5), seed=st.integers(0, 2**32))
def test_round_robin_visits_every_endpoint_evenly(n: int, rounds: int, seed: int) -> None:
    balancer = RoundRobinBalancer(endpoints(n), rng=random.Random(seed))
    counts: dict[str, int] = {}
    for _ in range(n * rounds):
        picked = balancer.pick()
        assert picked is not None
        counts[picked.instance] = counts.get(picked.instance, 0) + 1
    assert counts == {f"i{k}": rounds for k in range(n)}


@given(
    loads=st.lists(st.integers(0, 20), min_size=2, max_size=10),
    seed=st.integers(0, 2**32),
)
def test_p2c_never_picks_the_more_loaded_of_its_two_choices(loads: list[int], seed: int) -> None:
    balancer = LeastRequestBalancer(endpoints(len(loads)), rng=random.Random(seed))
    slots = balancer.slots
    for slot, load in zip(slots, loads, strict=True):
        slot.in_flight = load
    twin = LeastRequestBalancer(endpoints(len(loads)), rng=random.Random(seed))
    for _ in range(20):
        i, j = twin.draw()
        assert i != j
        before = [s.in_flight for s in slots]
        picked = balancer.acquire()
        assert picked is not None
        chosen = slots.index(picked)
        assert chosen in (i, j)
        other = j if chosen == i else i
        assert before[chosen] <= before[other]


@given(n=st.integers(0, 5), algorithm=st.sampled_from(list(Algorithm)))
def test_no_pick_without_a_healthy_endpoint(n: int, algorithm: Algorithm) -> None:
    balancer = make_balancer(algorithm, endpoints(n, healthy=False), random.Random(1))
    assert balancer.pick() is None
    assert balancer.acquire() is None
    assert len(balancer) == n


def test_unhealthy_endpoints_are_skipped() -> None:
    eps = [*endpoints(2), EndpointConfig("sick", "127.0.0.1", 1, healthy=False)]
    balancer = RoundRobinBalancer(eps, rng=random.Random(3))
    picks = {balancer.pick().instance for _ in range(10)}  # type: ignore[union-attr]
    assert picks == {"i0", "i1"}


def test_rebuild_keeps_in_flight_for_endpoints_that_stay() -> None:
    old = LeastRequestBalancer(endpoints(3), rng=random.Random(5))
    for _ in range(9):
        assert old.acquire() is not None
    kept = {s.endpoint.instance: s.in_flight for s in old.slots}
    new_eps = [*endpoints(3)[1:], EndpointConfig("fresh", "127.0.0.1", 7000)]
    new = make_balancer(Algorithm.ROUND_ROBIN, new_eps, random.Random(5), previous=old)
    by_name = {s.endpoint.instance: s.in_flight for s in new.slots}
    assert by_name == {"i1": kept["i1"], "i2": kept["i2"], "fresh": 0}
    # releasing through the new balancer decrements the carried-over count
    ep = endpoints(3)[1]
    new.release(ep, ok=False)
    assert {s.endpoint.instance: s.in_flight for s in new.slots}["i1"] == kept["i1"] - 1


def test_p2c_prefers_idle_endpoint_under_load() -> None:
    balancer = LeastRequestBalancer(endpoints(2), rng=random.Random(0))
    busy = balancer.slots[0]
    busy.in_flight = 100
    for _ in range(50):
        slot = balancer.acquire()
        assert slot is balancer.slots[1]
        slot.done(True)


def test_release_of_removed_endpoint_is_ignored() -> None:
    balancer = RoundRobinBalancer(endpoints(1), rng=random.Random(0))
    gone = EndpointConfig("gone", "127.0.0.1", 1)
    balancer.release(gone, ok=True)
    assert balancer.dump()["endpoints"][0]["in_flight"] == 0
