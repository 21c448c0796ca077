"""CertificateStore, identities, the mTLS mode and the TLS flags (real files, real contexts)."""

from __future__ import annotations

import argparse
import os
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sidecar.app import _check, add_arguments
from sidecar.tls import (
    CertificateStore,
    InboundTls,
    MtlsPolicy,
    OutboundTls,
    TlsError,
    service_id,
    spiffe_id_of,
    xfcc_value,
)
from sidecar.transport.listener import _tls_reason
from skein.v1 import discovery_pb2, resources_pb2
from tests.unit.sidecar.test_tls_ca import MeshCA, write_files

ECHO_ID = "spiffe://skein.local/service/echo"


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA()


def test_store_loads_identity_and_tls13_contexts(ca: MeshCA, tmp_path: Path) -> None:
    store = CertificateStore(*write_files(tmp_path, "b", ca.issue("echo"), ca.pem))
    assert store.own_id == ECHO_ID
    material = store.current
    for ctx in (material.strict, material.permissive, material.client):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert material.strict.verify_mode == ssl.CERT_REQUIRED
    assert material.permissive.verify_mode == ssl.CERT_OPTIONAL
    assert material.client.verify_mode == ssl.CERT_REQUIRED
    assert not material.client.check_hostname
    assert store.dump()["identity"] == ECHO_ID
    assert 3000 < (material.not_after.timestamp() - time.time()) <= 3600


def test_store_refuses_unusable_material_naming_the_file(ca: MeshCA, tmp_path: Path) -> None:
    cert, key, bundle = write_files(tmp_path, "b", ca.issue("echo"), ca.pem)
    with pytest.raises(TlsError, match=r"missing\.crt: cannot read"):
        CertificateStore(str(tmp_path / "missing.crt"), key, bundle)
    _, other_key = ca.issue("echo")
    Path(key).write_bytes(other_key)
    with pytest.raises(TlsError, match="key must match the certificate"):
        CertificateStore(cert, key, bundle)
    # a certificate without a SPIFFE URI SAN is not a mesh certificate
    ca_key = ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_files(tmp_path, "b", (ca.pem, ca_key), ca.pem)
    with pytest.raises(TlsError, match="no spiffe:// URI SAN"):
        CertificateStore(cert, key, bundle)
    # own material must verify against the own bundle: expired, or from another CA
    write_files(tmp_path, "b", ca.issue("echo", expired=True), ca.pem)
    with pytest.raises(TlsError, match=r"does not verify against the bundle.*expired"):
        CertificateStore(cert, key, bundle)
    write_files(tmp_path, "b", MeshCA("other").issue("echo"), ca.pem)
    with pytest.raises(TlsError, match="does not verify against the bundle"):
        CertificateStore(cert, key, bundle)


def test_refresh_rebuilds_only_on_change_and_keeps_the_old_on_a_bad_one(
    ca: MeshCA, tmp_path: Path
) -> None:
    files = write_files(tmp_path, "b", ca.issue("echo"), ca.pem)
    store = CertificateStore(*files)
    seen: list[str] = []
    store.on_change(lambda: seen.append(store.own_id))
    first = store.current
    assert not store.refresh() and store.current is first
    write_files(tmp_path, "b", ca.issue("orders"), ca.pem)
    assert store.refresh()
    assert store.own_id == "spiffe://skein.local/service/orders" and seen == [store.own_id]
    assert store.rotations == 1 and store.current.version == 1
    good = store.current
    Path(files[1]).write_bytes(b"-----BEGIN PRIVATE KEY-----\nhalf")  # a half-written key
    assert not store.refresh()
    assert store.current is good and store.rotations == 1 and len(seen) == 1
    os.remove(files[0])  # mid-replacement: nothing changes
    assert not store.refresh() and store.current is good


def test_identity_helpers() -> None:
    assert service_id("skein.local", "echo") == ECHO_ID
    cert = {"subjectAltName": (("DNS", "echo"), ("URI", "https://x"), ("URI", ECHO_ID))}
    assert spiffe_id_of(cert) == ECHO_ID
    assert spiffe_id_of({}) == "" and spiffe_id_of(None) == ""
    assert xfcc_value("spiffe://a/service/b", ECHO_ID) == (
        b"By=spiffe://a/service/b;URI=spiffe://skein.local/service/echo"
    )


