from __future__ import annotations

import pytest

from skein.clock import ManualClock, MonotonicClock


def test_manual_clock_moves_only_forward() -> None:
    clock = ManualClock(10.0)
    clock.advance(2.5)
    assert clock.now() == 12.5
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_monotonic_clock_does_not_go_back() -> None:
    clock = MonotonicClock()
    first = clock.now()
    assert clock.now() >= first
