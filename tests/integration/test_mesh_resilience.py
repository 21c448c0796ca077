"""The mesh without its control daemon: keeps serving, resyncs, starts from disk, fails over."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from skein.launch import Daemon, ProcessGroup, free_port
from skein.localetcd import LocalEtcd
from skein.v1 import resources_pb2
from tests.integration.mesh_support import (
    EchoApp,
    apply,
    config_dump,
    endpoints_of,
    method,
    restart_control_at,
    start_control,
    start_mesh,
    traffic_policy,
    unique_prefix,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def app() -> Iterator[EchoApp]:
    echo = EchoApp("b1").start()
    try:
        yield echo
    finally:
        echo.stop()


def _call(address: str) -> bytes:
    with grpc.insecure_channel(address) as channel:
        result: bytes = method(channel, "Unary")(b"ping", timeout=5)
        return result


def _connected_to(daemon: Daemon, listen: str) -> bool:
    control = config_dump(daemon)["control"]
    return bool(control["state"] == "connected" and control["control"] == listen)


def test_keeps_serving_while_control_is_down_and_resyncs(
    procs: ProcessGroup, etcd: LocalEtcd
) -> None:
    mesh = start_mesh(procs, etcd.endpoint)
    try:
        listen = mesh.control.addresses["listen"]
        mesh.control.kill()
        wait_for(
            lambda: config_dump(mesh.client)["control"]["state"] != "connected",
            5,
            "sidecar A to notice control is gone",
        )
        for _ in range(3):
            assert _call(mesh.upstream) == b"ping"
        assert mesh.client.get("/ready")[0] == 200

        restarted = restart_control_at(procs, "control-2", etcd.endpoint, mesh.prefix, listen)
        wait_for(lambda: _connected_to(mesh.client, listen), 10, "sidecar A to reconnect")
        apply(restarted, traffic_policy("echo", resources_pb2.LEAST_REQUEST, 4.0))
        wait_for(
            lambda: config_dump(mesh.client)["clusters"]["echo"]["timeout"] == 4.0,
            5,
            "the new policy at sidecar A after resync",
        )
        assert _call(mesh.upstream) == b"ping"
    finally:
        mesh.app.stop()


def test_starts_from_disk_cache_with_control_down(
    procs: ProcessGroup, etcd: LocalEtcd, tmp_path: object
) -> None:
    state_dir = f"{tmp_path}/state-a"
    mesh = start_mesh(procs, etcd.endpoint, client_extra=("--state-dir", state_dir))
    try:
        # with control gone no push can land between reading the version and stopping
        mesh.control.kill()
        version = config_dump(mesh.client)["version"]
        assert mesh.client.stop() == 0
        again = procs.sidecar(
            "sidecar-a-again",
            "web",
            mesh.control.addresses["listen"],
            f"127.0.0.1:{free_port()}",
            "--instance",
            "web-1",
            "--upstream",
            f"echo={mesh.upstream}",
            "--subscribe",
            "ghost",
            "--state-dir",
            state_dir,
        )
        again.wait_ready(15)
        dump = config_dump(again)
        assert (dump["source"], dump["version"]) == ("disk", version)
        assert endpoints_of(again, "echo") == ["echo-1"]
        assert _call(mesh.upstream) == b"ping"
    finally:
        mesh.app.stop()


def test_sidecar_moves_to_another_control_replica(
    procs: ProcessGroup, etcd: LocalEtcd, app: EchoApp
) -> None:
    prefix = unique_prefix()
    first = start_control(procs, "control-1", etcd.endpoint, prefix)
    second = start_control(procs, "control-2", etcd.endpoint, prefix)
    listen1, listen2 = first.addresses["listen"], second.addresses["listen"]
    echo = procs.sidecar(
        "sidecar-b", "echo", f"{listen1},{listen2}", app.address, "--instance", "echo-1"
    )
    echo.wait_ready(20)
    wait_for(lambda: _connected_to(echo, listen1), 5, "sidecar B on control-1")

    first.kill()
    wait_for(lambda: _connected_to(echo, listen2), 10, "sidecar B to move to control-2")
    apply(second, traffic_policy("echo", resources_pb2.ROUND_ROBIN, 2.0))
    wait_for(lambda: config_dump(echo)["local_timeout"] == 2.0, 5, "policy via control-2")
    # its registration moved too: the endpoint is still (or again) registered
    wait_for(
        lambda: config_dump(echo)["registration"]["state"] == "registered",
        5,
        "registration on control-2",
    )
