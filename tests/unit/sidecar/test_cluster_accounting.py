"""The cluster's books balance whatever happens between a call's attempts, as a property.

Calls start, fail, are retried (through `decide` and `repick`, as the transport drives
them), end, and pushes change endpoints, methods, algorithm, breaker and outlier
settings in between. Once every call has ended, nothing may remain counted: the
cluster's in_flight and retries_in_flight, every endpoint slot's in_flight (old slots
included), and a half-open breaker's trial permits. Time is a ManualClock.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.cluster import UpstreamCluster
from sidecar.policy.balancer import EndpointSlot
from sidecar.transport.contract import FAIL_CONNECT, NoRoute, Pick
from skein.clock import ManualClock
from skein.config.model import (
    Algorithm,
    BreakerConfig,
    ClusterConfig,
    EndpointConfig,
    LoadBalancerConfig,
    MethodConfig,
    OutlierConfig,
    RetryConfig,
)

PATHS = ("/shop.Orders/Place", "/shop.Orders/Get", "/shop.Users/Get")
EPS = tuple(EndpointConfig(f"o{i}", "127.0.0.1", 9000 + i) for i in range(4))
BREAKERS = (
    BreakerConfig(minimum_requests=2, window=10.0, open_duration=5.0, half_open_max_calls=2,
                  success_threshold=2, max_requests=6, max_retries=3),
    BreakerConfig(minimum_requests=3, window=10.0, open_duration=3.0, half_open_max_calls=1,
                  success_threshold=1),
)  # fmt: skip
OUTLIERS = (
    OutlierConfig(consecutive_failures=2, max_ejection_percent=100, base_ejection_time=4.0),
    OutlierConfig(enabled=False),
)
METHODS = (
    (),
    (MethodConfig("/shop.Orders/", timeout=5.0),),
    (
        MethodConfig("/shop.Orders/Place", retry=RetryConfig(max_attempts=4)),
        MethodConfig("/shop.Orders/", timeout=2.0),
    ),
)
ALGORITHMS = (Algorithm.ROUND_ROBIN, Algorithm.LEAST_REQUEST, Algorithm.PEAK_EWMA)


def variant(endpoints: int, methods: int, breaker: int, outlier: int, algo: int) -> ClusterConfig:
    chosen = tuple(ep for i, ep in enumerate(EPS) if endpoints >> i & 1)
    return ClusterConfig(
        "orders",
        endpoints=chosen,
        methods=METHODS[methods],
        breaker=BREAKERS[breaker],
        outlier=OUTLIERS[outlier],
        load_balancer=LoadBalancerConfig(ALGORITHMS[algo]),
        retry=RetryConfig(max_attempts=3, retry_on=("connect-failure", "unavailable")),
    )


configs = st.builds(
    variant,
    st.integers(0, 15),
    st.integers(0, len(METHODS) - 1),
    st.integers(0, len(BREAKERS) - 1),
    st.integers(0, len(OUTLIERS) - 1),
    st.integers(0, len(ALGORITHMS) - 1),
)
ops = st.one_of(
    st.tuples(st.just("start"), st.integers(0, len(PATHS) - 1)),
    st.tuples(st.just("ok"), st.integers(0, 63)),
    st.tuples(st.just("fail"), st.integers(0, 63)),
    st.tuples(st.just("resume"), st.integers(0, 63)),
    st.tuples(st.just("cancel"), st.integers(0, 63)),
    st.tuples(st.just("push"), configs),
    st.tuples(st.just("time"), st.floats(0.0, 4.0)),
)


class Call:
    """What the transport keeps of one call: its current pick, retrier, retry slot."""

    def __init__(self, pick: Pick) -> None:
        self.pick = pick
        self.retry = pick.retry
        self.attempts = 1
        self.attempt_open = True  # done() not yet called for the current attempt
        self.slot = False  # holds a retry slot
        self.backoff = False  # waiting to repick


class Model:
    def __init__(self, first: ClusterConfig) -> None:
        self.clock = ManualClock(1000.0)
        self.cluster = UpstreamCluster(first, now=self.clock.now, rng=random.Random(7))
        self.calls: list[Call] = []
        self.slots: dict[int, EndpointSlot] = {}
        self._remember_slots()

    def _remember_slots(self) -> None:
        for slot in self.cluster.balancer.slots:
            self.slots[id(slot)] = slot

    def _end_attempt(self, call: Call, ok: bool) -> None:
        assert call.attempt_open and call.pick.done is not None
        call.attempt_open = False
        call.pick.done(ok, self.clock.now(), 0.001)

    def _finish(self, call: Call, ok: bool) -> None:
        if call.attempt_open:
            self._end_attempt(call, ok)
        if call.slot:
            call.slot = False
            assert call.retry is not None
            call.retry.retry_done()
        self.calls.remove(call)

    def step(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "start":
            try:
                pick = self.cluster.pick(PATHS[op[1]], (), "")
            except NoRoute:
                return
            self.calls.append(Call(pick))
            return
        if kind == "push":
            self.cluster.reconfigure(op[1])
            self._remember_slots()
            return
        if kind == "time":
            self.clock.advance(op[1])
            self.cluster.tick()
            return
        if not self.calls:
            return
        call = self.calls[op[1] % len(self.calls)]
        if kind == "cancel" or (kind == "ok" and call.attempt_open):
            self._finish(call, True)
        elif kind == "fail" and call.attempt_open:
            self._fail(call)
        elif kind == "resume" and call.backoff:
            self._resume(call)

    def _fail(self, call: Call) -> None:
        retry = call.retry
        assert retry is not None
        if call.slot:
            call.slot = False
            retry.retry_done()
        answer = retry.decide(call.attempts, FAIL_CONNECT, 0, None)
        if isinstance(answer, str):
            self._finish(call, False)
            return
        self._end_attempt(call, False)
        call.slot = True
        call.backoff = True

    def _resume(self, call: Call) -> None:
        call.backoff = False
        assert call.retry is not None
        try:
            pick = call.retry.repick(call.pick)
        except NoRoute:
            self._finish(call, True)
            return
        call.pick = pick
        call.attempts += 1
        call.attempt_open = True

    def drain(self) -> None:
        for call in list(self.calls):
            self._finish(call, True)


@settings(max_examples=300, deadline=None)
@given(configs, st.lists(ops, max_size=80))
def test_every_count_returns_to_zero(first: ClusterConfig, steps: list[tuple[Any, ...]]) -> None:
    model = Model(first)
    for op in steps:
        model.step(op)
        cluster = model.cluster
        open_attempts = sum(1 for call in model.calls if call.attempt_open)
        assert cluster.in_flight == open_attempts
        assert cluster.retries_in_flight == sum(1 for call in model.calls if call.slot)
        assert sum(slot.in_flight for slot in model.slots.values()) == open_attempts
    model.drain()
    cluster = model.cluster
    assert cluster.in_flight == 0 and cluster.retries_in_flight == 0
    assert all(slot.in_flight == 0 for slot in model.slots.values())
    breaker = cluster.breaker.dump(model.clock.now())
    assert breaker["trials_in_flight"] == 0
