"""Active health checks end to end: real etcd, real control, real sidecars, real apps.

Two echo instances serve grpc.health.v1 (the shop's servicer) next to
/Whoami; their local policy checks every 0.2 s, 2 failures to turn
unhealthy, 1 pass to recover. One turns NOT_SERVING: its sidecar reports
it, control stores it with the endpoint in etcd, the caller's sidecar is
pushed the change and sends every call to the other instance; SERVING
again brings it back. An HTTP app with /health takes the same path. The
sidecar's own grpc.health.v1 answers on its admin port. ReportHealth's
contract (lease, unchanged value, validation) is checked against control.
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2  # type: ignore[import-untyped]

from examples.shop.health import HealthServicer
from skein.launch import Daemon, ProcessGroup, free_port
from skein.localetcd import LocalEtcd, find_etcd
from skein.v1 import (
    discovery_pb2,
    discovery_pb2_grpc,
    health_pb2,
    operator_pb2,
    operator_pb2_grpc,
    resources_pb2,
)
from tests.integration.mesh_support import get_json, start_control, unique_prefix, wait_for

pytestmark = pytest.mark.integration

INTERVAL = 0.2
UNHEALTHY_AFTER = 2
# interval x threshold, plus the report, the etcd write, the push and slack for a busy machine
CONVERGE = INTERVAL * UNHEALTHY_AFTER + 5.0
Status = health_pb2.HealthCheckResponse


class HealthApp:
    """A gRPC app (its own loop thread): /test.Echo/Whoami and a switchable grpc.health.v1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.health = HealthServicer(["test.Echo"])
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None
        self.address = ""

    def start(self) -> HealthApp:
        self._thread.start()
        self.address = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> str:
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        whoami = grpc.unary_unary_rpc_method_handler(self._whoami)
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler("test.Echo", {"Whoami": whoami}),
                self.health.handler(),
            )
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return f"127.0.0.1:{port}"

    async def _whoami(self, request: bytes, context: Any) -> bytes:
        return self.name.encode()

    def set(self, status: Any) -> None:
        self._loop.call_soon_threadsafe(self.health.set, status)

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class HttpApp:
    """An HTTP/1.1 app whose GET /health answers `status`."""

    def __init__(self) -> None:
        self.status = 200
        app = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = app.status if self.path == "/health" else 404
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def duration(seconds: float) -> Any:
    d = duration_pb2.Duration()
    d.FromTimedelta(datetime.timedelta(seconds=seconds))
    return d


def checked_policy(service: str, http_path: str = "") -> resources_pb2.Resource:
    check = resources_pb2.HealthCheck(
        interval=duration(INTERVAL),
        timeout=duration(INTERVAL),
        healthy_threshold=1,
        unhealthy_threshold=UNHEALTHY_AFTER,
        http_path=http_path,
    )
    spec = resources_pb2.TrafficPolicySpec(service=service, health_check=check)
    return resources_pb2.Resource(
        traffic_policy=resources_pb2.TrafficPolicy(
            metadata=resources_pb2.ObjectMeta(name=service), spec=spec
        )
    )


def apply(control: Daemon, *resources: resources_pb2.Resource) -> None:
    with grpc.insecure_channel(control.addresses["listen"]) as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        stub.Apply(operator_pb2.ApplyRequest(resources=resources), timeout=5)


def etcd_endpoint(etcd: str, prefix: str, service: str, instance: str) -> dict[str, Any] | None:
    """The stored Endpoint (JSON mapping) straight from etcd; None when absent."""
    etcdctl = os.path.join(os.path.dirname(find_etcd()), "etcdctl")
    key = f"{prefix}endpoints/{service}/{instance}"
    out = subprocess.run(
        [etcdctl, "--endpoints", f"http://{etcd}", "get", key, "--print-value-only"],
        check=True,
        capture_output=True,
        timeout=10,
        env={**os.environ, "ETCDCTL_API": "3"},
    ).stdout.strip()
    return json.loads(out) if out else None


def stored_health(etcd: str, prefix: str, service: str, instance: str) -> tuple[str, str]:
    ep = etcd_endpoint(etcd, prefix, service, instance) or {}
    spec = ep.get("spec", {})
    return spec.get("health", "HEALTH_STATE_UNSPECIFIED"), spec.get("healthReason", "")


