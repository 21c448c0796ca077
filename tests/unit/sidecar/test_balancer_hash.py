"""Ring hash and Maglev: affinity, minimal disruption, weights, exclusion; the stable hashes."""

from __future__ import annotations

import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.policy.balancer import MaglevBalancer, RingHashBalancer
from sidecar.policy.balancers.maglev import TABLE_SIZE, maglev_table
from sidecar.policy.balancers.ring_hash import RING_CAP
from sidecar.policy.hashing import (
    HashKeySource,
    endpoint_name,
    key_hash,
    maglev_preferences,
    ring_points,
)
from skein.config.model import Algorithm, HashConfig

from .balancer_support import HASHING, build, endpoint, endpoints, keys, release, route

KEYS = keys(10_000)


def shares(mapping: dict[bytes, str], n: int) -> list[float]:
    values = list(mapping.values())
    return [values.count(f"i{k}") / len(values) for k in range(n)]


@pytest.mark.parametrize("algorithm", HASHING)
def test_a_key_always_goes_to_the_same_endpoint(algorithm: Algorithm) -> None:
    balancer = build(algorithm, endpoints(5))
    first = route(balancer, KEYS[:2000])
    assert route(balancer, KEYS[:2000]) == first
    assert len(set(first.values())) == 5


@pytest.mark.parametrize("algorithm", HASHING)
def test_every_sidecar_maps_keys_alike_whatever_the_order_and_randomness(
    algorithm: Algorithm,
) -> None:
    eps = endpoints(6, [1, 2, 1, 3, 1, 1])
    shuffled = list(eps)
    random.Random(9).shuffle(shuffled)
    one = route(build(algorithm, eps, seed=1), KEYS[:3000])
    other = route(build(algorithm, shuffled, seed=2), KEYS[:3000])
    assert one == other


@pytest.mark.parametrize("algorithm", HASHING)
@pytest.mark.parametrize("n", [3, 5, 10])
def test_adding_an_endpoint_moves_about_its_share_of_keys_all_to_it(
    algorithm: Algorithm, n: int
) -> None:
    before = route(build(algorithm, endpoints(n)), KEYS)
    after = route(build(algorithm, endpoints(n + 1)), KEYS)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert abs(len(moved) / len(KEYS) - 1 / (n + 1)) < 0.03
    to_new = sum(after[k] == f"i{n}" for k in moved) / len(moved)
    assert to_new == 1.0 if algorithm is Algorithm.RING_HASH else to_new > 0.95


@pytest.mark.parametrize("n", [3, 5, 10])
def test_ring_removing_an_endpoint_moves_exactly_its_keys(n: int) -> None:
    before = route(build(Algorithm.RING_HASH, endpoints(n)), KEYS)
    after = route(build(Algorithm.RING_HASH, endpoints(n)[1:]), KEYS)
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == "i0"}


@pytest.mark.parametrize("n", [3, 5, 10])
def test_maglev_removing_an_endpoint_moves_about_its_share(n: int) -> None:
    before = route(build(Algorithm.MAGLEV, endpoints(n)), KEYS)
    after = route(build(Algorithm.MAGLEV, endpoints(n)[1:]), KEYS)
    moved = {k for k in KEYS if before[k] != after[k]}
    its_own = {k for k in KEYS if before[k] == "i0"}
    assert its_own <= moved
    assert len(moved) / len(KEYS) < 1 / n + 0.02


@pytest.mark.parametrize("algorithm", HASHING)
def test_weights_shift_shares_in_proportion(algorithm: Algorithm) -> None:
    weights = [1, 2, 3, 4]
    got = shares(route(build(algorithm, endpoints(4, weights)), KEYS), 4)
    for share, weight in zip(got, weights, strict=True):
        assert share == pytest.approx(weight / 10, abs=0.02)
    assert got == sorted(got)


@pytest.mark.parametrize("algorithm", HASHING)
def test_equal_weights_spread_keys_evenly(algorithm: Algorithm) -> None:
    got = shares(route(build(algorithm, endpoints(8)), KEYS), 8)
    assert max(got) - min(got) < 0.04


