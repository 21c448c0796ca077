"""The `skein` operator commands against a real control daemon and a real etcd."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
import yaml

from skein import cli
from skein.addr import parse_hostport_list
from skein.client import OperatorCallError, OperatorClient
from skein.config import make_resource
from skein.launch import Daemon, ProcessGroup, free_port
from skein.localetcd import LocalEtcd
from skein.v1 import resources_pb2

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "shop" / "manifests"


@pytest.fixture(scope="module")
def control(etcd: LocalEtcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One control daemon for this module, with a key prefix of its own."""
    group = ProcessGroup(log_dir=str(tmp_path_factory.mktemp("control")))
    try:
        prefix = f"/skein-test-{uuid.uuid4().hex[:8]}/"
        daemon = group.control("control", etcd.endpoint, "--prefix", prefix)
        daemon.wait_ready(timeout=20)
        yield daemon
    finally:
        group.stop_all()


class Skein:
    """Runs `skein ...` in-process against the control fixture."""

    def __init__(self, control: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
        self.address = control.addresses["listen"]
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = cli.main([*argv, "--control", self.address])
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def skein(control: Daemon, capsys: pytest.CaptureFixture[str]) -> Skein:
    return Skein(control, capsys)


def manifest(tmp: pathlib.Path, name: str, *docs: dict[str, object]) -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump_all(list(docs)))
    return str(path)


def svc(name: str, port: int) -> dict[str, object]:
    return {"kind": "Service", "metadata": {"name": name}, "spec": {"port": port}}


def test_apply_shop_then_get_and_reapply(skein: Skein) -> None:
    code, out, err = skein("apply", "-f", str(SHOP))
    assert code == 0, err
    lines = out.splitlines()
    assert "service/users created" in lines or "service/users unchanged" in lines
    assert any(line.startswith("trafficpolicy/orders ") for line in lines)
    version = int(lines[-1].removeprefix("version "))
    # no sidecar has connected to this control daemon yet: wait says it checked none
    code, out, _ = skein("wait", "--version", str(version), "--timeout", "2")
    assert code == 0 and "no sidecar is connected" in out

    code, out, _ = skein("get", "services")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert {"users", "products", "orders", "payments", "inventory"} <= set(names)

    code, out, _ = skein("get", "tp", "orders", "-o", "yaml")
    assert code == 0
    doc = yaml.safe_load(out)
    assert doc["kind"] == "TrafficPolicy"
    assert doc["spec"]["loadBalancer"]["algorithm"] == "LEAST_REQUEST"
    assert doc["spec"]["timeout"] == "20s"

    code, out, _ = skein("apply", "-f", str(SHOP))
    assert code == 0
    assert all(line.endswith(" unchanged") for line in out.splitlines()[:-1]), out
    assert version > 0


def test_configure_changes_version(skein: Skein, tmp_path: pathlib.Path) -> None:
    path = manifest(tmp_path, "a.yaml", svc("cfg-a", 9000))
    code, out, _ = skein("apply", "-f", path)
    assert code == 0 and out.splitlines()[0] == "service/cfg-a created"
    first = int(out.splitlines()[-1].removeprefix("version "))
    path = manifest(tmp_path, "a.yaml", svc("cfg-a", 9001))
    code, out, _ = skein("apply", "-f", path)
    assert code == 0 and out.splitlines()[0] == "service/cfg-a configured"
    assert int(out.splitlines()[-1].removeprefix("version ")) > first
    code, out, _ = skein("get", "service", "cfg-a", "-o", "json")
    assert code == 0 and '"port": 9001' in out


def test_invalid_apply_stores_nothing(skein: Skein, tmp_path: pathlib.Path) -> None:
    bad: dict[str, object] = {
        "kind": "TrafficPolicy",
        "metadata": {"name": "inv-b"},
        "spec": {"service": "inv-b", "timeout": "-3s"},
    }
    path = manifest(tmp_path, "bad.yaml", svc("inv-a", 1), bad)
    code, out, err = skein("apply", "-f", path)
    assert code == cli.EXIT_USAGE
    assert f"{path}#1" in err and "spec.timeout" in err
    assert out == ""
    code, _, err = skein("get", "service", "inv-a")  # the valid first document was not applied
    assert code == cli.EXIT_FAILURE
    assert "NOT_FOUND" in err


KEEP: dict[str, object] = {
    "kind": "TrafficPolicy",
    "metadata": {"name": "keep"},
    "spec": {
        "service": "keep",
        "loadBalancer": {"algorithm": "LEAST_REQUEST"},
        "timeout": "2s",
        "rateLimits": [{"name": "per-service", "requests": 10, "period": "1s", "burst": 15}],
    },
}

# (what is wrong, spec fields replacing the good policy's, the field the error names)
INVALID_POLICIES = [
    ("negative duration", {"timeout": "-1s"}, "spec.timeout"),
    (
        "unknown algorithm",
        {"loadBalancer": {"algorithm": "FASTEST"}},
        "spec.load_balancer.algorithm",
    ),
    (
        "weights all zero",
        {
            "loadBalancer": {
                "algorithm": "WEIGHTED_ROUND_ROBIN",
                "weights": {"keep-1": 0, "keep-2": 0},
            }
        },
        "spec.load_balancer.weights",
    ),
    (
        "burst below rate",
        {"rateLimits": [{"name": "per-service", "requests": 100, "period": "1s", "burst": 50}]},
        "spec.rate_limits[0].burst",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "field"), INVALID_POLICIES, ids=[c[0] for c in INVALID_POLICIES]
)
def test_invalid_policy_is_rejected_and_the_old_one_keeps_serving(
    skein: Skein, tmp_path: pathlib.Path, case: str, change: dict[str, object], field: str
) -> None:
    code, _, err = skein("apply", "-f", manifest(tmp_path, "keep.yaml", svc("keep", 1), KEEP))
    assert code == 0, err
    code, before, _ = skein("get", "tp", "keep", "-o", "yaml")
    assert code == 0
    bad = {**KEEP, "spec": {**KEEP["spec"], **change}}  # type: ignore[dict-item]
    path = manifest(tmp_path, "bad.yaml", svc("keep", 2), bad)
    code, out, err = skein("apply", "-f", path)
    assert code == cli.EXIT_USAGE, case
    assert f"{path}#1" in err and f"{field}:" in err, err
    assert "nothing was applied" in err and out == ""
    code, after, _ = skein("get", "tp", "keep", "-o", "yaml")
    assert code == 0 and after == before
    code, out, _ = skein("get", "service", "keep", "-o", "json")
    assert code == 0 and '"port": 1' in out  # the valid document beside it was not applied


