"""The shop demo end to end: real etcd, control, shop instances and sidecars."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest

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
def test_demo_runs_clean_and_leaves_nothing_behind(tmp_path: pathlib.Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # Its own session: every process the demo starts shares its process
    # group, so a leftover child is found by group id after it exits.
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.shop.demo", "--duration", "8"],
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
    assert leftovers == [], leftovers
    summary = out.strip().splitlines()[-1]
    assert summary.endswith("0 errors; every process stopped"), out[-3000:]
    calls = int(summary.split()[0])
    assert calls > 100  # ~40 calls/s for 8 s
    rows = {line.split()[0]: line.split() for line in out.splitlines()[-8:-1] if line.split()}
    for service in ("users", "products", "orders", "inventory", "payments"):
        assert int(rows[service][2]) > 0 and rows[service][3] == "0", out[-3000:]
    assert list(tmp.iterdir()) == []  # temp dirs (etcd data, logs, sidecar state) removed
