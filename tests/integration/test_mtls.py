"""Mesh TLS between two relays on real sockets: a caller's outbound side (A) dials the
callee's inbound side (B) over TLS 1.3 with certificates from a test CA; B relays to a
gRPC echo app. STRICT / PERMISSIVE, refusals and their reasons, the caller's identity in
x-forwarded-client-cert, outbound identity checks, openssl s_client, and rotation of
certificates and CAs under steady load with zero failed calls."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from sidecar.tls import CertificateStore, InboundTls, MtlsPolicy, OutboundTls
from sidecar.transport import Listener, UpstreamPool, start_listener
from skein.launch import ProcessGroup, free_port
from skein.localetcd import LocalEtcd
from skein.v1 import resources_pb2
from tests.integration import mesh_support
from tests.integration.test_transport_support import EchoApp, StaticDispatcher, run
from tests.unit.sidecar.test_tls_ca import MeshCA, write_files

pytestmark = pytest.mark.integration

ECHO_ID = "spiffe://skein.local/service/echo"
CLIENT_ID = "spiffe://skein.local/service/client"
XFCC = "x-forwarded-client-cert"


@pytest.fixture(scope="module")
def app() -> Any:
    with EchoApp() as server:
        yield server


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA()


@dataclass
class Pair:
    a: Listener  # the caller's outbound side: plaintext in, TLS out
    b: Listener  # the callee's inbound side: TLS (and plaintext in PERMISSIVE) in
    a_store: CertificateStore
    b_store: CertificateStore
    a_pool: UpstreamPool
    policy: MtlsPolicy

    def channel(self, listener: Listener | None = None) -> grpc.aio.Channel:
        host, port = (listener or self.a).address
        return grpc.aio.insecure_channel(f"{host}:{port}")


@asynccontextmanager
async def pair(
    app: EchoApp,
    tmp: Path,
    ca: MeshCA,
    *,
    strict: bool = False,
    expect: str = "echo",
    caller_ca: MeshCA | None = None,
) -> AsyncIterator[Pair]:
    b_store = CertificateStore(*write_files(tmp, "b", ca.issue("echo"), ca.pem))
    issuer = caller_ca or ca
    # a caller from another CA trusts its own CA too (its material must verify) and ours
    a_bundle = ca.pem if caller_ca is None else caller_ca.pem + ca.pem
    a_store = CertificateStore(*write_files(tmp, "a", issuer.issue("client"), a_bundle))
    policy = MtlsPolicy(strict)
    b_pool = UpstreamPool()
    b = await start_listener(
        "127.0.0.1",
        0,
        StaticDispatcher(app.address, cluster="local"),
        b_pool,
        name="inbound",
        tls=InboundTls(b_store, policy),
    )
    a_pool = UpstreamPool(tls=OutboundTls(a_store, "skein.local", "local"))
    a_store.on_change(a_pool.retire_tls)
    a = await start_listener(
        "127.0.0.1", 0, StaticDispatcher(b.address, cluster=expect), a_pool, name="outbound"
    )
    try:
        yield Pair(a, b, a_store, b_store, a_pool, policy)
    finally:
        await a.close(grace=1.0)
        await b.close(grace=1.0)
        await a_pool.close()
        await b_pool.close()


def unary(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary("/test.Echo/Unary")


def test_a_call_crosses_the_pair_over_tls_and_the_app_sees_the_caller(
    app: EchoApp, ca: MeshCA, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with pair(app, tmp_path, ca) as p:
            channel = p.channel()
            forged = ((XFCC, "By=x;URI=spiffe://skein.local/service/admin"),)
            assert await unary(channel)(b"hi", metadata=forged, timeout=30) == b"hi"
            assert await unary(channel)(b"again") == b"again"
            await channel.close()
            stats = p.b.stats()["tls"]
            assert stats["tls_accepted"] == 1 and stats["plaintext_accepted"] == 0
            assert stats["identity"] == ECHO_ID and stats["mode"] == "PERMISSIVE"

    app.metadata.clear()
    app.time_remaining.clear()
    run(scenario)
    expected = f"By={ECHO_ID};URI={CLIENT_ID}"
    assert [md.get(XFCC) for md in app.metadata] == [expected, expected]
    # the caller's deadline still reaches the app after the header block was rewritten
    remaining = app.time_remaining[0]
    assert remaining is not None and 20 < remaining <= 30


def test_permissive_serves_plaintext_too_and_strips_a_forged_identity(
    app: EchoApp, ca: MeshCA, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with pair(app, tmp_path, ca) as p:
            channel = p.channel(p.b)  # straight to the inbound port, no TLS
            forged = ((XFCC, f"By={ECHO_ID};URI=spiffe://skein.local/service/admin"),)
            assert await unary(channel)(b"plain", metadata=forged) == b"plain"
            await channel.close()
            assert p.b.stats()["tls"]["plaintext_accepted"] == 1

    app.metadata.clear()
    run(scenario)
    assert XFCC not in app.metadata[-1]


def test_strict_refuses_plaintext_and_says_why(app: EchoApp, ca: MeshCA, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with pair(app, tmp_path, ca, strict=True) as p:
            plain = p.channel(p.b)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(plain)(b"x", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            await plain.close()
            mesh = p.channel()
            assert await unary(mesh)(b"ok") == b"ok"  # a mesh caller still gets through
            await mesh.close()
            refused = p.b.stats()["tls"]["refused"]
            assert refused.get("plaintext in STRICT", 0) >= 1
            assert p.b.stats()["tls"]["tls_accepted"] == 1

    run(scenario)


async def _tls_hello(
    address: tuple[str, int], ca: MeshCA, cert_key: tuple[bytes, bytes] | None, tmp: Path
) -> bytes:
    """Handshake as a TLS 1.3 client (optionally with a certificate), send an h2c preface,
    and read: the server's SETTINGS when accepted, b"" or an error when refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=ca.pem.decode())
    ctx.set_alpn_protocols(["h2"])
    if cert_key is not None:
        cert, key, _ = write_files(tmp, "probe", cert_key, ca.pem)
        ctx.load_cert_chain(cert, key)
    reader, writer = await asyncio.open_connection(*address, ssl=ctx, server_hostname="")
    try:
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        await writer.drain()
        return await asyncio.wait_for(reader.read(9), 5)
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("strict", "probe", "reason"),
    [
        (True, "none", "no client certificate"),
        (False, "other-ca", "unknown CA"),
        (True, "other-ca", "unknown CA"),
        (False, "expired", "expired certificate"),
    ],
)
def test_bad_client_certificates_are_refused_with_the_reason(
    app: EchoApp, ca: MeshCA, tmp_path: Path, strict: bool, probe: str, reason: str
) -> None:
    async def scenario() -> None:
        async with pair(app, tmp_path, ca, strict=strict) as p:
            cert_key = None
            if probe == "other-ca":
                cert_key = MeshCA("another mesh").issue("client")
            elif probe == "expired":
                cert_key = ca.issue("client", expired=True)
            answer = await _tls_hello(p.b.address, ca, cert_key, tmp_path)
            assert answer == b""  # no HTTP/2 SETTINGS: refused
            for _ in range(50):
                if p.b.refused:
                    break
                await asyncio.sleep(0.02)
            assert p.b.refused == {reason: 1}
            assert p.b.stats()["tls"]["tls_accepted"] == 0

    run(scenario)


