"""Operator API authentication and roles against a real control daemon and etcd.

A refused call (no token, wrong token, too low a role) must change nothing:
neither the resource nor the audit log.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator

import grpc
import pytest
import yaml

from control.auth import hash_token, load_operators
from skein import cli
from skein.addr import parse_hostport_list
from skein.client import OperatorCallError, OperatorClient
from skein.config import make_resource
from skein.launch import Daemon, ProcessGroup
from skein.localetcd import LocalEtcd
from skein.v1 import identity_pb2, identity_pb2_grpc, resources_pb2

pytestmark = pytest.mark.integration

TOKENS = {"vera": "tok-viewer-1", "otto": "tok-operator-1", "ada": "tok-admin-1"}
ROLES = {"vera": "viewer", "otto": "operator", "ada": "admin"}


@pytest.fixture(scope="module")
def control(etcd: LocalEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("auth")
    operators = tmp / "operators.yaml"
    operators.write_text(
        yaml.safe_dump(
            [
                {"name": name, "role": ROLES[name], "token_sha256": hash_token(token)}
                for name, token in TOKENS.items()
            ]
        )
    )
    group = ProcessGroup(log_dir=str(tmp))
    try:
        prefix = f"/skein-test-{uuid.uuid4().hex[:8]}/"
        daemon = group.control(
            "control", etcd.endpoint, "--prefix", prefix, "--operators", str(operators)
        )
        daemon.wait_ready(timeout=20)
        yield daemon
    finally:
        group.stop_all()


def client(control: Daemon, token: str | None) -> OperatorClient:
    return OperatorClient(parse_hostport_list(control.addresses["listen"]), token=token)


def service(name: str, port: int = 8080) -> resources_pb2.Resource:
    svc = resources_pb2.Service()
    svc.metadata.name = name
    svc.spec.port = port
    return make_resource("Service", svc)


def refused(control: Daemon, token: str | None, call: str) -> OperatorCallError:
    name = f"refused-{uuid.uuid4().hex[:6]}"
    with client(control, token) as c, pytest.raises(OperatorCallError) as info:
        if call == "apply":
            c.apply([service(name)])
        elif call == "delete":
            c.delete("Service", name)
        elif call == "apikey":
            c.create_api_key("orders", name)
        else:
            c.get("Service")
    # Nothing happened: neither the resource nor an audit entry names it.
    with client(control, TOKENS["ada"]) as admin:
        assert not [r for r in admin.get("Service").resources if r.service.metadata.name == name]
        assert name not in {e.name for e in admin.audit(limit=10_000).entries}
    return info.value


@pytest.mark.parametrize("call", ["get", "apply", "delete", "apikey"])
def test_no_token_is_unauthenticated(control: Daemon, call: str) -> None:
    err = refused(control, None, call)
    assert err.code == grpc.StatusCode.UNAUTHENTICATED
    assert "SKEIN_TOKEN" in err.message


@pytest.mark.parametrize("call", ["get", "apply"])
def test_wrong_token_is_unauthenticated(control: Daemon, call: str) -> None:
    err = refused(control, "tok-not-listed", call)
    assert err.code == grpc.StatusCode.UNAUTHENTICATED
    assert "not known" in err.message


@pytest.mark.parametrize("call", ["apply", "delete", "apikey"])
def test_viewer_cannot_change(control: Daemon, call: str) -> None:
    err = refused(control, TOKENS["vera"], call)
    assert err.code == grpc.StatusCode.PERMISSION_DENIED
    assert "vera has role viewer" in err.message
    assert "needs role operator" in err.message


def test_viewer_reads_operator_writes(control: Daemon) -> None:
    name = f"svc-{uuid.uuid4().hex[:6]}"
    with client(control, TOKENS["otto"]) as otto:
        response = otto.apply([service(name)])
        assert [(r.name, r.action) for r in response.results] == [(name, "created")]
    with client(control, TOKENS["vera"]) as vera:
        got = vera.get("Service", name).resources
        assert [r.service.metadata.name for r in got] == [name]
        assert vera.status().revision >= response.version
        names = [(e.principal, e.role, e.action, e.name) for e in vera.audit().entries]
        assert ("otto", "operator", "apply", name) in names


def test_viewer_dry_run_is_refused_too(control: Daemon) -> None:
    with client(control, TOKENS["vera"]) as vera, pytest.raises(OperatorCallError) as info:
        vera.apply([service("dry")], dry_run=True)
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_cli_token_flag_and_env(
    control: Daemon,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
) -> None:
    address = control.addresses["listen"]
    monkeypatch.delenv("SKEIN_TOKEN", raising=False)
    assert cli.main(["get", "svc", "--control", address]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err

    assert cli.main(["get", "svc", "--control", address, "--token", TOKENS["vera"]]) == 0
    capsys.readouterr()

    name = f"cli-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "svc.yaml"
    path.write_text(
        yaml.safe_dump({"kind": "Service", "metadata": {"name": name}, "spec": {"port": 80}})
    )
    monkeypatch.setenv("SKEIN_TOKEN", TOKENS["vera"])
    assert cli.main(["apply", "-f", str(path), "--control", address]) == 1
    err = capsys.readouterr().err
    assert "PERMISSION_DENIED" in err and "needs role operator" in err

    monkeypatch.setenv("SKEIN_TOKEN", TOKENS["otto"])
    assert cli.main(["apply", "-f", str(path), "--control", address]) == 0
    assert f"service/{name} created" in capsys.readouterr().out


def test_operator_token_hash_line_is_accepted(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    """The helper's output is a valid operators-file entry whose digest matches its token."""
    assert cli.main(["operator-token", "hash", "--name", "ci", "--role", "admin"]) == 0
    comment, entry = capsys.readouterr().out.splitlines()
    token = comment.rsplit(" ", 1)[1]
    path = tmp_path / "ops.yaml"
    path.write_text(entry + "\n")
    table = load_operators(str(path))
    principal = table.lookup(token)
    assert principal is not None and principal.name == "ci" and principal.role.label == "admin"
    assert table.lookup(token + "x") is None


@pytest.mark.parametrize(
    ("who", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("tok-not-listed", grpc.StatusCode.UNAUTHENTICATED),
        ("vera", grpc.StatusCode.PERMISSION_DENIED),
        ("otto", grpc.StatusCode.OK),
    ],
)
def test_join_token_calls_need_the_operator_role(
    control: Daemon, who: str | None, code: grpc.StatusCode
) -> None:
    token = TOKENS.get(who or "", who)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    service = f"tok-{uuid.uuid4().hex[:6]}"
    with grpc.insecure_channel(control.addresses["listen"]) as channel:
        stub = identity_pb2_grpc.IdentityStub(channel)
        request = identity_pb2.CreateTokenRequest(service=service, ttl_seconds=60)
        try:
            stub.CreateToken(request, timeout=5, metadata=metadata)
            got = grpc.StatusCode.OK
        except grpc.RpcError as err:
            got = err.code()
        assert got == code
        admin = (("authorization", f"Bearer {TOKENS['ada']}"),)
        listed = stub.ListTokens(identity_pb2.ListTokensRequest(), timeout=5, metadata=admin)
    # a refused call made no token
    assert (service in {t.service for t in listed.tokens}) == (code == grpc.StatusCode.OK)
