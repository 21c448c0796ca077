from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.accesslog import AccessLog, request_fields


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


@dataclass
class Finished:
    headers: list[tuple[bytes, bytes]] = field(
        default_factory=lambda: [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/shop.v1.Orders/Place"),
            (b":authority", b"orders"),
            (b"content-type", b"application/grpc"),
            (b":path", b"/not-a-pseudo-any-more"),
        ]
    )
    cluster: str = "orders"
    started_at: float = 100.0
    detail: str = ""
    is_grpc: bool = True
    grpc_status: int = 14
    http_status: int = 200
    attempts: int = 1


def test_a_logged_stream_names_route_status_and_duration() -> None:
    recorder = Recorder()
    clock = iter([100.0123456]).__next__
    log = AccessLog(1.0, recorder, listener="outbound", rng=random.Random(1), clock=clock)
    assert log.sampled()
    log.write(Finished(), "127.0.0.1:9003")
    event, fields = recorder.lines[0]
    assert event == "access"
    assert fields == {
        "listener": "outbound",
        "cluster": "orders",
        "upstream": "127.0.0.1:9003",
        "duration_ms": 12.346,
        "method": "POST",
        "path": "/shop.v1.Orders/Place",
        "authority": "orders",
        "grpc_status": 14,
    }


def test_plain_http_logs_the_http_status() -> None:
    recorder = Recorder()
    log = AccessLog(1.0, recorder, listener="inbound", rng=random.Random(1), clock=lambda: 101.0)
    log.write(Finished(is_grpc=False, grpc_status=-1, http_status=503, detail="no route"), "-")
    fields = recorder.lines[0][1]
    assert (fields["http_status"], fields["detail"], fields["duration_ms"]) == (
        503,
        "no route",
        1000.0,
    )
    assert "grpc_status" not in fields
    assert "attempts" not in fields  # one attempt: nothing to say


def test_a_retried_call_logs_its_attempts() -> None:
    recorder = Recorder()
    log = AccessLog(1.0, recorder, listener="outbound", rng=random.Random(1), clock=lambda: 101.0)
    log.write(Finished(grpc_status=0, attempts=3), "127.0.0.1:9003")
    assert recorder.lines[0][1]["attempts"] == 3


def test_off_never_samples_and_never_draws() -> None:
    rng = random.Random(7)
    state = rng.getstate()
    log = AccessLog(0.0, Recorder(), listener="x", rng=rng, clock=lambda: 0.0)
    assert not any(log.sampled() for _ in range(1000))
    assert rng.getstate() == state


@given(st.floats(min_value=0.05, max_value=0.95), st.integers(0, 2**32))
def test_sampled_share_converges_to_the_rate(rate: float, seed: int) -> None:
    log = AccessLog(rate, Recorder(), listener="x", rng=random.Random(seed), clock=lambda: 0.0)
    draws = 4000
    share = sum(log.sampled() for _ in range(draws)) / draws
    assert abs(share - rate) < 0.05


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rates_outside_zero_one_are_rejected(rate: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AccessLog(rate, Recorder(), listener="x", rng=random.Random(0), clock=lambda: 0.0)


def test_request_fields_reads_only_the_pseudo_headers() -> None:
    assert request_fields([(b"x-path", b"/no"), (b":path", b"/late")]) == {
        "method": "",
        "path": "",
        "authority": "",
    }