def test_a_good_client_certificate_is_accepted_and_permissive_takes_tls_without_one(
    app: EchoApp, ca: MeshCA, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with pair(app, tmp_path, ca, strict=True) as p:
            settings = await _tls_hello(p.b.address, ca, ca.issue("client"), tmp_path)
            assert settings[3] == 0x04  # a SETTINGS frame
            p.policy.strict = False
            settings = await _tls_hello(p.b.address, ca, None, tmp_path)
            assert settings[3] == 0x04
            assert p.b.refused == {}

    run(scenario)


def test_a_caller_from_another_ca_is_refused(app: EchoApp, ca: MeshCA, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with pair(app, tmp_path, ca, strict=True, caller_ca=MeshCA("rogue")) as p:
            channel = p.channel()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(channel)(b"x", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            await channel.close()
            assert p.b.refused.get("unknown CA", 0) >= 1

    run(scenario)


def test_the_caller_checks_the_servers_identity(app: EchoApp, ca: MeshCA, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with pair(app, tmp_path, ca, expect="payments") as p:
            channel = p.channel()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(channel)(b"x", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert ECHO_ID in (err.value.details() or "")
            assert "spiffe://skein.local/service/payments" in (err.value.details() or "")
            await channel.close()

    run(scenario)


def _s_client(port: int, *extra: str) -> str:
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-alpn", "h2", *extra],
        input=b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        capture_output=True,
        timeout=20,
    )
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def test_openssl_s_client(app: EchoApp, ca: MeshCA, tmp_path: Path) -> None:
    cert, key, bundle = write_files(tmp_path, "cli", ca.issue("client"), ca.pem)
    outputs: dict[str, str] = {}

    async def scenario() -> None:
        async with pair(app, tmp_path, ca, strict=True) as p:
            port = p.b.address[1]
            loop = asyncio.get_running_loop()
            # -ign_eof: keep reading after the request until the server closes (its alert)
            outputs["none"] = await loop.run_in_executor(
                None, _s_client, port, "-CAfile", bundle, "-ign_eof"
            )
            outputs["mesh"] = await loop.run_in_executor(
                None, _s_client, port, "-CAfile", bundle, "-cert", cert, "-key", key
            )
            for _ in range(50):
                if p.b.refused:
                    break
                await asyncio.sleep(0.02)
            assert p.b.refused == {"no client certificate": 1}
            assert p.b.stats()["tls"]["tls_accepted"] == 1

    run(scenario, timeout=60)
    for out in outputs.values():
        assert "TLSv1.3" in out
        assert "ALPN protocol: h2" in out
        assert "Verify return code: 0 (ok)" in out
    # refused after the handshake: the connection is closed (the TLS alert is not flushed
    # by the loop's SSL transport, so openssl sees the close, or a reset when the request
    # bytes were still unread)
    refused = ("certificate required", "unexpected eof", "errno=104")
    assert any(text in outputs["none"] for text in refused), outputs["none"]
    assert not any(text in outputs["mesh"] for text in refused)


def test_rotating_certificates_and_the_ca_under_load_fails_no_call(
    app: EchoApp, ca: MeshCA, tmp_path: Path
) -> None:
    """Old CA -> bundle with both CAs -> new certificates -> bundle with the new CA only,
    on both sides, while 8 callers keep calling: every call succeeds, and new TLS
    connections are made with the new material."""
    new_ca = MeshCA("next mesh CA")
    calls: list[int] = [0]
    failures: list[str] = []

    async def scenario() -> None:
        async with pair(app, tmp_path, ca, strict=True) as p:
            channel = p.channel()
            stop = asyncio.Event()

            async def caller(n: int) -> None:
                call = unary(channel)
                while not stop.is_set():
                    try:
                        assert await call(b"%d" % n, timeout=5) == b"%d" % n
                        calls[0] += 1
                    except Exception as exc:  # every failure is counted
                        failures.append(repr(exc))

            async def step() -> None:
                await asyncio.sleep(0.3)
                assert not failures, failures[:3]

            workers = [asyncio.create_task(caller(n)) for n in range(8)]
            await step()
            both = ca.pem + new_ca.pem
            write_files(tmp_path, "a", (_read(p.a_store, 0), _read(p.a_store, 1)), both)
            write_files(tmp_path, "b", (_read(p.b_store, 0), _read(p.b_store, 1)), both)
            assert p.b_store.refresh() and p.a_store.refresh()
            await step()
            write_files(tmp_path, "b", new_ca.issue("echo"), both)
            assert p.b_store.refresh()
            await step()
            write_files(tmp_path, "a", new_ca.issue("client"), both)
            assert p.a_store.refresh()
            await step()
            write_files(tmp_path, "a", (_read(p.a_store, 0), _read(p.a_store, 1)), new_ca.pem)
            write_files(tmp_path, "b", (_read(p.b_store, 0), _read(p.b_store, 1)), new_ca.pem)
            assert p.b_store.refresh() and p.a_store.refresh()
            await step()
            stop.set()
            await asyncio.gather(*workers)
            await channel.close()
            # the caller reconnected after each of its three rotations
            assert p.b.stats()["tls"]["tls_accepted"] == 4
            assert p.b.refused == {}
            assert p.a_store.rotations == 3 and p.b_store.rotations == 3

    run(scenario, timeout=60)
    assert failures == []
    assert calls[0] > 200


def _read(store: CertificateStore, index: int) -> bytes:
    return Path(store.paths[index]).read_bytes()


def test_sidecar_processes_with_tls_flags_and_a_strict_policy_from_control(
    etcd: LocalEtcd, ca: MeshCA, tmp_path: Path
) -> None:
    """Real daemons: --tls-* flags turn on mesh TLS; a TrafficPolicy with mtls STRICT
    pushed by control makes the callee's sidecar refuse plaintext callers."""
    b_files = write_files(tmp_path, "b", ca.issue("echo"), ca.pem)
    a_files = write_files(tmp_path, "a", ca.issue("web"), ca.pem)

    def tls(files: tuple[str, str, str]) -> tuple[str, ...]:
        return ("--tls-cert", files[0], "--tls-key", files[1], "--tls-bundle", files[2])

    app = mesh_support.EchoApp("b1").start()
    try:
        with ProcessGroup(log_dir=str(tmp_path)) as procs:
            control = mesh_support.start_control(
                procs, "control", etcd.endpoint, mesh_support.unique_prefix()
            )
            listen = control.addresses["listen"]
            echo = procs.sidecar("sidecar-b", "echo", listen, app.address, *tls(b_files))
            upstream = f"127.0.0.1:{free_port()}"
            client = procs.sidecar(
                "sidecar-a",
                "web",
                listen,
                f"127.0.0.1:{free_port()}",
                "--upstream",
                f"echo={upstream}",
                *tls(a_files),
            )
            echo.wait_ready(20)
            client.wait_ready(20)
            mesh_support.wait_for(
                lambda: len(mesh_support.endpoints_of(client, "echo")) == 1, 10, "echo at A"
            )
            with grpc.insecure_channel(upstream) as channel:
                assert mesh_support.method(channel, "Unary")(b"x", timeout=5) == b"x"
            seen = app.calls[-1].metadata
            assert seen[XFCC] == f"By={ECHO_ID};URI=spiffe://skein.local/service/web"

            inbound = echo.addresses["inbound"]
            with grpc.insecure_channel(inbound) as plain:  # PERMISSIVE: plaintext served
                assert mesh_support.method(plain, "Unary")(b"p", timeout=5) == b"p"
            assert XFCC not in app.calls[-1].metadata

            policy = mesh_support.traffic_policy("echo", resources_pb2.ROUND_ROBIN)
            policy.traffic_policy.spec.mtls = resources_pb2.STRICT
            mesh_support.apply(control, mesh_support.service("echo"), policy)

            def plaintext_refused() -> bool:
                with grpc.insecure_channel(inbound) as plain:
                    try:
                        mesh_support.method(plain, "Unary")(b"p", timeout=2)
                    except grpc.RpcError as err:
                        return bool(err.code() == grpc.StatusCode.UNAVAILABLE)
                return False

            mesh_support.wait_for(plaintext_refused, 10, "STRICT at sidecar B")
            with grpc.insecure_channel(upstream) as channel:  # mesh callers still pass
                assert mesh_support.method(channel, "Unary")(b"y", timeout=5) == b"y"
            log = (tmp_path / "sidecar-b.log").read_text()
            assert '"mode": "STRICT", "event": "mtls_mode"' in log
            assert '"reason": "plaintext in STRICT"' in log
    finally:
        app.stop()


def test_sidecars_get_and_renew_certificates_from_control_with_join_tokens(
    etcd: LocalEtcd, tmp_path: Path
) -> None:
    """--join-token: each sidecar makes a key, gets it signed by control's CA, and renews
    at half its (4 s) lifetime while calls keep flowing through the pair: none fails."""
    from skein.addr import parse_hostport_list
    from skein.client import OperatorClient

    secret = tmp_path / "passphrase"
    secret.write_text("mtls integration passphrase\n")
    app = mesh_support.EchoApp("b1").start()
    try:
        with ProcessGroup(log_dir=str(tmp_path)) as procs:
            control = mesh_support.start_control(
                procs,
                "control",
                etcd.endpoint,
                mesh_support.unique_prefix(),
                "--ca-key-passphrase-file",
                str(secret),
            )
            listen = control.addresses["listen"]
            operator = OperatorClient(parse_hostport_list(listen, flag="test"))
            echo_token = operator.create_token("echo", 600).token
            web_token = operator.create_token("web", 600).token
            renew = ("--cert-ttl", "4", "--renew-at", "0.5")
            echo = procs.sidecar(
                "sidecar-b", "echo", listen, app.address, "--join-token", echo_token, *renew
            )
            upstream = f"127.0.0.1:{free_port()}"
            client = procs.sidecar(
                "sidecar-a",
                "web",
                listen,
                f"127.0.0.1:{free_port()}",
                "--upstream",
                f"echo={upstream}",
                "--join-token",
                web_token,
                *renew,
            )
            echo.wait_ready(20)
            client.wait_ready(20)
            mesh_support.wait_for(
                lambda: len(mesh_support.endpoints_of(client, "echo")) == 1, 10, "echo at A"
            )
            failures: list[str] = []
            calls = 0
            with grpc.insecure_channel(upstream) as channel:
                call = mesh_support.method(channel, "Unary")
                deadline = time.monotonic() + 7.0
                while time.monotonic() < deadline:
                    try:
                        assert call(b"r", timeout=5) == b"r"
                        calls += 1
                    except grpc.RpcError as err:
                        failures.append(f"{err.code()}: {err.details()}")
            assert failures == [] and calls > 50
            assert app.calls[-1].metadata[XFCC] == (
                f"By={ECHO_ID};URI=spiffe://skein.local/service/web"
            )
            for name in ("sidecar-a", "sidecar-b"):
                log = (tmp_path / f"{name}.log").read_text()
                assert log.count('"event": "certificate obtained"') >= 3, name
                assert '"event": "tls_rotated"' in log, name
            key = next(tmp_path.glob("sidecar-b.state/tls/key.pem"))
            assert key.stat().st_mode & 0o077 == 0  # the private key is the sidecar's alone
            operator.close()
    finally:
        app.stop()


def test_a_rejected_join_token_stops_the_sidecar_with_the_reason(
    etcd: LocalEtcd, tmp_path: Path
) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text("mtls integration passphrase\n")
    with ProcessGroup(log_dir=str(tmp_path)) as procs:
        control = mesh_support.start_control(
            procs,
            "control",
            etcd.endpoint,
            mesh_support.unique_prefix(),
            "--ca-key-passphrase-file",
            str(secret),
        )
        bogus = "skt_0123456789abcdef." + "x" * 43
        sidecar = procs.sidecar(
            "sidecar", "echo", control.addresses["listen"], "127.0.0.1:1", "--join-token", bogus
        )
        assert sidecar.proc is not None
        assert sidecar.proc.wait(20) == 1
        log = (tmp_path / "sidecar.log").read_text()
        assert "control refused a certificate for 'echo'" in log
        assert "join token 0123456789abcdef is unknown" in log
