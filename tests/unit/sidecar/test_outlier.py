"""Outlier detection ejects failing endpoints for a growing, capped time, within a cap on share."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.policy.outlier import CONSECUTIVE_FAILURES, SUCCESS_RATE, OutlierDetector
from skein.config.model import OutlierConfig


def detector(keys: list[Hashable] | None = None, **kwargs: object) -> OutlierDetector:
    d = OutlierDetector(OutlierConfig(**kwargs))  # type: ignore[arg-type]
    d.set_endpoints(keys if keys is not None else ["a", "b", "c", "d"], 0.0)
    return d


def fail(d: OutlierDetector, key: Hashable, times: int, now: float) -> list[bool]:
    return [d.record(key, False, now) for _ in range(times)]


def test_consecutive_failures_eject_at_the_threshold() -> None:
    d = detector(consecutive_failures=5)
    assert fail(d, "a", 5, 1.0) == [False, False, False, False, True]
    assert d.ejected() == {"a"}
    assert d.ejections_total == {CONSECUTIVE_FAILURES: 1, SUCCESS_RATE: 0}
    assert d.drain_events() == [
        ("ejected", "a", "5 consecutive failures; ejected 1st time for 30 s, back in 30 s")
    ]


def test_a_success_resets_the_run() -> None:
    d = detector(consecutive_failures=5)
    fail(d, "a", 4, 1.0)
    d.record("a", True, 1.0)
    assert fail(d, "a", 4, 1.0) == [False] * 4
    assert d.ejected() == frozenset()


def test_unknown_endpoints_are_ignored() -> None:
    d = detector()
    assert fail(d, "zz", 50, 1.0) == [False] * 50
    assert d.ejected() == frozenset()
    assert "not an endpoint" in d.why("zz")


def test_ejected_endpoint_returns_when_its_time_is_up_with_a_clean_run() -> None:
    d = detector(consecutive_failures=3, base_ejection_time=30.0, interval=1000.0)
    fail(d, "a", 3, 10.0)
    assert not d.tick(39.9)
    assert d.ejected() == {"a"}
    assert d.next_deadline() == pytest.approx(40.0)
    assert d.tick(40.0)
    assert d.ejected() == frozenset()
    assert d.drain_events()[-1] == (
        "returned",
        "a",
        "back in rotation after 30 s (3 consecutive failures)",
    )
    assert fail(d, "a", 2, 41.0) == [False, False]  # a fresh run, not 3 + 2


def test_late_failures_while_ejected_do_not_carry_over() -> None:
    d = detector(consecutive_failures=3, base_ejection_time=30.0, interval=1000.0)
    fail(d, "a", 3, 10.0)
    assert fail(d, "a", 2, 11.0) == [False, False]  # answers to calls already in flight
    d.tick(40.0)
    assert fail(d, "a", 2, 41.0) == [False, False]
    assert d.ejected() == frozenset()


def test_ejection_time_grows_with_repeats_and_is_capped() -> None:
    d = detector(
        consecutive_failures=1, base_ejection_time=30.0, max_ejection_time=100.0, interval=1e6
    )
    now = 0.0
    durations = []
    for _ in range(6):
        assert fail(d, "a", 1, now) == [True]
        durations.append(d.dump(now)["endpoints"]["a"]["back_in"])
        now += durations[-1]
        assert d.tick(now)
    assert durations == pytest.approx([30.0, 60.0, 90.0, 100.0, 100.0, 100.0])


def test_multiplier_stops_growing_at_the_cap_so_recovery_is_not_delayed() -> None:
    d = detector(
        consecutive_failures=1, base_ejection_time=10.0, max_ejection_time=30.0, interval=10.0
    )
    now = 0.0
    for _ in range(6):  # back-to-back ejections: the multiplier stops at 30 / 10 = 3
        fail(d, "a", 1, now)
        now += d.dump(now)["endpoints"]["a"]["back_in"]
        d.tick(now)
    assert d.dump(now)["endpoints"]["a"]["multiplier"] == 3
    d.tick(now + 10.0)
    d.tick(now + 20.0)  # two sweeps in rotation: 3 -> 1
    fail(d, "a", 1, now + 21.0)
    assert d.dump(now + 21.0)["endpoints"]["a"]["back_in"] == pytest.approx(20.0)


def test_why_counts_ejections_and_time_left() -> None:
    d = detector(consecutive_failures=5, base_ejection_time=30.0, interval=1e6)
    fail(d, "a", 5, 0.0)
    d.tick(30.0)
    fail(d, "a", 5, 40.0)
    assert d.why("a", 59.0) == "5 consecutive failures; ejected 2nd time for 60 s, back in 41 s"
    assert d.why("b") == "in rotation; 0 consecutive failures (ejected at 5)"


def test_time_in_rotation_shrinks_the_next_ejection() -> None:
    d = detector(consecutive_failures=1, base_ejection_time=10.0, interval=10.0)
    fail(d, "a", 1, 0.0)  # multiplier 1
    d.tick(10.0)  # sweep (a still ejected: no decay), then a returns
    fail(d, "a", 1, 10.0)  # multiplier 2: 20 s
    assert d.dump(10.0)["endpoints"]["a"]["back_in"] == pytest.approx(20.0)
    d.tick(30.0)  # returns
    for now in (40.0, 50.0):  # two sweeps in rotation: 2 -> 0
        d.tick(now)
    fail(d, "a", 1, 51.0)
    assert d.dump(51.0)["endpoints"]["a"]["back_in"] == pytest.approx(10.0)


def success_rate_detector(hosts: int, **kwargs: object) -> OutlierDetector:
    config = {
        "consecutive_failures": 1000,
        "interval": 10.0,
        "success_rate_minimum_hosts": 3,
        "success_rate_request_volume": 100,
        "success_rate_stdev_factor": 1.9,
        "max_ejection_percent": 50,
    }
    config.update(kwargs)
    return detector([f"h{i}" for i in range(hosts)], **config)


def serve(d: OutlierDetector, key: str, calls: int, failures: int, now: float) -> None:
    """`calls` results with `failures` spread out (never consecutive runs)."""
    for i in range(calls):
        d.record(key, not (i < 2 * failures and i % 2 == 1), now)


def test_success_rate_ejects_the_outlier_and_not_the_others() -> None:
    d = success_rate_detector(6)
    for i, failures in enumerate([0, 1, 2, 0, 1, 60]):
        serve(d, f"h{i}", 200, failures, 5.0)
    assert not d.tick(9.0)  # not yet an interval
    assert d.tick(10.0)
    assert d.ejected() == {"h5"}
    assert d.ejections_total[SUCCESS_RATE] == 1
    assert d.why("h5").startswith("success rate 70.0% over 200 calls, below ")


def test_success_rate_needs_enough_hosts_with_enough_volume() -> None:
    # With n hosts one outlier sits at most sqrt(n - 1) stdevs below the mean,
    # so the default factor 1.9 needs at least 5 qualifying hosts to eject.
    d = success_rate_detector(6, success_rate_minimum_hosts=5)
    for i in range(5):
        serve(d, f"h{i}", 200, 0, 5.0)
    serve(d, "h5", 200, 50, 5.0)
    assert d.tick(10.0)
    assert d.ejected() == {"h5"}
    e = success_rate_detector(6, success_rate_minimum_hosts=5)
    for i in range(3):
        serve(e, f"h{i}", 200, 0, 5.0)
    serve(e, "h3", 99, 0, 5.0)  # below the request volume: not counted
    serve(e, "h4", 99, 0, 5.0)
    serve(e, "h5", 200, 50, 5.0)
    assert not e.tick(10.0)  # only 4 hosts qualify
    assert e.ejected() == frozenset()


def test_interval_counters_reset_each_sweep() -> None:
    d = success_rate_detector(4)
    for i in range(3):
        serve(d, f"h{i}", 60, 0, 5.0)
    serve(d, "h3", 60, 30, 5.0)
    d.tick(10.0)  # nobody had volume 100 in this interval
    for i in range(3):
        serve(d, f"h{i}", 60, 0, 15.0)
    serve(d, "h3", 60, 30, 15.0)
    assert not d.tick(20.0)  # 120 calls each, but over two intervals
    assert d.ejected() == frozenset()


def test_uniform_hosts_are_not_outliers() -> None:
    d = success_rate_detector(5)
    for i in range(5):
        serve(d, f"h{i}", 200, 10, 5.0)
    assert not d.tick(10.0)


@pytest.mark.parametrize(
    ("hosts", "percent", "most"),
    [(10, 50, 5), (10, 10, 1), (3, 10, 1), (4, 50, 2), (2, 100, 1), (1, 100, 0), (5, 0, 1)],
)
def test_ejected_share_is_capped(hosts: int, percent: int, most: int) -> None:
    keys = [f"h{i}" for i in range(hosts)]
    d = detector(keys, consecutive_failures=1, max_ejection_percent=percent)
    for key in keys:
        fail(d, key, 1, 1.0)
    assert len(d.ejected()) == most
    assert d.ejections_skipped == hosts - most


def test_set_endpoints_keeps_staying_state_and_drops_the_rest() -> None:
    d = detector(["a", "b", "c"], consecutive_failures=3)
    fail(d, "a", 3, 1.0)
    fail(d, "b", 2, 1.0)
    assert not d.set_endpoints(["a", "b", "c", "d"], 2.0)
    assert d.ejected() == {"a"}
    assert fail(d, "b", 1, 2.0) == [True]  # its run of 2 was kept: the 3rd failure ejects
    assert d.ejected() == {"a", "b"}
    d2 = detector(["a", "b", "c", "d"], consecutive_failures=3)
    fail(d2, "a", 3, 1.0)
    assert d2.set_endpoints(["b", "c"], 2.0)  # an ejected endpoint left
    assert d2.ejected() == frozenset()
    assert not d2.set_endpoints(["a", "b", "c"], 3.0)
    assert d2.dump(3.0)["endpoints"]["a"]["ejections"] == 0  # came back as new


def test_disabled_detector_never_ejects() -> None:
    d = detector(enabled=False, consecutive_failures=1)
    assert fail(d, "a", 100, 1.0) == [False] * 100
    assert not d.tick(1000.0)
    assert d.ejected() == frozenset()
    assert d.why("a") == "outlier detection is disabled"
    assert d.next_deadline() == float("inf")


def test_dump_lists_every_endpoint() -> None:
    d = detector(consecutive_failures=2)
    fail(d, "a", 2, 1.0)
    dump = d.dump(11.0)
    assert dump["ejected"] == 1
    assert dump["endpoints"]["a"]["state"] == "ejected"
    assert dump["endpoints"]["a"]["back_in"] == pytest.approx(20.0)
    assert dump["endpoints"]["b"] == {
        "state": "active",
        "consecutive": 0,
        "ejections": 0,
        "multiplier": 0,
        "until": None,
        "back_in": None,
        "interval_calls": 0,
        "interval_successes": 0,
        "why": "in rotation; 0 consecutive failures (ejected at 2)",
    }


ops = st.lists(
    st.one_of(
        st.tuples(st.just("record"), st.integers(0, 7), st.booleans()),
        st.tuples(st.just("tick"), st.integers(0, 40), st.just(False)),
        st.tuples(st.just("endpoints"), st.integers(1, 8), st.just(False)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=ops,
    percent=st.integers(0, 100),
    threshold=st.integers(1, 4),
    base=st.sampled_from([1.0, 5.0, 30.0]),
    cap=st.sampled_from([1.0, 10.0, 60.0]),
)
def test_invariants_hold_under_random_traffic(
    ops: list[tuple[str, int, bool]], percent: int, threshold: int, base: float, cap: float
) -> None:
    d = OutlierDetector(
        OutlierConfig(
            consecutive_failures=threshold,
            interval=5.0,
            base_ejection_time=base,
            max_ejection_time=cap,
            max_ejection_percent=percent,
            success_rate_minimum_hosts=2,
            success_rate_request_volume=3,
        )
    )
    keys = list(range(8))
    d.set_endpoints(keys, 0.0)
    now = 0.0
    for op, arg, ok in ops:
        before = d.ejected()
        if op == "record":
            changed = d.record(arg, ok, now)
        elif op == "tick":
            now += arg / 4
            changed = d.tick(now)
        else:
            keys = list(range(arg))
            changed = d.set_endpoints(keys, now)
        ejected = d.ejected()
        assert changed == (ejected != before)
        assert ejected <= set(keys)
        if op == "record" and changed:
            # A new ejection respects the cap: the share, at least one of >= 2, never all.
            allowed = max(len(keys) * percent // 100, 1 if len(keys) >= 2 else 0)
            assert len(ejected) <= min(allowed, len(keys) - 1)
        if op == "tick":
            for key in ejected:
                left = d.dump(now)["endpoints"][str(key)]["back_in"]
                assert 0 < left <= max(base, cap)
