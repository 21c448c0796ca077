"""Smooth weighted round robin: exact shares per cycle, no bursts, avoid keeps the cycle."""

from __future__ import annotations

import random
from functools import reduce
from itertools import pairwise
from math import gcd

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.policy.balancer import WeightedRoundRobinBalancer
from sidecar.policy.balancers.weighted_round_robin import (
    MAX_CYCLE_WORK,
    break_repeats,
    nginx_cycle,
    smooth_cycle,
)
from skein.config.model import Algorithm, LoadBalancerConfig

from .balancer_support import build, endpoints, release

WRR = Algorithm.WEIGHTED_ROUND_ROBIN

weight_lists = st.lists(st.integers(1, 40), min_size=1, max_size=8)


def picks(balancer: WeightedRoundRobinBalancer | object, count: int) -> list[str]:
    assert isinstance(balancer, WeightedRoundRobinBalancer)
    return [release(balancer.acquire()) for _ in range(count)]


def reduced(weights: list[int]) -> list[int]:
    divisor = reduce(gcd, weights)
    return [w // divisor for w in weights]


@given(weights=weight_lists, cycles=st.integers(1, 3), seed=st.integers(0, 2**32))
def test_every_cycle_holds_each_endpoint_exactly_its_weight(
    weights: list[int], cycles: int, seed: int
) -> None:
    balancer = build(WRR, endpoints(len(weights), weights), seed=seed)
    shares = reduced(weights)
    total = sum(shares)
    sequence = picks(balancer, total * cycles)
    for c in range(cycles):
        window = sequence[c * total : (c + 1) * total]
        assert {f"i{k}": window.count(f"i{k}") for k in range(len(weights))} == {
            f"i{k}": share for k, share in enumerate(shares)
        }


@given(weights=weight_lists, seed=st.integers(0, 2**32))
def test_no_endpoint_under_half_the_total_is_picked_twice_in_a_row(
    weights: list[int], seed: int
) -> None:
    balancer = build(WRR, endpoints(len(weights), weights), seed=seed)
    shares = reduced(weights)
    total = sum(shares)
    sequence = picks(balancer, 3 * total)
    for previous, current in pairwise(sequence):
        if previous == current:
            assert 2 * shares[int(current[1:])] >= total, (weights, sequence)


@settings(deadline=None)
@given(weights=st.lists(st.integers(1, 20), min_size=1, max_size=6))
def test_every_window_stays_within_two_of_its_ideal_share(weights: list[int]) -> None:
    shares = reduced(weights)
    total = sum(shares)
    cycle = smooth_cycle(shares)
    twice = cycle + cycle
    for k, share in enumerate(shares):
        prefix = [0]
        for index in twice:
            prefix.append(prefix[-1] + (index == k))
        for start in range(total):
            for length in range(1, total + 1):
                got = prefix[start + length] - prefix[start]
                assert abs(got - length * share / total) < 2


@given(weights=weight_lists)
def test_nginx_cycle_is_exact_and_smooth_cycle_differs_only_in_order(weights: list[int]) -> None:
    shares = reduced(weights)
    plain = nginx_cycle(shares)
    smooth = smooth_cycle(shares)
    assert sorted(plain) == sorted(smooth)
    assert [plain.count(k) for k in range(len(shares))] == shares


def test_nginx_alone_repeats_where_the_sit_out_rule_does_not() -> None:
    assert nginx_cycle([5, 5, 8]) == [2, 0, 1, 2, 0, 1, 2, 2, 0, 1, 2, 0, 2, 1, 2, 0, 1, 2]
    cycle = smooth_cycle([5, 5, 8])
    assert all(a != b for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True))


