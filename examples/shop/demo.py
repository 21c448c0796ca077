"""The shop demo: `python -m examples.shop.demo [--duration S] [--insecure]` (`./dev demo`).

Starts, as real processes: a throwaway etcd, one control daemon, every shop
instance with its own sidecar, and a gateway sidecar for the traffic
generator (this process). Applies examples/shop/manifests (and, secured,
examples/shop/security), waits until every sidecar is synced, drives
moderate traffic through the mesh and redraws a per-service summary every
second until Ctrl-C or --duration. Then stops every process by PID and
removes its temp dirs. Exit status 1 when any call failed (or the mesh
never came up).

Secured by default, as docs/security.md describes: control keeps a mesh CA
(its key encrypted with a random passphrase made here), serves its gRPC
port over TLS with a certificate from that CA (clients verify it with the
bundle from `skein control --print-bundle`) and requires an operator token
(made here; every operator call of the demo carries it);
each sidecar gets its certificate with a join token for its own service;
the manifests set mtls STRICT and AuthorizationPolicies allow exactly the
shop's call graph. Apps, the traffic generator included, talk plaintext to
their own sidecar on localhost; TLS runs between sidecars. `--insecure`
runs the same mesh in plaintext with the operator API open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import grpc

from examples.shop.health import SERVING
from examples.shop.stats import Recorder, render
from examples.shop.traffic import Gateway
from skein import waiting
from skein.addr import parse_hostport_list
from skein.client import OperatorClient
from skein.clock import MonotonicClock
from skein.config import load_manifests
from skein.errors import SkeinError
from skein.launch import Daemon, ProcessGroup, Rebind, free_port, skein_argv
from skein.localetcd import LocalEtcd
from skein.output import format_apply

__all__ = ["INSTANCES", "main"]

MANIFESTS = os.path.join(os.path.dirname(__file__), "manifests")
# AuthorizationPolicies of the shop's call graph; they need mesh identities.
SECURITY = os.path.join(os.path.dirname(__file__), "security")
# Instances per service: fewer than the seed table asks for, to suit 2 cores.
INSTANCES = {"users": 3, "products": 2, "orders": 2, "inventory": 2, "payments": 1}
SHOWN = ("users", "products", "orders", "inventory", "payments")
# Join tokens outlive a day-long run: a sidecar renews its certificate (24 h by
# default) at half its lifetime, with the same token.
JOIN_TOKEN_TTL = 48 * 3600
SECURE_BANNER = (
    "security    on: mTLS STRICT between sidecars (SPIFFE identities from control's CA, "
    "one join token per service), AuthorizationPolicy default-deny along the call graph, "
    "operator auth (bearer token), TLS to control; apps talk plaintext to their own sidecar "
    "on localhost"
)
INSECURE_BANNER = (
    "security    off (--insecure): plaintext between sidecars, no identities, "
    "no AuthorizationPolicy, operator API open to anyone"
)


def _addr() -> str:
    return f"127.0.0.1:{free_port()}"


def _app_launch(service: str, instance: str, upstreams: list[str]) -> Rebind:
    """The app's command line on a fresh port (called again if that port was taken)."""

    def build() -> tuple[list[str], str | None, dict[str, str]]:
        app = _addr()
        argv = ["--service", service, "--instance", instance, "--listen", app]
        argv += [a for up in upstreams for a in ("--upstream", up)]
        return [sys.executable, "-m", "examples.shop.server", *argv], None, {"app": app}

    return build


def _wait_serving(name: str, daemon: Daemon, deadline: float) -> None:
    """Until the app answers grpc.health.v1 Check with SERVING."""
    while True:
        address = daemon.addresses["app"]
        with grpc.insecure_channel(address) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check")
            while True:
                if not daemon.alive():
                    if daemon.retry_bind():  # another process took its port first
                        break
                    raise RuntimeError(f"{name} exited early; see {daemon.log_path}")
                try:
                    if check(b"", timeout=1.0) == SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} is not serving on {address}; see {daemon.log_path}")
                time.sleep(0.05)