def caller_view(caller: Daemon, cluster: str) -> dict[str, dict[str, Any]]:
    """Endpoints of `cluster` as the caller's sidecar has them, by instance."""
    dump = get_json(caller, "/clusters") or {"clusters": {}}
    endpoints = dump["clusters"].get(cluster, {}).get("endpoints", [])
    return {e["instance"]: e for e in endpoints}


def whoami_all(upstream: str, calls: int = 12) -> set[bytes]:
    with grpc.insecure_channel(upstream) as channel:
        whoami = channel.unary_unary("/test.Echo/Whoami")
        return {whoami(b"", timeout=5) for _ in range(calls)}


class Mesh:
    def __init__(self, procs: ProcessGroup, etcd: str) -> None:
        self.procs = procs
        self.etcd = etcd
        self.prefix = unique_prefix()
        self.control = start_control(procs, "control", etcd, self.prefix)
        apply(self.control, checked_policy("echo"), checked_policy("status", "/health"))
        listen = self.control.addresses["listen"]
        self.apps = {"h1": HealthApp("h1").start(), "h2": HealthApp("h2").start()}
        self.http = HttpApp()
        self.echo = {
            f"echo-{i}": procs.sidecar(
                f"sidecar-echo-{i}",
                "echo",
                listen,
                self.apps[f"h{i}"].address,
                "--instance",
                f"echo-{i}",
            )
            for i in (1, 2)
        }
        self.status = procs.sidecar(
            "sidecar-status", "status", listen, self.http.address, "--instance", "status-1"
        )
        self.upstream = f"127.0.0.1:{free_port()}"
        self.caller = procs.sidecar(
            "sidecar-web",
            "web",
            listen,
            f"127.0.0.1:{free_port()}",
            "--instance",
            "web-1",
            "--upstream",
            f"echo={self.upstream}",
        )
        for daemon in (*self.echo.values(), self.status, self.caller):
            daemon.wait_ready(20)
        wait_for(
            lambda: sorted(caller_view(self.caller, "echo")) == ["echo-1", "echo-2"],
            10,
            "both echo instances at the caller",
        )

    def stop(self) -> None:
        for app in self.apps.values():
            app.stop()
        self.http.stop()


