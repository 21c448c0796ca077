"""The Identity service against real etcd and real control replicas: tokens, Sign, the CA."""

from __future__ import annotations

import asyncio
import os
import pathlib
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from control.ca import retire_ca, rotate_ca
from control.identity import IdentityService
from control.store import EtcdStore, KeyLayout
from skein import cli
from skein.addr import parse_hostport, parse_hostport_list
from skein.client import OperatorCallError, OperatorClient
from skein.errors import ConfigError
from skein.launch import Daemon, ProcessGroup, skein_argv
from skein.localetcd import LocalEtcd
from skein.pki import (
    CaRecord,
    CertificateAuthority,
    KeyPassphraseError,
    decode_bundle,
    encrypt_key,
    fingerprint,
    generate_key,
    make_csr,
)

pytestmark = pytest.mark.integration

PASSPHRASE = "integration passphrase"


def _csr() -> str:
    return make_csr(generate_key()).public_bytes(serialization.Encoding.PEM).decode()


def _client(daemon: Daemon) -> OperatorClient:
    return OperatorClient(parse_hostport_list(daemon.addresses["listen"], flag="test"))


def _uri(pem: str) -> str:
    leaf = x509.load_pem_x509_certificates(pem.encode())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris: list[str] = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0]


def _openssl_verify(bundle: pathlib.Path, cert: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(bundle), str(cert)],
        capture_output=True,
        text=True,
        check=False,
    )


def _log(daemon: Daemon) -> str:
    assert daemon.log_path
    return pathlib.Path(daemon.log_path).read_text()


@pytest.fixture
def mesh(
    etcd: LocalEtcd, procs: ProcessGroup, tmp_path: pathlib.Path
) -> Iterator[tuple[Daemon, Daemon, str]]:
    """Two replicas on one prefix, both with the CA passphrase."""
    prefix = f"/skein-id-{uuid.uuid4().hex[:8]}/"
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    flags = ("--prefix", prefix, "--ca-key-passphrase-file", str(secret))
    a = procs.control("control-a", etcd.endpoint, *flags)
    b = procs.control("control-b", etcd.endpoint, *flags)
    a.wait_ready(timeout=20)
    b.wait_ready(timeout=20)
    yield a, b, prefix


