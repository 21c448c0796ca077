"""Starting the control daemon: etcd not there yet, and flags it cannot use."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import pytest

from skein.launch import Daemon, ProcessGroup, free_port, skein_argv
from skein.localetcd import LocalEtcd
from tests.integration.control_client import Control, SidecarStream, eventually, policy

pytestmark = pytest.mark.integration


def test_etcd_appearing_late_makes_control_ready(procs: ProcessGroup) -> None:
    port = free_port()
    daemon: Daemon = procs.control("control", f"127.0.0.1:{port}", "--prefix", "/late/")
    daemon.wait_ready(timeout=20, path="/healthz")
    time.sleep(1.0)  # a few failed attempts: the daemon must stay up and say why
    assert daemon.alive()
    status, body = daemon.get("/ready")
    assert status == 503 and b"not ready" in body and f":{port}".encode() in body

    with LocalEtcd(port=port):
        started = time.monotonic()
        daemon.wait_ready(timeout=15)
        assert time.monotonic() - started < 10

        async def scenario() -> None:
            control = Control(daemon.addresses["listen"])

            async def applied() -> bool:
                try:
                    return bool((await control.apply(policy("orders", 3))).version > 0)
                except Exception:
                    return False

            await eventually(applied, timeout=10)
            stream = SidecarStream(control, "web-1", ["orders"])
            resp = await stream.next()
            assert resp.snapshot.clusters[0].policy.spec.timeout.seconds == 3
            await stream.close()
            await control.close()

        asyncio.run(scenario())
        assert daemon.stop() == 0


def run_control(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        skein_argv("control", *flags), capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--etcd", "nonsense"], "error: --etcd: expected HOST:PORT, got 'nonsense'"),
        (["--etcd", "127.0.0.1:99999"], "error: --etcd: port must be a number 0-65535"),
        (["--listen", "here"], "error: --listen: expected HOST:PORT, got 'here'"),
        (["--lease-ttl", "0"], "error: --lease-ttl: must be 1-3600 seconds, got 0"),
    ],
)
def test_bad_flags_exit_2_with_one_line(flags: list[str], message: str) -> None:
    result = run_control(*flags)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_listen_address_in_use_or_foreign_exits_1_saying_why() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        admin = f"127.0.0.1:{free_port()}"
        cases = [
            (["--listen", taken, "--admin", admin], "--listen", "already in use"),
            (["--listen", "127.0.0.1:0", "--admin", taken], "--admin", "already in use"),
            # TEST-NET-1: an address no host of ours has
            (["--listen", "192.0.2.1:15010", "--admin", admin], "--listen", "assign"),
        ]
        for flags, flag, why in cases:
            started = time.monotonic()
            result = run_control("--etcd", f"127.0.0.1:{free_port()}", *flags)
            assert result.returncode == 1, result.stderr
            assert time.monotonic() - started < 15
            assert f"cannot listen ({flag})" in result.stderr
            assert why in result.stderr.lower() and "Traceback" not in result.stderr
