"""The service-level circuit breaker: closed, open, half-open (sans-IO).

A breaker stops calling a service that is failing most calls, so callers
fail fast and the service gets room to recover; after `open_duration` it
lets a few trial calls through and closes again once enough succeed.

Invariants:
- transitions happen only in `_move` (one place) and each carries a reason
  that `drain_events` hands to logs: closed -> open (failure rate tripped),
  open -> half_open (open_duration elapsed), half_open -> open (a trial
  failed), half_open -> closed (success_threshold trials succeeded).
- closed: `allow` is True. The window counts calls and failures of the last
  `window` seconds in BUCKETS time buckets (so it spans between
  (BUCKETS-1)/BUCKETS and all of `window`); it trips when calls >=
  minimum_requests and failures / calls >= failure_rate_threshold, compared
  in exact integer arithmetic.
- open: `allow` is False until `open_duration` has passed, then the breaker
  is half-open. Results recorded while open are late answers to calls
  admitted before it opened: ignored.
- half-open: at most `half_open_max_calls` trial calls are in flight at once
  (each result frees its permit); one failure reopens it for a fresh
  `open_duration`; `success_threshold` successes close it with an empty
  window. The breaker cannot tell trial results from late results of calls
  admitted before it opened; both count, a failure being a failure.
- every admitted call must be recorded exactly once (`Pick.done` does it),
  or handed back with `cancel` when it never reached the service.
  Should permits leak anyway, permits held with no result for
  `open_duration` are presumed lost and reclaimed (`lost_trials` counts them),
  so a leak degrades the breaker instead of wedging it half-open.
- `enabled=False`: `allow` is always True and `record` does nothing.
- `allow` and `record` are O(1) and allocate nothing except on a transition.
"""

from __future__ import annotations

import math
from collections import deque
from enum import StrEnum
from typing import Any

from skein.config.model import BreakerConfig

__all__ = ["BUCKETS", "BreakerState", "CircuitBreaker"]

BUCKETS = 10

_NEVER = -(1 << 62)
_PPM = 1_000_000  # threshold resolution: failure rates compare in parts per million
_MAX_EVENTS = 64  # transitions kept for `drain_events` when nobody drains


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN


def _seconds(value: float) -> str:
    return f"{math.ceil(value - 1e-9) if value > 0 else 0} s"


