"""grpc-timeout parsing/formatting: exact values, errors, and round-trip properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.transport.deadline import (
    GrpcTimeoutError,
    effective_timeout,
    format_grpc_timeout,
    parse_grpc_timeout,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1240m", 1.24),
        (b"30100m", 30.1),
        (b"5S", 5.0),
        (b"2M", 120.0),
        (b"1H", 3600.0),
        (b"250u", 0.00025),
        (b"99999999n", 0.099999999),
        (b"0S", 0.0),
    ],
)
def test_parse(value: bytes, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (b"", "1-8 digits"),
        (b"S", "1-8 digits"),
        (b"123456789S", "1-8 digits"),
        (b"10x", "unknown unit 'x'"),
        (b"1.5S", "not a decimal number"),
        (b"-1S", "not a decimal number"),
    ],
)
def test_parse_rejects_with_a_reason(value: bytes, fragment: str) -> None:
    with pytest.raises(GrpcTimeoutError, match=fragment):
        parse_grpc_timeout(value)


def test_format_examples() -> None:
    assert format_grpc_timeout(0.05) == b"50000000n"
    assert format_grpc_timeout(1.234) == b"1234000u"
    assert format_grpc_timeout(1000.0) == b"1000000m"
    assert format_grpc_timeout(0) == b"1n"
    assert format_grpc_timeout(-3) == b"1n"
    assert format_grpc_timeout(10**12) == b"99999999H"


@given(st.floats(min_value=1e-9, max_value=1e8, allow_nan=False))
def test_format_never_rounds_down_and_parses_back(seconds: float) -> None:
    value = format_grpc_timeout(seconds)
    assert 2 <= len(value) <= 9
    parsed = parse_grpc_timeout(value)
    assert parsed >= seconds * (1 - 1e-12)
    # the finest fitting unit keeps the error below one part in 10^5 (or 1 ns)
    assert parsed - seconds <= max(seconds * 1e-5, 1e-9) + 1e-12


@given(
    st.one_of(st.none(), st.floats(0, 1e6)),
    st.one_of(st.none(), st.floats(0, 1e6)),
)
def test_effective_timeout_is_the_tighter_one(caller: float | None, policy: float | None) -> None:
    result = effective_timeout(caller, policy)
    present = [x for x in (caller, policy) if x is not None]
    assert result == (min(present) if present else None)
