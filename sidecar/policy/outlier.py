"""Outlier detection: take failing endpoints out of rotation for a while (sans-IO).

Passive health checking from call results, as Envoy's outlier detection and
gRPC's (gRFC A50) do it, with two rules:

- consecutive failures: `consecutive_failures` failed calls in a row eject
  the endpoint at once (from `record`); any success resets the run.
- success rate: every `interval` (from `tick`), among endpoints in rotation
  with at least `success_rate_request_volume` calls in the interval, and only
  when there are at least `success_rate_minimum_hosts` of them, eject those
  whose success rate is below mean - success_rate_stdev_factor x stdev
  (population stdev), lowest first.

Invariants:
- an ejection lasts base_ejection_time x the endpoint's ejection multiplier,
  capped at max(max_ejection_time, base_ejection_time). The multiplier grows
  by one per ejection (not past the cap) and shrinks by one at each interval
  sweep the endpoint spends in rotation, so an endpoint that keeps failing
  stays out longer and one that recovered is forgiven (Envoy, gRFC A50).
- at most max_ejection_percent of the endpoints are ejected at once, but
  with two or more endpoints at least one may be: 10% of 3 endpoints is 0,
  and Envoy allows one ejection regardless for that reason. Never is every
  endpoint ejected: outlier detection moves traffic, it cannot create
  capacity (Envoy reaches the same end through its panic threshold). An
  ejection the cap refuses counts in `ejections_skipped`.
- a returning endpoint starts with a clean run and clean interval counters.
- `set_endpoints` keeps the state of endpoints that stay; state of a removed
  endpoint is forgotten. Results for unknown endpoints are ignored.
- `record` is O(1) and allocation-free unless it ejects; `tick` returns
  endpoints whose time is up and runs the interval sweep when it is due.
  Call `tick` at least every second or so, or when `next_deadline()` comes.
- `enabled=False`: every method is a no-op and nothing is ever ejected.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from skein.config.model import OutlierConfig

__all__ = ["CONSECUTIVE_FAILURES", "SUCCESS_RATE", "OutlierDetector"]

CONSECUTIVE_FAILURES = "consecutive_failures"
SUCCESS_RATE = "success_rate"

_MAX_EVENTS = 256  # kept for `drain_events` when nobody drains


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class _Endpoint:
    """One endpoint's record. `until` > 0 while ejected."""

    __slots__ = (
        "calls",
        "consecutive",
        "duration",
        "ejections",
        "multiplier",
        "reason",
        "successes",
        "until",
    )

    def __init__(self) -> None:
        self.consecutive = 0  # failures in a row
        self.calls = 0  # this interval
        self.successes = 0  # this interval
        self.until = 0.0  # end of the current ejection; 0.0 when in rotation
        self.duration = 0.0  # length of the current ejection
        self.multiplier = 0  # ejections "in a row", decays while in rotation
        self.ejections = 0  # all ejections, for dumps
        self.reason = ""  # why the current or last ejection happened