def _refused(call: object) -> OperatorCallError:
    with pytest.raises(OperatorCallError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_token_sign_and_every_refusal(mesh: tuple[Daemon, Daemon, str]) -> None:
    a, _, _ = mesh
    with _client(a) as client:
        created = client.create_token("orders", 600)
        signed = client.sign(_csr(), created.token, "orders")
        assert signed.spiffe_id == "spiffe://skein.local/service/orders"
        assert _uri(signed.certificate_pem) == signed.spiffe_id
        assert 86000 < signed.not_after - time.time() <= 86400
        anchor = x509.load_pem_x509_certificates(signed.trust_bundle_pem.encode())[0]
        leaf = x509.load_pem_x509_certificates(signed.certificate_pem.encode())[0]
        leaf.verify_directly_issued_by(anchor)

        wrong = _refused(lambda: client.sign(_csr(), created.token, "payments"))
        assert wrong.code == grpc.StatusCode.PERMISSION_DENIED
        assert "is for service 'orders', not 'payments'" in wrong.message

        garbage = _refused(lambda: client.sign(_csr(), "not-a-token", "orders"))
        assert garbage.code == grpc.StatusCode.UNAUTHENTICATED
        assert "malformed join token" in garbage.message

        bad_secret = created.token[:-2] + ("AA" if not created.token.endswith("AA") else "BB")
        mismatch = _refused(lambda: client.sign(_csr(), bad_secret, "orders"))
        assert mismatch.code == grpc.StatusCode.UNAUTHENTICATED
        assert "secret does not match" in mismatch.message

        unknown = _refused(
            lambda: client.sign(_csr(), "skt_0123456789abcdef." + "x" * 43, "orders")
        )
        assert "join token 0123456789abcdef is unknown" in unknown.message

        client.revoke_token(created.id)
        revoked = _refused(lambda: client.sign(_csr(), created.token, "orders"))
        assert revoked.code == grpc.StatusCode.UNAUTHENTICATED
        assert f"join token {created.id} was revoked" in revoked.message

        short = client.create_token("orders", 1)
        time.sleep(1.2)  # the token's own 1 s lifetime; the server reads real time
        expired = _refused(lambda: client.sign(_csr(), short.token, "orders"))
        assert expired.code == grpc.StatusCode.UNAUTHENTICATED
        assert f"join token {short.id} expired" in expired.message

        bad_csr = client.create_token("orders", 600)
        invalid = _refused(lambda: client.sign("junk", bad_csr.token, "orders"))
        assert invalid.code == grpc.StatusCode.INVALID_ARGUMENT

        listed = {t.id: t for t in client.list_tokens().tokens}
        assert listed[created.id].revoked and not listed[short.id].revoked
        assert listed[short.id].service == "orders"
        missing = _refused(lambda: client.revoke_token("feedfacefeedface"))
        assert missing.code == grpc.StatusCode.NOT_FOUND

    log = _log(a)
    for reason in (
        "is for service 'orders', not 'payments'",
        "malformed join token",
        "secret does not match",
        f"join token {created.id} was revoked",
        f"join token {short.id} expired",
    ):
        assert reason in log, reason
    assert log.count("certificate refused") >= 6
    assert "certificate issued" in log


def test_two_replicas_issue_from_one_ca(mesh: tuple[Daemon, Daemon, str]) -> None:
    a, b, _ = mesh
    with _client(a) as ca_client, _client(b) as cb_client:
        token = ca_client.create_token("web", 600).token  # a token from a works on b
        from_a = ca_client.sign(_csr(), token, "web")
        from_b = cb_client.sign(_csr(), token, "web")
    assert from_a.trust_bundle_pem == from_b.trust_bundle_pem
    anchors = x509.load_pem_x509_certificates(from_a.trust_bundle_pem.encode())
    assert len(anchors) == 1
    for signed in (from_a, from_b):
        leaf = x509.load_pem_x509_certificates(signed.certificate_pem.encode())[0]
        leaf.verify_directly_issued_by(anchors[0])


def test_cli_token_and_identity_issue_pass_openssl_verify(
    mesh: tuple[Daemon, Daemon, str], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, _ = mesh
    control = f"{a.addresses['listen']},{b.addresses['listen']}"

    def skein(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main([*argv, "--control", control])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = skein("token", "create", "--service", "orders", "--ttl", "1h")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("skt_") and "shown once" in err
    token_id = token[4:].split(".")[0]

    out_dir = tmp_path / "orders-id"
    code, out, err = skein(
        "identity", "issue", "--service", "orders", "--out", str(out_dir), "--join-token", token
    )
    assert code == 0, err
    assert "spiffe://skein.local/service/orders" in out
    assert stat.S_IMODE(os.stat(out_dir / "key.pem").st_mode) == 0o600
    verified = _openssl_verify(out_dir / "bundle.pem", out_dir / "cert.pem")
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert "OK" in verified.stdout
    key = serialization.load_pem_private_key((out_dir / "key.pem").read_bytes(), None)
    leaf = x509.load_pem_x509_certificate((out_dir / "cert.pem").read_bytes())
    assert leaf.public_key() == key.public_key()

    # without --join-token: a short token is made, used and revoked
    code, out, err = skein("identity", "issue", "--service", "web", "--out", str(tmp_path / "w"))
    assert code == 0, err
    assert (
        _openssl_verify(tmp_path / "w" / "bundle.pem", tmp_path / "w" / "cert.pem").returncode == 0
    )

    code, out, _ = skein("token", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "SERVICE", "CREATED", "EXPIRES", "STATE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[token_id][1] == "orders" and rows[token_id][-1] == "active"
    assert [r[-1] for i, r in rows.items() if r[1] == "web"] == ["revoked"]

    assert skein("token", "revoke", token_id)[0] == 0
    code, _, err = skein(
        "identity",
        "issue",
        "--service",
        "orders",
        "--out",
        str(tmp_path / "x"),
        "--join-token",
        token,
    )
    assert code == 1 and "was revoked" in err


def test_without_a_passphrase_sign_says_how_to_enable(etcd: LocalEtcd, procs: ProcessGroup) -> None:
    control = procs.control(
        "control", etcd.endpoint, "--prefix", f"/skein-id-{uuid.uuid4().hex[:8]}/"
    )
    control.wait_ready(timeout=20)
    with _client(control) as client:
        token = client.create_token("orders", 60).token
        err = _refused(lambda: client.sign(_csr(), token, "orders"))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "--ca-key-passphrase-file" in err.message


def test_rotation_trusts_old_and_new_until_the_old_is_retired(
    mesh: tuple[Daemon, Daemon, str], etcd: LocalEtcd
) -> None:
    a, b, prefix = mesh
    with _client(a) as client:
        token = client.create_token("web", 600).token
        before = client.sign(_csr(), token, "web")
    old_leaf = x509.load_pem_x509_certificates(before.certificate_pem.encode())[0]
    old_anchor = x509.load_pem_x509_certificates(before.trust_bundle_pem.encode())[0]

    async def rotate() -> tuple[list[str], CertificateAuthority]:
        store = EtcdStore([parse_hostport(etcd.endpoint, flag="test")])
        try:
            new = CertificateAuthority.generate("skein.local", time.time())
            prints = await rotate_ca(
                store, KeyLayout(prefix), new, PASSPHRASE.encode(), time.time()
            )
            with pytest.raises(KeyPassphraseError, match="does not decrypt"):
                await rotate_ca(store, KeyLayout(prefix), new, b"wrong", time.time())
            return prints, new
        finally:
            await store.close()

    prints, new = asyncio.run(rotate())
    assert prints == [fingerprint(old_anchor), fingerprint(new.anchor)]
    with _client(b) as client:
        after = client.sign(_csr(), token, "web")
    anchors = x509.load_pem_x509_certificates(after.trust_bundle_pem.encode())
    assert [fingerprint(c) for c in anchors] == prints
    new_leaf = x509.load_pem_x509_certificates(after.certificate_pem.encode())[0]
    new_leaf.verify_directly_issued_by(new.certificate)  # replicas pick the rotation up
    old_leaf.verify_directly_issued_by(anchors[0])  # and still trust the old one

    async def retire() -> list[x509.Certificate]:
        store = EtcdStore([parse_hostport(etcd.endpoint, flag="test")])
        layout = KeyLayout(prefix)
        try:
            with pytest.raises(ConfigError, match="current CA"):
                await retire_ca(store, layout, fingerprint(new.anchor))
            await retire_ca(store, layout, fingerprint(old_anchor))
            stored = await store.get(layout.ca_bundle)
            current = await store.get(layout.ca_current)
            assert stored is not None and current is not None
            assert CaRecord.decode(current.value).certificate() == new.certificate
            return decode_bundle(stored.value)
        finally:
            await store.close()

    assert asyncio.run(retire()) == [new.certificate]


def test_service_in_process_reuses_the_stored_ca(etcd: LocalEtcd) -> None:
    """A second service object (another replica) loads the CA the first one stored."""
    prefix = f"/skein-id-{uuid.uuid4().hex[:8]}/"

    async def scenario() -> None:
        store = EtcdStore([parse_hostport(etcd.endpoint, flag="test")])
        layout = KeyLayout(prefix)
        try:
            one = IdentityService(store, layout, passphrase=b"p", trust_domain="skein.local")
            two = IdentityService(store, layout, passphrase=b"p", trust_domain="skein.local")
            first, second = await asyncio.gather(one.authority(), two.authority())
            assert first[0].certificate == second[0].certificate
            assert first[1] == second[1]
            wrong = IdentityService(store, layout, passphrase=b"q", trust_domain="skein.local")
            with pytest.raises(KeyPassphraseError, match="does not decrypt"):
                await wrong.authority()
        finally:
            await store.close()

    asyncio.run(scenario())


def test_operator_ca_from_files_issues_and_bad_flags_stop_control(
    etcd: LocalEtcd, procs: ProcessGroup, tmp_path: pathlib.Path
) -> None:
    root = CertificateAuthority.generate("example.org", time.time())
    (tmp_path / "ca.pem").write_bytes(root.chain_pem())
    (tmp_path / "ca-key.pem").write_bytes(encrypt_key(root.key, b"files"))
    (tmp_path / "pass").write_text("files\n")
    ca_flags = ("--ca-cert", str(tmp_path / "ca.pem"), "--ca-key", str(tmp_path / "ca-key.pem"))
    prefix = f"/skein-id-{uuid.uuid4().hex[:8]}/"
    control = procs.control(
        "control",
        etcd.endpoint,
        "--prefix",
        prefix,
        "--trust-domain",
        "example.org",
        "--ca-key-passphrase-file",
        str(tmp_path / "pass"),
        *ca_flags,
    )
    control.wait_ready(timeout=20)
    with _client(control) as client:
        token = client.create_token("orders", 60).token
        signed = client.sign(_csr(), token, "orders", ttl_seconds=600)
    assert signed.spiffe_id == "spiffe://example.org/service/orders"
    leaf = x509.load_pem_x509_certificates(signed.certificate_pem.encode())[0]
    leaf.verify_directly_issued_by(root.certificate)
    assert 590 < signed.not_after - time.time() <= 600
    assert x509.load_pem_x509_certificates(signed.trust_bundle_pem.encode()) == [root.certificate]

    def exits(*extra: str) -> tuple[int, str]:
        run = subprocess.run(
            skein_argv("control", "--etcd", etcd.endpoint, *extra),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={k: v for k, v in os.environ.items() if k != "SKEIN_CA_PASSPHRASE"},
        )
        return run.returncode, run.stderr

    code, err = exits(*ca_flags)
    assert code == 2 and "needs a passphrase" in err
    code, err = exits("--ca-cert", str(tmp_path / "ca.pem"))
    assert code == 2 and "give both" in err
    (tmp_path / "wrong").write_text("nope\n")
    code, err = exits(*ca_flags, "--ca-key-passphrase-file", str(tmp_path / "wrong"))
    assert code == 2 and "does not decrypt" in err
    code, err = exits("--trust-domain", "Bad Domain")
    assert code == 2 and "--trust-domain" in err


def test_a_replica_whose_ca_files_differ_from_the_stored_ca_refuses_to_sign(
    etcd: LocalEtcd, procs: ProcessGroup, tmp_path: pathlib.Path
) -> None:
    other = CertificateAuthority.generate("skein.local", time.time())
    (tmp_path / "ca.pem").write_bytes(other.chain_pem())
    (tmp_path / "ca-key.pem").write_bytes(encrypt_key(other.key, PASSPHRASE.encode()))
    (tmp_path / "pass").write_text(PASSPHRASE)
    prefix = f"/skein-id-{uuid.uuid4().hex[:8]}/"
    common = ("--prefix", prefix, "--ca-key-passphrase-file", str(tmp_path / "pass"))
    first = procs.control("control-a", etcd.endpoint, *common)
    first.wait_ready(timeout=20)
    with _client(first) as client:  # stores a generated CA
        client.sign(_csr(), client.create_token("web", 60).token, "web")
    files = ("--ca-cert", str(tmp_path / "ca.pem"), "--ca-key", str(tmp_path / "ca-key.pem"))
    second = procs.control("control-b", etcd.endpoint, *common, *files)
    second.wait_ready(timeout=20)
    with _client(second) as client:
        err = _refused(lambda: client.sign(_csr(), client.create_token("web", 60).token, "web"))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "is not the one given with --ca-cert" in err.message


def test_control_rotate_and_retire_ca_flags(
    mesh: tuple[Daemon, Daemon, str], etcd: LocalEtcd, tmp_path: pathlib.Path
) -> None:
    a, _, prefix = mesh
    with _client(a) as client:
        token = client.create_token("web", 600).token
        before = client.sign(_csr(), token, "web")
    old = fingerprint(x509.load_pem_x509_certificates(before.trust_bundle_pem.encode())[0])
    base = ("control", "--etcd", etcd.endpoint, "--prefix", prefix)
    secret = ("--ca-key-passphrase-file", str(tmp_path / "passphrase"))

    def once(*extra: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "SKEIN_CA_PASSPHRASE"}
        argv = skein_argv(*base, *extra)
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=30, env=env, check=False
        )

    refused = once("--rotate-ca")
    assert refused.returncode == 1 and "--ca-key-passphrase-file" in refused.stderr
    rotated = once(*secret, "--rotate-ca")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.split("issuing CA is now ")[1].split()[0]
    assert f"  {old}\n  {new}\n" in rotated.stdout
    with _client(a) as client:
        after = client.sign(_csr(), token, "web")
    anchors = x509.load_pem_x509_certificates(after.trust_bundle_pem.encode())
    assert [fingerprint(c) for c in anchors] == [old, new]
    x509.load_pem_x509_certificates(after.certificate_pem.encode())[0].verify_directly_issued_by(
        anchors[1]
    )
    current = once("--retire-ca", new)
    assert current.returncode == 1 and "current CA" in current.stderr
    retired = once("--retire-ca", old)
    assert retired.returncode == 0, retired.stderr
    with _client(a) as client:
        bundle = client.sign(_csr(), token, "web").trust_bundle_pem
    assert [fingerprint(c) for c in x509.load_pem_x509_certificates(bundle.encode())] == [new]
