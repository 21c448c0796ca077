"""Start and stop Skein daemons as real processes (demo, tests, benchmarks).

Every process started here is tracked by PID and stopped by PID: first
SIGTERM (clean shutdown), then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from skein.localetcd import free_port

__all__ = ["Daemon", "ProcessGroup", "free_port"]

# What a daemon prints when a port it was given is taken (see `bind_error`).
_BIND_FAILED = b"cannot listen"
_BIND_ATTEMPTS = 3

# Picks fresh ports: returns argv, admin address and listener addresses.
Rebind = Callable[[], tuple[list[str], str | None, dict[str, str]]]


@dataclass
class Daemon:
    """One child process; `admin` is its admin HOST:PORT when it has one."""

    name: str
    argv: list[str]
    admin: str | None = None
    log_path: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    # Listener addresses by role ("listen", "inbound", "outbound").
    addresses: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    # A free port can be taken by another process between `free_port()` and
    # the daemon's bind; with `rebind`, `wait_ready` retries on fresh ports.
    rebind: Rebind | None = None
    binds_left: int = _BIND_ATTEMPTS - 1

    def start(self) -> Daemon:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT if self.log_path else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
        )
        if self.log_path:
            assert not isinstance(out, int)
            out.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        """GET an admin path; (status, body), status 0 when unreachable."""
        assert self.admin, f"{self.name} has no admin address"
        try:
            with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except OSError:
            return 0, b""

    def wait_ready(self, timeout: float = 20.0, path: str = "/ready") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive() and self.retry_bind():
                continue
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with {self.proc and self.proc.returncode}"
                    f"; log: {self.log_path}"
                )
            if self.get(path, timeout=1)[0] == 200:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout}s; log: {self.log_path}")

    def retry_bind(self) -> bool:
        """Restart on fresh ports if the daemon died because a port was taken."""
        if self.rebind is None or self.binds_left <= 0 or self.log_path is None:
            return False
        with open(self.log_path, "rb") as log:
            if _BIND_FAILED not in log.read():
                return False
        self.binds_left -= 1
        self.argv, self.admin, addresses = self.rebind()
        self.addresses.update(addresses)
        with open(self.log_path, "ab") as log:
            log.write(b"--- restarting on fresh ports (a port was taken) ---\n")
        self.start()
        return True

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, wait up to `grace`, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def skein_argv(*args: str) -> list[str]:
    """argv running the `skein` CLI with this interpreter."""
    return [sys.executable, "-m", "skein.cli", *args]


class ProcessGroup:
    """Daemons started together and stopped together, in reverse order."""

    def __init__(self, log_dir: str | None = None) -> None:
        self.log_dir = log_dir
        self.daemons: list[Daemon] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        admin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        log_path = os.path.join(self.log_dir, f"{name}.log") if self.log_dir else None
        daemon = Daemon(name, list(argv), admin=admin, log_path=log_path, env=env or {})
        self.daemons.append(daemon.start())
        return daemon

    def start_bound(self, name: str, build: Rebind, *, env: dict[str, str] | None = None) -> Daemon:
        argv, admin, addresses = build()
        daemon = self.start(name, argv, admin=admin, env=env)
        daemon.addresses.update(addresses)
        daemon.rebind = build
        return daemon

    def control(self, name: str, etcd: str, *extra: str) -> Daemon:
        def build() -> tuple[list[str], str | None, dict[str, str]]:
            listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
            flags = ("--etcd", etcd, "--listen", listen, "--admin", admin)
            return skein_argv("control", *flags, *extra), admin, {"listen": listen}

        return self.start_bound(name, build)

    def sidecar(
        self,
        name: str,
        service: str,
        control: str,
        app: str,
        *extra: str,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        """A sidecar on fresh ports; `env` adds to its environment (SKEIN_JOIN_TOKEN)."""
        if self.log_dir and "--state-dir" not in extra:
            # its disk cache lives and dies with the group, never shared between runs
            extra = (*extra, "--state-dir", os.path.join(self.log_dir, f"{name}.state"))

        def build() -> tuple[list[str], str | None, dict[str, str]]:
            inbound, outbound = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
            admin = f"127.0.0.1:{free_port()}"
            flags = ("--service", service, "--control", control, "--app", app)
            ports = ("--inbound", inbound, "--outbound", outbound, "--admin", admin)
            argv = skein_argv("sidecar", *flags, *ports, *extra)
            return argv, admin, {"inbound": inbound, "outbound": outbound}

        return self.start_bound(name, build, env=env)

    def stop_all(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop()
        self.daemons.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
