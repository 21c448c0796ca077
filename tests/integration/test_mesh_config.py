"""Config changes reach every sidecar; an invalid config is NACKed and the old one serves."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from skein.localetcd import LocalEtcd
from skein.v1 import resources_pb2
from tests.integration.mesh_support import (
    Mesh,
    apply,
    config_dump,
    etcd_put,
    method,
    running_mesh,
    status_of,
    traffic_policy,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mesh(etcd: LocalEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    log_dir = str(tmp_path_factory.mktemp("mesh-config"))
    with running_mesh(etcd.endpoint, log_dir) as built:
        yield built


def _echo_policy(mesh: Mesh) -> tuple[str, float | None, str]:
    dump = config_dump(mesh.client)
    cluster = dump["clusters"].get("echo", {})
    return cluster.get("algorithm", ""), cluster.get("timeout"), dump["version"]


def test_traffic_policy_change_is_applied_by_all_sidecars(mesh: Mesh) -> None:
    version = apply(mesh.control, traffic_policy("echo", resources_pb2.LEAST_REQUEST, 2.5))
    wait_for(lambda: _echo_policy(mesh)[:2] == ("LEAST_REQUEST", 2.5), 5, "policy at sidecar A")
    # the callee's sidecar applies the same policy to its inbound side
    wait_for(lambda: config_dump(mesh.echo)["local_timeout"] == 2.5, 5, "policy at sidecar B")
    assert int(config_dump(mesh.client)["version"]) >= version
    apply(mesh.control, traffic_policy("echo", resources_pb2.ROUND_ROBIN, None))
    wait_for(lambda: _echo_policy(mesh)[:2] == ("ROUND_ROBIN", None), 5, "policy back at A")
    wait_for(lambda: config_dump(mesh.echo)["local_timeout"] is None, 5, "policy back at B")


def test_invalid_config_in_etcd_is_nacked_and_old_config_keeps_serving(
    mesh: Mesh, etcd: LocalEtcd
) -> None:
    apply(mesh.control, traffic_policy("echo", resources_pb2.LEAST_REQUEST, 3.0))
    wait_for(lambda: _echo_policy(mesh)[:2] == ("LEAST_REQUEST", 3.0), 5, "valid policy at A")
    good_version = config_dump(mesh.client)["version"]

    bad = {"metadata": {"name": "echo"}, "spec": {"service": "echo", "timeout": "-5s"}}
    etcd_put(etcd.endpoint, f"{mesh.prefix}resources/TrafficPolicy/echo", json.dumps(bad))

    def nacked() -> object:
        for sidecar in status_of(mesh.control).sidecars:
            if sidecar.node.instance == "web-1" and sidecar.nack_error:
                return sidecar
        return None

    status = wait_for(nacked, 5, "a NACK from web-1 in control's Status")
    assert "TrafficPolicy/echo" in status.nack_error and "spec.timeout" in status.nack_error
    dump = config_dump(mesh.client)
    assert dump["last_nack"] is not None and "spec.timeout" in dump["last_nack"]["error"]
    assert dump["version"] == good_version
    assert _echo_policy(mesh)[:2] == ("LEAST_REQUEST", 3.0)
    with grpc.insecure_channel(mesh.upstream) as channel:
        assert method(channel, "Unary")(b"still", timeout=5) == b"still"

    # a fixed config is ACKed again and clears the NACK
    apply(mesh.control, traffic_policy("echo", resources_pb2.ROUND_ROBIN, 1.5))
    wait_for(lambda: _echo_policy(mesh)[:2] == ("ROUND_ROBIN", 1.5), 5, "fixed policy at A")
