"""One endpoint's live state inside a balancer, and its peak-EWMA latency estimate.

Invariants:
- `done` is bound once at construction, so releasing an attempt allocates nothing;
  it is called exactly once per `acquire` that returned this slot.
- `in_flight` counts acquired attempts whose `done` has not run yet; `requests`
  and `failures` only grow.
- the latency estimate (`rtt`, `stamp`) is updated only while `decay` > 0 (the
  owning balancer is PEAK_EWMA); it survives balancer rebuilds with the slot.
- `observer` runs after the slot's own accounting, so it sees the updated counts.
"""

from __future__ import annotations

from collections.abc import Callable
from math import exp
from typing import Any

from skein.config.model import EndpointConfig

__all__ = [
    "DEFAULT_RTT",
    "FAILURE_PENALTY_CAP",
    "EndpointSlot",
    "SlotKey",
    "slot_key",
]

SlotKey = tuple[str, str, int]  # (instance, host, port)

# Linkerd's default estimate: the base of the failure penalty when a slot has
# no sample, or its estimate has faded to almost nothing.
DEFAULT_RTT = 0.030
# A failed call counts at least twice the current estimate, up to this much
# (Linkerd's load biaser injects a flat 5 s for failures; see `_observe`).
FAILURE_PENALTY_CAP = 5.0


def slot_key(endpoint: EndpointConfig) -> SlotKey:
    return endpoint.instance, endpoint.host, endpoint.port


class EndpointSlot:
    """One endpoint's counters; `route` and `observer` belong to the balancer's owner."""

    __slots__ = (
        "decay",
        "done",
        "endpoint",
        "failures",
        "in_flight",
        "key",
        "observer",
        "requests",
        "route",
        "rtt",
        "stamp",
    )

    def __init__(self, endpoint: EndpointConfig) -> None:
        self.endpoint = endpoint
        self.key: SlotKey = slot_key(endpoint)
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.route: Any = None
        self.observer: Callable[[EndpointSlot, bool, float, float], None] | None = None
        self.rtt = DEFAULT_RTT  # seconds, as of `stamp`
        self.stamp = -1.0  # loop time of the last sample; negative: none yet
        self.decay = 0.0  # seconds; 0 turns latency tracking off
        self.done: Callable[[bool, float, float], None] = self._done

    def _done(self, ok: bool, now: float, elapsed: float) -> None:
        self.in_flight -= 1
        if not ok:
            self.failures += 1
        if self.decay > 0.0:
            self._observe(ok, now, elapsed)
        observer = self.observer
        if observer is not None:
            observer(self, ok, now, elapsed)

    def _observe(self, ok: bool, now: float, elapsed: float) -> None:
        """Fold one attempt's latency into the peak-EWMA estimate.

        Between samples the estimate fades toward zero with time constant
        `decay` (what a pick sees, so an endpoint nobody calls is tried again
        eventually, as in Finagle and tower). A sample above the faded value
        replaces it at once (the peak); a lower one pulls it down by the weight
        of the gap since the last sample, 1 - exp(-gap / decay), so the signal
        averages over about `decay` seconds whatever the request rate. The
        first sample replaces the 30 ms default outright.

        A failure counts as max(elapsed, 2 x estimate, 30 ms), the doubling
        capped at 5 s (but never below the estimate): fast failures must not
        attract traffic, and consecutive failures escalate quickly, while a
        single error on a 1 ms service costs a few doublings rather than
        Linkerd's flat 5 s, which would keep it out for about a minute.
        """
        stamp = self.stamp
        if stamp < 0.0:
            weight = 0.0
            view = self.rtt
        else:
            gap = now - stamp
            weight = exp(-gap / self.decay) if gap > 0.0 else 1.0
            view = self.rtt * weight
        sample = elapsed
        if not ok:
            penalty = 2.0 * view
            if penalty < DEFAULT_RTT:
                penalty = DEFAULT_RTT
            elif penalty > FAILURE_PENALTY_CAP:
                penalty = view if view > FAILURE_PENALTY_CAP else FAILURE_PENALTY_CAP
            if penalty > sample:
                sample = penalty
        if sample > view:
            self.rtt = sample
        else:
            self.rtt = view * weight + sample * (1.0 - weight)
        self.stamp = now

    def dump(self) -> dict[str, Any]:
        ep = self.endpoint
        out: dict[str, Any] = {
            "instance": ep.instance,
            "address": f"{ep.host}:{ep.port}",
            "weight": ep.weight,
            "healthy": ep.healthy,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
        }
        if self.decay > 0.0:
            out["latency_ewma_ms"] = round(self.rtt * 1000.0, 3)
        return out
