"""HealthTracker: Envoy-style thresholds, the decisive first check, reasons."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sidecar.health.state import HealthTracker
from skein.config.model import HealthCheckConfig


def tracker(healthy: int = 2, unhealthy: int = 3) -> HealthTracker:
    return HealthTracker(
        HealthCheckConfig(healthy_threshold=healthy, unhealthy_threshold=unhealthy)
    )


def test_starts_healthy_and_a_first_pass_changes_nothing() -> None:
    t = tracker()
    assert t.healthy and t.reason == "no check has failed yet"
    assert not t.record(True, "SERVING", 1.0)
    assert t.healthy and t.changed_at is None


def test_first_check_failing_decides_at_once() -> None:
    t = tracker(unhealthy=3)
    assert t.record(False, "UNAVAILABLE: cannot connect: Connection refused", 1.0)
    assert not t.healthy
    assert t.reason == "first check failed: UNAVAILABLE: cannot connect: Connection refused"
    assert t.changed_at == 1.0


def test_unhealthy_after_threshold_failures_in_a_row() -> None:
    t = tracker(unhealthy=3)
    t.record(True, "SERVING", 0.0)
    assert not t.record(False, "NOT_SERVING", 1.0)
    assert not t.record(False, "NOT_SERVING", 2.0)
    assert t.record(False, "connection refused", 3.0)
    assert not t.healthy
    assert t.reason == "3 checks in a row failed: connection refused"
    assert not t.record(False, "connection refused", 4.0)  # already unhealthy


def test_a_pass_resets_the_failure_run() -> None:
    t = tracker(unhealthy=2)
    t.record(True, "SERVING", 0.0)
    t.record(False, "NOT_SERVING", 1.0)
    t.record(True, "SERVING", 2.0)
    assert not t.record(False, "NOT_SERVING", 3.0)
    assert t.healthy


def test_healthy_again_after_threshold_passes() -> None:
    t = tracker(healthy=2)
    t.record(False, "NOT_SERVING", 0.0)
    assert not t.record(True, "SERVING", 1.0)
    assert not t.healthy
    assert t.record(True, "SERVING", 2.0)
    assert t.healthy and t.reason == "2 checks in a row passed"


def test_one_pass_reason_is_singular() -> None:
    t = tracker(healthy=1, unhealthy=1)
    t.record(True, "SERVING", 0.0)
    assert t.record(False, "HTTP 503", 1.0)
    assert t.reason == "1 check failed: HTTP 503"
    assert t.record(True, "HTTP 200", 2.0)
    assert t.reason == "1 check passed"


def test_update_keeps_the_verdict_and_applies_new_thresholds_next() -> None:
    t = tracker(healthy=3)
    t.record(False, "NOT_SERVING", 0.0)
    t.record(True, "SERVING", 1.0)
    t.update(HealthCheckConfig(healthy_threshold=1, unhealthy_threshold=3, interval=1.0))
    assert not t.healthy  # update alone changes nothing
    assert t.record(True, "SERVING", 2.0)  # two passes in a row now meet the new threshold
    assert t.reason == "2 checks in a row passed"


def test_dump_says_what_the_last_check_saw() -> None:
    t = tracker()
    t.record(True, "SERVING", 0.0)
    t.record(False, "DEADLINE_EXCEEDED: deadline of 1s exceeded", 1.0)
    dump = t.dump()
    assert dump["healthy"] is True
    assert dump["last_result"] == "fail"
    assert dump["failures_in_a_row"] == 1 and dump["checks"] == 2
    assert dump["last_detail"].startswith("DEADLINE_EXCEEDED")


@given(
    healthy_threshold=st.integers(1, 5),
    unhealthy_threshold=st.integers(1, 5),
    results=st.lists(st.booleans(), max_size=60),
)
def test_verdict_flips_only_after_a_threshold_run(
    healthy_threshold: int, unhealthy_threshold: int, results: list[bool]
) -> None:
    """Apart from a failing first check, a flip needs exactly `threshold` equal results in a row,
    and a run that long always flips a verdict that differs."""
    t = tracker(healthy_threshold, unhealthy_threshold)
    run_value: bool | None = None
    run = 0
    for i, ok in enumerate(results):
        before = t.healthy
        run = run + 1 if ok == run_value else 1
        run_value = ok
        threshold = healthy_threshold if ok else unhealthy_threshold
        flipped = t.record(ok, "detail", float(i))
        assert flipped == (t.healthy != before)
        if flipped:
            assert t.healthy == ok  # only a pass heals, only a failure hurts
            assert t.changed_at == float(i)
            if i == 0:
                assert t.reason == "first check failed: detail"
            else:
                assert run == threshold
                verb = "passed" if ok else "failed"
                assert t.reason.startswith(f"{run} check{'s in a row' if run > 1 else ''} {verb}")
        elif before != ok:
            assert i > 0 and run < threshold  # a run too short keeps the verdict
