"""Sans-IO parts of `skein demo`: the live summary's statistics and the health codec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from examples.shop.health import parse_service_name
from examples.shop.stats import Recorder, percentile, render
from skein.clock import ManualClock


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def health_request(name: str) -> bytes:
    raw = name.encode()
    return b"\x0a" + varint(len(raw)) + raw


@given(st.text(max_size=300))
def test_health_request_name_round_trips(name: str) -> None:
    assert parse_service_name(health_request(name)) == name


@given(st.text(max_size=40), st.integers(0, 2**40))
def test_unknown_fields_are_skipped(name: str, other: int) -> None:
    request = b"\x10" + varint(other) + health_request(name) + b"\x1a\x02ok"
    assert parse_service_name(request) == name


def test_empty_request_is_the_server() -> None:
    assert parse_service_name(b"") == ""


@pytest.mark.parametrize("bad", [b"\x0a\x05abc", b"\x0a", b"\x08\xff", b"\x0b"])
def test_malformed_requests_raise(bad: bytes) -> None:
    with pytest.raises(ValueError):
        parse_service_name(bad)


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200), st.sampled_from([50, 90, 99]))
def test_percentile_is_nearest_rank(values: list[float], q: int) -> None:
    values.sort()
    p = percentile(values, q)
    assert p in values
    assert sum(v <= p for v in values) >= q / 100 * len(values)
    assert sum(v < p for v in values) < q / 100 * len(values)


def test_percentile_of_nothing_is_zero() -> None:
    assert percentile([], 99) == 0.0


def test_recorder_rate_window_and_errors() -> None:
    clock = ManualClock(100.0)
    rec = Recorder(clock, ["users", "orders"], window=5.0)
    for i in range(10):
        rec.record("users", float(i + 1), True)
        clock.advance(0.1)
    rec.record("orders", 0.0, False, "UNAVAILABLE: no endpoints")
    users, orders = rec.rows()
    assert (users.rps, users.total, users.errors) == (10.0, 10, 0)
    assert (users.p50_ms, users.p99_ms) == (5.0, 10.0)
    assert (orders.total, orders.errors, orders.p50_ms) == (1, 1, 0.0)
    assert list(rec.last_errors) == ["orders: UNAVAILABLE: no endpoints"]

    clock.advance(2.0)  # nothing in the last second; still in the 5 s window
    users = rec.rows()[0]
    assert users.rps == 0.0 and users.p99_ms == 10.0
    clock.advance(5.0)  # out of the window: totals stay, latencies go
    users = rec.rows()[0]
    assert (users.total, users.p50_ms) == (10, 0.0)
    assert (rec.total_calls, rec.total_errors) == (11, 1)


def test_recorder_adds_unknown_services() -> None:
    rec = Recorder(ManualClock(), [])
    rec.record("inventory", 2.0, True)
    assert [r.service for r in rec.rows()] == ["inventory"]


def test_render_has_fixed_width_rows() -> None:
    clock = ManualClock()
    rec = Recorder(clock, ["users", "products"])
    rec.record("users", 1.25, True)
    lines = render(rec.rows(), 3.0)
    assert lines[1].split() == ["SERVICE", "REQ/S", "CALLS", "ERRORS", "P50", "MS", "P99", "MS"]
    assert lines[2].split() == ["users", "1", "1", "0", "1.25", "1.25"]
    assert len({len(line) for line in lines[1:]}) == 1
