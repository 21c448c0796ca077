"""Power of two choices: least request, and peak EWMA driven by explicit loop time."""

from __future__ import annotations

import heapq
import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sidecar.policy.balancer import (
    Balancer,
    EndpointSlot,
    LeastRequestBalancer,
    PeakEwmaBalancer,
)
from sidecar.policy.balancers.slot import DEFAULT_RTT, FAILURE_PENALTY_CAP
from skein.config.model import Algorithm

from .balancer_support import build, endpoint, endpoints, release

LR = Algorithm.LEAST_REQUEST
EWMA = Algorithm.PEAK_EWMA


# -- least request --------------------------------------------------------------------


@given(
    loads=st.lists(st.integers(0, 20), min_size=2, max_size=10),
    weighted=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_p2c_never_picks_the_busier_of_its_two_draws(
    loads: list[int], weighted: bool, seed: int
) -> None:
    weights = [1 + k % 3 for k in range(len(loads))] if weighted else None
    balancer = build(LR, endpoints(len(loads), weights), seed=seed)
    twin = build(LR, endpoints(len(loads), weights), seed=seed)
    assert isinstance(twin, LeastRequestBalancer)
    slots = balancer.slots
    for slot, load in zip(slots, loads, strict=True):
        slot.in_flight = load
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


def test_p2c_prefers_the_idle_endpoint_under_load() -> None:
    balancer = build(LR, endpoints(2))
    busy = balancer.slots[0]
    busy.in_flight = 100
    for _ in range(50):
        assert release(balancer.acquire()) == "i1"


def idle_shares(algorithm: Algorithm, weights: list[int], calls: int = 6000) -> list[float]:
    balancer = build(algorithm, endpoints(len(weights), weights), seed=5)
    now = 0.0
    counts = [0] * len(weights)
    for _ in range(calls):
        now += 0.01
        counts[int(release(balancer.acquire(), now=now, elapsed=0.002)[1:])] += 1
    return [c / calls for c in counts]


def test_an_idle_cluster_splits_by_weight() -> None:
    assert idle_shares(LR, [1, 3, 6]) == pytest.approx([0.1, 0.3, 0.6], abs=0.03)


def test_peak_ewma_weights_bias_the_draws_but_latency_decides() -> None:
    got = idle_shares(EWMA, [1, 3, 6])
    assert got == sorted(got)  # heavier still gets more
    assert got[0] > 0.15  # but equal latency evens shares out (least recently used wins)
    assert idle_shares(EWMA, [1, 1, 1]) == pytest.approx([1 / 3] * 3, abs=0.03)


@given(weights=st.lists(st.integers(1, 50), min_size=2, max_size=8), seed=st.integers(0, 2**32))
def test_weighted_draws_are_distinct_and_in_range(weights: list[int], seed: int) -> None:
    balancer = build(LR, endpoints(len(weights), weights), seed=seed)
    assert isinstance(balancer, LeastRequestBalancer)
    for _ in range(50):
        i, j = balancer.draw()
        assert i != j and 0 <= i < len(weights) and 0 <= j < len(weights)


# -- the peak-EWMA estimate -------------------------------------------------------------


def tracked(decay: float = 10.0) -> EndpointSlot:
    balancer = build(EWMA, endpoints(1), decay=decay)
    return balancer.slots[0]


def test_first_sample_replaces_the_default() -> None:
    slot = tracked()
    slot.done(True, 100.0, 0.004)
    assert (slot.rtt, slot.stamp) == (0.004, 100.0)


def test_a_peak_is_taken_at_once_and_a_lower_sample_blends_by_the_gap() -> None:
    slot = tracked(decay=10.0)
    slot.done(True, 100.0, 0.010)
    slot.done(True, 101.0, 0.500)
    assert slot.rtt == 0.500
    slot.done(True, 106.0, 0.010)
    weight = math.exp(-5.0 / 10.0)
    faded = 0.500 * weight
    assert slot.rtt == pytest.approx(faded * weight + 0.010 * (1 - weight))
    assert 0.010 < slot.rtt < faded


def test_under_steady_traffic_the_estimate_settles_on_the_latency() -> None:
    slot = tracked()
    now = 0.0
    for _ in range(2000):
        now += 0.05
        slot.done(True, now, 0.020)
    assert slot.rtt == pytest.approx(0.020, rel=0.01)


def test_failures_double_the_estimate_up_to_the_cap() -> None:
    slot = tracked()
    slot.done(True, 1.0, 0.040)
    slot.done(False, 1.0, 0.001)  # fast failure: counts as twice the estimate
    assert slot.rtt == pytest.approx(0.080)
    assert slot.failures == 1
    slot.done(False, 1.0, 0.001)
    assert slot.rtt == pytest.approx(0.160)
    for _ in range(20):
        slot.done(False, 1.0, 0.001)
    assert slot.rtt == FAILURE_PENALTY_CAP
    slot.done(False, 1.0, 9.0)  # a slow failure counts its own time
    assert slot.rtt == 9.0
    slot.done(False, 1.0, 0.001)  # beyond the cap, a failure never lowers it
    assert slot.rtt == 9.0


def test_a_failure_counts_at_least_the_default_rtt() -> None:
    slot = tracked()
    slot.done(True, 0.0, 0.001)
    slot.done(False, 0.0, 0.0005)  # twice 1 ms is less than 30 ms
    assert slot.rtt == DEFAULT_RTT
    slot.done(False, 1000.0, 0.0005)  # long idle: the estimate has faded to nothing
    assert slot.rtt == DEFAULT_RTT


def test_other_algorithms_keep_no_estimate() -> None:
    slot = build(LR, endpoints(1)).slots[0]
    slot.done(True, 5.0, 0.3)
    assert (slot.rtt, slot.stamp) == (DEFAULT_RTT, -1.0)
    assert "latency_ewma_ms" not in slot.dump()


def test_the_estimate_survives_a_rebuild() -> None:
    old = build(EWMA, endpoints(2))
    old.slots[0].done(True, 3.0, 0.25)
    new = build(EWMA, endpoints(2), previous=old)
    assert new.slots[0].rtt == 0.25
    assert new.slots[0].dump()["latency_ewma_ms"] == 250.0


def test_a_non_positive_decay_falls_back_to_ten_seconds() -> None:
    slot = tracked(decay=0.0)
    assert slot.decay == 10.0


@given(
    rtts=st.tuples(st.floats(1e-4, 5.0), st.floats(1e-4, 5.0)),
    stamps=st.tuples(st.floats(0, 500), st.floats(0, 500)),
    loads=st.tuples(st.integers(0, 30), st.integers(0, 30)),
    later=st.floats(0, 100),
    seed=st.integers(0, 2**32),
)
def test_pick_agrees_with_the_costs_at_any_later_time(
    rtts: tuple[float, float],
    stamps: tuple[float, float],
    loads: tuple[int, int],
    later: float,
    seed: int,
) -> None:
    balancer = build(EWMA, endpoints(2), seed=seed)
    twin = build(EWMA, endpoints(2), seed=seed)
    assert isinstance(balancer, PeakEwmaBalancer) and isinstance(twin, PeakEwmaBalancer)
    a, b = balancer.slots
    for slot, rtt, stamp, load in zip((a, b), rtts, stamps, loads, strict=True):
        slot.rtt, slot.stamp, slot.in_flight = rtt, stamp, load
    now = max(stamps) + later
    cost = [balancer.cost(a, now), balancer.cost(b, now)]
    assume(min(cost) > 1e-300 and abs(cost[0] - cost[1]) > 1e-9 * max(cost))
    first, _ = twin.draw()
    picked = balancer.acquire()
    expected = (a, b)[cost.index(min(cost))]
    assert picked is expected, (cost, first)


# -- peak EWMA in a simulated cluster -------------------------------------------------


def simulate(
    balancer: Balancer,
    latency: dict[str, float],
    seconds: float,
    start: float = 0.0,
    rate: float = 200.0,
    failing: frozenset[str] = frozenset(),
) -> dict[str, int]:
    """Calls arriving at `rate`/s, each ending `latency[instance]` later (failed if the
    instance is `failing`); how many calls each instance got."""
    counts = {name: 0 for name in latency}
    pending: list[tuple[float, int, EndpointSlot, float]] = []
    now = start
    serial = 0
    while now < start + seconds:
        now += 1.0 / rate
        while pending and pending[0][0] <= now:
            end, _, ended, took = heapq.heappop(pending)
            ended.done(ended.endpoint.instance not in failing, end, took)
        picked = balancer.acquire()
        assert picked is not None
        name = picked.endpoint.instance
        counts[name] += 1
        took = latency[name]
        serial += 1
        heapq.heappush(pending, (now + took, serial, picked, took))
    for end, _, slot, took in sorted(pending):
        slot.done(slot.endpoint.instance not in failing, end, took)
    return counts


def test_a_slow_endpoint_gets_far_fewer_calls() -> None:
    latency = {"i0": 0.010, "i1": 0.010, "i2": 0.200}
    ewma = simulate(build(EWMA, endpoints(3), seed=1), latency, 30.0)
    total = sum(ewma.values())
    assert ewma["i2"] / total < 0.05
    # least request only sees the queue the slow endpoint builds: it sends it more
    least = simulate(build(LR, endpoints(3), seed=1), latency, 30.0)
    assert least["i2"] > 2 * ewma["i2"]


def test_a_recovered_endpoint_wins_traffic_back_as_its_estimate_fades() -> None:
    balancer = build(EWMA, endpoints(3), seed=2)
    simulate(balancer, {"i0": 0.010, "i1": 0.010, "i2": 0.500}, 60.0, rate=100.0)
    fast = {"i0": 0.010, "i1": 0.010, "i2": 0.010}
    soon = simulate(balancer, fast, 5.0, start=60.0, rate=100.0)
    assert soon["i2"] / sum(soon.values()) < 0.05  # the 500 ms peak still counts
    simulate(balancer, fast, 55.0, start=65.0, rate=100.0)
    later = simulate(balancer, fast, 30.0, start=120.0, rate=100.0)
    assert later["i2"] / sum(later.values()) > 0.25  # back to about a third


def test_an_endpoint_that_fails_fast_does_not_attract_traffic() -> None:
    latency = {"i0": 0.001, "i1": 0.020, "i2": 0.020}
    healthy_fast = simulate(build(EWMA, endpoints(3), seed=3), latency, 20.0)
    assert healthy_fast["i0"] / sum(healthy_fast.values()) > 0.5  # fast and fine: preferred
    failing = simulate(build(EWMA, endpoints(3), seed=3), latency, 20.0, failing=frozenset({"i0"}))
    assert failing["i0"] / sum(failing.values()) < 0.1


def test_a_new_endpoint_gets_one_probe_at_once_and_no_flood() -> None:
    balancer = build(EWMA, endpoints(1))
    balancer.slots[0].done(True, 1.0, 0.001)  # i0 has a 1 ms estimate (no call held)
    balancer.slots[0].in_flight = 0
    balancer.update([endpoint(0), endpoint(1)])
    held = [balancer.acquire() for _ in range(10)]
    names = [s.endpoint.instance for s in held if s is not None]
    assert names.count("i1") == 1 and names[0] == "i1"


def test_avoid_takes_the_other_of_the_pair() -> None:
    balancer = build(EWMA, endpoints(2), seed=4)
    fast, slow = balancer.slots
    fast.done(True, 1.0, 0.001)
    slow.done(True, 1.0, 0.900)
    fast.in_flight = slow.in_flight = 0
    for _ in range(20):
        assert release(balancer.acquire(), now=1.0) == "i0"
        assert release(balancer.acquire(avoid=fast), now=1.0, elapsed=0.9) == "i1"


@pytest.mark.parametrize("algorithm", [LR, EWMA])
def test_the_injected_generator_is_the_only_source_of_chance(algorithm: Algorithm) -> None:
    def run() -> list[str]:
        balancer = build(algorithm, endpoints(5, [1, 2, 3, 1, 1]), seed=11)
        return [release(balancer.acquire(), now=n * 0.01, elapsed=0.003) for n in range(200)]

    first = run()
    assert run() == first
    assert len(set(first)) == 5
