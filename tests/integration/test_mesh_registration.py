"""Registration under leases: SIGKILL → gone within the TTL; clean stop → gone at once."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import grpc
import pytest

from skein.launch import Daemon
from skein.localetcd import LocalEtcd
from tests.integration.mesh_support import (
    EchoApp,
    Mesh,
    endpoints_of,
    method,
    running_mesh,
    wait_for,
)

pytestmark = pytest.mark.integration

LEASE_TTL = 3


@pytest.fixture(scope="module")
def mesh(etcd: LocalEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    log_dir = str(tmp_path_factory.mktemp("mesh-registration"))
    with running_mesh(etcd.endpoint, log_dir, "--lease-ttl", str(LEASE_TTL)) as built:
        yield built


@pytest.fixture
def second_app() -> Iterator[EchoApp]:
    app = EchoApp("b2").start()
    try:
        yield app
    finally:
        app.stop()


def _add_echo_instance(mesh: Mesh, app: EchoApp, instance: str) -> Daemon:
    sidecar = mesh.procs.sidecar(
        instance, "echo", mesh.control.addresses["listen"], app.address, "--instance", instance
    )
    sidecar.wait_ready(20)
    wait_for(lambda: instance in endpoints_of(mesh.client, "echo"), 5, f"{instance} at A")
    return sidecar


def test_balances_over_registered_instances(mesh: Mesh, second_app: EchoApp) -> None:
    sidecar = _add_echo_instance(mesh, second_app, "echo-2")
    with grpc.insecure_channel(mesh.upstream) as channel:
        names = {method(channel, "Whoami")(b"", timeout=5) for _ in range(6)}
    assert names == {b"b1", b"b2"}
    sidecar.stop()


def test_sigkilled_sidecar_leaves_within_lease_ttl(mesh: Mesh, second_app: EchoApp) -> None:
    sidecar = _add_echo_instance(mesh, second_app, "echo-3")
    sidecar.kill()
    killed = time.monotonic()
    wait_for(
        lambda: "echo-3" not in endpoints_of(mesh.client, "echo"),
        LEASE_TTL + 3,
        "echo-3 to leave sidecar A after SIGKILL",
    )
    assert time.monotonic() - killed <= LEASE_TTL + 3
    assert endpoints_of(mesh.client, "echo") == ["echo-1"]


def test_clean_stop_deregisters_at_once(mesh: Mesh, second_app: EchoApp) -> None:
    sidecar = _add_echo_instance(mesh, second_app, "echo-4")
    sidecar.signal(signal.SIGTERM)
    stopped = time.monotonic()
    wait_for(
        lambda: "echo-4" not in endpoints_of(mesh.client, "echo"),
        2,
        "echo-4 to leave sidecar A after SIGTERM",
    )
    assert time.monotonic() - stopped < 2
    assert sidecar.proc is not None
    assert sidecar.proc.wait(10) == 0  # drained and exited cleanly


def test_expired_lease_is_registered_again(mesh: Mesh, second_app: EchoApp) -> None:
    sidecar = _add_echo_instance(mesh, second_app, "echo-5")
    sidecar.signal(signal.SIGSTOP)  # frozen: renewals stop, the lease expires
    try:
        wait_for(
            lambda: "echo-5" not in endpoints_of(mesh.client, "echo"),
            LEASE_TTL + 3,
            "echo-5's lease to expire",
        )
    finally:
        sidecar.signal(signal.SIGCONT)
    # Renew answers NOT_FOUND; the sidecar registers again on its own
    wait_for(lambda: "echo-5" in endpoints_of(mesh.client, "echo"), 5, "echo-5 to come back")
    sidecar.stop()
