"""Registration of this instance under a lease: Register, Renew every ttl/3, Deregister.

Invariants:
- the loop never gives up and never raises (except cancellation): control
  trouble means retry on the next control address after a jittered backoff.
- Renew answering NOT_FOUND means the lease expired (we were away too long):
  register again at once.
- `deregister()` is best effort with a short deadline, so a clean shutdown
  removes the endpoint at once but never hangs on a dead control.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from sidecar.discovery.controls import ControlEndpoints
from sidecar.policy.backoff import ExponentialBackoff
from skein.grpcclient import RpcError, StatusCode
from skein.logging import get_logger
from skein.metrics import Registry
from skein.v1 import discovery_pb2

__all__ = ["Registration"]

log = get_logger("registration")

_CALL_TIMEOUT = 3.0
_REGISTER = "/skein.v1.Discovery/Register"
_RENEW = "/skein.v1.Discovery/Renew"
_DEREGISTER = "/skein.v1.Discovery/Deregister"


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
        self.lease_id = 0
        self.ttl = 0
        self.state = "unregistered"
        self.last_error = ""
        self._failures = 0
        self._m_registered = metrics.gauge(
            "skein_sidecar_registered", "1 while this instance holds a live lease"
        )
        self._m_failures = metrics.counter(
            "skein_sidecar_registration_failures_total", "Failed register/renew calls", ["call"]
        )

    async def run(self) -> None:
        while True:
            try:
                if self.lease_id == 0:
                    await self._register()
                    self._backoff.reset()
                    self._failures = 0
                await asyncio.sleep(max(self.ttl / 3.0, 0.2))
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

    @property
    def instance(self) -> str:
        return str(self._request.instance)

    def _lost(self) -> None:
        self.lease_id = 0
        self.state = "unregistered"
        self._m_registered.set(0)

    async def _register(self) -> None:
        response = await self._controls.channel().unary(
            _REGISTER, self._request, discovery_pb2.RegisterResponse, timeout=_CALL_TIMEOUT
        )
        self.lease_id = response.lease_id
        self.ttl = response.ttl_seconds or 10
        self.state = "registered"
        self._m_registered.set(1)
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
        }
