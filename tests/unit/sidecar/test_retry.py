"""Retry conditions match Envoy's retry_on; backoff stays in bounds; pushback parses as gRFC A6."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.policy.retry import RetryRule, parse_pushback
from sidecar.transport.contract import (
    FAIL_CONNECT,
    FAIL_GRPC,
    FAIL_HTTP,
    FAIL_PER_TRY_TIMEOUT,
    FAIL_REFUSED,
    FAIL_RESET,
)
from skein.config.model import RETRY_ON_GRPC, RetryConfig

NO_ANSWER = (FAIL_CONNECT, FAIL_REFUSED, FAIL_RESET, FAIL_PER_TRY_TIMEOUT)


def rule(*retry_on: str) -> RetryRule:
    return RetryRule(RetryConfig(retry_on=retry_on))


def test_defaults_retry_unavailable_and_unprocessed_requests_only() -> None:
    r = RetryRule(RetryConfig())
    assert r.retriable(FAIL_GRPC, 14)
    assert r.retriable(FAIL_CONNECT, 0)
    assert r.retriable(FAIL_REFUSED, 0)
    assert not r.retriable(FAIL_RESET, 2)
    assert not r.retriable(FAIL_PER_TRY_TIMEOUT, 0)
    assert not r.retriable(FAIL_GRPC, 13)
    assert not r.retriable(FAIL_HTTP, 503)
    assert (r.max_attempts, r.per_try_timeout, r.buffer_limit) == (3, None, 65536)


@pytest.mark.parametrize(("name", "code"), sorted(RETRY_ON_GRPC.items()))
def test_each_grpc_name_matches_its_status_and_no_other(name: str, code: int) -> None:
    r = rule(name)
    assert [c for c in range(17) if r.retriable(FAIL_GRPC, c)] == [code]
    # A gRPC name never matches an HTTP status or a transport failure, except
    # deadline-exceeded, which covers the local per-try timeout.
    assert not any(r.retriable(FAIL_HTTP, s) for s in range(100, 600))
    timeouts = [f for f in NO_ANSWER if r.retriable(f, 0)]
    assert timeouts == ([FAIL_PER_TRY_TIMEOUT] if name == "deadline-exceeded" else [])


def test_5xx_covers_every_5xx_and_every_unanswered_attempt() -> None:
    r = rule("5xx")
    assert [s for s in range(100, 700) if r.retriable(FAIL_HTTP, s)] == list(range(500, 600))
    assert all(r.retriable(f, 0) for f in NO_ANSWER)
    assert not r.retriable(FAIL_GRPC, 14)


def test_gateway_error_covers_502_503_504_and_unanswered_attempts() -> None:
    r = rule("gateway-error")
    assert [s for s in range(100, 700) if r.retriable(FAIL_HTTP, s)] == [502, 503, 504]
    assert all(r.retriable(f, 0) for f in NO_ANSWER)


def test_retriable_4xx_is_409_only() -> None:
    r = rule("retriable-4xx")
    assert [s for s in range(100, 700) if r.retriable(FAIL_HTTP, s)] == [409]
    assert not any(r.retriable(f, 0) for f in NO_ANSWER)


@pytest.mark.parametrize(
    ("name", "covered"),
    [
        ("connect-failure", {FAIL_CONNECT}),
        ("refused-stream", {FAIL_REFUSED}),
        ("reset", {FAIL_RESET, FAIL_PER_TRY_TIMEOUT}),
    ],
)
def test_transport_conditions_cover_their_failure(name: str, covered: set[int]) -> None:
    r = rule(name)
    assert {f for f in NO_ANSWER if r.retriable(f, 0)} == covered
    assert not any(r.retriable(FAIL_HTTP, s) for s in range(100, 600))
    assert not any(r.retriable(FAIL_GRPC, c) for c in range(17))


@pytest.mark.parametrize("name", ["reset", "5xx", "gateway-error", "deadline-exceeded"])
def test_per_try_timeout_is_retriable_under_each_timeout_condition(name: str) -> None:
    assert rule(name).retriable(FAIL_PER_TRY_TIMEOUT, 0)
    assert not rule("connect-failure", "refused-stream", "unavailable").retriable(
        FAIL_PER_TRY_TIMEOUT, 0
    )


def test_conditions_combine() -> None:
    r = rule("retriable-4xx", "internal", "connect-failure")
    assert r.retriable(FAIL_HTTP, 409)
    assert r.retriable(FAIL_GRPC, 13)
    assert r.retriable(FAIL_CONNECT, 0)
    assert not r.retriable(FAIL_HTTP, 500)
    assert not r.retriable(FAIL_RESET, 0)


def test_nothing_is_retriable_with_no_conditions() -> None:
    r = rule()
    assert not any(r.retriable(f, c) for f in range(1, 7) for c in (0, 2, 14, 409, 503))


def test_unknown_condition_is_a_bug_that_names_the_condition() -> None:
    with pytest.raises(ValueError, match="'teapot'"):
        rule("teapot")


def test_compiles_timeouts_and_buffer_limit() -> None:
    r = RetryRule(RetryConfig(max_attempts=5, per_try_timeout=0.5, max_buffer_bytes=1024))
    assert (r.max_attempts, r.per_try_timeout, r.buffer_limit) == (5, 0.5, 1024)
    assert r.dump()["retry_on"] == ["connect-failure", "refused-stream", "unavailable"]
    assert "up to 5 attempts" in r.describe()


@given(
    base=st.floats(0.001, 1.0),
    factor=st.floats(1.0, 100.0),
    attempts=st.integers(1, 500),
    seed=st.integers(0, 2**32),
)
def test_backoff_stays_within_full_jitter_bounds(
    base: float, factor: float, attempts: int, seed: int
) -> None:
    cap = base * factor
    r = RetryRule(RetryConfig(base_interval=base, max_interval=cap))
    ceiling = min(cap, base * 2.0 ** min(attempts - 1, 64))
    delay = r.backoff(attempts, random.Random(seed))
    assert 0.0 <= delay <= ceiling <= cap


def test_backoff_ceiling_doubles_then_caps() -> None:
    r = RetryRule(RetryConfig(base_interval=0.025, max_interval=0.25))
    rng = random.Random(7)
    highest = [max(r.backoff(n, rng) for _ in range(400)) for n in range(1, 7)]
    # Each ceiling is approached (full jitter reaches near the top) and not passed.
    for got, ceiling in zip(highest, [0.025, 0.05, 0.1, 0.2, 0.25, 0.25], strict=True):
        assert ceiling * 0.95 <= got <= ceiling


def test_backoff_is_spread_not_fixed() -> None:
    r = RetryRule(RetryConfig(base_interval=1.0, max_interval=1.0))
    rng = random.Random(1)
    delays = [r.backoff(1, rng) for _ in range(200)]
    assert min(delays) < 0.1 and max(delays) > 0.9


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"0", 0.0),
        (b"1", 0.001),
        (b"250", 0.25),
        (b"1500", 1.5),
        (b"007", 0.007),
        (b"-1", -1.0),
        (b"-250", -1.0),
        (b"", -1.0),
        (b"abc", -1.0),
        (b"1.5", -1.0),
        (b" 100", -1.0),
        (b"100 ", -1.0),
        (b"+100", -1.0),
        (b"1_000", -1.0),
        ("١٢".encode(), -1.0),  # non-ASCII digits are not milliseconds
    ],
)
def test_parse_pushback(value: bytes, seconds: float) -> None:
    assert parse_pushback(value) == pytest.approx(seconds)


def test_parse_pushback_absurd_values_stay_finite_and_huge() -> None:
    for value in (b"9" * 14, b"9" * 5000):
        got = parse_pushback(value)
        assert got == 1e9


@given(st.binary(max_size=20))
def test_parse_pushback_never_raises(value: bytes) -> None:
    got = parse_pushback(value)
    assert got == -1.0 or got >= 0.0