def _write_secret(path: str, text: str) -> None:
    """A file only this user may read (passphrase, operators file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


class Shop:
    """Everything the demo starts; `stop()` ends it all, by PID, in reverse order.

    With `secure` (the default) control runs a mesh CA and operator auth,
    and `token` is the operator token every operator call must carry.
    """

    def __init__(self, workdir: str, secure: bool = True) -> None:
        self.workdir = workdir
        self.secure = secure
        self.etcd = LocalEtcd()
        self.procs = ProcessGroup(log_dir=workdir)
        self.control = ""
        self.gateway: Daemon | None = None
        self.sidecars: dict[str, Daemon] = {}
        self.users_port = _addr()
        self.token: str | None = None
        # The mesh trust bundle that verifies control's TLS certificate (file and bytes).
        self.control_ca_path: str | None = None
        self._control_ca: bytes | None = None
        self._join_tokens: dict[str, str] = {}

    def _control_flags(self) -> list[str]:
        """Secure control: a generated CA whose key a random passphrase encrypts, TLS on
        its gRPC port (a certificate from that CA), and one operator (role operator)
        whose token only this process knows."""
        if not self.secure:
            return []
        from control.auth import hash_token, new_token

        secret_dir = os.path.join(self.workdir, "secrets")
        os.makedirs(secret_dir, mode=0o700, exist_ok=True)
        passphrase = os.path.join(secret_dir, "ca-passphrase")
        _write_secret(passphrase, secrets.token_urlsafe(32) + "\n")
        self.token = new_token()
        operators = os.path.join(secret_dir, "operators.yaml")
        _write_secret(
            operators,
            f"- {{name: demo, role: operator, token_sha256: {hash_token(self.token)}}}\n",
        )
        return ["--ca-key-passphrase-file", passphrase, "--operators", operators, "--tls"]

    def _fetch_control_ca(self) -> None:
        """`skein control --print-bundle`: what clients verify control's certificate with."""
        if not self.secure:
            return
        argv = skein_argv("control", "--print-bundle", "--etcd", self.etcd.endpoint)
        result = subprocess.run(argv, capture_output=True, timeout=20, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"skein control --print-bundle failed: {result.stderr.decode()}")
        self._control_ca = result.stdout
        self.control_ca_path = os.path.join(self.workdir, "secrets", "control-ca.pem")
        with open(self.control_ca_path, "wb") as out:
            out.write(self._control_ca)

    def client(self) -> OperatorClient:
        return OperatorClient(
            parse_hostport_list(self.control), token=self.token, root_certificates=self._control_ca
        )

    def _apply(self, say: Callable[..., object]) -> None:
        """The shop's manifests (and, secured, its AuthorizationPolicies) in one apply."""
        resources = load_manifests(MANIFESTS)
        if self.secure:
            resources += load_manifests(SECURITY)
        with self.client() as client:
            response = client.apply(resources)
        say(format_apply(response, dry_run=False))

    def _create_join_tokens(self) -> None:
        """One join token per service: a sidecar can get a certificate for its own service only."""
        if not self.secure:
            return
        with self.client() as client:
            for service in [*INSTANCES, "gateway"]:
                self._join_tokens[service] = client.create_token(service, JOIN_TOKEN_TTL).token

    def start(self, log: bool = True) -> None:
        say = print if log else (lambda *_: None)
        deadline = time.monotonic() + 60.0
        say(SECURE_BANNER if self.secure else INSECURE_BANNER)
        self.etcd.start()
        say(f"etcd        {self.etcd.endpoint}")
        control = self.procs.control("control", self.etcd.endpoint, *self._control_flags())
        self.control = control.addresses["listen"]
        # Start the apps while the control daemon boots; they need nothing from it.
        apps: list[tuple[str, Daemon, list[str]]] = []
        for service, count in INSTANCES.items():
            for i in range(1, count + 1):
                instance = f"{service}-{i}"
                extra = []
                if service == "orders":
                    extra = [f"inventory={_addr()}", f"payments={_addr()}"]
                daemon = self.procs.start_bound(instance, _app_launch(service, instance, extra))
                apps.append((instance, daemon, extra))
        control.wait_ready(timeout=20.0)
        self._fetch_control_ca()
        say(f"control     {self.control}")
        self._apply(say)
        self._create_join_tokens()
        # A sidecar registers its instance as soon as it starts: wait until the
        # app behind it serves, so no caller is sent to an app still booting.
        for instance, daemon, _ in apps:
            _wait_serving(instance, daemon, deadline)

        for instance, daemon, extra in apps:
            flags = [a for up in extra for a in ("--upstream", up)]
            self.sidecars[instance] = self._sidecar(
                instance, instance.rsplit("-", 1)[0], daemon.addresses["app"], flags
            )
        sidecars = list(self.sidecars.values())
        # The gateway has no app of its own to serve; its --app is never called.
        self.gateway = self._sidecar(
            "gateway-1",
            "gateway",
            _addr(),
            [
                "--upstream",
                f"users={self.users_port}",
                "--subscribe",
                "products",
                "--subscribe",
                "orders",
            ],
        )
        for daemon in [*sidecars, self.gateway]:
            daemon.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
        say(
            f"instances   {', '.join(f'{s} x{n}' for s, n in INSTANCES.items())}, each with a "
            f"sidecar; gateway sidecar for the traffic generator"
        )
        self._wait_synced(len(sidecars) + 1, deadline)

    def _sidecar(self, instance: str, service: str, app: str, flags: list[str]) -> Daemon:
        state = os.path.join(self.workdir, "state", instance)
        # The join token goes in the environment, not argv, which any local user can read.
        env = None
        if self.secure:
            assert self.control_ca_path is not None
            env = {
                "SKEIN_JOIN_TOKEN": self._join_tokens[service],
                "SKEIN_CONTROL_CA": self.control_ca_path,
            }
        return self.procs.sidecar(
            f"sidecar-{instance}",
            service,
            self.control,
            app,
            "--instance",
            instance,
            "--state-dir",
            state,
            "--log-level",
            "warning",
            *flags,
            env=env,
        )

    def _wait_synced(self, expected: int, deadline: float) -> None:
        """Every instance registered, and every sidecar synced to the newest registration.

        An Endpoint's version is the store revision that wrote it, so a sidecar
        synced to the newest one has seen every instance (what `skein wait`
        checks after an apply).
        """
        with self.client() as client:
            while True:
                endpoints = client.get("Endpoint").resources
                connected = len(client.status().sidecars)
                if len(endpoints) >= expected and connected >= expected:
                    newest = max(r.endpoint.metadata.version for r in endpoints)
                    left = waiting.wait_for_version(
                        client.status, newest, max(0.0, deadline - time.monotonic())
                    )
                    if not left:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"mesh not converged: {len(endpoints)}/{expected} instances registered, "
                        f"{connected}/{expected} sidecars connected"
                    )
                time.sleep(0.1)

    def stop(self) -> None:
        self.procs.stop_all()
        self.etcd.stop()


