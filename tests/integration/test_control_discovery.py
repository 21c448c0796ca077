"""Control daemon against real etcd: pushes, ACK/NACK, status, coalescing, leases."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]

from control.store import EtcdStore, KeyLayout
from skein.addr import parse_hostport
from skein.config import parse_snapshot
from skein.errors import ConfigError
from skein.launch import Daemon, ProcessGroup
from skein.localetcd import LocalEtcd
from skein.v1 import discovery_pb2, resources_pb2
from tests.integration.control_client import (
    Control,
    SidecarStream,
    eventually,
    policy,
    unique_prefix,
)

pytestmark = pytest.mark.integration


def endpoint(name: str) -> resources_pb2.Endpoint:
    ep = resources_pb2.Endpoint()
    ep.metadata.name, ep.spec.service, ep.spec.address = name, "orders", "127.0.0.1:9000"
    return ep


def start_control(
    procs: ProcessGroup, etcd: LocalEtcd, prefix: str, name: str = "control", *extra: str
) -> Daemon:
    daemon = procs.control(name, etcd.endpoint, "--prefix", prefix, "--lease-ttl", "2", *extra)
    daemon.wait_ready(timeout=20)
    return daemon


def test_apply_push_ack_status(etcd: LocalEtcd, procs: ProcessGroup) -> None:
    prefix = unique_prefix()
    daemon = start_control(procs, etcd, prefix)

    async def scenario() -> None:
        control = Control(daemon.addresses["listen"])
        stream = SidecarStream(control, "web-1", ["orders"])
        first = await stream.next()
        assert first.snapshot.clusters[0].name == "orders"
        assert not first.snapshot.clusters[0].HasField("policy")
        stream.ack(first)
        applied = await control.apply(policy("orders", 2))
        assert applied.version > 0 and applied.results[0].action == "created"
        resp = await stream.next()
        assert resp.version_info == str(applied.version)
        assert parse_snapshot(resp.version_info, resp.snapshot).clusters["orders"].timeout == 2
        stream.ack(resp)

        async def acked() -> bool:
            st = await control.status()
            return any(
                s.node.instance == "web-1"
                and s.acked_version == resp.version_info
                and s.synced_revision >= applied.version
                for s in st.sidecars
            )

        await eventually(acked)
        again = await control.apply(policy("orders", 2))
        assert again.results[0].action == "unchanged" and again.version == 0
        await stream.close()

        async def gone() -> bool:
            return not (await control.status()).sidecars

        await eventually(gone)
        await control.close()

    asyncio.run(scenario())


def test_burst_coalesces_and_bad_stored_value_is_nacked(
    etcd: LocalEtcd, procs: ProcessGroup
) -> None:
    prefix = unique_prefix()
    # The burst is 50 writes spread over 10-40 ms (more on a loaded machine) with gaps of a
    # few ms; a 20 ms quiet period makes it a burst by the daemon's own definition.
    daemon = start_control(procs, etcd, prefix, "control", "--coalesce-ms", "20")
    layout = KeyLayout(prefix)

    async def scenario() -> None:
        control = Control(daemon.addresses["listen"])
        store = EtcdStore([parse_hostport(etcd.endpoint)])
        stream = SidecarStream(control, "web-1", ["orders"])
        stream.ack(await stream.next())
        # 50 concurrent writes (registrations landing together): a few pushes, not 50.
        await asyncio.gather(
            *(
                store.put(
                    layout.endpoint("orders", f"o-{i}"),
                    json_format.MessageToJson(endpoint(f"o-{i}")).encode(),
                )
                for i in range(50)
            )
        )
        pushes = []
        while True:
            resp = await stream.next()
            pushes.append(resp)
            stream.ack(resp)
            if len(resp.snapshot.clusters[0].endpoints) == 50:
                break
        assert len(pushes) <= 10, f"{len(pushes)} pushes for 50 puts"
        for i in range(50):
            await store.delete(layout.endpoint("orders", f"o-{i}"))
        resp = await stream.next()
        while resp.snapshot.clusters[0].endpoints:
            stream.ack(resp)
            resp = await stream.next()
        stream.ack(resp)
        pushes.append(resp)

        async def acked_last() -> bool:
            return any(
                s.acked_version == resp.version_info for s in (await control.status()).sidecars
            )

        # An ACK that arrives after the next push would carry a stale nonce (ignored).
        await eventually(acked_last)

        # A value that bypassed Apply: pushed as stored, the sidecar's validation NACKs it.
        bad = policy("orders", -1).traffic_policy
        await store.put(
            layout.resource("TrafficPolicy", "orders"), json_format.MessageToJson(bad).encode()
        )
        resp = await stream.next()
        with pytest.raises(ConfigError) as info:
            parse_snapshot(resp.version_info, resp.snapshot)
        stream.nack(resp, pushes[-1].version_info, str(info.value))

        async def nacked() -> bool:
            return any(
                s.nack_error == "TrafficPolicy/orders: spec.timeout: must be positive, got -1s"
                and s.acked_version == pushes[-1].version_info
                for s in (await control.status()).sidecars
            )

        await eventually(nacked)
        # Unparseable JSON is skipped (counted), never crashes the daemon.
        await store.put(layout.resource("Service", "orders"), b'{"metadata":{"name":"orders"}}')
        resp = await stream.next()
        assert resp.snapshot.clusters[0].HasField("service")
        await store.put(layout.resource("Service", "orders"), b"{broken")
        resp = await stream.next()
        assert not resp.snapshot.clusters[0].HasField("service")
        assert b"skein_control_bad_stored_values_total 1" in daemon.get("/metrics")[1]
        await stream.close()
        await store.close()
        await control.close()

    asyncio.run(scenario())
    assert daemon.alive()


def test_registration_lease_expiry_and_deregister(etcd: LocalEtcd, procs: ProcessGroup) -> None:
    prefix = unique_prefix()
    daemon = start_control(procs, etcd, prefix)

    async def scenario() -> None:
        control = Control(daemon.addresses["listen"])
        stream = SidecarStream(control, "web-1", ["orders"])
        stream.ack(await stream.next())

        async def endpoints_after_push() -> list[str]:
            resp = await stream.next(timeout=6)
            stream.ack(resp)
            return [e.metadata.name for e in resp.snapshot.clusters[0].endpoints]

        reg = await control.discovery.Register(
            discovery_pb2.RegisterRequest(
                service="orders", instance="o-1", address="127.0.0.1:9001", ttl_seconds=2
            )
        )
        assert reg.ttl_seconds == 2
        assert await endpoints_after_push() == ["o-1"]
        renewed = await control.discovery.Renew(discovery_pb2.RenewRequest(lease_id=reg.lease_id))
        assert renewed.ttl_seconds == 2
        # Stop renewing, as a SIGKILLed sidecar would: gone within the TTL (plus slack).
        started = time.monotonic()
        assert await endpoints_after_push() == []
        assert time.monotonic() - started < 4.5
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await control.discovery.Renew(discovery_pb2.RenewRequest(lease_id=reg.lease_id))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        reg = await control.discovery.Register(
            discovery_pb2.RegisterRequest(
                service="orders", instance="o-2", address="127.0.0.1:9002"
            )
        )
        assert reg.ttl_seconds == 2  # the daemon's --lease-ttl
        assert await endpoints_after_push() == ["o-2"]
        started = time.monotonic()
        await control.discovery.Deregister(
            discovery_pb2.DeregisterRequest(lease_id=reg.lease_id, service="orders", instance="o-2")
        )
        assert await endpoints_after_push() == []
        assert time.monotonic() - started < 1.0

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await control.discovery.Register(
                discovery_pb2.RegisterRequest(service="orders", instance="o-3", address="nowhere")
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "address" in (info.value.details() or "")
        await stream.close()
        await control.close()

    asyncio.run(scenario())
