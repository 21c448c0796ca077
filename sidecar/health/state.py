"""The verdict of active health checks on the local app (sans-IO).

Thresholds as Envoy's: `unhealthy_threshold` failures in a row turn a
healthy app unhealthy, `healthy_threshold` passes in a row turn it healthy
again; anything else keeps the verdict.

Invariants:
- a new tracker is healthy: the control daemon registers an instance
  HEALTHY, and an instance that has not failed a check yet is given traffic;
- the very first result after start decides at once, either way. Envoy
  treats a host added while a health checker runs the same way: it starts
  out failed and one passing check (its "first check") makes it healthy,
  bypassing `healthy_threshold`. Here the instance is already registered,
  so the first check also ends it at once when it fails: an app that is not
  up yet when its sidecar starts is not sent traffic for
  `unhealthy_threshold` intervals, and nothing waits for a check before
  registering or serving;
- `record` returns True exactly when the verdict flipped; `reason` then
  says why, from the checks' point of view;
- `update(config)` keeps the verdict and the runs counted so far: the new
  thresholds apply from the next result on.
"""

from __future__ import annotations

from typing import Any

from skein.config.model import HealthCheckConfig

__all__ = ["HealthTracker"]


def _runs(count: int, verb: str) -> str:
    return f"1 check {verb}" if count == 1 else f"{count} checks in a row {verb}"


class HealthTracker:
    """Consecutive passes and failures of one app's checks, and the verdict they give."""

    __slots__ = (
        "changed_at",
        "checks",
        "config",
        "failures",
        "healthy",
        "last_detail",
        "last_ok",
        "passes",
        "reason",
    )

    def __init__(self, config: HealthCheckConfig) -> None:
        self.config = config
        self.healthy = True
        self.reason = "no check has failed yet"
        self.checks = 0
        self.passes = 0
        self.failures = 0
        self.last_ok: bool | None = None
        self.last_detail = ""
        self.changed_at: float | None = None

    def update(self, config: HealthCheckConfig) -> None:
        """New thresholds (or interval, or check); the verdict stays."""
        self.config = config

    def record(self, ok: bool, detail: str, now: float) -> bool:
        """One check result; True when it flipped the verdict (see `healthy`, `reason`)."""
        first = self.checks == 0
        self.checks += 1
        self.last_ok = ok
        self.last_detail = detail
        if ok:
            self.passes += 1
            self.failures = 0
            if self.healthy:
                return False
            if self.passes < self.config.healthy_threshold:
                return False
            return self._flip(True, _runs(self.passes, "passed"), now)
        self.failures += 1
        self.passes = 0
        if not self.healthy:
            return False
        if first:
            return self._flip(False, f"first check failed: {detail}", now)
        if self.failures < self.config.unhealthy_threshold:
            return False
        return self._flip(False, f"{_runs(self.failures, 'failed')}: {detail}", now)

    def _flip(self, healthy: bool, reason: str, now: float) -> bool:
        self.healthy = healthy
        self.reason = reason
        self.changed_at = now
        return True

    def dump(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "reason": self.reason,
            "checks": self.checks,
            "passes_in_a_row": self.passes,
            "failures_in_a_row": self.failures,
            "last_result": None if self.last_ok is None else ("pass" if self.last_ok else "fail"),
            "last_detail": self.last_detail,
        }