@pytest.mark.parametrize("algorithm", HASHING)
def test_excluded_endpoint_keys_go_elsewhere_and_come_back(algorithm: Algorithm) -> None:
    balancer = build(algorithm, endpoints(5))
    before = route(balancer, KEYS[:4000])
    balancer.set_excluded(frozenset({("i2", "10.0.0.2", 9002)}))
    during = route(balancer, KEYS[:4000])
    for key, name in before.items():
        if name == "i2":
            assert during[key] != "i2"
        else:
            assert during[key] == name  # nobody else's keys move
    moved_to = {during[k] for k, name in before.items() if name == "i2"}
    assert len(moved_to) == 4  # spread over the others, not dumped on one
    balancer.set_excluded(frozenset())
    assert route(balancer, KEYS[:4000]) == before


@pytest.mark.parametrize("algorithm", HASHING)
def test_unhealthy_endpoint_keys_go_elsewhere_and_come_back(algorithm: Algorithm) -> None:
    balancer = build(algorithm, endpoints(4))
    before = route(balancer, KEYS[:3000])
    balancer.update([endpoint(0), endpoint(1, healthy=False), endpoint(2), endpoint(3)])
    during = route(balancer, KEYS[:3000])
    assert all(during[k] == v for k, v in before.items() if v != "i1")
    assert "i1" not in during.values()
    rebuilt = build(algorithm, endpoints(4), previous=balancer)
    assert route(rebuilt, KEYS[:3000]) == before


@pytest.mark.parametrize("algorithm", HASHING)
def test_no_key_spreads_at_random_over_the_candidates(algorithm: Algorithm) -> None:
    balancer = build(algorithm, endpoints(4), seed=3)
    balancer.set_excluded(frozenset({("i3", "10.0.0.3", 9003)}))
    picks = [release(balancer.acquire(None)) for _ in range(600)]
    assert {p: picks.count(p) > 120 for p in picks} == {"i0": True, "i1": True, "i2": True}


@pytest.mark.parametrize("algorithm", HASHING)
def test_avoid_takes_the_next_endpoint_on_the_ring_or_table(algorithm: Algorithm) -> None:
    balancer = build(algorithm, endpoints(4))
    for key in KEYS[:300]:
        first = balancer.acquire(key)
        retry = balancer.acquire(key, avoid=first)
        again = balancer.acquire(key, avoid=first)
        assert first is not None and retry is not None
        assert retry is not first and retry is again  # deterministic, too
        for slot in (first, retry, again):
            release(slot)


def test_ring_has_ring_size_points_per_unit_of_weight() -> None:
    balancer = build(Algorithm.RING_HASH, endpoints(3, [1, 2, 1]))
    assert balancer.dump()["ring_points"] == 4 * 1024
    small = build(Algorithm.RING_HASH, endpoints(3), ring_size=16)
    assert small.dump()["ring_points"] == 48
    many = build(Algorithm.RING_HASH, endpoints(100))
    assert many.dump()["points_per_weight"] == RING_CAP // 100
    assert many.dump()["ring_points"] <= RING_CAP


def test_ring_points_of_an_endpoint_depend_only_on_its_name_and_weight() -> None:
    name = endpoint_name(("i1", "10.0.0.1", 9001))
    own = ring_points(name, 2 * 1024)
    for others in ([0, 2], [3, 4, 5, 6]):
        eps = [endpoint(1, weight=2), *(endpoint(k) for k in others)]
        ring = build(Algorithm.RING_HASH, eps)
        assert isinstance(ring, RingHashBalancer)
        assert all(ring.owner(p).endpoint.instance == "i1" for p in own)


def test_hash_structures_are_reused_when_only_health_changes() -> None:
    for algorithm in HASHING:
        old = build(algorithm, endpoints(4))
        assert isinstance(old, RingHashBalancer | MaglevBalancer)
        owners = old._owners
        new = build(algorithm, [endpoint(0, healthy=False), *endpoints(4)[1:]], previous=old)
        assert isinstance(new, RingHashBalancer | MaglevBalancer)
        assert new._owners is owners
        old.update(endpoints(4, [1, 1, 1, 2]))  # a weight change rebuilds
        assert old._owners is not owners


