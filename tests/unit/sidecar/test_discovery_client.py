"""The discovery client against a scripted control stream over real gRPC sockets.

The scripted server stands in for the control daemon (another process's
code); the client, config parsing, balancers and disk cache are all real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from sidecar.discovery import ControlEndpoints, DiscoveryClient, DiskCache
from sidecar.dispatch import ConfigHolder
from sidecar.policy.backoff import ExponentialBackoff
from skein.config import parse_snapshot
from skein.localetcd import free_port
from skein.metrics import Registry
from skein.v1 import discovery_pb2, discovery_pb2_grpc, resources_pb2


def snapshot(*addresses: str, cluster: str = "orders") -> discovery_pb2.Snapshot:
    endpoints = [
        resources_pb2.Endpoint(
            metadata=resources_pb2.ObjectMeta(name=f"{cluster}-{i}"),
            spec=resources_pb2.EndpointSpec(service=cluster, address=address),
        )
        for i, address in enumerate(addresses)
    ]
    return discovery_pb2.Snapshot(
        clusters=[discovery_pb2.Cluster(name=cluster, endpoints=endpoints)]
    )


class ScriptedControl(discovery_pb2_grpc.DiscoveryServicer):  # type: ignore[misc]
    """Sends `responses` in order on every stream, recording each request it gets."""

    def __init__(self, responses: list[discovery_pb2.DiscoveryResponse]) -> None:
        self.responses = responses
        self.requests: list[discovery_pb2.DiscoveryRequest] = []
        self.got = asyncio.Condition()

    async def Stream(self, request_iterator: Any, context: Any) -> Any:
        it = request_iterator.__aiter__()
        await self._record(await it.__anext__())
        for response in self.responses:
            yield response
            await self._record(await it.__anext__())
        await asyncio.Event().wait()  # hold the stream open

    async def _record(self, request: discovery_pb2.DiscoveryRequest) -> None:
        async with self.got:
            self.requests.append(request)
            self.got.notify_all()

    async def wait_requests(self, n: int) -> None:
        async with self.got:
            await asyncio.wait_for(self.got.wait_for(lambda: len(self.requests) >= n), 5)


async def serve(control: ScriptedControl) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    discovery_pb2_grpc.add_DiscoveryServicer_to_server(control, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def make_client(
    addresses: list[str], state_dir: str, **kw: Any
) -> tuple[DiscoveryClient, ConfigHolder, Registry]:
    holder, metrics = ConfigHolder(), Registry()
    controls = ControlEndpoints([(a.split(":")[0], int(a.split(":")[1])) for a in addresses])
    node = discovery_pb2.Node(service="web", instance="web-1", upstreams=["orders"])
    client = DiscoveryClient(
        controls,
        node,
        holder,
        DiskCache(state_dir),
        metrics,
        parse_snapshot,
        backoff=ExponentialBackoff(0.01, 0.05),
        **kw,
    )
    return client, holder, metrics


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 20))


def test_ack_apply_and_cache(tmp_path: Any) -> None:
    async def body() -> None:
        control = ScriptedControl(
            [
                discovery_pb2.DiscoveryResponse(
                    version_info="7", nonce="n1", snapshot=snapshot("127.0.0.1:9001")
                )
            ]
        )
        server, address = await serve(control)
        client, holder, metrics = make_client([address], str(tmp_path))
        task = asyncio.create_task(client.run())
        try:
            await control.wait_requests(2)
            first, ack = control.requests
            assert first.node.service == "web" and list(first.node.upstreams) == ["orders"]
            assert first.version_info == ""
            assert (ack.version_info, ack.response_nonce) == ("7", "n1")
            assert not ack.HasField("error_detail")
            assert client.ready.is_set() and holder.current is not None
            assert holder.current.source == "control"
            assert DiskCache(str(tmp_path)).load() is not None
            assert 'skein_sidecar_config_applies_total{source="control"} 1' in metrics.render()
            assert "skein_sidecar_control_connected 1" in metrics.render()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop(None)

    run(body)


def test_nack_keeps_old_config(tmp_path: Any) -> None:
    async def body() -> None:
        bad = snapshot("127.0.0.1:9001", cluster="Bad_Name")
        control = ScriptedControl(
            [
                discovery_pb2.DiscoveryResponse(
                    version_info="1", nonce="a", snapshot=snapshot("127.0.0.1:9001")
                ),
                discovery_pb2.DiscoveryResponse(version_info="2", nonce="b", snapshot=bad),
            ]
        )
        server, address = await serve(control)
        client, holder, metrics = make_client([address], str(tmp_path))
        task = asyncio.create_task(client.run())
        try:
            await control.wait_requests(3)
            nack = control.requests[2]
            assert nack.version_info == "1" and nack.response_nonce == "b"
            assert nack.error_detail.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert "clusters[0]" in nack.error_detail.message
            assert "name" in nack.error_detail.message
            assert holder.current is not None and holder.current.config.version == "1"
            assert client.status.last_nack is not None
            assert client.status.last_nack["version"] == "2"
            assert "skein_sidecar_config_nacks_total 1" in metrics.render()
            cached = DiskCache(str(tmp_path)).load()
            assert cached is not None
            assert discovery_pb2.DiscoveryResponse.FromString(cached).version_info == "1"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop(None)

    run(body)


def test_fails_over_to_the_next_control(tmp_path: Any) -> None:
    async def body() -> None:
        control = ScriptedControl(
            [
                discovery_pb2.DiscoveryResponse(
                    version_info="3", nonce="x", snapshot=snapshot("127.0.0.1:9001")
                )
            ]
        )
        server, address = await serve(control)
        dead = f"127.0.0.1:{free_port()}"
        client, holder, _ = make_client([dead, address], str(tmp_path))
        task = asyncio.create_task(client.run())
        try:
            await control.wait_requests(2)
            assert client.status.control == address
            assert holder.current is not None and holder.current.config.version == "3"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop(None)

    run(body)


def test_starts_from_disk_when_control_is_down_then_reports_its_version(tmp_path: Any) -> None:
    async def body() -> None:
        cached = discovery_pb2.DiscoveryResponse(
            version_info="42", nonce="old", snapshot=snapshot("127.0.0.1:9005")
        )
        DiskCache(str(tmp_path)).save(cached.SerializeToString())
        port = free_port()
        client, holder, metrics = make_client(
            [f"127.0.0.1:{port}"], str(tmp_path), connect_timeout=0.5
        )
        task = asyncio.create_task(client.run())
        try:
            await asyncio.wait_for(client.ready.wait(), 5)
            assert holder.current is not None
            assert (holder.current.source, holder.current.config.version) == ("disk", "42")
            assert 'skein_sidecar_config_applies_total{source="disk"} 1' in metrics.render()
            # control comes back on that port: the first request names the cached version
            control = ScriptedControl([])
            server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            discovery_pb2_grpc.add_DiscoveryServicer_to_server(control, server)
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            try:
                await control.wait_requests(1)
                assert control.requests[0].version_info == "42"
            finally:
                await server.stop(None)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    run(body)


def test_corrupt_cache_is_ignored(tmp_path: Any) -> None:
    DiskCache(str(tmp_path)).save(b"\xff\xffnot a protobuf")
    client, holder, metrics = make_client([f"127.0.0.1:{free_port()}"], str(tmp_path))
    assert client.load_disk() is False
    assert holder.current is None
    assert "skein_sidecar_config_cache_errors_total 1" in metrics.render()


@pytest.mark.parametrize("payload", [b"", b"\x0a\x01"])
def test_handle_never_raises(tmp_path: Any, payload: bytes) -> None:
    client, holder, _ = make_client([f"127.0.0.1:{free_port()}"], str(tmp_path))
    reply = client.handle(payload)
    assert reply.HasField("error_detail") or holder.current is not None
