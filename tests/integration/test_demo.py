"""The shop demo end to end: real etcd, control, shop instances and sidecars.

Secured by default (mesh CA, join tokens, mtls STRICT, AuthorizationPolicies,
operator auth); `--insecure` runs it in plaintext.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import grpc
import pytest

from examples.shop.demo import Shop
from examples.shop.v1 import shop_pb2, shop_pb2_grpc
from skein import cli
from skein.launch import free_port

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]


def processes_in_group(pgid: int) -> list[str]:
    """`pid name` of every live process whose process group is `pgid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        fields = rest.split()
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            found.append(f"{entry} {name}")
    return found


@pytest.mark.timeout(150)
@pytest.mark.parametrize("mode", ["secure", "insecure"])
def test_demo_runs_clean_and_leaves_nothing_behind(tmp_path: pathlib.Path, mode: str) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    flags = ["--insecure"] if mode == "insecure" else []
    # Its own session: every process the demo starts shares its process
    # group, so a leftover child is found by group id after it exits.
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.shop.demo", "--duration", "8", *flags],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    leftovers = processes_in_group(proc.pid)
    if leftovers:
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    banner = out.splitlines()[0]
    if mode == "secure":
        assert banner.startswith("security    on: mTLS STRICT"), banner
        assert "authorizationpolicy/payments-from-orders created" in out
    else:
        assert banner.startswith("security    off (--insecure)"), banner
        assert "authorizationpolicy" not in out
    assert leftovers == [], leftovers
    summary = out.strip().splitlines()[-1]
    assert summary.endswith("0 errors; every process stopped"), out[-3000:]
    calls = int(summary.split()[0])
    assert calls > 100  # ~40 calls/s for 8 s
    rows = {line.split()[0]: line.split() for line in out.splitlines()[-8:-1] if line.split()}
    for service in ("users", "products", "orders", "inventory", "payments"):
        assert int(rows[service][2]) > 0 and rows[service][3] == "0", out[-3000:]
    assert list(tmp.iterdir()) == []  # temp dirs (etcd data, logs, sidecar state) removed


@pytest.fixture(scope="module")
def shop() -> Iterator[Shop]:
    """The secure demo mesh, started in process (no traffic generator)."""
    workdir = tempfile.mkdtemp(prefix="skein-demo-test-")
    started = Shop(workdir)
    try:
        started.start(log=False)
        yield started
    finally:
        started.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _rpc_code(call: object) -> grpc.StatusCode:
    try:
        assert callable(call)
        call()
    except grpc.RpcError as err:
        code: grpc.StatusCode = err.code()
        return code
    return grpc.StatusCode.OK


@pytest.mark.timeout(90)
def test_secure_demo_sidecars_refuse_plaintext_callers(shop: Shop) -> None:
    request = shop_pb2.GetUserRequest(id="u-1")
    inbound = shop.sidecars["users-1"].addresses["inbound"]
    with grpc.insecure_channel(inbound) as plain:  # STRICT: no TLS, no service
        stub = shop_pb2_grpc.UsersStub(plain)
        assert _rpc_code(lambda: stub.GetUser(request, timeout=5)) == grpc.StatusCode.UNAVAILABLE
    assert shop.gateway is not None
    with grpc.insecure_channel(shop.users_port) as local:  # the gateway's mesh path works
        user = shop_pb2_grpc.UsersStub(local).GetUser(request, timeout=5)
    assert user.id == "u-1"


@pytest.mark.timeout(90)
def test_secure_demo_authorization_follows_the_call_graph(shop: Shop) -> None:
    """A second gateway sidecar (same identity) reaches users but not payments: only
    orders may charge."""
    users, payments = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    extra = shop._sidecar(
        "gateway-2",
        "gateway",
        f"127.0.0.1:{free_port()}",
        ["--upstream", f"users={users}", "--upstream", f"payments={payments}"],
    )
    extra.wait_ready(timeout=20)
    with grpc.insecure_channel(users) as channel:
        get_user = shop_pb2_grpc.UsersStub(channel).GetUser
        codes = [_rpc_code(lambda: get_user(shop_pb2.GetUserRequest(id="u-2"), timeout=5))]
        for _ in range(50):  # until the sidecar has users' endpoints
            if codes[-1] == grpc.StatusCode.OK:
                break
            codes.append(_rpc_code(lambda: get_user(shop_pb2.GetUserRequest(id="u-2"), timeout=5)))
        assert codes[-1] == grpc.StatusCode.OK, codes
    with grpc.insecure_channel(payments) as channel:
        charge = shop_pb2_grpc.PaymentsStub(channel).Charge
        request = shop_pb2.ChargeRequest(order_id="o-1", user_id="u-1", amount_cents=100)
        try:
            charge(request, timeout=5)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
            assert "no ALLOW policy matched" in (err.details() or ""), err.details()
        else:
            raise AssertionError("gateway charged payments; only orders may")


@pytest.mark.timeout(60)
def test_secure_demo_audits_its_applies_for_its_operator(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shop.token is not None and shop.control_ca_path is not None
    target = ["--control", shop.control, "--control-ca", shop.control_ca_path]
    capsys.readouterr()
    code = cli.main(["audit", "-o", "json", *target, "--token", shop.token])
    out, err = capsys.readouterr()
    assert code == 0, err
    entries = json.loads(out)
    applied = {
        (e["kind"], e["name"])
        for e in entries
        if e["action"] == "apply" and e["principal"] == "demo"
    }
    assert ("TrafficPolicy", "payments") in applied
    assert ("AuthorizationPolicy", "payments-from-orders") in applied
    assert {e["role"] for e in entries if e["principal"] == "demo"} == {"operator"}
    # without the token the operator API refuses
    code = cli.main(["audit", "-o", "json", *target])
    _, err = capsys.readouterr()
    assert code != 0 and "UNAUTHENTICATED" in err, err
    # control serves TLS only: a plaintext client is refused
    code = cli.main(["audit", "-o", "json", "--control", shop.control, "--token", shop.token])
    _, err = capsys.readouterr()
    assert code != 0 and "pass --control-ca FILE" in err, err