def test_maglev_table_fills_every_entry_in_proportion_to_weight() -> None:
    names = [endpoint_name((f"i{k}", "h", k)) for k in range(3)]
    table = maglev_table(names, [1, 1, 2])
    assert len(table) == TABLE_SIZE and min(table) == 0
    counts = [table.count(k) for k in range(3)]
    assert counts[0] == pytest.approx(TABLE_SIZE / 4, rel=0.01)
    assert counts[2] == pytest.approx(TABLE_SIZE / 2, rel=0.01)
    small = maglev_table(names, [1, 1, 1], size=13)
    assert sorted(small.count(k) for k in range(3)) == [4, 4, 5]


@settings(max_examples=25, deadline=None)
@given(
    weights=st.lists(st.integers(0, 4), min_size=1, max_size=6),
    excluded=st.sets(st.integers(0, 5)),
    key=st.binary(max_size=12),
    algorithm=st.sampled_from(HASHING),
)
def test_hash_pick_is_the_first_usable_owner_or_nothing(
    weights: list[int], excluded: set[int], key: bytes, algorithm: Algorithm
) -> None:
    balancer = build(algorithm, endpoints(len(weights), weights))
    balancer.set_excluded(frozenset((f"i{k}", f"10.0.0.{k}", 9000 + k) for k in excluded))
    usable = {f"i{k}" for k, w in enumerate(weights) if w and k not in excluded}
    slot = balancer.acquire(key)
    if not usable:
        assert slot is None
        return
    assert slot is not None and slot.endpoint.instance in usable
    assert balancer.acquire(key) is slot


# -- the stable hashes --------------------------------------------------------------


def test_key_hash_is_crc32_and_stable_across_processes() -> None:
    assert key_hash(b"123456789") == 0xCBF43926  # the CRC-32 check value
    assert key_hash(b"user-1") == zlib.crc32(b"user-1")


def test_ring_points_are_a_prefix_of_any_longer_run() -> None:
    name = endpoint_name(("a", "10.0.0.1", 80))
    assert ring_points(name, 5) == ring_points(name, 100)[:5]
    assert ring_points(name, 3) != ring_points(endpoint_name(("b", "10.0.0.1", 80)), 3)
    assert all(0 <= p < 2**32 for p in ring_points(name, 100))


def test_maglev_preferences_give_a_full_permutation() -> None:
    offset, skip = maglev_preferences(b"x@h:1", 13)
    assert 0 <= offset < 13 and 1 <= skip < 13
    assert sorted((offset + j * skip) % 13 for j in range(13)) == list(range(13))


def test_endpoint_name_includes_the_instance() -> None:
    assert endpoint_name(("orders-1", "10.0.0.7", 8080)) == b"orders-1@10.0.0.7:8080"


def test_hash_key_source_reads_a_header_or_the_peer_ip() -> None:
    by_header = HashKeySource(HashConfig(header="x-user"))
    headers = [(b":path", b"/a"), (b"x-user", b"alice"), (b"x-user", b"bob")]
    assert by_header(headers, "10.1.1.1") == b"alice"
    assert by_header([(b":path", b"/a")], "10.1.1.1") is None
    by_ip = HashKeySource(HashConfig(source_ip=True))
    assert by_ip(headers, "10.1.1.1") == b"10.1.1.1"
    assert by_ip(headers, "") is None


@settings(max_examples=40, deadline=None)
@given(
    weights=st.lists(st.integers(1, 3), min_size=1, max_size=5),
    ring_size=st.sampled_from([1, 7, 64, 1024]),
    key_list=st.lists(st.binary(max_size=16), min_size=1, max_size=30),
)
def test_ring_pick_is_the_first_point_at_or_after_the_key(
    weights: list[int], ring_size: int, key_list: list[bytes]
) -> None:
    ring = build(Algorithm.RING_HASH, endpoints(len(weights), weights), ring_size=ring_size)
    assert isinstance(ring, RingHashBalancer)
    for key in key_list:
        assert ring.acquire(key) is ring.owner(key_hash(key))
