"""End to end with the mesh's own PKI: control's CA, a sidecar with a join token and a
STRICT policy, and `openssl s_client` (a TLS client nobody here wrote) with and without a
certificate from `skein identity issue`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from skein import cli
from skein.launch import ProcessGroup
from skein.localetcd import LocalEtcd
from skein.v1 import resources_pb2
from tests.integration import mesh_support

pytestmark = pytest.mark.integration

HANDSHAKE_THEN_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def s_client(address: str, *extra: str) -> str:
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", address, "-tls1_3", "-alpn", "h2", *extra],
        input=HANDSHAKE_THEN_PREFACE,
        capture_output=True,
        timeout=20,
    )
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def test_openssl_with_a_certificate_from_skein_identity_issue(
    etcd: LocalEtcd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text("identity issue passphrase\n")
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
            policy = mesh_support.traffic_policy("echo", resources_pb2.ROUND_ROBIN)
            policy.traffic_policy.spec.mtls = resources_pb2.STRICT
            mesh_support.apply(control, mesh_support.service("echo"), policy)
            assert cli.main(["token", "create", "--service", "echo", "--control", listen]) == 0
            token = capsys.readouterr().out.strip().splitlines()[-1]
            echo = procs.sidecar("sidecar-b", "echo", listen, app.address, "--join-token", token)
            echo.wait_ready(20)
            out = tmp_path / "client"
            argv = ["identity", "issue", "--service", "client", "--out", str(out)]
            assert cli.main([*argv, "--control", listen]) == 0
            inbound = echo.addresses["inbound"]
            bundle = str(out / "bundle.pem")
            with_cert = s_client(
                inbound,
                "-CAfile",
                bundle,
                "-cert",
                str(out / "cert.pem"),
                "-key",
                str(out / "key.pem"),
            )
            without = s_client(inbound, "-CAfile", bundle, "-ign_eof")
            for text in (with_cert, without):
                assert "TLSv1.3" in text and "ALPN protocol: h2" in text, text
                assert "Verify return code: 0 (ok)" in text, text
            refused = ("certificate required", "unexpected eof", "errno=104")
            assert not any(r in with_cert for r in refused), with_cert
            assert any(r in without for r in refused), without
            log = (tmp_path / "sidecar-b.log").read_text()
            assert '"reason": "no client certificate"' in log
    finally:
        app.stop()


def test_strict_without_a_certificate_is_warned_about(etcd: LocalEtcd, tmp_path: Path) -> None:
    app = mesh_support.EchoApp("b1").start()
    try:
        with ProcessGroup(log_dir=str(tmp_path)) as procs:
            control = mesh_support.start_control(
                procs, "control", etcd.endpoint, mesh_support.unique_prefix()
            )
            policy = mesh_support.traffic_policy("echo", resources_pb2.ROUND_ROBIN)
            policy.traffic_policy.spec.mtls = resources_pb2.STRICT
            mesh_support.apply(control, mesh_support.service("echo"), policy)
            echo = procs.sidecar("sidecar-b", "echo", control.addresses["listen"], app.address)
            echo.wait_ready(20)
            log = tmp_path / "sidecar-b.log"
            mesh_support.wait_for(
                lambda: "mtls_strict_without_certificate" in log.read_text(), 10, "the warning"
            )
            assert log.read_text().count("mtls_strict_without_certificate") == 1
    finally:
        app.stop()