async def _drive(shop: Shop, duration: float | None, rate: float, tty: bool) -> Recorder:
    assert shop.gateway is not None
    recorder = Recorder(MonotonicClock(), SHOWN)
    gateway = Gateway(
        recorder, shop.users_port, shop.gateway.addresses["outbound"], rate=rate, workers=4
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.probe(time.monotonic() + 20.0)
        started = time.monotonic()
        runner = asyncio.create_task(gateway.run(stop))
        drawn = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            elapsed = time.monotonic() - started
            lines = render(recorder.rows(), elapsed)
            if tty and drawn:
                sys.stdout.write(f"\x1b[{drawn}F\x1b[J")  # redraw in place
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            drawn = len(lines)
            if duration is not None and elapsed >= duration:
                stop.set()
        await runner
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await gateway.close()
    return recorder


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.shop.demo", description=__doc__)
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="stop after S seconds of traffic (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=40.0,
        metavar="N",
        help="gateway calls per second (default 40)",
    )
    parser.add_argument(
        "--log-dir",
        default=None,
        metavar="DIR",
        help="keep daemon logs in DIR (default: a temp dir, removed)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext between sidecars, no identities or authorization, operator API open",
    )
    args = parser.parse_args(argv)
    if args.duration is not None and args.duration <= 0:
        parser.error(f"--duration: must be > 0, got {args.duration:g}")
    if args.rate <= 0:
        parser.error(f"--rate: must be > 0, got {args.rate:g}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    workdir = args.log_dir or tempfile.mkdtemp(prefix="skein-demo-")
    os.makedirs(workdir, exist_ok=True)
    shop = Shop(workdir, secure=not args.insecure)
    try:
        shop.start()
        recorder = asyncio.run(_drive(shop, args.duration, args.rate, sys.stdout.isatty()))
    except KeyboardInterrupt:
        print("interrupted while starting; stopping")
        return 130
    except (RuntimeError, TimeoutError, SkeinError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        shop.stop()
        if args.log_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    errors = recorder.total_errors
    print(f"{recorder.total_calls} calls, {errors} errors; every process stopped")
    for line in recorder.last_errors:
        print(f"  last error: {line}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
