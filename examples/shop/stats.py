"""Per-service call statistics for the demo's live summary (sans-IO).

A `Recorder` takes (service, latency, ok) samples stamped by an injected
clock and answers, for any moment: requests/s over the last second, p50/p99
over a sliding window, and error totals. It never sleeps or prints.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from skein.clock import Clock

__all__ = ["Recorder", "Row", "percentile", "render"]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True)
class Row:
    service: str
    rps: float
    total: int
    errors: int
    p50_ms: float
    p99_ms: float


class _Series:
    __slots__ = ("errors", "samples", "total")

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque()  # (time, latency ms) of successes
        self.total = 0
        self.errors = 0


class Recorder:
    """Samples per service; `window` seconds of latencies are kept for percentiles."""

    def __init__(self, clock: Clock, services: Iterable[str], window: float = 10.0) -> None:
        self._clock = clock
        self._window = window
        self._series = {name: _Series() for name in services}
        self.last_errors: deque[str] = deque(maxlen=5)

    def record(self, service: str, latency_ms: float, ok: bool, error: str = "") -> None:
        series = self._series.get(service)
        if series is None:
            series = self._series[service] = _Series()
        series.total += 1
        now = self._clock.now()
        if ok:
            series.samples.append((now, latency_ms))
        else:
            series.errors += 1
            self.last_errors.append(f"{service}: {error}")
        self._trim(series, now)

    def _trim(self, series: _Series, now: float) -> None:
        horizon = now - self._window
        while series.samples and series.samples[0][0] < horizon:
            series.samples.popleft()

    @property
    def total_errors(self) -> int:
        return sum(s.errors for s in self._series.values())

    @property
    def total_calls(self) -> int:
        return sum(s.total for s in self._series.values())

    def rows(self) -> list[Row]:
        now = self._clock.now()
        rows = []
        for name, series in self._series.items():
            self._trim(series, now)
            recent = sum(1 for t, _ in series.samples if t > now - 1.0)
            latencies = sorted(ms for _, ms in series.samples)
            rows.append(
                Row(
                    name,
                    float(recent),
                    series.total,
                    series.errors,
                    percentile(latencies, 50),
                    percentile(latencies, 99),
                )
            )
        return rows


def render(rows: list[Row], elapsed: float) -> list[str]:
    """The summary as lines (fixed width, so a terminal can redraw it in place)."""
    lines = [
        f"Skein shop demo: {elapsed:5.0f}s   (Ctrl-C to stop)",
        f"{'SERVICE':<12}{'REQ/S':>8}{'CALLS':>9}{'ERRORS':>8}{'P50 MS':>9}{'P99 MS':>9}",
    ]
    for r in rows:
        lines.append(
            f"{r.service:<12}{r.rps:>8.0f}{r.total:>9}{r.errors:>8}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
        )
    return lines
