"""Registration reports the local app's health: at once, latest wins, again after Register.

The scripted servicer stands in for the control daemon (another process's
code; the real one is exercised in tests/integration/test_mesh_health.py);
Registration, the control channels and the gRPC client are real.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from sidecar.discovery import ControlChannels, ControlEndpoints
from sidecar.policy.backoff import ExponentialBackoff
from sidecar.registration import MAX_REASON, Registration
from skein.localetcd import free_port
from skein.metrics import Registry
from skein.v1 import discovery_pb2, discovery_pb2_grpc, resources_pb2

Report = tuple[int, bool, str]  # (lease, healthy, reason)


class ScriptedControl(discovery_pb2_grpc.DiscoveryServicer):  # type: ignore[misc]
    """Leases 1, 2, ...; ReportHealth answers NOT_FOUND for a lease that is not the newest."""

    def __init__(self, ttl: int = 30) -> None:
        self.ttl = ttl
        self.lease = 0
        self.calls: list[str] = []
        self.reports: list[Report] = []
        self.report_failures = 0  # ReportHealth answers UNAVAILABLE this many times
        self.hold_reports = asyncio.Event()
        self.hold_reports.set()
        self.changed = asyncio.Event()

    def _note(self, name: str) -> None:
        self.calls.append(name)
        self.changed.set()

    async def Register(self, request: Any, context: Any) -> Any:
        self.lease += 1
        self._note("Register")
        return discovery_pb2.RegisterResponse(lease_id=self.lease, ttl_seconds=self.ttl)

    async def Renew(self, request: Any, context: Any) -> Any:
        self._note("Renew")
        if request.lease_id != self.lease:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"lease {request.lease_id} expired")
        return discovery_pb2.RenewResponse(ttl_seconds=self.ttl)

    async def Deregister(self, request: Any, context: Any) -> Any:
        self._note("Deregister")
        return discovery_pb2.DeregisterResponse()

    async def ReportHealth(self, request: Any, context: Any) -> Any:
        await self.hold_reports.wait()
        if self.report_failures:
            self.report_failures -= 1
            self._note("ReportHealth:UNAVAILABLE")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "etcd is away")
        assert (request.service, request.instance) == ("web", "web-1")
        if request.lease_id != self.lease:
            self._note("ReportHealth:NOT_FOUND")
            await context.abort(grpc.StatusCode.NOT_FOUND, f"lease {request.lease_id} is gone")
        healthy = request.health == resources_pb2.HEALTHY
        assert healthy or request.health == resources_pb2.UNHEALTHY
        self.reports.append((request.lease_id, healthy, request.reason))
        self._note("ReportHealth")
        return discovery_pb2.ReportHealthResponse()

    async def wait(self, predicate: Callable[[], bool], within: float = 5) -> None:
        """Until `predicate()` (about this control or the registration) holds."""

        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.01)

        await asyncio.wait_for(loop(), within)


async def serve(servicer: ScriptedControl) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    discovery_pb2_grpc.add_DiscoveryServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def make(addresses: list[str], channels: ControlChannels) -> tuple[Registration, Registry]:
    metrics = Registry()
    hostports = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in addresses]
    registration = Registration(
        ControlEndpoints(hostports, channels),
        service="web",
        instance="web-1",
        address="127.0.0.1:15006",
        labels={},
        weight=1,
        metrics=metrics,
        backoff=ExponentialBackoff(0.01, 0.05),
    )
    return registration, metrics


def health(registration: Registration) -> dict[str, Any]:
    dump: dict[str, Any] = registration.dump()
    return dict(dump["health"])


Scenario = Callable[[ScriptedControl, Registration, Registry], Awaitable[None]]


def run(scenario: Scenario, *, dead_first: bool = False, ttl: int = 30) -> None:
    async def body() -> None:
        control = ScriptedControl(ttl)
        server, address = await serve(control)
        channels = ControlChannels()
        addresses = [f"127.0.0.1:{free_port()}", address] if dead_first else [address]
        registration, metrics = make(addresses, channels)
        task = asyncio.create_task(registration.run())
        try:
            await scenario(control, registration, metrics)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await channels.close()
            await server.stop(None)

    asyncio.run(asyncio.wait_for(body(), 20))


def test_nothing_is_reported_while_no_verdict_was_set() -> None:
    async def scenario(control: ScriptedControl, reg: Registration, _: Registry) -> None:
        await control.wait(lambda: reg.lease_id == 1)
        await asyncio.sleep(0.1)
        assert control.reports == []
        assert health(reg) == {
            "healthy": True,
            "reason": "",
            "reported": False,
            "last_error": "",
        }

    run(scenario)


def test_a_verdict_set_before_registering_is_sent_once_registered() -> None:
    async def scenario(control: ScriptedControl, reg: Registration, _: Registry) -> None:
        reg.set_health(False, "first check failed: NOT_SERVING")  # may run before Register
        await control.wait(lambda: bool(control.reports))
        assert control.reports == [(1, False, "first check failed: NOT_SERVING")]
        reg.set_health(True, "1 check passed")
        await control.wait(lambda: len(control.reports) == 2)
        assert control.reports[-1] == (1, True, "1 check passed")
        assert health(reg)["reported"] is True

    run(scenario, dead_first=True)


def test_latest_verdict_wins_while_control_fails() -> None:
    async def scenario(control: ScriptedControl, reg: Registration, metrics: Registry) -> None:
        await control.wait(lambda: reg.lease_id == 1)
        control.report_failures = 2
        reg.set_health(False, "3 checks in a row failed: NOT_SERVING")
        await control.wait(lambda: control.calls.count("ReportHealth:UNAVAILABLE") == 1)
        assert health(reg)["reported"] is False
        assert "UNAVAILABLE" in health(reg)["last_error"]
        reg.set_health(True, "1 check passed")
        await control.wait(lambda: bool(control.reports))
        await asyncio.sleep(0.1)  # nothing else is on its way
        assert control.reports == [(1, True, "1 check passed")]
        assert 'skein_sidecar_registration_failures_total{call="report"} 2' in metrics.render()

    run(scenario)


def test_a_report_in_flight_is_followed_by_the_newer_verdict() -> None:
    async def scenario(control: ScriptedControl, reg: Registration, _: Registry) -> None:
        await control.wait(lambda: reg.lease_id == 1)
        control.hold_reports.clear()
        reg.set_health(False, "first check failed: HTTP 503")
        await asyncio.sleep(0.05)  # that report is now waiting inside control
        reg.set_health(True, "1 check passed")
        control.hold_reports.set()
        await control.wait(lambda: len(control.reports) == 2)
        assert control.reports == [
            (1, False, "first check failed: HTTP 503"),
            (1, True, "1 check passed"),
        ]

    run(scenario)


def test_report_finding_the_lease_gone_registers_at_once_and_reports_again() -> None:
    async def scenario(control: ScriptedControl, reg: Registration, _: Registry) -> None:
        await control.wait(lambda: reg.lease_id == 1)
        control.lease = 7  # control lost our endpoint (lease expired while we were away)
        reg.set_health(False, "2 checks in a row failed: NOT_SERVING")
        # renewal is 10 s away (ttl 30): only the report can make it register this soon
        await control.wait(lambda: bool(control.reports), within=3)
        assert control.calls[:2] == ["Register", "ReportHealth:NOT_FOUND"]
        assert control.calls.count("Register") == 2
        assert control.reports == [(8, False, "2 checks in a row failed: NOT_SERVING")]
        assert "Renew" not in control.calls

    run(scenario)


def test_verdict_is_sent_again_after_a_re_registration() -> None:
    async def scenario(control: ScriptedControl, reg: Registration, _: Registry) -> None:
        reg.set_health(False, "first check failed: NOT_SERVING")
        await control.wait(lambda: bool(control.reports))
        control.lease = 41  # our lease expired: the next Renew answers NOT_FOUND
        await control.wait(lambda: len(control.reports) == 2)
        assert control.reports[-1] == (42, False, "first check failed: NOT_SERVING")
        assert control.calls.count("Register") == 2

    run(scenario, ttl=1)


def test_long_reasons_are_cut_and_nothing_is_reported_after_deregister() -> None:
    async def scenario(control: ScriptedControl, reg: Registration, _: Registry) -> None:
        reg.set_health(False, "x" * 2000)
        await control.wait(lambda: bool(control.reports))
        assert len(control.reports[0][2]) == MAX_REASON
        assert await reg.deregister() is True
        reg.set_health(True, "1 check passed")
        await asyncio.sleep(0.1)
        assert len(control.reports) == 1 and control.calls.count("Register") == 1

    run(scenario)