class OutlierDetector:
    """Ejects failing endpoints of one cluster, keyed by any hashable endpoint key.

    `ejections_total` counts ejections by rule; `ejections_skipped` counts
    outliers the max_ejection_percent cap kept in rotation.
    """

    __slots__ = (
        "_base",
        "_cap",
        "_ejected",
        "_ejected_view",
        "_endpoints",
        "_events",
        "_factor",
        "_interval",
        "_label",
        "_max_multiplier",
        "_max_percent",
        "_minimum_hosts",
        "_next_sweep",
        "_now",
        "_threshold",
        "_volume",
        "ejections_skipped",
        "ejections_total",
        "enabled",
    )

    def __init__(self, config: OutlierConfig, label: Callable[[Hashable], str] = str) -> None:
        if config.interval <= 0 or config.base_ejection_time <= 0:
            raise ValueError(
                "outlier detection: interval and base_ejection_time must be positive, got "
                f"{config.interval} and {config.base_ejection_time}"
            )
        self.enabled = config.enabled
        self._threshold = max(1, config.consecutive_failures)
        self._interval = config.interval
        self._base = config.base_ejection_time
        self._cap = max(config.max_ejection_time, config.base_ejection_time)
        self._max_multiplier = math.ceil(self._cap / self._base - 1e-9)
        self._max_percent = config.max_ejection_percent
        self._minimum_hosts = max(1, config.success_rate_minimum_hosts)
        self._volume = max(1, config.success_rate_request_volume)
        self._factor = config.success_rate_stdev_factor
        self._label = label
        self._endpoints: dict[Hashable, _Endpoint] = {}
        self._ejected: set[Hashable] = set()
        self._ejected_view: frozenset[Hashable] = frozenset()
        self._next_sweep: float | None = None
        self._now = 0.0
        self._events: deque[tuple[str, Hashable, str]] = deque(maxlen=_MAX_EVENTS)
        self.ejections_total = {CONSECUTIVE_FAILURES: 0, SUCCESS_RATE: 0}
        self.ejections_skipped = 0

    # -- inputs ---------------------------------------------------------

    def set_endpoints(self, keys: Iterable[Hashable], now: float) -> bool:
        """The cluster's endpoints are now `keys`; True when the ejected set changed."""
        if not self.enabled:
            return False
        self._now = now
        if self._next_sweep is None:
            self._next_sweep = now + self._interval
        old = self._endpoints
        self._endpoints = {key: old.get(key) or _Endpoint() for key in keys}
        gone = [key for key in self._ejected if key not in self._endpoints]
        if not gone:
            return False
        self._ejected.difference_update(gone)
        self._ejected_view = frozenset(self._ejected)
        return True

    def record(self, key: Hashable, ok: bool, now: float) -> bool:
        """One call to `key` ended; True when it got `key` ejected."""
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            return False
        self._now = now
        endpoint.calls += 1
        if ok:
            endpoint.successes += 1
            endpoint.consecutive = 0
            return False
        run = endpoint.consecutive = endpoint.consecutive + 1
        if run >= self._threshold and not endpoint.until:
            return self._eject(
                key, endpoint, now, CONSECUTIVE_FAILURES, f"{run} consecutive failures"
            )
        return False

    def tick(self, now: float) -> bool:
        """Run the sweep when due and return endpoints whose time is up.

        True when the ejected set changed.
        """
        if not self.enabled:
            return False
        self._now = now
        changed = False
        if self._next_sweep is None:
            self._next_sweep = now + self._interval
        elif now >= self._next_sweep:
            changed = self._sweep(now)
            self._next_sweep = now + self._interval
        if self._ejected:
            due = [key for key in self._ejected if self._endpoints[key].until <= now]
            for key in due:
                self._return(key, now)
            changed = changed or bool(due)
        return changed

    # -- rules ----------------------------------------------------------

    def _may_eject(self) -> bool:
        total = len(self._endpoints)
        allowed = total * self._max_percent // 100
        if allowed < 1 and total >= 2:
            allowed = 1
        if allowed > total - 1:
            allowed = total - 1
        return len(self._ejected) < allowed

    def _eject(self, key: Hashable, endpoint: _Endpoint, now: float, rule: str, why: str) -> bool:
        if not self._may_eject():
            self.ejections_skipped += 1
            return False
        if endpoint.multiplier < self._max_multiplier:
            endpoint.multiplier += 1
        endpoint.ejections += 1
        endpoint.duration = min(self._base * endpoint.multiplier, self._cap)
        endpoint.until = now + endpoint.duration
        endpoint.consecutive = 0
        endpoint.reason = why
        self._ejected.add(key)
        self._ejected_view = frozenset(self._ejected)
        self.ejections_total[rule] += 1
        self._events.append(("ejected", key, self.why(key, now)))
        return True

    def _return(self, key: Hashable, now: float) -> None:
        endpoint = self._endpoints[key]
        endpoint.until = 0.0
        endpoint.consecutive = 0
        endpoint.calls = 0
        endpoint.successes = 0
        self._ejected.discard(key)
        self._ejected_view = frozenset(self._ejected)
        self._events.append(
            (
                "returned",
                key,
                f"back in rotation after {endpoint.duration:g} s ({endpoint.reason})",
            )
        )

    def _sweep(self, now: float) -> bool:
        """The interval's work: success-rate ejections, multiplier decay, fresh counters."""
        changed = self._success_rate(now)
        for endpoint in self._endpoints.values():
            if not endpoint.until and endpoint.multiplier > 0:
                endpoint.multiplier -= 1
            endpoint.calls = 0
            endpoint.successes = 0
        return changed

    def _success_rate(self, now: float) -> bool:
        volume = self._volume
        rates = [
            (endpoint.successes / endpoint.calls, key, endpoint)
            for key, endpoint in self._endpoints.items()
            if not endpoint.until and endpoint.calls >= volume
        ]
        if len(rates) < self._minimum_hosts:
            return False
        mean = sum(rate for rate, _, _ in rates) / len(rates)
        stdev = math.sqrt(sum((rate - mean) ** 2 for rate, _, _ in rates) / len(rates))
        floor = mean - self._factor * stdev
        changed = False
        for rate, key, endpoint in sorted(rates, key=lambda r: r[0]):
            if rate >= floor:
                break
            why = (
                f"success rate {rate:.1%} over {endpoint.calls} calls, below {floor:.1%} "
                f"(mean {mean:.1%} - {self._factor:g} x stdev {stdev:.1%})"
            )
            if not self._eject(key, endpoint, now, SUCCESS_RATE, why):
                break
            changed = True
        return changed

    # -- outputs --------------------------------------------------------

    def ejected(self) -> frozenset[Hashable]:
        """The endpoints out of rotation now (the same object until the set changes)."""
        return self._ejected_view

    def next_deadline(self) -> float:
        """When `tick` next has work (a sweep or a return); inf when never."""
        if not self.enabled or self._next_sweep is None:
            return math.inf
        soonest = self._next_sweep
        for key in self._ejected:
            until = self._endpoints[key].until
            if until < soonest:
                soonest = until
        return soonest

    def why(self, key: Hashable, now: float | None = None) -> str:
        """Why `key` is (or is not) ejected, e.g. "5 consecutive failures;
        ejected 2nd time for 60 s, back in 41 s". `now` defaults to the
        latest time the detector was given.
        """
        if not self.enabled:
            return "outlier detection is disabled"
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            return f"{self._label(key)} is not an endpoint of this cluster"
        if now is None:
            now = self._now
        if endpoint.until:
            back = max(0, math.ceil(endpoint.until - now - 1e-9))
            return (
                f"{endpoint.reason}; ejected {_ordinal(endpoint.multiplier)} time for "
                f"{endpoint.duration:g} s, back in {back} s"
            )
        return (
            f"in rotation; {endpoint.consecutive} consecutive failures "
            f"(ejected at {self._threshold})"
        )

    def drain_events(self) -> list[tuple[str, Hashable, str]]:
        """("ejected" | "returned", key, why) since the last drain, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    def dump(self, now: float) -> dict[str, Any]:
        endpoints = {
            self._label(key): {
                "state": "ejected" if endpoint.until else "active",
                "consecutive": endpoint.consecutive,
                "ejections": endpoint.ejections,
                "multiplier": endpoint.multiplier,
                "until": endpoint.until or None,
                "back_in": max(0.0, endpoint.until - now) if endpoint.until else None,
                "interval_calls": endpoint.calls,
                "interval_successes": endpoint.successes,
                "why": self.why(key, now),
            }
            for key, endpoint in self._endpoints.items()
        }
        return {
            "enabled": self.enabled,
            "ejected": len(self._ejected),
            "ejections_total": dict(self.ejections_total),
            "ejections_skipped": self.ejections_skipped,
            "next_sweep_in": (
                max(0.0, self._next_sweep - now) if self._next_sweep is not None else None
            ),
            "endpoints": endpoints,
        }
