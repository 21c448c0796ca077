"""Traffic through a sidecar pair: app → A (upstream/outbound port) → B inbound → app B."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from skein.localetcd import LocalEtcd
from tests.integration.mesh_support import (
    Mesh,
    method,
    process_footprint,
    running_mesh,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mesh(etcd: LocalEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    log_dir = str(tmp_path_factory.mktemp("mesh-traffic"))
    with running_mesh(etcd.endpoint, log_dir) as built:
        yield built


@pytest.fixture
def channel(mesh: Mesh) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(mesh.upstream) as ch:
        yield ch


def test_four_call_kinds(channel: grpc.Channel) -> None:
    assert method(channel, "Unary")(b"hello", timeout=5) == b"hello"
    items = list(method(channel, "ServerStream", "unary_stream")(b"3", timeout=5))
    assert items == [b"item-0", b"item-1", b"item-2"]
    joined = method(channel, "ClientStream", "stream_unary")(iter([b"a", b"b", b"c"]), timeout=5)
    assert joined == b"a|b|c"
    replies = list(method(channel, "Bidi", "stream_stream")(iter([b"x", b"y"]), timeout=5))
    assert replies == [b"X", b"Y"]


def test_outbound_port_routes_by_authority(mesh: Mesh) -> None:
    options = [("grpc.default_authority", "echo.default.svc.cluster.local:8080")]
    with grpc.insecure_channel(mesh.client.addresses["outbound"], options=options) as ch:
        assert method(ch, "Unary")(b"via-outbound", timeout=5) == b"via-outbound"


def test_metadata_trailers_and_status_details_round_trip(mesh: Mesh, channel: grpc.Channel) -> None:
    md = (("x-text", "plain value"), ("x-blob-bin", b"\x00\x01\xfe\xff"))
    response, call = method(channel, "Unary").with_call(b"ok", metadata=md, timeout=5)
    assert response == b"ok"
    trailers = dict(call.trailing_metadata())
    assert trailers["x-text"] == "plain value"
    assert trailers["x-blob-bin"] == b"\x00\x01\xfe\xff"
    assert trailers["x-trailer"] == "t1"
    seen = mesh.app.calls[-1]
    assert seen.metadata["x-blob-bin"] == b"\x00\x01\xfe\xff"

    with pytest.raises(grpc.RpcError) as info:
        method(channel, "Unary")(b"fail", metadata=md, timeout=5)
    err = info.value
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == "refused: état invalide"
    failed = dict(err.trailing_metadata())
    assert failed["grpc-status-details-bin"] == b"\x08\x09details"
    assert failed["x-blob-bin"] == b"\x00\x01\xfe\xff"


def test_deadline_reaches_server_and_expires(mesh: Mesh, channel: grpc.Channel) -> None:
    before = len(mesh.app.calls)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        method(channel, "Sleep")(b"", timeout=1.0)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 4
    seen = wait_for(lambda: mesh.app.calls[before:], 3, "the Sleep call at the app")[0]
    # the app sees the caller's deadline (gRPC rounds grpc-timeout up a little)
    assert seen.time_remaining is not None and 0 < seen.time_remaining <= 1.1
    # the server's side of the call ends too, not only the client's
    assert seen.cancelled.wait(5)


def test_cancellation_reaches_server(mesh: Mesh, channel: grpc.Channel) -> None:
    before = len(mesh.app.calls)
    future = method(channel, "Sleep").future(b"", timeout=20)
    seen = wait_for(lambda: mesh.app.calls[before:], 5, "the Sleep call at the app")[0]
    future.cancel()
    assert seen.cancelled.wait(5), "the app never saw the cancellation"


def test_service_without_endpoints_fails_fast_naming_it(mesh: Mesh) -> None:
    options = [("grpc.default_authority", "ghost")]
    with grpc.insecure_channel(mesh.client.addresses["outbound"], options=options) as ch:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            method(ch, "Unary")(b"x", timeout=5)
        assert time.monotonic() - started < 1
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "'ghost'" in info.value.details()
    assert "none discovered" in info.value.details()

    options = [("grpc.default_authority", "nosuch")]
    with (
        grpc.insecure_channel(mesh.client.addresses["outbound"], options=options) as ch,
        pytest.raises(grpc.RpcError) as info,
    ):
        method(ch, "Unary")(b"x", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "'nosuch'" in info.value.details() and "unknown service" in info.value.details()


def test_sidecars_load_no_grpcio_and_stay_small(mesh: Mesh, channel: grpc.Channel) -> None:
    """The RSS budget (40 MB under load) leaves no room for grpcio's C core or yaml."""
    for _ in range(200):
        assert method(channel, "Unary")(b"x" * 1024, timeout=5) == b"x" * 1024
    for sidecar in (mesh.client, mesh.echo):
        rss, hwm, maps = process_footprint(sidecar.pid)
        assert "cygrpc" not in maps, f"{sidecar.name} loaded grpcio"
        assert "_yaml" not in maps, f"{sidecar.name} loaded yaml"
        assert hwm < 40 * 1024, f"{sidecar.name}: VmHWM {hwm} KiB (VmRSS {rss} KiB)"
