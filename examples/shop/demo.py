"""The shop demo: `python -m examples.shop.demo [--duration S]` (`./dev demo`).

Starts, as real processes: a throwaway etcd, one control daemon, every shop
instance with its own sidecar, and a gateway sidecar for the traffic
generator (this process). Applies examples/shop/manifests with `skein apply`,
waits until every sidecar is synced, drives moderate traffic through the
mesh and redraws a per-service summary every second until Ctrl-C or
--duration. Then stops every process by PID and removes its temp dirs.
Exit status 1 when any call failed (or the mesh never came up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence

import grpc

from examples.shop.health import SERVING
from examples.shop.stats import Recorder, render
from examples.shop.traffic import Gateway
from skein import cli, waiting
from skein.addr import parse_hostport_list
from skein.client import OperatorClient
from skein.clock import MonotonicClock
from skein.launch import Daemon, ProcessGroup, free_port
from skein.localetcd import LocalEtcd

__all__ = ["INSTANCES", "main"]

MANIFESTS = os.path.join(os.path.dirname(__file__), "manifests")
# Instances per service: fewer than the seed table asks for, to suit 2 cores.
INSTANCES = {"users": 3, "products": 2, "orders": 2, "inventory": 2, "payments": 1}
SHOWN = ("users", "products", "orders", "inventory", "payments")


def _addr() -> str:
    return f"127.0.0.1:{free_port()}"


def _wait_serving(name: str, daemon: Daemon, address: str, deadline: float) -> None:
    """Until the app answers grpc.health.v1 Check with SERVING."""
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        while True:
            if not daemon.alive():
                raise RuntimeError(f"{name} exited early; see {daemon.log_path}")
            try:
                if check(b"", timeout=1.0) == SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} is not serving on {address}; see {daemon.log_path}")
            time.sleep(0.05)


class Shop:
    """Everything the demo starts; `stop()` ends it all, by PID, in reverse order."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.etcd = LocalEtcd()
        self.procs = ProcessGroup(log_dir=workdir)
        self.control = ""
        self.gateway: Daemon | None = None
        self.users_port = _addr()

    def start(self, log: bool = True) -> None:
        say = print if log else (lambda *_: None)
        deadline = time.monotonic() + 60.0
        self.etcd.start()
        say(f"etcd        {self.etcd.endpoint}")
        control = self.procs.control("control", self.etcd.endpoint)
        self.control = control.addresses["listen"]
        # Start the apps while the control daemon boots; they need nothing from it.
        apps: list[tuple[str, Daemon, str, list[str]]] = []
        for service, count in INSTANCES.items():
            for i in range(1, count + 1):
                instance = f"{service}-{i}"
                app, extra = _addr(), []
                argv = ["--service", service, "--instance", instance, "--listen", app]
                if service == "orders":
                    extra = [f"inventory={_addr()}", f"payments={_addr()}"]
                    argv += [a for up in extra for a in ("--upstream", up)]
                daemon = self.procs.start(
                    instance, [sys.executable, "-m", "examples.shop.server", *argv]
                )
                apps.append((instance, daemon, app, extra))
        control.wait_ready(timeout=20.0)
        say(f"control     {self.control}")
        code = cli.main(["apply", "-f", MANIFESTS, "--control", self.control])
        if code != 0:
            raise RuntimeError(f"skein apply failed with exit code {code}")
        # A sidecar registers its instance as soon as it starts: wait until the
        # app behind it serves, so no caller is sent to an app still booting.
        for instance, daemon, app, _ in apps:
            _wait_serving(instance, daemon, app, deadline)

        sidecars = []
        for instance, _, app, extra in apps:
            flags = [a for up in extra for a in ("--upstream", up)]
            sidecars.append(self._sidecar(instance, instance.rsplit("-", 1)[0], app, flags))
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
        )

    def _wait_synced(self, expected: int, deadline: float) -> None:
        """Every instance registered, and every sidecar synced to the newest registration.

        An Endpoint's version is the store revision that wrote it, so a sidecar
        synced to the newest one has seen every instance (what `skein wait`
        checks after an apply).
        """
        with OperatorClient(parse_hostport_list(self.control)) as client:
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
    shop = Shop(workdir)
    try:
        shop.start()
        recorder = asyncio.run(_drive(shop, args.duration, args.rate, sys.stdout.isatty()))
    except KeyboardInterrupt:
        print("interrupted while starting; stopping")
        return 130
    except (RuntimeError, TimeoutError) as err:
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
