"""Operator API against real etcd: validation, dry-run, conflicts, get/delete."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from skein.config import make_resource
from skein.launch import ProcessGroup
from skein.localetcd import LocalEtcd
from skein.v1 import operator_pb2, resources_pb2
from tests.integration.control_client import Control, policy, service, unique_prefix

pytestmark = pytest.mark.integration


async def code_of(coro: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro  # type: ignore[misc]
    return info.value.code(), info.value.details() or ""


def test_operator_api(etcd: LocalEtcd, procs: ProcessGroup) -> None:
    daemon = procs.control("control", etcd.endpoint, "--prefix", unique_prefix())
    daemon.wait_ready(timeout=20)

    async def scenario() -> None:
        c = Control(daemon.addresses["listen"])
        # dry-run: reports, writes nothing
        dry = await c.apply(service("orders"), policy("orders", 2), dry_run=True)
        assert [(r.kind, r.action) for r in dry.results] == [
            ("Service", "created"),
            ("TrafficPolicy", "created"),
        ]
        assert dry.version == 0
        listed = await c.operator.Get(operator_pb2.GetRequest(kind="svc"))
        assert not listed.resources

        # invalid: nothing written, error names index, kind, name and field
        code, details = await code_of(c.apply(service("orders"), policy("orders", -1)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == (
            "resources[1] (TrafficPolicy/orders): spec.timeout: must be positive, got -1s"
        )
        assert not (await c.operator.Get(operator_pb2.GetRequest(kind="services"))).resources

        ep = resources_pb2.Endpoint()
        ep.metadata.name, ep.spec.service, ep.spec.address = "o-1", "orders", "127.0.0.1:1"
        code, details = await code_of(c.apply(make_resource("Endpoint", ep)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "registration" in details

        created = await c.apply(service("orders"), policy("orders", 2))
        assert created.version > 0
        configured = await c.apply(service("orders"), policy("orders", 3), dry_run=True)
        assert [r.action for r in configured.results] == ["unchanged", "configured"]

        got = await c.operator.Get(operator_pb2.GetRequest(kind="tp", name="orders"))
        stored = got.resources[0].traffic_policy
        assert stored.spec.timeout.seconds == 2 and stored.metadata.version == created.version

        # conditional on metadata.version
        stale = policy("orders", 4)
        stale.traffic_policy.metadata.version = created.version - 1
        code, details = await code_of(c.apply(stale))
        assert code == grpc.StatusCode.ABORTED and "TrafficPolicy/orders" in details
        fresh = policy("orders", 4)
        fresh.traffic_policy.metadata.version = created.version
        assert (await c.apply(fresh)).results[0].action == "configured"

        code, details = await code_of(
            c.operator.Get(operator_pb2.GetRequest(kind="tp", name="nope"))
        )
        assert code == grpc.StatusCode.NOT_FOUND and "TrafficPolicy/nope" in details
        code, details = await code_of(c.operator.Get(operator_pb2.GetRequest(kind="pods")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown kind" in details
        deleted = await c.operator.Delete(operator_pb2.DeleteRequest(kind="Service", name="orders"))
        assert deleted.version > created.version
        code, _ = await code_of(
            c.operator.Delete(operator_pb2.DeleteRequest(kind="Service", name="orders"))
        )
        assert code == grpc.StatusCode.NOT_FOUND
        status = await c.status()
        assert status.revision >= deleted.version and not status.sidecars
        await c.close()

    asyncio.run(scenario())


def test_one_traffic_policy_per_service(etcd: LocalEtcd, procs: ProcessGroup) -> None:
    daemon = procs.control("control", etcd.endpoint, "--prefix", unique_prefix())
    daemon.wait_ready(timeout=20)

    async def scenario() -> None:
        c = Control(daemon.addresses["listen"])
        assert (await c.apply(policy("orders-a", 2, "orders"))).version > 0

        # A second policy for the same service, alone or in a multi-resource apply.
        for request in (
            [policy("orders-b", 3, "orders")],
            [service("orders"), policy("orders-b", 3, "orders")],
        ):
            code, details = await code_of(c.apply(*request))
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            index = len(request) - 1
            assert details.startswith(f"resources[{index}] (TrafficPolicy/orders-b): spec.service")
            assert "TrafficPolicy/orders-a" in details, details
        code, details = await code_of(c.apply(policy("orders-b", 3, "orders"), dry_run=True))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "TrafficPolicy/orders-a" in details

        # Two in one request, neither stored yet: named both, nothing written.
        code, details = await code_of(
            c.apply(policy("users-a", 1, "users"), service("users"), policy("users-b", 1, "users"))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == (
            "resources[2] (TrafficPolicy/users-b): spec.service: TrafficPolicy/users-a "
            "(resources[0]) and TrafficPolicy/users-b both target service 'users'; a service "
            "takes one TrafficPolicy: merge them"
        )
        listed = await c.operator.Get(operator_pb2.GetRequest(kind="tp"))
        assert [r.traffic_policy.metadata.name for r in listed.resources] == ["orders-a"]

        # Moving the old policy away in the same apply frees the service.
        moved = await c.apply(policy("orders-a", 2, "users"), policy("orders-b", 3, "orders"))
        assert [r.action for r in moved.results] == ["configured", "created"]

        # Racing applies of two new policies for one service: exactly one wins.
        results = await asyncio.gather(
            *(c.apply(policy(f"race-{i}", 1, "race")) for i in range(4)), return_exceptions=True
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(won) == 1 and len(lost) == 3, results
        assert all(e.code() == grpc.StatusCode.INVALID_ARGUMENT for e in lost)
        await c.close()

    asyncio.run(scenario())