@pytest.fixture(scope="module")
def mesh(etcd: LocalEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    procs = ProcessGroup(log_dir=str(tmp_path_factory.mktemp("mesh-health")))
    try:
        built = Mesh(procs, etcd.endpoint)
        try:
            yield built
        finally:
            built.stop()
    finally:
        procs.stop_all()


def test_not_serving_instance_is_stored_unhealthy_and_skipped_then_returns(mesh: Mesh) -> None:
    assert whoami_all(mesh.upstream) == {b"h1", b"h2"}
    mesh.apps["h1"].set(Status.NOT_SERVING)
    turned = time.monotonic()
    expected = ("UNHEALTHY", f"{UNHEALTHY_AFTER} checks in a row failed: NOT_SERVING")
    wait_for(
        lambda: stored_health(mesh.etcd, mesh.prefix, "echo", "echo-1") == expected,
        CONVERGE,
        "echo-1 stored UNHEALTHY in etcd",
    )
    # the caller is pushed the change: echo-1 shown unhealthy, every call goes to h2
    wait_for(
        lambda: caller_view(mesh.caller, "echo").get("echo-1", {}).get("healthy") is False,
        CONVERGE,
        "echo-1 unhealthy at the caller",
    )
    assert time.monotonic() - turned < CONVERGE
    assert caller_view(mesh.caller, "echo")["echo-2"]["healthy"] is True
    assert whoami_all(mesh.upstream) == {b"h2"}
    dump = get_json(mesh.echo["echo-1"], "/config_dump")
    assert dump["registration"]["health"]["healthy"] is False

    mesh.apps["h1"].set(Status.SERVING)
    wait_for(
        lambda: (
            stored_health(mesh.etcd, mesh.prefix, "echo", "echo-1") == ("HEALTHY", "1 check passed")
        ),
        CONVERGE,
        "echo-1 stored HEALTHY again",
    )
    wait_for(
        lambda: caller_view(mesh.caller, "echo").get("echo-1", {}).get("healthy") is True,
        CONVERGE,
        "echo-1 healthy at the caller",
    )
    assert whoami_all(mesh.upstream) == {b"h1", b"h2"}


def test_http_health_path_failing_marks_the_instance_unhealthy(mesh: Mesh) -> None:
    assert stored_health(mesh.etcd, mesh.prefix, "status", "status-1")[0] == "HEALTHY"
    mesh.http.status = 503
    wait_for(
        lambda: (
            stored_health(mesh.etcd, mesh.prefix, "status", "status-1")
            == ("UNHEALTHY", f"{UNHEALTHY_AFTER} checks in a row failed: HTTP 503")
        ),
        CONVERGE,
        "status-1 stored UNHEALTHY",
    )
    mesh.http.status = 200
    wait_for(
        lambda: (
            stored_health(mesh.etcd, mesh.prefix, "status", "status-1")
            == ("HEALTHY", "1 check passed")
        ),
        CONVERGE,
        "status-1 stored HEALTHY again",
    )


def test_grpc_health_check_on_the_sidecar_admin_port(mesh: Mesh) -> None:
    admin = mesh.echo["echo-2"].admin
    assert admin is not None
    with grpc.insecure_channel(admin) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=Status.FromString,
        )
        assert check(health_pb2.HealthCheckRequest(), timeout=5).status == Status.SERVING
        named = check(health_pb2.HealthCheckRequest(service="echo"), timeout=5)
        assert named.status == Status.SERVING
        with pytest.raises(grpc.RpcError) as info:
            check(health_pb2.HealthCheckRequest(service="orders"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # the HTTP/1.1 pages share the port
    assert mesh.echo["echo-2"].get("/ready")[0] == 200


def test_report_health_contract_at_control(mesh: Mesh) -> None:
    with grpc.insecure_channel(mesh.control.addresses["listen"]) as channel:
        stub = discovery_pb2_grpc.DiscoveryStub(channel)
        lease = stub.Register(
            discovery_pb2.RegisterRequest(
                service="probe", instance="probe-1", address="127.0.0.1:1", ttl_seconds=30
            ),
            timeout=5,
        ).lease_id

        def report(health: Any, reason: str, lease_id: int = lease) -> None:
            stub.ReportHealth(
                discovery_pb2.ReportHealthRequest(
                    lease_id=lease_id,
                    service="probe",
                    instance="probe-1",
                    health=health,
                    reason=reason,
                ),
                timeout=5,
            )

        report(resources_pb2.UNHEALTHY, "first check failed: NOT_SERVING")
        stored = etcd_endpoint(mesh.etcd, mesh.prefix, "probe", "probe-1")
        assert stored is not None and stored["spec"]["health"] == "UNHEALTHY"
        assert stored["spec"]["address"] == "127.0.0.1:1"  # the rest of the endpoint stays
        revision = etcd_revision(mesh.etcd)
        report(resources_pb2.UNHEALTHY, "first check failed: NOT_SERVING")
        assert etcd_revision(mesh.etcd) == revision  # unchanged: nothing written
        with pytest.raises(grpc.RpcError) as info:
            report(resources_pb2.HEALTHY, "1 check passed", lease_id=lease + 12345)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            report(resources_pb2.HEALTH_STATE_UNSPECIFIED, "")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "health" in (info.value.details() or "")
        stub.Deregister(
            discovery_pb2.DeregisterRequest(lease_id=lease, service="probe", instance="probe-1"),
            timeout=5,
        )
        with pytest.raises(grpc.RpcError) as info:
            report(resources_pb2.HEALTHY, "1 check passed")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "register again" in (info.value.details() or "")


def etcd_revision(etcd: str) -> int:
    etcdctl = os.path.join(os.path.dirname(find_etcd()), "etcdctl")
    out = subprocess.run(
        [etcdctl, "--endpoints", f"http://{etcd}", "endpoint", "status", "-w", "json"],
        check=True,
        capture_output=True,
        timeout=10,
        env={**os.environ, "ETCDCTL_API": "3"},
    ).stdout
    return int(json.loads(out)[0]["Status"]["header"]["revision"])
