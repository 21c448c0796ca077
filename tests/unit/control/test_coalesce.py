"""The rebuild debounce: quiet period with a cap, on a manual clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.coalesce import Coalescer


def test_lone_event_waits_the_quiet_period() -> None:
    c = Coalescer(0.002, 0.1)
    assert c.idle and c.wait_time(5.0) is None
    c.event(5.0)
    assert c.wait_time(5.0) == pytest.approx(0.002)
    assert c.wait_time(5.0025) == 0.0
    c.fired()
    assert c.idle and c.wait_time(6.0) is None


def test_spread_burst_is_one_rebuild_until_the_cap() -> None:
    c = Coalescer(0.01, 0.05)
    for i in range(4):  # events 8 ms apart: each extends the wait
        c.event(i * 0.008)
        assert c.wait_time(i * 0.008) == pytest.approx(0.01)
    c.event(0.045)  # the cap (first + 50 ms) comes before quiet (55 ms)
    assert c.wait_time(0.045) == pytest.approx(0.005)


def test_bad_bounds() -> None:
    with pytest.raises(ValueError):
        Coalescer(0.1, 0.05)
    with pytest.raises(ValueError):
        Coalescer(-1, 1)


@given(
    st.floats(0, 0.05),
    st.floats(0, 0.5),
    st.lists(st.floats(0, 0.01), min_size=1, max_size=50),
)
def test_due_time_is_bounded(quiet: float, extra: float, gaps: list[float]) -> None:
    c = Coalescer(quiet, quiet + extra)
    now = 0.0
    for gap in gaps:
        now += gap
        c.event(now)
    wait = c.wait_time(now)
    assert wait is not None
    due = now + wait
    cap = gaps[0] + quiet + extra  # max_delay after the first event
    # Never later than the cap (or now, when already overdue), never sooner than `quiet`
    # after the last event unless capped.
    assert due <= max(cap, now) + 1e-9
    assert due >= min(now + quiet, cap) - 1e-9
