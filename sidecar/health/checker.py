"""Active health checks of the local app, run by its sidecar.

A thin async adapter over `HealthTracker` (state first, then I/O): the loop
runs one probe at a time, feeds the result to the tracker, and on a verdict
change logs it, sets the metrics and calls `on_change(healthy, reason)` (the
sidecar's registration reports it to control).

Invariants:
- `configure()` is synchronous and cheap: it swaps the config and wakes the
  loop; an unchanged config is a no-op. A new or changed config checks at
  once, then every `interval` plus up to 10% random jitter (so the sidecars
  of a fleet do not probe in step).
- a result is recorded only under the config it was run for: a probe still
  running when the config changes is discarded.
- `configure(None)` stops checking and restores HEALTHY (with `on_change`
  when the app was unhealthy): without checks nothing says otherwise.
- one probe at a time, each bounded by the config's `timeout`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sidecar.health.probes import GrpcProbe, http_probe
from sidecar.health.state import HealthTracker
from skein.addr import HostPort, format_hostport
from skein.config.model import HealthCheckConfig
from skein.logging import get_logger
from skein.metrics import Registry

__all__ = ["HealthChecker", "OnChange"]

log = get_logger("health")

OnChange = Callable[[bool, str], None]

JITTER = 0.1  # share of the interval added at random after each check
OFF_REASON = "active health checking turned off"


class HealthChecker:
    """Checks the app at `app` while a HealthCheckConfig is configured; run `run()` as a task."""

    def __init__(
        self,
        app: HostPort,
        metrics: Registry,
        on_change: OnChange,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.app = app
        self._on_change = on_change
        self._rng = rng if rng is not None else random.Random()
        self._config: HealthCheckConfig | None = None
        self._tracker: HealthTracker | None = None
        self._generation = 0
        self._next_at = 0.0
        self._wake = asyncio.Event()
        self._grpc: GrpcProbe | None = None
        checks = metrics.counter(
            "skein_sidecar_health_checks_total", "Active health checks of the local app", ["result"]
        )
        self._m_pass = checks.labels("pass")
        self._m_fail = checks.labels("fail")
        self._m_healthy = metrics.gauge(
            "skein_sidecar_local_healthy", "1 while the local app is healthy (or not checked)"
        ).labels()
        self._m_healthy.set(1)

    # -- state -------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._tracker is None or self._tracker.healthy

    @property
    def reason(self) -> str:
        return self._tracker.reason if self._tracker is not None else OFF_REASON

    def configure(self, config: HealthCheckConfig | None) -> None:
        """Apply the local policy's health_check (None: no checks, the app counts as healthy)."""
        if config == self._config:
            return
        self._config = config
        self._generation += 1
        self._next_at = 0.0
        if config is None:
            tracker, self._tracker = self._tracker, None
            if tracker is not None and not tracker.healthy:
                self._changed(True, OFF_REASON)
        elif self._tracker is None:
            self._tracker = HealthTracker(config)
        else:
            self._tracker.update(config)
        self._wake.set()

    def record(self, ok: bool, detail: str, now: float) -> None:
        """One probe's result under the current config."""
        tracker = self._tracker
        if tracker is None:
            return
        (self._m_pass if ok else self._m_fail).inc()
        if tracker.record(ok, detail, now):
            self._changed(tracker.healthy, tracker.reason)

    def _changed(self, healthy: bool, reason: str) -> None:
        self._m_healthy.set(1 if healthy else 0)
        app = format_hostport(self.app)
        if healthy:
            log.info("local app healthy", app=app, reason=reason)
        else:
            log.warning("local app unhealthy", app=app, reason=reason)
        try:
            self._on_change(healthy, reason)
        except Exception:  # reporting trouble must never stop the checks
            log.exception("health change callback failed")

    def dump(self) -> dict[str, Any]:
        config = self._config
        return {
            "app": format_hostport(self.app),
            "enabled": config is not None,
            "check": None if config is None else ("http" if config.http_path else "grpc"),
            "config": None if config is None else asdict(config),
            "healthy": self.healthy,
            "reason": self.reason,
            **({"tracker": self._tracker.dump()} if self._tracker is not None else {}),
        }

    # -- I/O ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Check while configured, until cancelled; closes its connection on the way out."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                config = self._config
                if config is None:
                    await self._close_grpc()
                    await self._sleep(None)
                    continue
                delay = self._next_at - loop.time()
                if delay > 0:
                    await self._sleep(delay)
                    continue
                generation = self._generation
                started = loop.time()
                ok, detail = await self.probe(config)
                if generation != self._generation:
                    continue  # configured anew meanwhile: the result is for the old config
                jitter = self._rng.random() * JITTER * config.interval
                self._next_at = started + config.interval + jitter
                self.record(ok, detail, loop.time())
        finally:
            await self._close_grpc()

    async def probe(self, config: HealthCheckConfig) -> tuple[bool, str]:
        """Run one check as `config` says; (passed, detail)."""
        if config.http_path:
            await self._close_grpc()
            return await http_probe(self.app, config.http_path, config.timeout)
        if self._grpc is None:
            self._grpc = GrpcProbe(self.app)
        return await self._grpc.check(config.grpc_service, config.timeout)

    async def _sleep(self, delay: float | None) -> None:
        """Until `delay` seconds pass (None: no limit) or `configure` wakes us."""
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()

    async def _close_grpc(self) -> None:
        probe, self._grpc = self._grpc, None
        if probe is not None:
            await probe.close()

    async def close(self) -> None:
        """Stop checking (the caller cancels `run()`); drops the connection to the app."""
        self._config = None
        self._generation += 1
        await self._close_grpc()
