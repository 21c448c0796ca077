"""Helpers for the mesh integration tests: a recording gRPC app, a mesh builder, polling.

The app is a grpc.aio server with generic bytes handlers (no .proto) for all
four call kinds, running on its own event loop thread; it records what it
saw (metadata, remaining deadline, cancellation) so tests can check what
reached the server through the sidecars.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from skein.launch import Daemon, ProcessGroup, free_port, skein_argv
from skein.localetcd import find_etcd
from skein.v1 import operator_pb2, operator_pb2_grpc, resources_pb2

SERVICE = "test.Echo"


@dataclass
class Seen:
    """What the app saw of one call."""

    method: str
    metadata: dict[str, str | bytes]
    time_remaining: float | None
    cancelled: threading.Event = field(default_factory=threading.Event)


class EchoApp:
    """A gRPC app on 127.0.0.1:<free port>; `name` is returned by /Whoami."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[Seen] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None
        self.address = ""

    # -- lifecycle -------------------------------------------------------
    def start(self) -> EchoApp:
        self._thread.start()
        self.address = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> str:
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "Whoami": grpc.unary_unary_rpc_method_handler(self._whoami),
            "Sleep": grpc.unary_unary_rpc_method_handler(self._sleep),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi),
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return f"127.0.0.1:{port}"

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- handlers --------------------------------------------------------
    def _record(self, method: str, context: Any) -> Seen:
        seen = Seen(method, dict(context.invocation_metadata()), context.time_remaining())
        self.calls.append(seen)
        return seen

    async def _unary(self, request: bytes, context: Any) -> bytes:
        seen = self._record("Unary", context)
        echoed = tuple((k, v) for k, v in seen.metadata.items() if k.startswith("x-"))
        if request == b"fail":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "refused: état invalide",
                trailing_metadata=(*echoed, ("grpc-status-details-bin", b"\x08\x09details")),
            )
        context.set_trailing_metadata((*echoed, ("x-trailer", "t1")))
        return request

    async def _whoami(self, request: bytes, context: Any) -> bytes:
        return self.name.encode()

    async def _sleep(self, request: bytes, context: Any) -> bytes:
        seen = self._record("Sleep", context)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.cancelled.set()
            raise
        return b""

    async def _server_stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self._record("ServerStream", context)
        for i in range(int(request)):
            yield f"item-{i}".encode()

    async def _client_stream(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        self._record("ClientStream", context)
        parts = [chunk async for chunk in requests]
        return b"|".join(parts)

    async def _bidi(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        self._record("Bidi", context)
        async for chunk in requests:
            yield chunk.upper()


def method(channel: grpc.Channel, name: str, kind: str = "unary_unary") -> Any:
    factory = getattr(channel, kind)
    return factory(f"/{SERVICE}/{name}")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `predicate` every 50 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def get_json(daemon: Daemon, path: str) -> Any:
    status, body = daemon.get(path)
    return json.loads(body) if status == 200 else None


def endpoints_of(daemon: Daemon, cluster: str) -> list[str]:
    """Instance ids `daemon` currently has for `cluster` (empty when unknown)."""
    dump = get_json(daemon, "/clusters")
    if not dump or cluster not in dump["clusters"]:
        return []
    return sorted(e["instance"] for e in dump["clusters"][cluster]["endpoints"])


def unique_prefix() -> str:
    return f"/skein-test-{uuid.uuid4().hex[:8]}/"


def start_control(procs: ProcessGroup, name: str, etcd: str, prefix: str, *extra: str) -> Daemon:
    control = procs.control(name, etcd, "--prefix", prefix, *extra)
    control.wait_ready(20)
    return control


def apply(control: Daemon, *resources: resources_pb2.Resource) -> int:
    with grpc.insecure_channel(control.addresses["listen"]) as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        response = stub.Apply(operator_pb2.ApplyRequest(resources=resources), timeout=5)
        return int(response.version)


def traffic_policy(service: str, algorithm: Any, timeout_s: float | None = None) -> Any:
    spec = resources_pb2.TrafficPolicySpec(
        service=service, load_balancer=resources_pb2.LoadBalancer(algorithm=algorithm)
    )
    if timeout_s is not None:
        spec.timeout.FromTimedelta(datetime.timedelta(seconds=timeout_s))
    return resources_pb2.Resource(
        traffic_policy=resources_pb2.TrafficPolicy(
            metadata=resources_pb2.ObjectMeta(name=service), spec=spec
        )
    )


def service(name: str) -> resources_pb2.Resource:
    return resources_pb2.Resource(
        service=resources_pb2.Service(
            metadata=resources_pb2.ObjectMeta(name=name),
            spec=resources_pb2.ServiceSpec(protocol=resources_pb2.GRPC),
        )
    )


def status_of(control: Daemon) -> operator_pb2.StatusResponse:
    with grpc.insecure_channel(control.addresses["listen"]) as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        response: operator_pb2.StatusResponse = stub.Status(operator_pb2.StatusRequest(), timeout=5)
        return response


@dataclass
class Mesh:
    """control + app B behind sidecar B (service echo) + sidecar A calling echo."""

    procs: ProcessGroup
    control: Daemon
    app: EchoApp
    echo: Daemon
    client: Daemon
    upstream: str  # A's local port for echo
    prefix: str


@contextlib.contextmanager
def running_mesh(etcd: str, log_dir: str, *control_extra: str) -> Iterator[Mesh]:
    """A mesh of real processes for a whole test module; everything stops on exit."""
    procs = ProcessGroup(log_dir=log_dir)
    try:
        built = start_mesh(procs, etcd, *control_extra)
        try:
            yield built
        finally:
            built.app.stop()
    finally:
        procs.stop_all()


def start_mesh(
    procs: ProcessGroup, etcd: str, *control_extra: str, client_extra: tuple[str, ...] = ()
) -> Mesh:
    prefix = unique_prefix()
    control = start_control(procs, "control", etcd, prefix, *control_extra)
    app = EchoApp("b1").start()
    listen = control.addresses["listen"]
    echo = procs.sidecar("sidecar-b", "echo", listen, app.address, "--instance", "echo-1")
    upstream = f"127.0.0.1:{free_port()}"
    client = procs.sidecar(
        "sidecar-a",
        "web",
        listen,
        f"127.0.0.1:{free_port()}",
        "--instance",
        "web-1",
        "--upstream",
        f"echo={upstream}",
        "--subscribe",
        "ghost",
        *client_extra,
    )
    echo.wait_ready(20)
    client.wait_ready(20)
    wait_for(lambda: endpoints_of(client, "echo") == ["echo-1"], 10, "echo-1 at sidecar A")
    return Mesh(procs, control, app, echo, client, upstream, prefix)


def etcd_put(etcd: str, key: str, value: str) -> None:
    """Write straight into etcd, bypassing the operator API's validation."""
    etcdctl = os.path.join(os.path.dirname(find_etcd()), "etcdctl")
    subprocess.run(
        [etcdctl, "--endpoints", f"http://{etcd}", "put", key, value],
        check=True,
        capture_output=True,
        timeout=10,
        env={**os.environ, "ETCDCTL_API": "3"},
    )


def config_dump(daemon: Daemon) -> dict[str, Any]:
    dump = get_json(daemon, "/config_dump")
    assert dump is not None, f"{daemon.name}: /config_dump unavailable"
    return dict(dump)


def restart_control_at(
    procs: ProcessGroup, name: str, etcd: str, prefix: str, listen: str, *extra: str
) -> Daemon:
    """A new control replica on a given listen address (a restarted control)."""
    admin = f"127.0.0.1:{free_port()}"
    argv = skein_argv(
        "control", "--etcd", etcd, "--listen", listen, "--admin", admin, "--prefix", prefix, *extra
    )
    daemon = procs.start(name, argv, admin=admin)
    daemon.addresses["listen"] = listen
    daemon.wait_ready(20)
    return daemon


def process_footprint(pid: int) -> tuple[int, int, str]:
    """(VmRSS KiB, VmHWM KiB, /proc/PID/maps text) of a running process."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    with open(f"/proc/{pid}/maps") as f:
        maps = f.read()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]), maps
