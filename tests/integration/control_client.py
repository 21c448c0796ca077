"""A small asyncio client of the control daemon for integration tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc

from skein.config import make_resource
from skein.v1 import (
    discovery_pb2,
    discovery_pb2_grpc,
    operator_pb2,
    operator_pb2_grpc,
    resources_pb2,
)


def unique_prefix() -> str:
    return f"/skein-test-{uuid.uuid4().hex[:8]}/"


def policy(name: str, seconds: int, service: str | None = None) -> resources_pb2.Resource:
    tp = resources_pb2.TrafficPolicy()
    tp.metadata.name = name
    tp.spec.service = service or name
    tp.spec.timeout.seconds = seconds
    return make_resource("TrafficPolicy", tp)


def service(name: str) -> resources_pb2.Resource:
    svc = resources_pb2.Service()
    svc.metadata.name = name
    return make_resource("Service", svc)


class Control:
    """Stubs over one channel to a control replica."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address)
        self.operator = operator_pb2_grpc.OperatorStub(self.channel)
        self.discovery = discovery_pb2_grpc.DiscoveryStub(self.channel)

    async def apply(self, *resources: Any, dry_run: bool = False) -> Any:
        return await self.operator.Apply(
            operator_pb2.ApplyRequest(resources=list(resources), dry_run=dry_run), timeout=5
        )

    async def status(self) -> Any:
        return await self.operator.Status(operator_pb2.StatusRequest(), timeout=5)

    async def close(self) -> None:
        await self.channel.close()


class SidecarStream:
    """A discovery stream that reads responses into a queue and ACKs on request."""

    def __init__(
        self,
        control: Control,
        instance: str,
        upstreams: list[str],
        service: str = "web",
        version: str = "",
    ) -> None:
        self.node = discovery_pb2.Node(service=service, instance=instance, upstreams=upstreams)
        self._out: asyncio.Queue[Any] = asyncio.Queue()
        self._out.put_nowait(discovery_pb2.DiscoveryRequest(node=self.node, version_info=version))
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.call = control.discovery.Stream(self._requests())
        self._reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[Any]:
        while True:
            yield await self._out.get()

    async def _read(self) -> None:
        try:
            async for resp in self.call:
                self.responses.put_nowait(resp)
        except grpc.aio.AioRpcError as err:
            self.responses.put_nowait(err)

    async def next(self, timeout: float = 5.0) -> Any:  # noqa: ASYNC109
        item = await asyncio.wait_for(self.responses.get(), timeout)
        if isinstance(item, Exception):
            raise item
        return item

    def ack(self, resp: Any) -> None:
        self._out.put_nowait(
            discovery_pb2.DiscoveryRequest(
                version_info=resp.version_info, response_nonce=resp.nonce
            )
        )

    def nack(self, resp: Any, applied: str, message: str) -> None:
        self._out.put_nowait(
            discovery_pb2.DiscoveryRequest(
                version_info=applied,
                response_nonce=resp.nonce,
                error_detail=discovery_pb2.ErrorDetail(code=3, message=message),
            )
        )

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def eventually(check: Any, timeout: float = 5.0, interval: float = 0.05) -> Any:  # noqa: ASYNC109
    """Await `check()` until it returns something truthy; the last value or AssertionError."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)
