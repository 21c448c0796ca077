"""The circuit breaker trips on the failure rate, stays open, probes, and closes."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sidecar.policy.breaker import BUCKETS, BreakerState, CircuitBreaker
from skein.config.model import BreakerConfig


def breaker(**kwargs: object) -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(**kwargs), "orders")  # type: ignore[arg-type]


def feed(b: CircuitBreaker, results: str, now: float) -> None:
    """Admit and record one call per character: '.' success, 'x' failure."""
    for r in results:
        assert b.allow(now)
        b.record(r == ".", now)


def trip(b: CircuitBreaker, now: float) -> None:
    feed(b, "x" * 20, now)
    assert b.state(now) == "open"


def test_trips_exactly_at_the_threshold_once_minimum_requests_are_in() -> None:
    b = breaker()  # 50% over 10 s, minimum 20 calls
    feed(b, "." * 10 + "x" * 9, 1.0)
    assert b.state(1.0) == "closed"  # 19 calls: below the minimum
    feed(b, "x", 1.0)
    assert b.state(1.0) == "open"  # 10 of 20 failed: exactly 50%
    assert b.opened == 1


def test_just_below_the_threshold_stays_closed() -> None:
    b = breaker(failure_rate_threshold=0.3, minimum_requests=10)
    feed(b, "xx" + "." * 8, 1.0)
    assert b.state(1.0) == "closed"  # 20% < 30%
    feed(b, "x", 1.0)
    assert b.state(1.0) == "closed"  # 3 of 11 = 27%
    b2 = breaker(failure_rate_threshold=0.3, minimum_requests=10)
    feed(b2, "xxx" + "." * 7, 1.0)  # 3 of 10 = 30.0%, even though 0.3 x 10 > 3 in floats
    assert b2.state(1.0) == "open"


def test_never_trips_below_minimum_requests() -> None:
    b = breaker(minimum_requests=20)
    feed(b, "x" * 19, 1.0)
    assert b.state(1.0) == "closed"
    assert b.allow(1.0)


def test_a_success_that_completes_the_minimum_can_trip() -> None:
    b = breaker(minimum_requests=20)
    feed(b, "x" * 15 + "." * 4, 1.0)
    assert b.state(1.0) == "closed"
    feed(b, ".", 1.0)  # 15 of 20 failed
    assert b.state(1.0) == "open"


def test_open_rejects_until_open_duration_then_turns_half_open() -> None:
    b = breaker(open_duration=60.0)
    trip(b, 100.0)
    assert not b.allow(100.0)
    assert not b.allow(159.999)
    assert b.rejected == 2
    assert b.allow(160.0)
    assert b.state(160.0) == "half_open"


def test_half_open_admits_at_most_max_calls_in_flight() -> None:
    b = breaker(half_open_max_calls=3, success_threshold=5)
    trip(b, 0.0)
    assert [b.allow(60.0) for _ in range(5)] == [True, True, True, False, False]
    assert b.why(60.0) == (
        "circuit breaker for 'orders' is half-open: 3 trial calls already in flight"
    )
    b.record(True, 61.0)  # a trial answered: its permit is free again
    assert b.allow(61.0)
    assert not b.allow(61.0)


def test_half_open_failure_reopens_for_a_fresh_open_duration() -> None:
    b = breaker(open_duration=60.0)
    trip(b, 0.0)
    assert b.allow(60.0)
    assert b.allow(60.0)
    b.record(True, 61.0)
    b.record(False, 62.0)
    assert b.state(62.0) == "open"
    assert b.opened == 2
    assert not b.allow(121.0)
    assert b.allow(122.0)
    assert "a trial call failed while half-open (after 1 of 10 successes)" in b._trip_reason


def test_success_threshold_closes_with_an_empty_window() -> None:
    b = breaker(success_threshold=3, half_open_max_calls=10, minimum_requests=20)
    trip(b, 0.0)
    feed(b, "..", 60.0)
    assert b.state(60.0) == "half_open"
    feed(b, ".", 60.0)
    assert b.state(60.0) == "closed"
    # The failures that tripped it are gone: 19 fresh failures do not trip.
    feed(b, "x" * 19, 61.0)
    assert b.state(61.0) == "closed"


def test_the_window_slides_and_old_failures_are_forgotten() -> None:
    b = breaker(window=10.0, minimum_requests=20)
    feed(b, "x" * 15, 0.0)
    feed(b, "." * 15 + "x" * 5, 10.5)  # the t=0 bucket has left the window
    assert b.state(10.5) == "closed"
    c = breaker(window=10.0, minimum_requests=20)
    feed(c, "x" * 15, 0.0)
    feed(c, "." * 5, 8.0)  # still inside: 15 of 20
    assert c.state(8.0) == "open"


def test_results_recorded_while_open_are_ignored() -> None:
    b = breaker(open_duration=60.0, success_threshold=1)
    trip(b, 0.0)
    for _ in range(50):
        b.record(True, 30.0)  # late answers to calls admitted before it opened
    assert b.state(30.0) == "open"
    assert b.dump(30.0)["window"]["calls"] == 0


def test_why_explains_each_state() -> None:
    b = breaker()
    feed(b, "." * 3, 0.0)
    assert b.why(0.0) == (
        "circuit breaker for 'orders' is closed: 0 of 3 calls (0%) failed in the last 10 s "
        "(threshold 50%)"
    )
    feed(b, "." * 3 + "x" * 14, 0.0)
    assert b.why(17.0) == (
        "circuit breaker for 'orders' is open: 14 of 20 calls (70%) failed in the last 10 s "
        "(threshold 50%); next trial in 43 s"
    )
    assert b.allow(60.0)
    assert b.why(60.0) == (
        "circuit breaker for 'orders' is half-open: 0 of 10 trial successes so far, 1 in flight"
    )


def test_events_record_every_transition_with_its_reason() -> None:
    b = breaker(success_threshold=1)
    trip(b, 0.0)
    feed(b, ".", 60.0)
    events = b.drain_events()
    assert [(f, t) for f, t, _ in events] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert "20 of 20 calls (100%) failed" in events[0][2]
    assert b.drain_events() == []


def test_disabled_breaker_admits_everything() -> None:
    b = breaker(enabled=False)
    feed(b, "x" * 1000, 0.0)
    assert b.state(0.0) == "closed"
    assert b.opened == 0
    assert "disabled" in b.why(0.0)


def test_lost_trial_permits_are_reclaimed_after_open_duration() -> None:
    b = breaker(half_open_max_calls=2, open_duration=60.0)
    trip(b, 0.0)
    assert b.allow(60.0) and b.allow(60.0)  # two trials that never report back
    assert not b.allow(119.0)
    assert b.allow(120.0)
    assert b.lost_trials == 2


def test_cancel_returns_a_trial_permit_without_a_result() -> None:
    b = breaker(half_open_max_calls=1, success_threshold=1)
    trip(b, 0.0)
    assert b.allow(60.0)
    assert not b.allow(60.0)
    b.cancel()  # e.g. no endpoint to send it to
    assert b.state(60.0) == "half_open"
    assert b.allow(60.0)
    b.record(True, 60.5)
    assert b.state(60.5) == "closed"
    b.cancel()  # closed: nothing to hand back
    assert b.allow(61.0)


def test_dump_is_plain_data() -> None:
    b = breaker()
    trip(b, 0.0)
    dump = b.dump(10.0)
    assert dump["state"] == "open"
    assert dump["next_trial_in"] == pytest.approx(50.0)
    assert dump["opened"] == 1
    assert BreakerState.OPEN == "open"


class BreakerMachine(RuleBasedStateMachine):
    """The breaker against a plain model: same decisions, same transitions."""

    @initialize(
        threshold=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
        minimum=st.integers(1, 8),
        max_calls=st.integers(1, 4),
        successes=st.integers(1, 5),
    )
    def setup(self, threshold: float, minimum: int, max_calls: int, successes: int) -> None:
        self.window = 10.0
        self.open_duration = 30.0
        self.threshold = threshold
        self.minimum = minimum
        self.max_calls = max_calls
        self.success_threshold = successes
        self.b = breaker(
            failure_rate_threshold=threshold,
            window=self.window,
            minimum_requests=minimum,
            open_duration=self.open_duration,
            half_open_max_calls=max_calls,
            success_threshold=successes,
        )
        self.now = 0.0
        self.state = "closed"
        self.records: list[tuple[int, bool]] = []  # (bucket, ok) since the window was emptied
        self.open_until = 0.0
        self.trials = 0
        self.successes = 0
        self.progress = 0.0
        self.outstanding = 0
        self.last_to = "closed"

    def _bucket(self) -> int:
        return int(self.now * BUCKETS / self.window)

    def _open(self) -> None:
        self.state = "open"
        self.open_until = self.now + self.open_duration
        self.records.clear()

    def _maybe_half_open(self) -> None:
        if self.state == "open" and self.now >= self.open_until:
            self.state = "half_open"
            self.trials = 0
            self.successes = 0
            self.progress = self.now

    @rule(eighths=st.integers(0, 400))
    def wait(self, eighths: int) -> None:
        self.now += eighths / 8

    @rule()
    def allow(self) -> None:
        got = self.b.allow(self.now)
        self._maybe_half_open()
        if self.state == "closed":
            expected = True
        elif self.state == "open":
            expected = False
        else:
            if self.trials >= self.max_calls and self.now - self.progress >= self.open_duration:
                self.trials = 0  # permits presumed lost
            expected = self.trials < self.max_calls
            if expected:
                self.trials += 1
                self.progress = self.now
        assert got == expected
        if got:
            self.outstanding += 1

    @precondition(lambda self: self.outstanding > 0)
    @rule(ok=st.booleans())
    def record(self, ok: bool) -> None:
        self.outstanding -= 1
        self.b.record(ok, self.now)
        if self.state == "closed":
            self.records.append((self._bucket(), ok))
            oldest = self._bucket() - BUCKETS + 1
            window = [r for b, r in self.records if b >= oldest]
            failures = window.count(False)
            if len(window) >= self.minimum and failures >= self.threshold * len(window):
                self._open()
        elif self.state == "half_open":
            self.trials = max(0, self.trials - 1)
            self.progress = self.now
            if not ok:
                self._open()
            else:
                self.successes += 1
                if self.successes >= self.success_threshold:
                    self.state = "closed"
                    self.records.clear()

    @invariant()
    def same_state(self) -> None:
        got = self.b.state(self.now)
        self._maybe_half_open()
        assert got == self.state

    @invariant()
    def half_open_never_exceeds_its_permits(self) -> None:
        assert self.trials <= self.max_calls
        assert self.b.dump(self.now)["trials_in_flight"] <= self.max_calls

    @invariant()
    def transitions_chain(self) -> None:
        events = self.b.drain_events()
        for frm, to, _ in events:
            assert frm == self.last_to
            self.last_to = to
        allowed = {
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "open"),
            ("half_open", "closed"),
        }
        assert all((frm, to) in allowed and why for frm, to, why in events)


BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
test_breaker_matches_its_model = BreakerMachine.TestCase
