"""The control daemon against misbehaving clients: it answers, it never falls over."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from control.store import EtcdStore, KeyLayout
from skein.addr import parse_hostport
from skein.launch import Daemon, ProcessGroup
from skein.localetcd import LocalEtcd
from skein.v1 import discovery_pb2
from tests.integration.control_client import Control, SidecarStream, eventually, unique_prefix

pytestmark = pytest.mark.integration

STREAM = "/skein.v1.Discovery/Stream"


def start(procs: ProcessGroup, etcd: LocalEtcd, prefix: str) -> Daemon:
    daemon = procs.control("control", etcd.endpoint, "--prefix", prefix)
    daemon.wait_ready(timeout=20)
    return daemon


async def raw_stream(address: str, messages: list[bytes]) -> tuple[grpc.StatusCode, str]:
    """Send raw request bytes on a Stream call; the status it ends with."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(STREAM)(timeout=5)
        for message in messages:
            await call.write(message)
        await call.done_writing()
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details() or ""
        return await call.code(), await call.details()


def metric(daemon: Daemon, name: str) -> float:
    for line in daemon.get("/metrics")[1].decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_bad_streams_get_a_status_and_leave_nothing_behind(
    etcd: LocalEtcd, procs: ProcessGroup
) -> None:
    daemon = start(procs, etcd, unique_prefix())
    address = daemon.addresses["listen"]
    good = discovery_pb2.DiscoveryRequest(
        node=discovery_pb2.Node(service="web", instance="web-1", upstreams=["orders"])
    ).SerializeToString()

    async def scenario() -> None:
        # Not a protobuf message at all: first request, or after a good one.
        code, details = await raw_stream(address, [b"\xff\xff\xff garbage"])
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith("first request: request 0 is not a skein.v1.DiscoveryRequest")
        code, details = await raw_stream(address, [good, b"\xff\xff\xff garbage"])
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith("request 1 is not a skein.v1.DiscoveryRequest"), details
        # No request at all: the stream just ends.
        code, _ = await raw_stream(address, [])
        assert code == grpc.StatusCode.OK
        # A first request that does not say who it is, or names nonsense.
        cases = [
            (discovery_pb2.Node(), "node.service: required"),
            (discovery_pb2.Node(service="web"), "node.instance: required"),
            (discovery_pb2.Node(service="Web!", instance="w"), "node.service: must be"),
            (
                discovery_pb2.Node(service="web", instance="w", upstreams=["ok", "NOT OK"]),
                "node.upstreams[1]: must be",
            ),
            (discovery_pb2.Node(service="web", instance="a/b"), "without '/'"),
        ]
        for node, words in cases:
            request = discovery_pb2.DiscoveryRequest(node=node).SerializeToString()
            code, details = await raw_stream(address, [request])
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (node, details)
            assert details.startswith("first request: ") and words in details, details

    asyncio.run(scenario())
    assert daemon.alive()
    assert metric(daemon, "skein_control_streams_connected") == 0


def test_register_with_bad_fields_is_invalid_argument(etcd: LocalEtcd, procs: ProcessGroup) -> None:
    daemon = start(procs, etcd, unique_prefix())

    async def scenario() -> None:
        control = Control(daemon.addresses["listen"])
        ok = {"service": "orders", "instance": "o-1", "address": "127.0.0.1:9001"}
        cases: list[tuple[dict[str, object], str]] = [
            ({"address": "nowhere"}, "address"),
            ({"address": "127.0.0.1:99999"}, "address"),
            ({"address": ""}, "address"),
            ({"service": "Orders_Service"}, "service"),
            ({"service": ""}, "service"),
            ({"instance": ""}, "instance"),
            ({"weight": 10_000_000}, "weight"),
            ({"ttl_seconds": 100_000}, "ttl_seconds"),
        ]
        for change, field in cases:
            request = discovery_pb2.RegisterRequest(**{**ok, **change})  # type: ignore[arg-type]
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await control.discovery.Register(request, timeout=5)
            details = info.value.details() or ""
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (change, details)
            assert details.startswith(f"RegisterRequest: {field}: "), (change, details)
        await control.close()

    asyncio.run(scenario())
    assert daemon.alive()


def test_many_streams_closing_at_once_leave_no_status_keys(
    etcd: LocalEtcd, procs: ProcessGroup
) -> None:
    prefix = unique_prefix()
    daemon = start(procs, etcd, prefix)
    count = 150

    async def status_keys(store: EtcdStore) -> int:
        _rev, kvs = await store.range_prefix(KeyLayout(prefix).status.encode())
        return len(kvs)

    async def scenario() -> None:
        store = EtcdStore([parse_hostport(etcd.endpoint)])
        controls = [Control(daemon.addresses["listen"]) for _ in range(3)]
        streams = [SidecarStream(controls[i % 3], f"web-{i}", ["orders"]) for i in range(count)]
        for stream in streams:
            stream.ack(await stream.next())

        async def all_recorded() -> bool:
            return await status_keys(store) == count

        await eventually(all_recorded, timeout=15)
        await asyncio.gather(*(s.close() for s in streams))

        async def none_left() -> bool:
            return await status_keys(store) == 0

        await eventually(none_left, timeout=15)
        for control in controls:
            await control.close()
        await store.close()

    asyncio.run(scenario())
    assert daemon.alive()
    assert metric(daemon, "skein_control_streams_connected") == 0
