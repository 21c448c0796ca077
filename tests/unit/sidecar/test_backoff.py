"""Backoff stays within [floor, cap], grows, and resets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.policy.backoff import ExponentialBackoff


@given(
    base=st.floats(0.001, 2.0),
    factor=st.floats(1.0, 100.0),
    floor=st.floats(0.0, 1.0),
    attempts=st.integers(1, 200),
    seed=st.integers(0, 2**32),
)
def test_delays_stay_within_bounds(
    base: float, factor: float, floor: float, attempts: int, seed: int
) -> None:
    cap = base * factor
    backoff = ExponentialBackoff(base, cap, floor=floor, rng=random.Random(seed))
    for attempt in range(attempts):
        ceiling = min(cap, base * 2.0**attempt)
        delay = backoff.next_delay()
        assert min(floor, ceiling) <= delay <= ceiling <= cap


def test_ceiling_doubles_until_cap_and_reset_starts_over() -> None:
    backoff = ExponentialBackoff(0.1, 1.0, rng=random.Random(0))
    ceilings = []
    for _ in range(6):
        ceilings.append(backoff.ceiling())
        backoff.next_delay()
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.ceiling() == pytest.approx(0.1)


def test_full_jitter_spreads_delays() -> None:
    backoff = ExponentialBackoff(1.0, 1.0, rng=random.Random(42))
    delays = {round(backoff.next_delay(), 3) for _ in range(50)}
    assert len(delays) > 40


@pytest.mark.parametrize(("base", "cap", "floor"), [(0, 1, 0), (2, 1, 0), (1, 2, -1)])
def test_bad_parameters_are_rejected(base: float, cap: float, floor: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        ExponentialBackoff(base, cap, floor=floor)