class CircuitBreaker:
    """One service's breaker. Counters: `opened` (times opened), `rejected` (calls refused)."""

    __slots__ = (
        "_bucket",
        "_calls",
        "_calls_total",
        "_events",
        "_failures",
        "_failures_total",
        "_inv_width",
        "_max_calls",
        "_minimum",
        "_open_duration",
        "_progress",
        "_retry_at",
        "_slot",
        "_state",
        "_success_threshold",
        "_successes",
        "_threshold",
        "_threshold_ppm",
        "_trials",
        "_trip_reason",
        "_window",
        "enabled",
        "lost_trials",
        "opened",
        "rejected",
        "service",
    )

    def __init__(self, config: BreakerConfig, service: str) -> None:
        if config.window <= 0:
            raise ValueError(f"circuit breaker for {service!r}: window must be positive")
        self.service = service
        self.enabled = config.enabled
        self.opened = 0
        self.rejected = 0
        self.lost_trials = 0
        self._threshold = config.failure_rate_threshold
        # At least one failure is needed to trip, whatever the threshold.
        self._threshold_ppm = max(1, round(config.failure_rate_threshold * _PPM))
        self._window = config.window
        self._minimum = max(1, config.minimum_requests)
        self._open_duration = config.open_duration
        self._max_calls = max(1, config.half_open_max_calls)
        self._success_threshold = max(1, config.success_threshold)
        self._inv_width = BUCKETS / config.window
        self._calls = [0] * BUCKETS
        self._failures = [0] * BUCKETS
        self._calls_total = 0
        self._failures_total = 0
        self._bucket = _NEVER
        self._slot = 0
        self._state = _CLOSED
        self._retry_at = 0.0  # open: when the first trial may go
        self._trials = 0  # half-open: trial permits held
        self._successes = 0  # half-open: trial successes so far
        self._progress = 0.0  # half-open: last admission or result
        self._trip_reason = ""
        self._events: deque[tuple[str, str, str]] = deque(maxlen=_MAX_EVENTS)

    # -- hot path -------------------------------------------------------

    def allow(self, now: float) -> bool:
        """Whether a call may go now. A True must be followed by one `record`."""
        state = self._state
        if state is _CLOSED:
            return True
        if state is _OPEN:
            if now < self._retry_at:
                self.rejected += 1
                return False
            self._to_half_open(now)
        if self._trials < self._max_calls or self._reclaim(now):
            self._trials += 1
            self._progress = now
            return True
        self.rejected += 1
        return False

    def record(self, ok: bool, now: float) -> None:
        """The result of a call `allow` admitted (`ok` False: the service failed it)."""
        if not self.enabled:
            return
        state = self._state
        if state is _CLOSED:
            bucket = int(now * self._inv_width)
            if bucket > self._bucket:
                self._advance(bucket)
            slot = self._slot
            self._calls[slot] += 1
            calls = self._calls_total = self._calls_total + 1
            if not ok:
                self._failures[slot] += 1
                self._failures_total += 1
            if (
                calls >= self._minimum
                and self._failures_total * _PPM >= self._threshold_ppm * calls
            ):
                self._trip(now)
        elif state is _HALF_OPEN:
            if self._trials > 0:
                self._trials -= 1
            self._progress = now
            if not ok:
                self._reopen(now)
            else:
                self._successes += 1
                if self._successes >= self._success_threshold:
                    self._close()

    def cancel(self) -> None:
        """An admitted call never went out (e.g. no endpoint): return its permit, no result."""
        if self._state is _HALF_OPEN and self._trials > 0:
            self._trials -= 1

    # -- window ---------------------------------------------------------

    def _advance(self, bucket: int) -> None:
        if bucket - self._bucket >= BUCKETS:
            self._clear_window()
        else:
            for b in range(self._bucket + 1, bucket + 1):
                i = b % BUCKETS
                self._calls_total -= self._calls[i]
                self._failures_total -= self._failures[i]
                self._calls[i] = 0
                self._failures[i] = 0
        self._bucket = bucket
        self._slot = bucket % BUCKETS

    def _clear_window(self) -> None:
        for i in range(BUCKETS):
            self._calls[i] = 0
            self._failures[i] = 0
        self._calls_total = 0
        self._failures_total = 0

    def _window_counts(self, now: float) -> tuple[int, int]:
        if self._state is _CLOSED:
            bucket = int(now * self._inv_width)
            if bucket > self._bucket:
                self._advance(bucket)
        return self._calls_total, self._failures_total

    # -- transitions ----------------------------------------------------

    def _move(self, to: BreakerState, why: str) -> None:
        self._events.append((self._state.value, to.value, why))
        self._state = to

    def _rate(self, failures: int, calls: int) -> str:
        share = failures / calls if calls else 0.0
        return (
            f"{failures} of {calls} calls ({share:.0%}) failed in the last "
            f"{self._window:g} s (threshold {self._threshold:.0%})"
        )

    def _trip(self, now: float) -> None:
        self._trip_reason = self._rate(self._failures_total, self._calls_total)
        self._open(now, self._trip_reason)

    def _reopen(self, now: float) -> None:
        self._trip_reason = (
            f"a trial call failed while half-open (after {self._successes} of "
            f"{self._success_threshold} successes)"
        )
        self._open(now, self._trip_reason)

    def _open(self, now: float, why: str) -> None:
        self._retry_at = now + self._open_duration
        self._trials = 0
        self._successes = 0
        self._clear_window()
        self.opened += 1
        self._move(_OPEN, why)

    def _to_half_open(self, now: float) -> None:
        self._trials = 0
        self._successes = 0
        self._progress = now
        self._move(
            _HALF_OPEN,
            f"open for {self._open_duration:g} s; admitting up to {self._max_calls} trial calls",
        )

    def _close(self) -> None:
        self._trials = 0
        self._clear_window()
        self._move(_CLOSED, f"{self._successes} trial calls succeeded")
        self._successes = 0

    def _reclaim(self, now: float) -> bool:
        """Presume trial permits lost when none came back for open_duration."""
        if now - self._progress < self._open_duration:
            return False
        self.lost_trials += self._trials
        self._trials = 0
        return True

    # -- introspection --------------------------------------------------

    def state(self, now: float) -> str:
        """ "closed", "open" or "half_open" at `now` (open turns half-open on time)."""
        if self._state is _OPEN and now >= self._retry_at:
            self._to_half_open(now)
        return self._state.value

    def why(self, now: float) -> str:
        """The breaker's state and its reason, for fail-fast messages."""
        head = f"circuit breaker for {self.service!r}"
        if not self.enabled:
            return f"{head} is disabled"
        state = self.state(now)
        if state == _OPEN:
            return f"{head} is open: {self._trip_reason}; next trial in " + _seconds(
                self._retry_at - now
            )
        if state == _HALF_OPEN:
            if self._trials >= self._max_calls:
                return f"{head} is half-open: {self._trials} trial calls already in flight"
            return (
                f"{head} is half-open: {self._successes} of {self._success_threshold} "
                f"trial successes so far, {self._trials} in flight"
            )
        calls, failures = self._window_counts(now)
        return f"{head} is closed: {self._rate(failures, calls)}"

    def drain_events(self) -> list[tuple[str, str, str]]:
        """Transitions since the last drain, oldest first: (from, to, why)."""
        events = list(self._events)
        self._events.clear()
        return events

    def dump(self, now: float) -> dict[str, Any]:
        calls, failures = self._window_counts(now)
        state = self.state(now)
        return {
            "service": self.service,
            "enabled": self.enabled,
            "state": state,
            "why": self.why(now),
            "window": {"seconds": self._window, "calls": calls, "failures": failures},
            "failure_rate_threshold": self._threshold,
            "minimum_requests": self._minimum,
            "next_trial_in": max(0.0, self._retry_at - now) if state == _OPEN else None,
            "trials_in_flight": self._trials if state == _HALF_OPEN else 0,
            "trial_successes": self._successes if state == _HALF_OPEN else 0,
            "opened": self.opened,
            "rejected": self.rejected,
            "lost_trials": self.lost_trials,
        }
