"""Inbound auth through real processes: control + etcd + two sidecars + a gRPC app.

A denied call gets PERMISSION_DENIED naming the rule; a JWT-protected service
refuses a missing or bad token with UNAUTHENTICATED and the reason, and
accepts a good one with its claims forwarded to the app as headers; an API
key stored in etcd opens the service, an unknown one does not.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]

from skein.localetcd import LocalEtcd
from skein.v1 import operator_pb2, operator_pb2_grpc, resources_pb2
from tests.integration.mesh_support import (
    Mesh,
    apply,
    config_dump,
    etcd_put,
    method,
    running_mesh,
    wait_for,
)
from tests.unit.sidecar.auth.tokens import ISSUER, claims, jwks, mint, rsa_jwk

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mesh(etcd: LocalEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    log_dir = str(tmp_path_factory.mktemp("mesh-auth"))
    with running_mesh(etcd.endpoint, log_dir) as built:
        yield built


def delete(mesh: Mesh, kind: str, name: str) -> None:
    with grpc.insecure_channel(mesh.control.addresses["listen"]) as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        stub.Delete(operator_pb2.DeleteRequest(kind=kind, name=name), timeout=5)


def call(
    mesh: Mesh, name: str, metadata: tuple[tuple[str, str], ...] = ()
) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(mesh.upstream) as channel:
        try:
            method(channel, name)(b"hi", timeout=5, metadata=metadata)
        except grpc.RpcError as err:
            return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def authorization_policy(name: str, action: int, paths: list[str]) -> resources_pb2.Resource:
    policy = resources_pb2.AuthorizationPolicy()
    policy.metadata.name = name
    policy.spec.service = "echo"
    policy.spec.action = action  # type: ignore[assignment]
    policy.spec.rules.add(paths=paths)
    return resources_pb2.Resource(authorization_policy=policy)


def test_denied_call_gets_permission_denied_naming_the_rule(mesh: Mesh) -> None:
    apply(
        mesh.control,
        authorization_policy("echo-no-whoami", resources_pb2.DENY, ["/test.Echo/Whoami"]),
    )
    try:
        code, details = wait_for(
            lambda: (r := call(mesh, "Whoami"))[0] != grpc.StatusCode.OK and r,
            10,
            "the DENY policy at echo's sidecar",
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "AuthorizationPolicy/echo-no-whoami rules[0]" in details
        assert call(mesh, "Unary") == (grpc.StatusCode.OK, "")
        status, body = http1_post(mesh.echo.addresses["inbound"], "/test.Echo/Whoami")
        assert status == 403
        assert "AuthorizationPolicy/echo-no-whoami rules[0]" in body
        metrics = metrics_of(mesh)
        assert 'skein_sidecar_authz_denied_total{policy="echo-no-whoami"}' in metrics
        with grpc.insecure_channel(mesh.control.addresses["listen"]) as channel:
            stub = operator_pb2_grpc.OperatorStub(channel)
            got = stub.Get(operator_pb2.GetRequest(kind="authz"), timeout=5).resources
            assert [r.authorization_policy.metadata.name for r in got] == ["echo-no-whoami"]
        with pytest.raises(grpc.RpcError) as refused:
            apply(mesh.control, authorization_policy("bad", resources_pb2.DENY, ["no-slash"]))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "spec.rules[0].paths[0]" in (refused.value.details() or "")
    finally:
        delete(mesh, "AuthorizationPolicy", "echo-no-whoami")
    wait_for(lambda: call(mesh, "Whoami")[0] == grpc.StatusCode.OK, 10, "the policy gone")


def http1_post(address: str, path: str, *headers: str) -> tuple[int, str]:
    """One HTTP/1.1 request straight to a sidecar's inbound port: (status, body)."""
    host, port = address.rsplit(":", 1)
    extra = "".join(f"{h}\r\n" for h in headers)
    request = f"POST {path} HTTP/1.1\r\nHost: echo\r\nContent-Length: 0\r\n{extra}\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode(errors="replace")


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def metrics_of(mesh: Mesh) -> str:
    status, body = mesh.echo.get("/metrics")
    assert status == 200
    return body.decode()


def jwt_policy(jwks_file: str) -> resources_pb2.Resource:
    policy = resources_pb2.TrafficPolicy()
    policy.metadata.name = "echo"
    policy.spec.service = "echo"
    rule = policy.spec.jwt.add(
        issuer=ISSUER, audiences=["orders"], jwks_file=jwks_file, required=True
    )
    rule.forward_claims["sub"] = "x-user"
    return resources_pb2.Resource(traffic_policy=policy)


