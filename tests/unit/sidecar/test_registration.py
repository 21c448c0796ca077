"""Registration against a scripted control over real gRPC sockets.

The scripted servicer stands in for the control daemon (another process's
code); Registration, the control channels and the gRPC client are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from sidecar.discovery import ControlChannels, ControlEndpoints
from sidecar.policy.backoff import ExponentialBackoff
from sidecar.registration import Registration
from skein.localetcd import free_port
from skein.metrics import Registry
from skein.v1 import discovery_pb2, discovery_pb2_grpc


class ScriptedRegistry(discovery_pb2_grpc.DiscoveryServicer):  # type: ignore[misc]
    """Leases 1, 2, ...; Renew answers NOT_FOUND while `expired` is set."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.expired = False
        self.next_lease = 1
        self.registered: list[discovery_pb2.RegisterRequest] = []
        self.changed = asyncio.Event()

    def _note(self, name: str) -> None:
        self.calls.append(name)
        self.changed.set()

    async def Register(self, request: Any, context: Any) -> Any:
        self._note("Register")
        self.registered.append(request)
        lease, self.next_lease = self.next_lease, self.next_lease + 1
        self.expired = False
        return discovery_pb2.RegisterResponse(lease_id=lease, ttl_seconds=1)

    async def Renew(self, request: Any, context: Any) -> Any:
        self._note("Renew")
        if self.expired:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"lease {request.lease_id} expired")
        return discovery_pb2.RenewResponse(ttl_seconds=1)

    async def Deregister(self, request: Any, context: Any) -> Any:
        self._note(f"Deregister:{request.lease_id}:{request.instance}")
        return discovery_pb2.DeregisterResponse()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), 5)


async def serve(servicer: ScriptedRegistry) -> tuple[grpc.aio.Server, str]:
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
        labels={"zone": "a"},
        weight=3,
        metrics=metrics,
        backoff=ExponentialBackoff(0.01, 0.05),
    )
    return registration, metrics


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 20))


def test_registers_fails_over_renews_and_re_registers_after_expiry() -> None:
    async def body() -> None:
        control = ScriptedRegistry()
        server, address = await serve(control)
        channels = ControlChannels()
        dead = f"127.0.0.1:{free_port()}"
        registration, metrics = make([dead, address], channels)
        task = asyncio.create_task(registration.run())
        try:
            await control.wait(lambda: "Renew" in control.calls)
            first = control.registered[0]
            assert (first.service, first.instance, first.address) == (
                "web",
                "web-1",
                "127.0.0.1:15006",
            )
            assert dict(first.labels) == {"zone": "a"} and first.weight == 3
            assert registration.dump()["control"] == address
            assert registration.state == "registered" and registration.lease_id == 1
            assert 'skein_sidecar_registration_failures_total{call="register"} 1' in (
                metrics.render()
            )
            control.expired = True  # the next Renew says NOT_FOUND: register again
            await control.wait(lambda: control.calls.count("Register") == 2)
            await control.wait(lambda: registration.lease_id == 2)
            assert "NOT_FOUND" in registration.last_error
            assert await registration.deregister() is True
            assert control.calls[-1] == "Deregister:2:web-1"
            assert registration.state == "unregistered"
            assert "skein_sidecar_registered 0" in metrics.render()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await channels.close()
            await server.stop(None)

    run(body)


def test_deregister_with_every_control_down_gives_up_quickly() -> None:
    async def body() -> None:
        channels = ControlChannels()
        registration, _ = make([f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"], channels)
        registration.lease_id = 9
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            assert await registration.deregister(per_call=0.5) is False
        finally:
            await channels.close()
        assert loop.time() - start < 2.0

    run(body)
