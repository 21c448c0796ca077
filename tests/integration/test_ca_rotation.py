"""A CA rotation through the product's own path, under steady calls: `skein control
--rotate-ca` makes a new issuing CA trusted next to the old one; control pushes the bundle to
every sidecar in its snapshot, and sidecars renewing their certificates move to the new CA.
No call may fail on the way."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from skein.addr import parse_hostport_list
from skein.client import OperatorClient
from skein.launch import ProcessGroup, free_port, skein_argv
from skein.localetcd import LocalEtcd
from tests.integration import mesh_support

pytestmark = pytest.mark.integration


def issuer_of(path: Path) -> str:
    return x509.load_pem_x509_certificate(path.read_bytes()).issuer.rfc4514_string()


def test_ca_rotation_with_overlap_fails_no_call(etcd: LocalEtcd, tmp_path: Path) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text("rotation passphrase\n")
    prefix = mesh_support.unique_prefix()
    app = mesh_support.EchoApp("b1").start()
    try:
        with ProcessGroup(log_dir=str(tmp_path)) as procs:
            control = mesh_support.start_control(
                procs, "control", etcd.endpoint, prefix, "--ca-key-passphrase-file", str(secret)
            )
            listen = control.addresses["listen"]
            with OperatorClient(parse_hostport_list(listen, flag="test")) as operator:
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
            certs = [tmp_path / f"{name}.state/tls/cert.pem" for name in ("sidecar-a", "sidecar-b")]
            old_issuers = {issuer_of(c) for c in certs}
            assert len(old_issuers) == 1

            failures: list[str] = []
            calls = 0
            rotated_at = 0.0
            with grpc.insecure_channel(upstream) as channel:
                call = mesh_support.method(channel, "Unary")
                deadline = time.monotonic() + 9.0
                while time.monotonic() < deadline:
                    if not rotated_at and time.monotonic() > deadline - 7.0:
                        rotate = subprocess.run(
                            skein_argv(
                                "control",
                                "--etcd",
                                etcd.endpoint,
                                "--prefix",
                                prefix,
                                "--ca-key-passphrase-file",
                                str(secret),
                                "--rotate-ca",
                            ),
                            capture_output=True,
                            text=True,
                            timeout=30,
                            check=False,
                        )
                        assert rotate.returncode == 0, rotate.stderr
                        rotated_at = time.monotonic()
                    try:
                        assert call(b"r", timeout=5) == b"r"
                        calls += 1
                    except grpc.RpcError as err:
                        failures.append(f"{err.code()}: {err.details()}")
            assert failures == [], failures[:3]
            assert calls > 50
            new_issuers = {issuer_of(c) for c in certs}
            assert len(new_issuers) == 1 and new_issuers != old_issuers, (old_issuers, new_issuers)
    finally:
        app.stop()
