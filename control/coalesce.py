"""When to rebuild snapshots after watch events: a debounce with a cap (sans-IO).

A fixed window opened by the first event cuts a burst whose writes are a
little further apart than the window into many rebuilds, one push each.
Istio's debounce (PILOT_DEBOUNCE_AFTER / PILOT_DEBOUNCE_MAX) waits for the
burst to go quiet instead, with a cap so a steady stream of writes still
gets pushed.

Invariants:
- idle until the first event; then a rebuild is due once no event arrived
  for `quiet` seconds, or `max_delay` seconds after the first event,
  whichever comes first;
- a single write waits exactly `quiet` (the push latency of a lone change);
- `fired` returns to idle; events after it open a new burst.
"""

from __future__ import annotations

__all__ = ["Coalescer"]


class Coalescer:
    """Debounce of watch events; the caller supplies monotonic `now` values."""

    __slots__ = ("_first", "_last", "max_delay", "quiet")

    def __init__(self, quiet: float, max_delay: float) -> None:
        if quiet < 0 or max_delay < quiet:
            raise ValueError(f"need 0 <= quiet <= max_delay, got {quiet}, {max_delay}")
        self.quiet = quiet
        self.max_delay = max_delay
        self._first: float | None = None
        self._last = 0.0

    @property
    def idle(self) -> bool:
        """No event waiting for a rebuild."""
        return self._first is None

    def event(self, now: float) -> None:
        """A relevant change arrived."""
        if self._first is None:
            self._first = now
        self._last = now

    def wait_time(self, now: float) -> float | None:
        """Seconds until the rebuild is due (0: now), or None when idle."""
        if self._first is None:
            return None
        due = min(self._last + self.quiet, self._first + self.max_delay)
        return max(0.0, due - now)

    def fired(self) -> None:
        """The rebuild ran: everything up to now is in it."""
        self._first = None
