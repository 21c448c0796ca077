"""The contract every balancer keeps: candidates, avoid, exclusion, updates, accounting."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.policy.balancer import (
    Balancer,
    EndpointSlot,
    LeastRequestBalancer,
    RoundRobinBalancer,
    make_balancer,
)
from skein.config.model import Algorithm, EndpointConfig, LoadBalancerConfig

from .balancer_support import ALL, build, config, endpoint, endpoints, release


@pytest.mark.parametrize("algorithm", ALL)
def test_make_balancer_builds_the_named_algorithm(algorithm: Algorithm) -> None:
    balancer = make_balancer(config(algorithm), endpoints(3))
    assert balancer.algorithm is algorithm
    assert balancer.dump()["algorithm"] == algorithm.value


@pytest.mark.parametrize("algorithm", ALL)
def test_no_pick_without_a_candidate(algorithm: Algorithm) -> None:
    cases: list[list[EndpointConfig]] = [
        [],
        endpoints(3, healthy=False),
        endpoints(3, weights=[0, 0, 0]),
        [endpoint(0, healthy=False), endpoint(1, weight=0)],
    ]
    for eps in cases:
        balancer = build(algorithm, eps)
        assert balancer.acquire() is None
        assert balancer.acquire(b"key") is None
        assert len(balancer) == len(eps)
        assert balancer.available_count == 0
    everyone_out = build(algorithm, endpoints(3))
    everyone_out.set_excluded(frozenset(s.key for s in everyone_out.slots))
    assert everyone_out.acquire(b"key") is None
    assert everyone_out.healthy_count == 3
    assert everyone_out.available_count == 0


@pytest.mark.parametrize("algorithm", ALL)
def test_weight_zero_and_unhealthy_endpoints_are_never_picked(algorithm: Algorithm) -> None:
    eps = [endpoint(0), endpoint(1, weight=0), endpoint(2, healthy=False), endpoint(3, weight=2)]
    balancer = build(algorithm, eps, seed=4)
    assert (balancer.healthy_count, balancer.available_count, len(balancer)) == (2, 2, 4)
    seen = {release(balancer.acquire(f"k{n}".encode())) for n in range(300)}
    seen |= {release(balancer.acquire()) for n in range(300)}
    assert seen == {"i0", "i3"}


@pytest.mark.parametrize("algorithm", ALL)
def test_excluded_endpoints_leave_rotation_and_come_back(algorithm: Algorithm) -> None:
    balancer = build(algorithm, endpoints(4), seed=2)
    ejected = frozenset({("i1", "10.0.0.1", 9001)})
    balancer.set_excluded(ejected)
    assert (balancer.healthy_count, balancer.available_count) == (4, 3)
    picks = {release(balancer.acquire(f"k{n}".encode())) for n in range(400)}
    picks |= {release(balancer.acquire()) for n in range(400)}
    assert picks == {"i0", "i2", "i3"}
    balancer.set_excluded(frozenset())
    picks = {release(balancer.acquire(f"k{n}".encode())) for n in range(400)}
    assert "i1" in picks
    assert balancer.dump()["endpoints"][1]["excluded"] is False


@pytest.mark.parametrize("algorithm", ALL)
def test_avoid_is_honoured_whenever_another_candidate_exists(algorithm: Algorithm) -> None:
    balancer = build(algorithm, endpoints(3, weights=[5, 1, 1]), seed=7)
    for n in range(200):
        key = f"k{n}".encode() if n % 2 else None
        first = balancer.acquire(key)
        assert first is not None
        second = balancer.acquire(key, avoid=first)
        assert second is not None and second is not first
        release(first, ok=False)
        release(second)
    alone = build(algorithm, endpoints(1))
    only = alone.acquire(b"k")
    assert only is not None
    assert alone.acquire(b"k", avoid=only) is only  # nobody else to go to


@pytest.mark.parametrize("algorithm", ALL)
def test_update_keeps_the_slots_of_staying_endpoints(algorithm: Algorithm) -> None:
    old = LeastRequestBalancer(LoadBalancerConfig(Algorithm.LEAST_REQUEST), endpoints(3))
    for _ in range(9):
        assert old.acquire() is not None
    kept = {s.endpoint.instance: s for s in old.slots}
    marker = object()
    kept["i1"].route = marker
    new_eps = [*endpoints(3)[1:], EndpointConfig("fresh", "10.9.9.9", 7000)]
    new = build(algorithm, new_eps, previous=old)
    by_name = {s.endpoint.instance: s for s in new.slots}
    assert by_name["i1"] is kept["i1"] and by_name["i2"] is kept["i2"]
    assert by_name["i1"].route is marker
    assert {n: s.in_flight for n, s in by_name.items()} == {
        "i1": kept["i1"].in_flight,
        "i2": kept["i2"].in_flight,
        "fresh": 0,
    }
    before = by_name["i1"].in_flight
    by_name["i1"].done(False, 1.0, 0.01)  # releases through the carried-over slot
    assert by_name["i1"].in_flight == before - 1
    assert by_name["i1"].failures == 1
    # update in place, too
    new.update(endpoints(2))
    assert {s.endpoint.instance for s in new.slots} == {"i0", "i1"}
    assert new.slot(("i1", "10.0.0.1", 9001)) is kept["i1"]


@pytest.mark.parametrize("algorithm", ALL)
def test_exclusions_carry_over_to_a_rebuilt_balancer(algorithm: Algorithm) -> None:
    old = build(Algorithm.ROUND_ROBIN, endpoints(3))
    old.set_excluded(frozenset({("i0", "10.0.0.0", 9000)}))
    new = build(algorithm, endpoints(3), previous=old)
    assert new.excluded == old.excluded
    assert new.available_count == 2


@pytest.mark.parametrize("algorithm", ALL)
def test_updated_endpoint_config_replaces_the_old_one(algorithm: Algorithm) -> None:
    balancer = build(algorithm, endpoints(2))
    balancer.update([endpoint(0, healthy=False), endpoint(1)])
    assert {release(balancer.acquire(f"k{n}".encode())) for n in range(50)} == {"i1"}
    assert balancer.slots[0].endpoint.healthy is False


def test_duplicate_endpoints_count_once() -> None:
    balancer = build(Algorithm.ROUND_ROBIN, [endpoint(0), endpoint(0), endpoint(1)])
    assert len(balancer) == 2


def test_done_accounts_then_tells_the_observer() -> None:
    balancer = build(Algorithm.ROUND_ROBIN, endpoints(1))
    seen: list[tuple[int, int, bool, float, float]] = []

    def observer(slot: EndpointSlot, ok: bool, now: float, elapsed: float) -> None:
        seen.append((slot.in_flight, slot.failures, ok, now, elapsed))

    slot = balancer.acquire()
    assert slot is not None
    slot.observer = observer
    assert (slot.in_flight, slot.requests) == (1, 1)
    slot.done(False, 12.5, 0.25)
    assert seen == [(0, 1, False, 12.5, 0.25)]
    again = balancer.acquire()
    assert again is slot and slot.requests == 2
    slot.done(True, 13.0, 0.01)
    assert seen[-1] == (0, 1, True, 13.0, 0.01)


def test_dump_lists_every_endpoint_with_its_state() -> None:
    balancer = build(
        Algorithm.WEIGHTED_ROUND_ROBIN, [endpoint(0, weight=2), endpoint(1, healthy=False)]
    )
    slot = balancer.acquire()
    assert slot is not None
    dump = balancer.dump()
    assert dump["algorithm"] == "WEIGHTED_ROUND_ROBIN"
    assert (dump["healthy"], dump["available"]) == (1, 1)
    assert dump["endpoints"][0] == {
        "instance": "i0",
        "address": "10.0.0.0:9000",
        "weight": 2,
        "healthy": True,
        "in_flight": 1,
        "requests": 1,
        "failures": 0,
        "excluded": False,
    }
    assert dump["endpoints"][1]["healthy"] is False


@given(n=st.integers(1, 12), rounds=st.integers(1, 5), seed=st.integers(0, 2**32))
def test_round_robin_visits_every_candidate_evenly(n: int, rounds: int, seed: int) -> None:
    balancer = build(Algorithm.ROUND_ROBIN, endpoints(n), seed=seed)
    counts: dict[str, int] = {}
    for _ in range(n * rounds):
        name = release(balancer.acquire())
        counts[name] = counts.get(name, 0) + 1
    assert counts == {f"i{k}": rounds for k in range(n)}


def test_round_robin_avoid_takes_the_next_one_in_turn() -> None:
    balancer = RoundRobinBalancer(LoadBalancerConfig(), endpoints(3), random.Random(0))
    first = balancer.acquire()
    assert first is not None
    retry = balancer.acquire(avoid=first)
    third = balancer.acquire()
    assert len({id(first), id(retry), id(third)}) == 3


# -- the whole contract, under random operations --------------------------------------

operation = st.one_of(
    st.tuples(st.just("acquire"), st.one_of(st.none(), st.binary(max_size=6)), st.booleans()),
    st.tuples(st.just("done"), st.booleans(), st.floats(0, 5)),
    st.tuples(st.just("exclude"), st.frozensets(st.integers(0, 7), max_size=8)),
    st.tuples(
        st.just("update"),
        st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3), st.booleans()), max_size=8),
    ),
    st.tuples(st.just("rebuild"), st.sampled_from(ALL)),
)


@settings(max_examples=60, deadline=None)
@given(
    algorithm=st.sampled_from(ALL),
    ops=st.lists(operation, max_size=40),
    seed=st.integers(0, 2**16),
)
def test_acquire_never_raises_and_keeps_the_contract(
    algorithm: Algorithm, ops: list[tuple[object, ...]], seed: int
) -> None:
    rng = random.Random(seed)
    balancer: Balancer = build(algorithm, endpoints(4), seed=seed)
    held: list[EndpointSlot] = []
    now = 0.0
    for op in ops:
        kind = op[0]
        if kind == "acquire":
            _, key, retry = op
            avoid = held[-1] if retry and held else None
            candidates = [
                s
                for s in balancer.slots
                if s.endpoint.healthy and s.endpoint.weight > 0 and s.key not in balancer.excluded
            ]
            before = {id(s): (s.in_flight, s.requests) for s in balancer.slots}
            slot = balancer.acquire(key, avoid)  # type: ignore[arg-type]
            if not candidates:
                assert slot is None
                continue
            assert slot is not None and slot in candidates
            if avoid is not None and len(candidates) > 1:
                assert slot is not avoid
            in_flight, requests = before[id(slot)]
            assert (slot.in_flight, slot.requests) == (in_flight + 1, requests + 1)
            held.append(slot)
        elif kind == "done" and held:
            slot = held.pop(rng.randrange(len(held)))
            now += float(op[2])  # type: ignore[arg-type]
            in_flight = slot.in_flight
            slot.done(bool(op[1]), now, float(op[2]))  # type: ignore[arg-type]
            assert slot.in_flight == in_flight - 1
        elif kind == "exclude":
            keys = {endpoint(k).instance for k in op[1]}  # type: ignore[attr-defined]
            balancer.set_excluded(
                frozenset(s.key for s in balancer.slots if s.endpoint.instance in keys)
            )
        elif kind == "update":
            eps = [endpoint(k, weight, healthy) for k, weight, healthy in op[1]]  # type: ignore[attr-defined]
            balancer.update(eps)
        elif kind == "rebuild":
            balancer = build(op[1], [s.endpoint for s in balancer.slots], seed, previous=balancer)  # type: ignore[arg-type]
        assert balancer.available_count <= balancer.healthy_count <= len(balancer)
    # every attempt still held is counted on its slot
    for slot in set(held):
        assert slot.in_flight >= held.count(slot)
