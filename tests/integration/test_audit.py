"""The audit log and API keys through `skein` against a real control daemon and etcd."""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from control.auth import hash_token
from skein import cli
from skein.addr import parse_hostport_list
from skein.client import OperatorClient
from skein.launch import Daemon, ProcessGroup, skein_argv
from skein.localetcd import LocalEtcd

pytestmark = pytest.mark.integration

OPERATOR = "tok-audit-operator"
VIEWER = "tok-audit-viewer"


@pytest.fixture(scope="module")
def control(etcd: LocalEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("audit")
    operators = tmp / "operators.yaml"
    operators.write_text(
        yaml.safe_dump(
            {
                "operators": [
                    {"name": "olga", "role": "operator", "token_sha256": hash_token(OPERATOR)},
                    {"name": "vic", "role": "viewer", "token_sha256": hash_token(VIEWER)},
                ]
            }
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


class Skein:
    """Runs `skein ...` in-process against the control fixture with a token."""

    def __init__(self, control: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
        self.address = control.addresses["listen"]
        self.capsys = capsys

    def __call__(self, *argv: str, token: str = OPERATOR) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main([*argv, "--control", self.address, "--token", token])
        out, err = self.capsys.readouterr()
        return code, out, err

    def audit(self, since: int = 0) -> list[dict[str, Any]]:
        code, out, err = self("audit", "-o", "json", "--since-revision", str(since), token=VIEWER)
        assert code == 0, err
        entries: list[dict[str, Any]] = json.loads(out)
        return entries


@pytest.fixture
def skein(control: Daemon, capsys: pytest.CaptureFixture[str]) -> Skein:
    return Skein(control, capsys)


def write(tmp: pathlib.Path, name: str, port: int) -> str:
    path = tmp / f"{name}-{port}.yaml"
    path.write_text(
        yaml.safe_dump({"kind": "Service", "metadata": {"name": name}, "spec": {"port": port}})
    )
    return str(path)


def version(out: str) -> int:
    return int(next(line for line in out.splitlines() if line.startswith("version ")).split()[1])


def test_apply_update_delete_are_audited_with_diffs(skein: Skein, tmp_path: pathlib.Path) -> None:
    name = f"audited-{uuid.uuid4().hex[:6]}"
    code, out, err = skein("apply", "-f", write(tmp_path, name, 8080))
    assert code == 0, err
    created = version(out)
    code, out, err = skein("apply", "-f", write(tmp_path, name, 9090))
    assert code == 0, err
    updated = version(out)
    code, out, err = skein("apply", "-f", write(tmp_path, name, 9090))  # unchanged
    assert code == 0 and "unchanged" in out, (out, err)
    code, out, err = skein("apply", "--dry-run", "-f", write(tmp_path, name, 7070))
    assert code == 0, err
    code, out, err = skein("delete", "svc", name)
    assert code == 0, err
    deleted = version(out)

    mine = [e for e in skein.audit(created - 1) if e.get("name") == name]
    assert [(e["action"], e["kind"], int(e["revision"])) for e in mine] == [
        ("apply", "Service", created),
        ("apply", "Service", updated),
        ("delete", "Service", deleted),
    ]
    assert {(e["principal"], e["role"]) for e in mine} == {("olga", "operator")}
    create_diff, update_diff, delete_diff = (e["diff"] for e in mine)
    assert f"--- /dev/null\n+++ Service/{name}" in create_diff
    assert '+    "port": 8080' in create_diff
    assert '-    "port": 8080' in update_diff and '+    "port": 9090' in update_diff
    assert f"--- Service/{name}\n+++ /dev/null" in delete_diff
    assert '-    "port": 9090' in delete_diff

    # since_revision: only what came after
    assert [e["action"] for e in skein.audit(updated) if e.get("name") == name] == ["delete"]

    # the table shows who, what and (with --diff) the change
    code, out, err = skein("audit", "--diff", "--since-revision", str(created - 1), token=VIEWER)
    assert code == 0, err
    rows = [row for row in map(str.split, out.splitlines()) if row[-1:] == [f"Service/{name}"]]
    rows = [row for row in rows if row[0].isdigit()]  # not the diff's ---/+++ lines
    assert [row[2:5] for row in rows] == [["olga", "operator", "apply"]] * 2 + [
        ["olga", "operator", "delete"]
    ]
    assert '+    "port": 9090' in out


def test_failed_delete_writes_nothing(skein: Skein) -> None:
    before = skein.audit()
    code, _out, err = skein("delete", "svc", "never-existed")
    assert code == 1 and "NOT_FOUND" in err
    assert skein.audit() == before


def test_api_key_create_and_revoke(skein: Skein) -> None:
    name = f"key-{uuid.uuid4().hex[:6]}"
    code, out, err = skein("apikey", "create", "--service", "orders", name)
    assert code == 0, err
    key = next(line.split()[1] for line in out.splitlines() if line.startswith("key "))
    assert key.startswith("sk_") and len(key) > 40
    created = version(out)

    code, _out, err = skein("apikey", "create", "--service", "orders", name)
    assert code == 1 and "ALREADY_EXISTS" in err

    code, out, err = skein("apikey", "revoke", name)
    assert code == 0, err
    revoked = version(out)
    # sidecars sync API keys: status counts the change at once (read-your-writes)
    with OperatorClient(parse_hostport_list(skein.address), token=VIEWER) as viewer:
        assert viewer.status().revision >= revoked
    code, out, err = skein("apikey", "revoke", name)  # again: nothing changes
    assert code == 0 and version(out) == revoked, err

    code, _out, err = skein("apikey", "revoke", name, token=VIEWER)
    assert code == 1 and "PERMISSION_DENIED" in err

    mine = [e for e in skein.audit(created - 1) if e.get("name") == name]
    assert [(e["action"], e["kind"], int(e["revision"])) for e in mine] == [
        ("apikey-create", "ApiKey", created),
        ("apikey-revoke", "ApiKey", revoked),
    ]
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert digest in mine[0]["diff"] and '"service": "orders"' in mine[0]["diff"]
    assert '+    "revoked": true' in mine[1]["diff"]
    code, out, _err = skein("audit", "--diff", "-o", "json", token=VIEWER)
    assert key not in out  # the key itself is never stored or shown again


def test_bad_operators_file_stops_control_with_a_reason(
    etcd: LocalEtcd, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "operators.yaml"
    path.write_text(yaml.safe_dump([{"name": "x", "role": "root", "token_sha256": "ab"}]))
    result = subprocess.run(
        skein_argv("control", "--etcd", etcd.endpoint, "--operators", str(path)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown role 'root'" in result.stderr and "operators[0]" in result.stderr


def test_open_control_warns_at_start(procs: ProcessGroup, etcd: LocalEtcd) -> None:
    daemon = procs.control("open", etcd.endpoint, "--prefix", f"/skein-test-{uuid.uuid4().hex}/")
    daemon.wait_ready(timeout=20)
    assert daemon.log_path is not None
    log = pathlib.Path(daemon.log_path).read_text()
    assert "operator API is unauthenticated" in log


def test_join_token_create_and_revoke_are_audited_without_the_secret(skein: Skein) -> None:
    code, out, err = skein("token", "create", "--service", "orders", "--ttl", "10m")
    assert code == 0, err
    token = out.strip().splitlines()[-1]
    token_id = token.split(".", 1)[0].removeprefix("skt_")
    secret = token.split(".", 1)[1]
    code, _out, err = skein("token", "revoke", token_id)
    assert code == 0, err
    mine = [e for e in skein.audit() if e.get("name") == token_id]
    assert [(e["action"], e["kind"], e["principal"]) for e in mine] == [
        ("token-create", "JoinToken", "olga"),
        ("token-revoke", "JoinToken", "olga"),
    ]
    assert all(secret not in e["diff"] for e in mine)
    code, _out, err = skein("token", "create", "--service", "orders", token=VIEWER)
    assert code == 1 and "PERMISSION_DENIED" in err
