"""The retry budget bounds retries by min_retries_per_second x ttl + ratio x requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.policy.budget import BUCKETS, RetryBudget
from skein.config.model import BudgetConfig


def budget(ratio: float = 0.2, per_second: int = 0, ttl: float = 10.0) -> RetryBudget:
    return RetryBudget(BudgetConfig(ratio=ratio, min_retries_per_second=per_second, ttl=ttl))


def test_ratio_allows_that_share_of_requests() -> None:
    b = budget(ratio=0.2)
    for _ in range(100):
        b.deposit(1.0)
    granted = sum(b.withdraw(1.5) for _ in range(30))
    assert granted == 20
    assert b.exhausted == 10
    assert b.available(1.5) == 0.0


def test_reserve_allows_min_retries_per_second_over_ttl_without_requests() -> None:
    b = budget(ratio=0.2, per_second=10, ttl=10.0)
    granted = sum(b.withdraw(0.0) for _ in range(150))
    assert granted == 100
    assert b.exhausted == 50


def test_reserve_and_ratio_add_up() -> None:
    b = budget(ratio=0.5, per_second=1, ttl=5.0)
    for _ in range(10):
        b.deposit(2.0)
    assert b.available(2.0) == pytest.approx(10.0)
    assert sum(b.withdraw(2.0) for _ in range(20)) == 10


def test_capacity_recovers_once_ttl_and_one_bucket_have_passed() -> None:
    ttl = 10.0
    b = budget(ratio=0.2, per_second=1, ttl=ttl)
    assert sum(b.withdraw(0.0) for _ in range(20)) == 10  # the reserve: 1/s x 10 s
    assert not b.withdraw(ttl / 2)
    assert not b.withdraw(ttl)  # still within (now - ttl, now]
    assert b.withdraw(ttl + ttl / BUCKETS)
    assert b.available(3 * ttl) == pytest.approx(10.0)


def test_requests_age_out_after_ttl() -> None:
    b = budget(ratio=1.0, ttl=10.0)
    for _ in range(50):
        b.deposit(0.0)
    assert b.available(9.0) == pytest.approx(50.0)
    assert b.available(10.0) == 0.0  # the bucket of t=0 no longer counts for requests
    assert not b.withdraw(10.0)


def test_disabled_budget_always_grants() -> None:
    b = RetryBudget(BudgetConfig(enabled=False, min_retries_per_second=0))
    assert all(b.withdraw(0.0) for _ in range(10_000))
    assert b.exhausted == 0
    assert b.available(0.0) == float("inf")
    assert b.dump(0.0)["available"] is None
    assert "disabled" in b.describe(0.0)


def test_describe_says_the_budget_and_its_use() -> None:
    b = budget(ratio=0.2, per_second=10, ttl=10.0)
    for _ in range(140):
        b.deposit(3.0)
    for _ in range(38):
        assert b.withdraw(4.0)
    assert b.describe(5.0) == "20% of 140 requests + 10/s over 10 s; 38 retries used"
    dump = b.dump(5.0)
    assert (dump["requests"], dump["retries"], dump["exhausted"]) == (140, 38, 0)
    assert dump["available"] == pytest.approx(100 + 28 - 38)


def test_time_going_backwards_counts_in_the_newest_bucket() -> None:
    b = budget(ratio=1.0, ttl=10.0)
    b.deposit(50.0)
    b.deposit(20.0)  # earlier than seen: counted now, not lost and not a crash
    assert b.available(50.0) == pytest.approx(2.0)


def test_long_idle_clears_everything() -> None:
    b = budget(ratio=1.0, per_second=0, ttl=1.0)
    for _ in range(5):
        b.deposit(0.0)
    assert b.withdraw(0.0)
    assert b.available(1e6) == 0.0
    assert b.dump(1e6)["requests"] == 0


def test_nonpositive_ttl_is_rejected() -> None:
    with pytest.raises(ValueError, match="ttl"):
        RetryBudget(BudgetConfig(ttl=0.0))


# Times on a 1/64 s grid and ttls whose bucket width is a power of two, so
# the arithmetic below is exact and the property can be checked to the unit.
TICK = 1 / 64
operations = st.lists(
    st.tuples(st.integers(0, 200), st.sampled_from(["deposit", "withdraw"]), st.integers(1, 8)),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=operations,
    ttl=st.sampled_from([1.25, 2.5, 5.0, 10.0, 20.0]),
    ratio=st.sampled_from([0.05, 0.1, 0.2, 0.25, 0.5, 1.0]),
    per_second=st.integers(0, 3),
)
def test_retries_in_any_ttl_never_exceed_the_budget(
    ops: list[tuple[int, str, int]], ttl: float, ratio: float, per_second: int
) -> None:
    b = budget(ratio=ratio, per_second=per_second, ttl=ttl)
    reserve = per_second * ttl
    width = ttl / BUCKETS
    deposits: list[float] = []
    granted: list[float] = []
    now = 0.0
    for ticks, op, repeat in ops:
        now += ticks * TICK
        for _ in range(repeat):
            if op == "deposit":
                b.deposit(now)
                deposits.append(now)
                continue
            ok = b.withdraw(now)
            if ok:
                granted.append(now)
                # Safety: the exact sliding window (now - ttl, now] holds.
                retries = sum(1 for t in granted if now - ttl < t <= now)
                requests = sum(1 for t in deposits if now - ttl < t <= now)
                assert retries <= reserve + ratio * requests
            else:
                # Not stingy beyond one bucket: a refusal means the bound is
                # exceeded even counting retries over a bucket more and
                # requests over a bucket less.
                retries = sum(1 for t in granted if now - ttl - width <= t <= now)
                requests = sum(1 for t in deposits if now - ttl + width <= t <= now)
                assert retries + 1 > reserve + ratio * requests