def test_interleaves_instead_of_bursting() -> None:
    assert smooth_cycle([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]
    balancer = build(WRR, endpoints(3, [5, 1, 1]), seed=0)
    sequence = picks(balancer, 70)
    heavy = "".join("H" if s == "i0" else "." for s in sequence)
    assert max(len(run) for run in heavy.split(".")) <= 4  # at most across the cycle's wrap
    assert sequence.count("i0") == 50


def test_weights_are_reduced_by_their_gcd() -> None:
    balancer = build(WRR, endpoints(2, [300, 100]), seed=0)
    assert balancer.dump()["cycle"] == 4
    assert sorted(picks(balancer, 4)) == ["i0", "i0", "i0", "i1"]


def test_avoid_goes_elsewhere_without_consuming_a_turn() -> None:
    balancer = build(WRR, endpoints(3, [2, 1, 1]), seed=3)
    twin = build(WRR, endpoints(3, [2, 1, 1]), seed=3)
    expected = picks(twin, 8)
    got: list[str] = []
    for n in range(8):
        slot = balancer.acquire()
        assert slot is not None
        got.append(release(slot))
        if n == 3:
            retry = balancer.acquire(avoid=balancer.slot(slot.key))
            assert retry is not None and retry is not slot
            release(retry)
    assert got == expected


def test_cycles_too_long_to_precompute_run_nginx_online() -> None:
    weights = [9973, 9967, 9949, 9941, 9931, 9929, 9923]  # primes: no common divisor
    assert sum(weights) * len(weights) > MAX_CYCLE_WORK
    balancer = WeightedRoundRobinBalancer(
        LoadBalancerConfig(WRR), endpoints(7, weights), random.Random(0)
    )
    assert balancer.dump()["cycle"] is None
    sequence = picks(balancer, sum(weights))
    assert [sequence.count(f"i{k}") for k in range(7)] == weights
    longest = max(
        len(run) for run in "".join("x" if s == "i0" else "." for s in sequence).split(".")
    )
    assert longest <= 2
    first = balancer.acquire()
    assert first is not None
    retry = balancer.acquire(avoid=first)
    assert retry is not None and retry is not first


@settings(max_examples=30)
@given(weights=st.lists(st.integers(0, 5), min_size=2, max_size=6), seed=st.integers(0, 2**16))
def test_weight_changes_take_effect_on_update(weights: list[int], seed: int) -> None:
    balancer = build(WRR, endpoints(len(weights)), seed=seed)
    balancer.update(endpoints(len(weights), weights))
    live = [w for w in weights if w]
    if not live:
        assert balancer.acquire() is None
        return
    shares = reduced(live)
    sequence = picks(balancer, sum(shares))
    nonzero = [k for k, w in enumerate(weights) if w]
    assert [sequence.count(f"i{k}") for k in nonzero] == shares


def light_repeats(cycle: list[int], shares: list[int]) -> list[int]:
    total = len(cycle)
    return [
        i
        for i in range(total)
        if cycle[i] == cycle[(i + 1) % total] and 2 * shares[cycle[i]] < total
    ]


@settings(deadline=None)
@given(weights=st.lists(st.integers(1, 30), min_size=2, max_size=7))
def test_breaking_repeats_keeps_the_picks_and_the_smoothness(weights: list[int]) -> None:
    shares = reduced(weights)
    plain = nginx_cycle(shares)
    fixed = break_repeats(plain, shares)
    assert sorted(fixed) == sorted(plain)
    assert light_repeats(fixed, shares) == []
    total = len(fixed)
    twice = fixed + fixed
    for k, share in enumerate(shares):
        prefix = [0]
        for index in twice:
            prefix.append(prefix[-1] + (index == k))
        worst = max(
            abs(prefix[s + n] - prefix[s] - n * share / total)
            for s in range(total)
            for n in range(1, total + 1)
        )
        assert worst < 2


def test_weights_where_the_sit_out_rule_drifts_still_get_a_clean_exact_cycle() -> None:
    weights = [228, 9, 6, 9, 9, 257]  # two endpoints just under half the total
    assert light_repeats(nginx_cycle(weights), weights)  # nginx repeats here
    cycle = smooth_cycle(weights)
    assert [cycle.count(k) for k in range(6)] == weights
    assert light_repeats(cycle, weights) == []
