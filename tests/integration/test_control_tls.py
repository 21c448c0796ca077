"""TLS on control's gRPC port with real etcd, a real `skein control --tls`, real sidecars and
the real CLI: the bundle from `--print-bundle` lets the CLI and sidecars (join token over
TLS) in; a client without it, with another CA, or in plaintext is refused, saying why."""

from __future__ import annotations

import os
import pathlib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from cryptography import x509

from skein import cli
from skein.launch import Daemon, ProcessGroup, free_port, skein_argv
from skein.localetcd import LocalEtcd
from skein.pki import CertificateAuthority, certificates_pem
from tests.integration import mesh_support

pytestmark = pytest.mark.integration

MANIFEST = """\
kind: Service
metadata: {name: echo}
spec: {protocol: GRPC}
"""


@dataclass
class TlsControl:
    control: Daemon
    listen: str
    prefix: str
    bundle: pathlib.Path
    tmp: pathlib.Path


@pytest.fixture
def tls_control(
    etcd: LocalEtcd, procs: ProcessGroup, tmp_path: pathlib.Path
) -> Iterator[TlsControl]:
    secret = tmp_path / "passphrase"
    secret.write_text("control tls passphrase\n")
    prefix = mesh_support.unique_prefix()
    control = mesh_support.start_control(
        procs,
        "control",
        etcd.endpoint,
        prefix,
        "--ca-key-passphrase-file",
        str(secret),
        "--tls",
        "--tls-san",
        "localhost",
    )
    printed = subprocess.run(
        skein_argv("control", "--print-bundle", "--etcd", etcd.endpoint, "--prefix", prefix),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("-----BEGIN CERTIFICATE-----")
    bundle = tmp_path / "control-ca.pem"
    bundle.write_text(printed.stdout)
    yield TlsControl(control, control.addresses["listen"], prefix, bundle, tmp_path)


def _skein(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_server_certificate_names_control_and_its_addresses(tls_control: TlsControl) -> None:
    context = ssl.create_default_context(cafile=str(tls_control.bundle))
    context.set_alpn_protocols(["h2"])
    host, port = tls_control.listen.rsplit(":", 1)

    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://skein.local/control"
    ]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    # nothing secret on disk: the control process was given no directory and writes none
    assert sorted(p.name for p in tls_control.tmp.glob("*.pem")) == ["control-ca.pem"]


def test_cli_applies_and_gets_over_tls_with_the_bundle(
    tls_control: TlsControl, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tls_control.tmp / "echo.yaml"
    manifest.write_text(MANIFEST)
    ca = ("--control", tls_control.listen, "--control-ca", str(tls_control.bundle))
    code, out, err = _skein(capsys, "apply", "-f", str(manifest), *ca)
    assert code == 0, err
    code, out, err = _skein(capsys, "get", "services", *ca)
    assert code == 0, err
    assert "echo" in out


def test_clients_without_the_bundle_are_refused_saying_why(
    tls_control: TlsControl, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ("--control", tls_control.listen, "--connect-timeout", "2")
    code, _, err = _skein(capsys, "get", "services", *target)
    assert code != 0
    assert "cannot reach the control daemon" in err and tls_control.listen in err
    assert "if control serves TLS (--tls), pass --control-ca FILE" in err

    other = tls_control.tmp / "other-ca.pem"
    other.write_bytes(
        certificates_pem([CertificateAuthority.generate("skein.local", time.time()).anchor])
    )
    code, _, err = _skein(capsys, "get", "services", *target, "--control-ca", str(other))
    assert code != 0
    assert "TLS: control's certificate does not verify against --control-ca" in err

    with (
        grpc.insecure_channel(tls_control.listen) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        channel.unary_unary("/skein.v1.Operator/Status")(b"", timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_sidecars_join_over_tls_and_serve_calls(
    tls_control: TlsControl, procs: ProcessGroup, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = ("--control", tls_control.listen, "--control-ca", str(tls_control.bundle))
    tokens = {}
    for name in ("echo", "web"):
        code, out, err = _skein(capsys, "token", "create", "--service", name, *ca)
        assert code == 0, err
        tokens[name] = out.strip()
    app = mesh_support.EchoApp("b1").start()
    try:
        control_ca = ("--control-ca", str(tls_control.bundle))
        echo = procs.sidecar(
            "sidecar-b",
            "echo",
            tls_control.listen,
            app.address,
            "--join-token",
            tokens["echo"],
            *control_ca,
        )
        upstream = f"127.0.0.1:{free_port()}"
        web = procs.sidecar(
            "sidecar-a",
            "web",
            tls_control.listen,
            f"127.0.0.1:{free_port()}",
            "--upstream",
            f"echo={upstream}",
            "--join-token",
            tokens["web"],
            *control_ca,
        )
        echo.wait_ready(20)
        web.wait_ready(20)
        mesh_support.wait_for(
            lambda: len(mesh_support.endpoints_of(web, "echo")) == 1, 10, "echo at A"
        )
        with grpc.insecure_channel(upstream) as channel:
            assert mesh_support.method(channel, "Unary")(b"tls", timeout=10) == b"tls"
        log = (tls_control.tmp / "sidecar-b.log").read_text()
        assert '"event": "certificate obtained"' in log

        # a sidecar trusting another CA never sends its token: the handshake fails first
        other = tls_control.tmp / "other-ca.pem"
        other.write_bytes(
            certificates_pem([CertificateAuthority.generate("skein.local", time.time()).anchor])
        )
        stray = procs.sidecar(
            "sidecar-c",
            "web",
            tls_control.listen,
            "127.0.0.1:1",
            "--join-token",
            tokens["web"],
            "--control-ca",
            str(other),
        )
        stray_log = tls_control.tmp / "sidecar-c.log"
        mesh_support.wait_for(
            lambda: (
                stray_log.read_text().count('"event": "certificate request failed, retrying"') >= 2
            ),
            15,
            "refused certificate requests in sidecar-c's log",
        )
        assert '"event": "certificate obtained"' not in stray_log.read_text()
        assert "TLS handshake failed: CERTIFICATE_VERIFY_FAILED" in stray_log.read_text()
        assert stray.proc is not None and stray.proc.poll() is None  # still retrying
    finally:
        app.stop()


def _served_serial(listen: str, bundle: pathlib.Path) -> int:
    """The serial number of the certificate control serves a new connection."""
    context = ssl.create_default_context(cafile=str(bundle))
    context.set_alpn_protocols(["h2"])
    host, port = listen.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_the_server_certificate_is_renewed_without_a_restart(
    etcd: LocalEtcd, procs: ProcessGroup, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text("control tls passphrase\n")
    prefix = mesh_support.unique_prefix()
    control = mesh_support.start_control(
        procs,
        "control",
        etcd.endpoint,
        prefix,
        "--ca-key-passphrase-file",
        str(secret),
        "--tls",
        "--tls-cert-ttl",
        "3",
    )
    listen = control.addresses["listen"]
    printed = subprocess.run(
        skein_argv("control", "--print-bundle", "--etcd", etcd.endpoint, "--prefix", prefix),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(printed.stdout)
    first = _served_serial(listen, bundle)
    # renewed at half of 3 s: a later handshake gets another certificate, same process
    second = mesh_support.wait_for(
        lambda: (s := _served_serial(listen, bundle)) != first and s, 10, "a renewed certificate"
    )
    assert second != first
    assert control.proc is not None and control.proc.poll() is None
    log = (tmp_path / "control.log").read_text()
    assert log.count('"event": "server certificate issued"') >= 2
    code, _, err = _skein(
        capsys, "get", "services", "--control", listen, "--control-ca", str(bundle)
    )
    assert code == 0, err


def test_an_operator_certificate_from_files(
    etcd: LocalEtcd, procs: ProcessGroup, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from control.tls import issue_server_certificate

    ca = CertificateAuthority.generate("example.org", time.time())
    key, chain, _ = issue_server_certificate(ca, "example.org", ["127.0.0.1"], time.time())
    (tmp_path / "server.pem").write_bytes(chain)
    (tmp_path / "server-key.pem").write_bytes(key)
    (tmp_path / "ca.pem").write_bytes(certificates_pem([ca.anchor]))
    control = mesh_support.start_control(
        procs,
        "control",
        etcd.endpoint,
        mesh_support.unique_prefix(),
        "--tls-cert",
        str(tmp_path / "server.pem"),
        "--tls-key",
        str(tmp_path / "server-key.pem"),
    )
    listen = control.addresses["listen"]
    code, _, err = _skein(
        capsys, "status", "--control", listen, "--control-ca", str(tmp_path / "ca.pem")
    )
    assert code == 0, err
    code, _, err = _skein(capsys, "status", "--control", listen, "--connect-timeout", "2")
    assert code != 0 and "pass --control-ca FILE" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--tls",), "--tls: the replica issues its certificate from the mesh CA"),
        (("--tls-san", "x.example"), "--tls-san: only applies with --tls"),
        (("--tls-cert", "c.pem"), "--tls-cert/--tls-key: give both, or neither"),
    ],
)
def test_tls_flag_mistakes_are_named(flags: tuple[str, ...], message: str) -> None:
    done = subprocess.run(
        skein_argv("control", "--etcd", "127.0.0.1:1", *flags),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "SKEIN_CA_PASSPHRASE"},
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_a_sidecar_warns_when_its_join_token_would_travel_in_plaintext(
    etcd: LocalEtcd, procs: ProcessGroup, tmp_path: pathlib.Path
) -> None:
    control = mesh_support.start_control(
        procs, "control", etcd.endpoint, mesh_support.unique_prefix()
    )
    procs.sidecar(
        "sidecar",
        "echo",
        control.addresses["listen"],
        "127.0.0.1:1",
        "--join-token",
        "skt_0123456789abcdef." + "x" * 43,
    )
    mesh_support.wait_for(
        lambda: (
            '"event": "the join token goes to control in plaintext"'
            in (tmp_path / "sidecar.log").read_text()
        ),
        15,
        "the plaintext warning",
    )


def test_print_bundle_without_a_ca_says_how_to_make_one(etcd: LocalEtcd) -> None:
    prefix = mesh_support.unique_prefix()
    done = subprocess.run(
        skein_argv("control", "--print-bundle", "--etcd", etcd.endpoint, "--prefix", prefix),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert f"no mesh CA under {prefix} yet" in done.stderr
