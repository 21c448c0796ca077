"""Several replicas on one etcd; a replica restart."""

from __future__ import annotations

import asyncio

import pytest

from skein.launch import ProcessGroup, free_port
from skein.localetcd import LocalEtcd
from tests.integration.control_client import (
    Control,
    SidecarStream,
    eventually,
    policy,
    unique_prefix,
)

pytestmark = pytest.mark.integration


def test_two_replicas_serve_and_restart_resumes(etcd: LocalEtcd, procs: ProcessGroup) -> None:
    prefix = unique_prefix()
    a = procs.control("control-a", etcd.endpoint, "--prefix", prefix, "--lease-ttl", "2")
    b = procs.control("control-b", etcd.endpoint, "--prefix", prefix, "--lease-ttl", "2")
    a.wait_ready(timeout=20)
    b.wait_ready(timeout=20)

    async def scenario() -> str:
        ca, cb = Control(a.addresses["listen"]), Control(b.addresses["listen"])
        sa = SidecarStream(ca, "web-a", ["orders"])
        sb = SidecarStream(cb, "web-b", ["orders"])
        sa.ack(await sa.next())
        sb.ack(await sb.next())
        applied = await ca.apply(policy("orders", 7))
        for stream in (sa, sb):  # a write through one replica reaches both
            resp = await stream.next()
            assert resp.version_info == str(applied.version)
            assert resp.snapshot.clusters[0].policy.spec.timeout.seconds == 7
            stream.ack(resp)

        async def both_synced() -> bool:
            sidecars = (await cb.status()).sidecars
            return sorted(
                (s.node.instance, s.control)
                for s in sidecars
                if s.synced_revision >= applied.version
            ) == [("web-a", a.addresses["listen"]), ("web-b", b.addresses["listen"])]

        await eventually(both_synced)
        for stream in (sa, sb):
            await stream.close()
        for control in (ca, cb):
            await control.close()
        return str(applied.version)

    version = asyncio.run(scenario())

    # Replica a stops (its status records go with its lease); a new one on the same
    # address serves the same version, and a sidecar already on it is not resent.
    assert a.stop() == 0
    listen = a.addresses["listen"]
    port = listen.rsplit(":", 1)[1]
    a2 = procs.start(
        "control-a2",
        [
            *a.argv[: a.argv.index("--listen")],
            "--listen",
            listen,
            "--admin",
            f"127.0.0.1:{free_port()}",
            "--prefix",
            prefix,
        ],
        admin=None,
    )
    assert port

    async def resumed() -> None:
        c = Control(listen)

        async def serving() -> bool:
            try:
                return (await c.status()) is not None
            except Exception:
                return False

        await eventually(serving, timeout=20)
        # The stream resumes with the same content; once the sidecar runs the version
        # this replica would send, a reconnect is not sent anything.
        s = SidecarStream(c, "web-a", ["orders"], version=version)
        resp = await s.next()
        assert resp.snapshot.clusters[0].policy.spec.timeout.seconds == 7
        assert int(resp.version_info) >= int(version)
        s.ack(resp)
        await s.close()
        again = SidecarStream(c, "web-a", ["orders"], version=resp.version_info)
        with pytest.raises(TimeoutError):
            await again.next(timeout=0.5)
        await again.close()
        await c.close()

    asyncio.run(resumed())
    assert a2.alive()