def test_mtls_mode_follows_the_own_policy() -> None:
    policy = MtlsPolicy()
    assert not policy.strict and policy.name == "PERMISSIVE"
    snap = discovery_pb2.Snapshot()
    snap.local_policy.spec.mtls = resources_pb2.STRICT
    policy.update(snap)
    assert policy.strict and policy.name == "STRICT"
    snap.local_policy.spec.mtls = resources_pb2.MTLS_MODE_UNSPECIFIED
    policy.update(snap)
    assert not policy.strict
    policy.strict = True
    policy.update(discovery_pb2.Snapshot())  # no policy at all: PERMISSIVE
    assert not policy.strict


def test_inbound_and_outbound_views(ca: MeshCA, tmp_path: Path) -> None:
    store = CertificateStore(*write_files(tmp_path, "b", ca.issue("echo"), ca.pem))
    policy = MtlsPolicy()
    inbound = InboundTls(store, policy)
    assert inbound.context() is store.current.permissive and inbound.own_id == ECHO_ID
    policy.strict = True
    assert inbound.context() is store.current.strict and inbound.strict
    outbound = OutboundTls(store, "skein.local", "local")
    assert outbound("local") is None  # the app stays plaintext
    assert outbound("orders") == (store.current.client, "spiffe://skein.local/service/orders")


def _verify_error(message: str) -> ssl.SSLError:
    err = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    err.verify_message = message
    return err


def test_refusal_reasons_are_short_and_stable() -> None:
    assert _tls_reason(_verify_error("certificate has expired")) == "expired certificate"
    assert _tls_reason(_verify_error("unable to get local issuer certificate")) == "unknown CA"
    no_cert = ssl.SSLError(1, "peer did not return a certificate")
    assert _tls_reason(no_cert) == "no client certificate"
    other = ssl.SSLError(1, "decryption failed")
    other.reason = "DECRYPTION_FAILED"
    assert _tls_reason(other) == "handshake failed: DECRYPTION_FAILED"
    old = ssl.SSLError(1, "[SSL: UNSUPPORTED_PROTOCOL] unsupported protocol")
    assert _tls_reason(old) == "TLS version below 1.3"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skein sidecar")
    add_arguments(parser)
    base = ("--service", "web", "--control", "127.0.0.1:15010", "--app", "127.0.0.1:8080")
    return parser.parse_args([*base, *argv])


def test_tls_flags_go_together() -> None:
    args = _parse()
    assert args.tls_cert is None and args.trust_domain == "skein.local"
    assert args.tls_refresh == 5.0 and _check(args) is None
    args = _parse("--tls-cert", "a.crt", "--tls-key", "a.key")
    assert _check(args) == (
        "--tls-cert, --tls-key and --tls-bundle go together; give all three or none"
    )
    full = _parse("--tls-cert", "a.crt", "--tls-key", "a.key", "--tls-bundle", "b.pem")
    assert _check(full) is None
    with pytest.raises(SystemExit):
        _parse("--tls-refresh", "0")


def test_test_ca_issues_what_it_says(ca: MeshCA) -> None:
    cert_pem, key_pem = ca.issue("echo", expired=True)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.issuer == ca.cert.subject
    assert cert.not_valid_after_utc < ca.cert.not_valid_after_utc
    assert serialization.load_pem_private_key(key_pem, None) is not None


def test_join_token_flags() -> None:
    args = _parse("--join-token", "skt_x.y")
    assert args.join_token == "skt_x.y" and args.cert_ttl == 0 and args.renew_at == 0.5
    assert _check(args) is None
    both = _parse(
        "--join-token", "skt_x.y", "--tls-cert", "a", "--tls-key", "b", "--tls-bundle", "c"
    )
    assert _check(both) == (
        "--join-token and --tls-cert both given: use control's CA or your own files"
    )
    assert _parse("--renew-at", "0.8", "--cert-ttl", "3600").renew_at == 0.8
    for bad in (("--renew-at", "1"), ("--renew-at", "0"), ("--cert-ttl", "-5")):
        with pytest.raises(SystemExit):
            _parse(*bad)
