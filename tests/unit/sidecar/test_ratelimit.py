"""The four rate-limit algorithms hold their bounds on virtual time.

Times in the property tests are multiples of 1/64 s and intervals are
dyadic, so float rounding cannot blur a window boundary; the retry-after
properties use arbitrary floats on purpose.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.policy.ratelimit import (
    FixedWindow,
    LeakyBucket,
    SlidingWindow,
    TokenBucket,
    make_limiter,
)
from skein.config.model import RateLimitAlgorithm, RateLimitConfig

INTERVALS = st.sampled_from([0.25, 0.5, 1.0, 2.0])  # seconds per request (1 / rate)
START = 1000.0


def config(requests: int, period: float, burst: int | None = None, **kw: object) -> RateLimitConfig:
    return RateLimitConfig(
        "r",
        requests,
        period,
        requests if burst is None else burst,
        **kw,  # type: ignore[arg-type]
    )


@st.composite
def call_times(draw: st.DrawFn, horizon: float, max_calls: int = 150) -> list[float]:
    """Non-decreasing call times in [START, START + horizon], many at the same instant."""
    steps = draw(st.lists(st.integers(0, int(horizon * 64 / 8)), min_size=1, max_size=max_calls))
    times, now = [], START
    for step in steps:
        now += step / 64 if step % 3 else 0.0  # a third of the calls arrive together
        times.append(now)
    return times


# -- token bucket ------------------------------------------------------------------


@given(
    requests=st.integers(1, 20),
    interval=INTERVALS,
    extra=st.integers(0, 20),
    data=st.data(),
)
def test_token_bucket_never_exceeds_burst_plus_refill(
    requests: int, interval: float, extra: int, data: st.DataObject
) -> None:
    period, burst = requests * interval, requests + extra
    times = data.draw(call_times(3 * period))
    bucket = TokenBucket(requests, period, burst, START)
    admitted = [now for now in times if bucket.acquire(now) == 0.0]
    rate = 1 / interval
    # From the start, and over every interval between two admitted calls.
    for j, t in enumerate(admitted):
        assert j + 1 <= burst + rate * (t - START) + 1e-6
        for i in range(j):
            assert j - i + 1 <= burst + rate * (t - admitted[i]) + 1e-6


def test_token_bucket_starts_full_and_refills_one_token_per_interval() -> None:
    bucket = TokenBucket(10, 10.0, 15, START)  # one token a second, 15 at most
    assert [bucket.acquire(START) for _ in range(15)] == [0.0] * 15
    assert bucket.acquire(START) == pytest.approx(-1.0)
    assert bucket.acquire(START + 3.0) == 0.0
    assert bucket.acquire(START + 3.0) == 0.0
    assert bucket.acquire(START + 3.0) == 0.0
    assert bucket.acquire(START + 3.0) == pytest.approx(-1.0)
    # A long idle period refills only up to the burst.
    later = START + 1000.0
    assert sum(bucket.acquire(later) == 0.0 for _ in range(40)) == 15
    assert bucket.dump(later) == {"tokens": 0.0}


def test_token_bucket_hourly_tier_tells_the_exact_wait() -> None:
    bucket = TokenBucket(200, 3600.0, 300, START)  # a token every 18 s
    for _ in range(300):
        assert bucket.acquire(START) == 0.0
    assert bucket.acquire(START) == pytest.approx(-18.0)
    assert bucket.acquire(START + 5.0) == pytest.approx(-13.0)
    assert bucket.acquire(START + 18.0) == 0.0


# -- leaky bucket ------------------------------------------------------------------


@given(
    requests=st.integers(1, 20),
    interval=INTERVALS,
    extra=st.integers(0, 10),
    data=st.data(),
)
def test_leaky_bucket_spaces_starts_and_bounds_its_queue(
    requests: int, interval: float, extra: int, data: st.DataObject
) -> None:
    period, burst = requests * interval, requests + extra
    times = data.draw(call_times(3 * period))
    bucket = LeakyBucket(requests, period, burst, START)
    starts: list[float] = []
    for now in times:
        result = bucket.acquire(now)
        queued = sum(start > now for start in starts)
        if result < 0:
            # Rejected only when `burst` calls already wait.
            assert queued >= burst
            continue
        assert result <= burst * interval + 1e-6
        if starts:
            assert now + result - starts[-1] >= interval - 1e-9
        starts.append(now + result)
        assert sum(start > now for start in starts) <= burst


def test_leaky_bucket_queues_like_limit_req_without_nodelay() -> None:
    bucket = LeakyBucket(2, 1.0, 3, START)  # one call every 0.5 s, 3 may wait
    delays = [bucket.acquire(START) for _ in range(5)]
    assert delays[:4] == [0.0, 0.5, 1.0, 1.5]
    assert delays[4] == pytest.approx(-0.5)  # its wait would be 2.0 > 3 * 0.5
    assert bucket.dump(START) == {"queued": 3, "next_start_in": 2.0}
    assert bucket.acquire(START + 0.5) == 1.5
    # Once drained, a call starts at once.
    assert bucket.acquire(START + 10.0) == 0.0
    assert bucket.dump(START + 10.0)["queued"] == 0


# -- fixed window ------------------------------------------------------------------


def window_counts(times: list[float], period: float) -> dict[int, int]:
    counts: dict[int, int] = {}
    for t in times:
        index = math.floor((t - START) / period)
        counts[index] = counts.get(index, 0) + 1
    return counts


def window_limit(requests: int, burst: int, previous: int) -> int:
    return requests + min(burst - requests, max(0, requests - previous))


@given(
    requests=st.integers(1, 20),
    interval=INTERVALS,
    extra=st.integers(0, 20),
    data=st.data(),
)
def test_fixed_window_holds_requests_per_window_with_bounded_carry(
    requests: int, interval: float, extra: int, data: st.DataObject
) -> None:
    period, burst = requests * interval, requests + extra
    times = data.draw(call_times(5 * period))
    window = FixedWindow(requests, period, burst, START)
    admitted = [now for now in times if window.acquire(now) == 0.0]
    counts = window_counts(admitted, period)
    for index, count in counts.items():
        previous = counts.get(index - 1, 0) if index > 0 else 0
        ceiling = burst if index == 0 else window_limit(requests, burst, previous)
        assert count <= ceiling <= burst
    windows = math.floor((times[-1] - START) / period) + 1
    assert len(admitted) <= windows * requests + burst - requests


def test_fixed_window_resets_at_the_boundary_and_carries_unused_allowance() -> None:
    window = FixedWindow(10, 60.0, 15, START)
    assert sum(window.acquire(START + 1) == 0.0 for _ in range(20)) == 15  # quiet before
    assert window.acquire(START + 50) == pytest.approx(-10.0)  # until the boundary
    # The first window used more than its base: no carry.
    assert sum(window.acquire(START + 60) == 0.0 for _ in range(20)) == 10
    # Window 2 uses 4 of 10: window 3 may take 10 + min(5, 6) = 15.
    assert sum(window.acquire(START + 120) == 0.0 for _ in range(4)) == 4
    assert sum(window.acquire(START + 180) == 0.0 for _ in range(20)) == 15
    # A skipped window is quiet.
    assert sum(window.acquire(START + 400) == 0.0 for _ in range(20)) == 15


def test_fixed_window_allows_a_double_burst_across_the_boundary() -> None:
    """What the sliding window exists to prevent (see the next test)."""
    window = FixedWindow(100, 60.0, 100, START)
    edge = START + 59.9
    admitted = sum(window.acquire(edge) == 0.0 for _ in range(100))
    admitted += sum(window.acquire(START + 60.1) == 0.0 for _ in range(100))
    assert admitted == 200


# -- sliding window ----------------------------------------------------------------


def test_sliding_window_admits_no_double_burst_at_a_boundary() -> None:
    window = SlidingWindow(100, 60.0, 100, START)
    assert sum(window.acquire(START + 59.9) == 0.0 for _ in range(150)) == 100
    # 0.2 s later the previous window still weighs 100 * (1 - 0.1 / 60).
    assert sum(window.acquire(START + 60.1) == 0.0 for _ in range(100)) == 0
    # Half a window later half of it has slid out.
    assert sum(window.acquire(START + 90.0) == 0.0 for _ in range(100)) == 50
    wait = -window.acquire(START + 90.0)
    assert wait == pytest.approx(0.6)  # one call's weight, 60 s / 100
    assert window.acquire(START + 90.0 + wait) == 0.0


def test_sliding_window_wait_spans_the_boundary_when_the_carry_runs_out() -> None:
    window = SlidingWindow(10, 60.0, 15, START)
    assert sum(window.acquire(START) == 0.0 for _ in range(4)) == 4
    # Window 1 may take 10 + min(5, 10 - 4) = 15; its previous 4 weigh 4/60 at its end.
    late = START + 119.0
    assert sum(window.acquire(late) == 0.0 for _ in range(20)) == 14
    # Window 2 only gets 10 and starts with 14 in its previous window: the next
    # call fits once 14 * (1 - f) + 1 <= 10, at f = 5/14, not at the boundary.
    wait = -window.acquire(late)
    assert wait == pytest.approx(1.0 + 60.0 * 5 / 14)
    assert window.acquire(START + 120.0) < 0
    assert window.acquire(late + wait) == 0.0


@given(
    requests=st.integers(1, 20),
    interval=INTERVALS,
    extra=st.integers(0, 20),
    data=st.data(),
)
def test_sliding_window_estimate_never_exceeds_the_limit(
    requests: int, interval: float, extra: int, data: st.DataObject
) -> None:
    period, burst = requests * interval, requests + extra
    times = data.draw(call_times(5 * period))
    window = SlidingWindow(requests, period, burst, START)
    admitted: list[float] = []
    for now in times:
        if window.acquire(now) != 0.0:
            continue
        admitted.append(now)
        index = math.floor((now - START) / period)
        counts = window_counts(admitted, period)
        previous = counts.get(index - 1, 0) if index > 0 else 0
        limit = burst if index == 0 else window_limit(requests, burst, previous)
        end = START + (index + 1) * period
        estimate = previous * (end - now) / period + counts[index]
        assert estimate <= limit + 1e-6
    windows = math.floor((times[-1] - START) / period) + 1
    assert len(admitted) <= windows * requests + burst - requests
    # No double burst: any span d <= period holds at most burst * (1 + d / period).
    for j, t in enumerate(admitted):
        for i in range(j):
            span = t - admitted[i]
            if span <= period:
                assert j - i + 1 <= burst * (1 + span / period) + 1e-3


# -- every algorithm ---------------------------------------------------------------

ALGORITHMS = list(RateLimitAlgorithm)


@settings(max_examples=300)
@given(
    algorithm=st.sampled_from(ALGORITHMS),
    requests=st.integers(1, 30),
    period=st.floats(0.001, 7200.0),
    extra=st.integers(0, 30),
    start=st.floats(0.0, 1e8),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=120),
)
def test_retry_after_is_exact(
    algorithm: RateLimitAlgorithm,
    requests: int,
    period: float,
    extra: int,
    start: float,
    gaps: list[float],
) -> None:
    """A rejected call is admitted at now + retry_after, and not noticeably before."""
    limiter = make_limiter(config(requests, period, requests + extra, algorithm=algorithm), start)
    now = start
    for gap in gaps:
        now += gap * period / requests
        result = limiter.acquire(now)
        if result >= 0:
            continue
        wait = -result
        assert 0 < wait <= 2 * period + 1e-6
        if wait > 1e-4:  # 10 us early is rejected (admission tolerates 1 us of rounding)
            assert limiter.acquire(now + wait - 1e-5) < 0  # and rejections change nothing
        now += wait
        assert limiter.acquire(now) >= 0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_rejections_do_not_consume_allowance(algorithm: RateLimitAlgorithm) -> None:
    limiter = make_limiter(config(2, 10.0, 2, algorithm=algorithm), START)
    while limiter.acquire(START) >= 0:
        pass
    first = limiter.acquire(START)
    for _ in range(50):
        assert limiter.acquire(START) == first
    assert limiter.acquire(START - first) >= 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"requests": 0}, "requests must be >= 1, got 0"),
        ({"period": 0.0}, "period must be a positive duration"),
        ({"period": math.inf}, "period must be a positive duration"),
        ({"burst": 3}, r"burst must be >= requests \(5\), got 3"),
        ({"max_keys": 0}, "max_keys must be >= 1"),
    ],
)
def test_bad_configs_name_the_rule_and_the_field(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"requests": 5, "period": 1.0, "burst": 5}
    fields.update(changes)
    bad = RateLimitConfig("per-ip", **fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"rate limit 'per-ip': {message}"):
        make_limiter(bad, START)