def test_jwt_refuses_bad_tokens_and_forwards_claims_of_a_good_one(
    mesh: Mesh, tmp_path: Path
) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(rsa_jwk()))
    apply(mesh.control, jwt_policy(str(path)))
    try:
        code, details = wait_for(
            lambda: (r := call(mesh, "Unary"))[0] != grpc.StatusCode.OK and r,
            10,
            "the JWT rule at echo's sidecar",
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "a JWT is required" in details
        status, body = http1_post(mesh.echo.addresses["inbound"], "/test.Echo/Unary")
        assert status == 401
        assert "a JWT is required" in body
        now = time.time()
        cases = {
            "wrong issuer": claims(iss="https://evil.example", exp=int(now) + 60),
            "wrong audience": claims(aud="payments", exp=int(now) + 60),
            "expired": claims(iat=int(now) - 7200, exp=int(now) - 3600),
        }
        for reason, payload in cases.items():
            bad = (("authorization", f"Bearer {mint(payload)}"),)
            assert call(mesh, "Unary", bad) == (
                grpc.StatusCode.UNAUTHENTICATED,
                f"unauthenticated: JWT refused: {reason}",
            )
        token = mint(claims(iat=int(now), exp=int(now) + 300))
        good = (("authorization", f"Bearer {token}"), ("x-user", "mallory"))
        before = len(mesh.app.calls)
        assert call(mesh, "Unary", good) == (grpc.StatusCode.OK, "")
        seen = mesh.app.calls[before].metadata
        assert seen["x-user"] == "alice"
        assert seen["authorization"] == f"Bearer {token}"
        dump = config_dump(mesh.echo)["inbound_auth"]
        assert dump["jwt"][0]["keys"] == ["rsa-1"] and dump["jwt"][0]["jwks_error"] == ""
        assert dump["counters"]["jwt"]["ok"] == 1
        metrics = metrics_of(mesh)
        assert 'skein_sidecar_jwt_validations_total{result="ok"} 1' in metrics
        assert 'skein_sidecar_jwt_validations_total{result="expired"} 1' in metrics
    finally:
        delete(mesh, "TrafficPolicy", "echo")
    wait_for(lambda: call(mesh, "Unary")[0] == grpc.StatusCode.OK, 10, "the JWT rule gone")


def test_api_key_from_etcd_opens_the_service(mesh: Mesh, etcd: LocalEtcd) -> None:
    key = resources_pb2.ApiKey()
    key.metadata.name = "ci"
    key.spec.service = "echo"
    key.spec.sha256 = hashlib.sha256(b"sk_test_key").hexdigest()
    etcd_put(
        etcd.endpoint,
        f"{mesh.prefix}resources/ApiKey/ci",
        json.dumps(json_format.MessageToDict(key)),
    )
    policy = resources_pb2.AuthorizationPolicy()
    policy.metadata.name = "echo-keys"
    policy.spec.service = "echo"
    policy.spec.rules.add(api_keys=["ci"])
    apply(mesh.control, resources_pb2.Resource(authorization_policy=policy))
    try:
        code, details = wait_for(
            lambda: (r := call(mesh, "Unary"))[0] != grpc.StatusCode.OK and r,
            10,
            "the key policy at echo's sidecar",
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "no ALLOW policy matched" in details
        assert call(mesh, "Unary", (("x-api-key", "sk_test_key"),)) == (grpc.StatusCode.OK, "")
        code, details = call(mesh, "Unary", (("x-api-key", "sk_wrong"),))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "unknown or revoked API key" in details
        key.spec.revoked = True
        etcd_put(
            etcd.endpoint,
            f"{mesh.prefix}resources/ApiKey/ci",
            json.dumps(json_format.MessageToDict(key)),
        )
        wait_for(
            lambda: (
                call(mesh, "Unary", (("x-api-key", "sk_test_key"),))[0]
                == grpc.StatusCode.UNAUTHENTICATED
            ),
            10,
            "the revoked key refused",
        )
    finally:
        delete(mesh, "AuthorizationPolicy", "echo-keys")
    wait_for(lambda: call(mesh, "Unary")[0] == grpc.StatusCode.OK, 10, "the key policy gone")