def test_control_rejects_an_invalid_policy_the_cli_did_not_check(
    skein: Skein, control: Daemon
) -> None:
    """A client that skips validation (another version, a script) meets the same rules."""
    good = resources_pb2.TrafficPolicy()
    good.metadata.name = "direct"
    good.spec.service = "direct"
    good.spec.timeout.seconds = 3
    bad = resources_pb2.TrafficPolicy()
    bad.CopyFrom(good)
    rule = bad.spec.rate_limits.add(name="r", requests=100, burst=50)
    rule.period.seconds = 1
    with OperatorClient(parse_hostport_list(control.addresses["listen"])) as client:
        client.apply([make_resource("TrafficPolicy", good)])
        with pytest.raises(OperatorCallError) as info:
            client.apply([make_resource("TrafficPolicy", bad)])
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "TrafficPolicy/direct" in info.value.message
        assert "spec.rate_limits[0].burst: a burst below the rate" in info.value.message
        (stored,) = client.get("TrafficPolicy", "direct").resources
    assert not stored.traffic_policy.spec.rate_limits
    assert stored.traffic_policy.spec.timeout.seconds == 3


def test_dry_run_stores_nothing(skein: Skein, tmp_path: pathlib.Path) -> None:
    path = manifest(tmp_path, "d.yaml", svc("dry-a", 1))
    code, out, _ = skein("apply", "-f", path, "--dry-run")
    assert code == 0
    assert out.splitlines() == ["service/dry-a created (dry run)", "dry run: nothing was stored"]
    code, _, _ = skein("get", "service", "dry-a")
    assert code == cli.EXIT_FAILURE


def test_delete(skein: Skein, tmp_path: pathlib.Path) -> None:
    assert skein("apply", "-f", manifest(tmp_path, "x.yaml", svc("del-a", 1)))[0] == 0
    code, out, _ = skein("delete", "svc", "del-a")
    assert code == 0 and out.startswith("service/del-a deleted")
    assert skein("get", "service", "del-a")[0] == cli.EXIT_FAILURE
    code, _, err = skein("delete", "service", "del-a")
    assert code == cli.EXIT_FAILURE and "del-a" in err


def test_unknown_kind_is_a_usage_error(skein: Skein) -> None:
    code, _, err = skein("get", "gadgets")
    assert code == cli.EXIT_USAGE
    assert "gadgets" in err


def test_status_and_wait_with_a_sidecar(
    skein: Skein, control: Daemon, tmp_path: pathlib.Path
) -> None:
    with ProcessGroup(log_dir=str(tmp_path)) as group:
        app = f"127.0.0.1:{free_port()}"
        group.start(
            "users-app",
            [
                sys.executable,
                "-m",
                "examples.shop.server",
                "--service",
                "users",
                "--instance",
                "wait-users-1",
                "--listen",
                app,
            ],
        )
        sidecar = group.sidecar(
            "sidecar",
            "wait-users",
            control.addresses["listen"],
            app,
            "--instance",
            "wait-users-1",
            "--state-dir",
            str(tmp_path / "state"),
        )
        sidecar.wait_ready(timeout=20)
        # Ready means its first configuration is ACKed; the status record the control
        # daemon writes for it lands a moment later. Until then `wait` would pass
        # vacuously (no connected sidecar lags), so wait for the record first.
        deadline = time.monotonic() + 10
        while "wait-users-1" not in skein("status")[1]:
            assert time.monotonic() < deadline, "the sidecar never showed up in skein status"
            time.sleep(0.05)
        path = manifest(tmp_path, "w.yaml", svc("wait-users", 8001))
        code, out, _ = skein("apply", "-f", path)
        assert code == 0
        version = int(out.splitlines()[-1].removeprefix("version "))

        code, out, err = skein("wait", "--version", str(version), "--timeout", "15")
        assert code == 0, err
        assert "every connected sidecar (1) is synced" in out
        code, out, _ = skein("status")
        assert code == 0
        row = next(line.split() for line in out.splitlines() if "wait-users-1" in line)
        assert row[1] == "wait-users"
        assert int(row[4]) >= version

        code, _, err = skein("wait", "--version", str(version + 10_000), "--timeout", "0.5")
        assert code == cli.EXIT_FAILURE
        assert "wait-users/wait-users-1" in err and "timed out" in err


def test_fails_over_to_the_next_replica(control: Daemon) -> None:
    dead = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "skein.cli",
            "get",
            "services",
            "--control",
            f"{dead},{control.addresses['listen']}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("NAME") or result.stdout.startswith("No resources")


def test_unreachable_control() -> None:
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "skein.cli", "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"SKEIN_CONTROL": dead, "PATH": "/usr/bin:/bin"},
        cwd=str(ROOT),
    )
    assert result.returncode == cli.EXIT_FAILURE
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert dead in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 10
