"""`skein wait` semantics against a real control daemon and etcd.

Status reports the newest configuration revision (resources and endpoints),
never a status write, so waiting for it can succeed; a sidecar whose
snapshot a change does not touch counts as synced without a push, one that
is touched counts only once it has ACKed.
"""

from __future__ import annotations

import asyncio

import pytest

from control.store import EtcdStore
from skein import cli, waiting
from skein.addr import parse_hostport
from skein.launch import ProcessGroup
from skein.localetcd import LocalEtcd
from skein.v1 import operator_pb2
from tests.integration.control_client import (
    Control,
    SidecarStream,
    eventually,
    policy,
    unique_prefix,
)

pytestmark = pytest.mark.integration


def behind(status: operator_pb2.StatusResponse, version: int) -> list[str]:
    return sorted(s.node.instance for s in waiting.laggards(status, version))


def test_status_revision_is_the_configuration_and_wait_counts_only_affected(
    etcd: LocalEtcd, procs: ProcessGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = procs.control("control", etcd.endpoint, "--prefix", unique_prefix())
    daemon.wait_ready(timeout=20)
    address = daemon.addresses["listen"]

    def skein_wait(version: int) -> int:
        return cli.main(["wait", "--version", str(version), "--timeout", "5", "--control", address])

    async def scenario() -> None:
        control = Control(address)
        store = EtcdStore([parse_hostport(etcd.endpoint)])
        orders = SidecarStream(control, "calls-orders", ["orders"])
        users = SidecarStream(control, "calls-users", ["users"])
        orders.ack(await orders.next())
        users.ack(await users.next())

        applied = await control.apply(policy("orders", 2))
        version = applied.version
        pushed = await orders.next()
        assert pushed.version_info == str(version)

        # Not ACKed yet: only the affected sidecar lags; the other synced without a push.
        async def only_orders_behind() -> operator_pb2.StatusResponse | None:
            status = await control.status()
            return status if behind(status, version) == ["calls-orders"] else None

        status = await eventually(only_orders_behind)
        # Status writes moved etcd on, but the configuration is still at `version`.
        assert await store.revision() > version
        assert status.revision == version
        with pytest.raises(TimeoutError):
            await users.next(timeout=0.2)

        orders.ack(pushed)

        async def none_behind() -> bool:
            return behind(await control.status(), version) == []

        await eventually(none_behind)
        status = await control.status()
        assert status.revision == version
        assert await asyncio.to_thread(skein_wait, status.revision) == 0

        # A delete leaves no key: the revision still moves to it.
        deleted = await control.operator.Delete(
            operator_pb2.DeleteRequest(kind="TrafficPolicy", name="orders")
        )

        async def at_delete() -> bool:
            status: operator_pb2.StatusResponse = await control.status()
            return bool(status.revision == deleted.version)

        await eventually(at_delete)
        orders.ack(await orders.next())
        assert await asyncio.to_thread(skein_wait, deleted.version) == 0
        for stream in (orders, users):
            await stream.close()
        await store.close()
        await control.close()

    asyncio.run(scenario())
    out = capsys.readouterr().out
    assert "every connected sidecar (2) is synced" in out
