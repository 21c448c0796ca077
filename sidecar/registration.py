"""Registration of this instance under a lease: Register, Renew every ttl/3, Deregister;
and the instance's health, as its active checks see it, with ReportHealth.

Invariants:
- the loop never gives up and never raises (except cancellation): control
  trouble means retry on the next control address after a jittered backoff.
- Renew (or ReportHealth) answering NOT_FOUND means the lease expired (we
  were away too long): register again at once.
- `set_health()` never blocks: it records the verdict and wakes the
  reporter, which sends the latest verdict (an older one still unsent is
  simply replaced), retrying with backoff across the control addresses.
  After every Register the verdict is sent again (Register stores HEALTHY),
  so the stored endpoint always ends up carrying the latest verdict.
- `deregister()` is best effort with a short deadline, so a clean shutdown
  removes the endpoint at once but never hangs on a dead control; nothing
  registers or reports after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from sidecar.discovery.controls import ControlEndpoints
from sidecar.policy.backoff import ExponentialBackoff
from skein.grpcclient import RpcError, StatusCode
from skein.logging import get_logger
from skein.metrics import Registry
from skein.v1 import discovery_pb2, resources_pb2

__all__ = ["Registration"]

log = get_logger("registration")

_CALL_TIMEOUT = 3.0
_REGISTER = "/skein.v1.Discovery/Register"
_RENEW = "/skein.v1.Discovery/Renew"
_DEREGISTER = "/skein.v1.Discovery/Deregister"
_REPORT = "/skein.v1.Discovery/ReportHealth"
MAX_REASON = 512  # characters of a health reason sent to control (an app's message can be long)


class Registration:
    """Keeps one endpoint registered for as long as `run()` runs."""

    def __init__(
        self,
        controls: ControlEndpoints,
        *,
        service: str,
        instance: str,
        address: str,
        labels: Mapping[str, str],
        weight: int,
        metrics: Registry,
        ttl_seconds: int = 0,
        backoff: ExponentialBackoff | None = None,
    ) -> None:
        self._controls = controls
        self._request = discovery_pb2.RegisterRequest(
            service=service,
            instance=instance,
            address=address,
            labels=dict(labels),
            weight=weight,
            ttl_seconds=ttl_seconds,
        )
        self._backoff = backoff or ExponentialBackoff(0.1, 3.0, floor=0.05)
        self._report_backoff = ExponentialBackoff(self._backoff.base, self._backoff.cap, floor=0.05)
        self.lease_id = 0
        self.ttl = 0
        self.state = "unregistered"
        self.last_error = ""
        self._failures = 0
        self._stopped = False
        self._lease_lost = asyncio.Event()
        # the verdict to store, and what control has stored (None: nothing sent)
        self.healthy = True
        self.health_reason = ""
        self._health_set = False
        self._reported: tuple[int, bool, str] | None = None  # (lease, healthy, reason)
        self._report_wanted = asyncio.Event()
        self.report_error = ""
        self._m_registered = metrics.gauge(
            "skein_sidecar_registered", "1 while this instance holds a live lease"
        )
        self._m_failures = metrics.counter(
            "skein_sidecar_registration_failures_total", "Failed register/renew calls", ["call"]
        )

    async def run(self) -> None:
        reporter = asyncio.create_task(self._report_loop(), name="health-report")
        try:
            await self._keep_registered()
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)

    async def _keep_registered(self) -> None:
        while not self._stopped:
            try:
                if self.lease_id == 0:
                    await self._register()
                    self._backoff.reset()
                    self._failures = 0
                await self._until_renewal(max(self.ttl / 3.0, 0.2))
                if self.lease_id == 0 or self._stopped:
                    continue  # a report found the lease gone: register again now
                await self._renew()
                self._backoff.reset()
                self._failures = 0
            except asyncio.CancelledError:
                raise
            except RpcError as err:
                self.last_error = f"{err.code.name}: {err.message}"
                if err.code is StatusCode.NOT_FOUND:
                    log.warning("lease expired, registering again", instance=self.instance)
                    self._lost()
                    continue
                self._m_failures.labels("renew" if self.lease_id else "register").inc()
                self._failures += 1
                if self._failures in (1, 10) or self._failures % 100 == 0:
                    log.warning(
                        "registration call failed, trying the next control",
                        control=self._controls.current,
                        error=self.last_error,
                        failures=self._failures,
                    )
                await self._controls.fail()
                await asyncio.sleep(self._backoff.next_delay())
            except Exception as err:  # never let registration take the sidecar down
                self.last_error = repr(err)
                log.exception("registration failed unexpectedly")
                await asyncio.sleep(self._backoff.next_delay())

    async def _until_renewal(self, delay: float) -> None:
        """Sleep `delay` seconds, or less if a health report found the lease gone."""
        try:
            async with asyncio.timeout(delay):
                await self._lease_lost.wait()
        except TimeoutError:
            pass
        self._lease_lost.clear()

    @property
    def instance(self) -> str:
        return str(self._request.instance)

    def _lost(self) -> None:
        self.lease_id = 0
        self.state = "unregistered"
        self._m_registered.set(0)

    # -- health ----------------------------------------------------------------------

    def set_health(self, healthy: bool, reason: str) -> None:
        """The local app's verdict changed: store it with the endpoint (sent in the background)."""
        self.healthy = healthy
        self.health_reason = reason[:MAX_REASON]
        self._health_set = True
        self._report_wanted.set()

    def _report_due(self) -> bool:
        if not self._health_set or self.lease_id == 0 or self._stopped:
            return False
        return self._reported != (self.lease_id, self.healthy, self.health_reason)

    async def _report_loop(self) -> None:
        while True:
            await self._report_wanted.wait()
            self._report_wanted.clear()
            while self._report_due():
                lease = self.lease_id
                try:
                    await self._report(lease)
                    self._report_backoff.reset()
                except asyncio.CancelledError:
                    raise
                except RpcError as err:
                    self.report_error = f"{err.code.name}: {err.message}"
                    if err.code is StatusCode.NOT_FOUND:
                        self._lease_gone(lease, err)
                        break  # reported again once registered anew
                    self._m_failures.labels("report").inc()
                    log.warning(
                        "health report failed, trying the next control",
                        control=self._controls.current,
                        error=self.report_error,
                    )
                    await self._controls.fail()
                    await asyncio.sleep(self._report_backoff.next_delay())
                except Exception as err:  # never let reporting take the sidecar down
                    self.report_error = repr(err)
                    log.exception("health report failed unexpectedly")
                    await asyncio.sleep(self._report_backoff.next_delay())

    async def _report(self, lease: int) -> None:
        healthy, reason = self.healthy, self.health_reason
        request = discovery_pb2.ReportHealthRequest(
            lease_id=lease,
            service=self._request.service,
            instance=self.instance,
            health=resources_pb2.HEALTHY if healthy else resources_pb2.UNHEALTHY,
            reason=reason,
        )
        await self._controls.channel().unary(
            _REPORT, request, discovery_pb2.ReportHealthResponse, timeout=_CALL_TIMEOUT
        )
        self._reported = (lease, healthy, reason)
        self.report_error = ""
        log.info("health reported", instance=self.instance, healthy=healthy, reason=reason)

    def _lease_gone(self, lease: int, err: RpcError) -> None:
        """ReportHealth found no endpoint under `lease`: make the main loop register now."""
        if self.lease_id != lease:
            return  # registered anew meanwhile; the new lease gets its own report
        log.warning("lease gone while reporting health, registering again", error=err.message)
        self._lost()
        self._lease_lost.set()

    async def _register(self) -> None:
        response = await self._controls.channel().unary(
            _REGISTER, self._request, discovery_pb2.RegisterResponse, timeout=_CALL_TIMEOUT
        )
        self.lease_id = response.lease_id
        self.ttl = response.ttl_seconds or 10
        self.state = "registered"
        self._m_registered.set(1)
        self._report_wanted.set()  # Register stored HEALTHY: send our verdict again
        log.info(
            "registered",
            instance=self.instance,
            address=self._request.address,
            lease=self.lease_id,
            ttl=self.ttl,
            control=self._controls.current,
        )

    async def _renew(self) -> None:
        response = await self._controls.channel().unary(
            _RENEW,
            discovery_pb2.RenewRequest(lease_id=self.lease_id),
            discovery_pb2.RenewResponse,
            timeout=_CALL_TIMEOUT,
        )
        if response.ttl_seconds:
            self.ttl = response.ttl_seconds

    async def deregister(self, per_call: float = 2.0) -> bool:
        """Remove the endpoint now; tries each control once. True when one answered."""
        self._stopped = True
        self._lease_lost.set()
        if self.lease_id == 0:
            return False
        request = discovery_pb2.DeregisterRequest(
            lease_id=self.lease_id, service=self._request.service, instance=self.instance
        )
        for _ in self._controls.addresses:
            try:
                await self._controls.channel().unary(
                    _DEREGISTER, request, discovery_pb2.DeregisterResponse, timeout=per_call
                )
            except RpcError as err:
                log.warning(
                    "deregister failed",
                    control=self._controls.current,
                    error=f"{err.code.name}: {err.message}",
                )
                await self._controls.fail()
                continue
            self._lost()
            log.info("deregistered", instance=self.instance)
            return True
        return False

    def dump(self) -> dict[str, object]:
        return {
            "state": self.state,
            "instance": self.instance,
            "address": self._request.address,
            "lease_id": self.lease_id,
            "ttl": self.ttl,
            "control": self._controls.current,
            "last_error": self.last_error,
            "health": {
                "healthy": self.healthy,
                "reason": self.health_reason,
                "reported": self._reported is not None
                and self._reported == (self.lease_id, self.healthy, self.health_reason),
                "last_error": self.report_error,
            },
        }
