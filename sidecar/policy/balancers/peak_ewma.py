"""PEAK_EWMA: power of two choices over estimated latency x load (Linkerd, Finagle).

cost = rtt x (in_flight + 1), where rtt is the slot's peak-EWMA latency
(see `EndpointSlot._observe`: peaks taken at once, fading with time constant
`LoadBalancerConfig.decay`, default 10 s as Linkerd; failures penalised).

Before its first sample an endpoint costs nothing while idle and loses to any
sampled one while its first call is in flight (Finagle's rule). Linkerd
instead starts it at 30 ms, which at low load keeps it out until the others'
estimates exceed that: behind 1 ms endpoints, a new one would wait half a
minute for its first call.

Invariants:
- two distinct candidates are drawn, in proportion to weight (uniformly when
  weights are equal, see least_request.py), and the cheaper one wins, ties to
  the first draw; `avoid` takes the other of the pair. Weights thus only bias
  the draws: at equal latency the one sampled longer ago has faded further
  and wins, so shares drift toward even (Linkerd has no weights here at all).
- no clock at pick time: both estimates fade by the same factor between their
  samples and the pick, so comparing them needs only the gap between their own
  sample times (one exp() per pick). An estimate without a sample does not fade.
"""

from __future__ import annotations

from math import exp, inf

from sidecar.policy.balancers.base import Balancer
from sidecar.policy.balancers.least_request import PowerOfTwoBalancer
from sidecar.policy.balancers.slot import EndpointSlot
from skein.config.model import Algorithm

__all__ = ["DEFAULT_DECAY", "PeakEwmaBalancer"]

DEFAULT_DECAY = 10.0  # Linkerd's; used if the config carries no positive decay


class PeakEwmaBalancer(PowerOfTwoBalancer):
    __slots__ = ("_tau",)

    algorithm = Algorithm.PEAK_EWMA

    def _latency_decay(self) -> float:
        decay = self.config.decay
        return decay if decay > 0.0 else DEFAULT_DECAY

    def _reshape(self, previous: Balancer | None) -> None:
        # Kept here, not read from the slots: a balancer built after this one
        # may share the slots and switch their tracking off.
        self._tau = self._latency_decay()

    def _prefer(self, a: EndpointSlot, b: EndpointSlot) -> EndpointSlot:
        """The lower cost: latency estimate x (outstanding + 1), both estimates faded
        to the later of their sample times, so no clock is read on the hot path."""
        stamp_a = a.stamp
        stamp_b = b.stamp
        if stamp_a < 0.0 or stamp_b < 0.0:
            return _unsampled(a, b, stamp_a, stamp_b)
        cost_a = a.rtt * (a.in_flight + 1)
        cost_b = b.rtt * (b.in_flight + 1)
        if stamp_a > stamp_b:
            cost_b *= exp((stamp_b - stamp_a) / self._tau)
        elif stamp_b > stamp_a:
            cost_a *= exp((stamp_a - stamp_b) / self._tau)
        return b if cost_b < cost_a else a

    def cost(self, slot: EndpointSlot, now: float) -> float:
        """The slot's cost as a pick at `now` would weigh it (for dumps and tests)."""
        if slot.stamp < 0.0:
            return 0.0 if slot.in_flight == 0 else inf
        rtt = slot.rtt
        if now > slot.stamp:
            rtt *= exp((slot.stamp - now) / self._tau)
        return rtt * (slot.in_flight + 1)


def _unsampled(a: EndpointSlot, b: EndpointSlot, stamp_a: float, stamp_b: float) -> EndpointSlot:
    """Between a pair one of which has no latency sample yet: one probe at a time.

    An endpoint without a sample is free while idle and out of the running
    while its probe is in flight (Finagle), so a new endpoint is tried at
    once but not flooded before its first answer.
    """
    if stamp_a < 0.0 and stamp_b < 0.0:
        return b if b.in_flight < a.in_flight else a
    if stamp_a < 0.0:
        return a if a.in_flight == 0 else b
    return b if b.in_flight == 0 else a
