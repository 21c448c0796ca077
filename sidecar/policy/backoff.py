"""Capped exponential backoff with full jitter (sans-IO, injected randomness).

Invariants: every delay lies in [min(floor, cap), cap]; the ceiling doubles
per failed attempt from `base` up to `cap`; `reset()` after a success starts
over. Full jitter (AWS architecture blog, "Exponential Backoff And Jitter")
spreads reconnecting clients so a restarted server is not hit all at once.
"""

from __future__ import annotations

import random

__all__ = ["ExponentialBackoff"]


class ExponentialBackoff:
    """`next_delay()` returns seconds to wait before the next attempt."""

    __slots__ = ("_rng", "attempt", "base", "cap", "floor")

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 5.0,
        *,
        floor: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base} cap={cap}")
        if floor < 0:
            raise ValueError(f"backoff floor must be >= 0, got {floor}")
        self.base = base
        self.cap = cap
        self.floor = floor
        self.attempt = 0
        self._rng = rng if rng is not None else random.Random()

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        # 2**attempt overflows floats only past ~1000 attempts; clamp the exponent.
        return min(self.cap, self.base * 2.0 ** min(self.attempt, 64))

    def next_delay(self) -> float:
        high = self.ceiling()
        low = min(self.floor, high)
        self.attempt += 1
        return low + self._rng.random() * (high - low)

    def reset(self) -> None:
        self.attempt = 0
