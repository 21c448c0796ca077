"""A gRPC app whose failures a test switches at runtime, in its own process.

Its own process so that a test can SIGKILL it, as a crashed instance dies,
with the sidecar in front of it still running. It serves the same
`test.Echo` methods the mesh tests call, counts every attempt that reaches
it (what "attempts seen at the upstream" means in the resilience tests), and
answers a small control service, `test.Flaky`, that the test calls directly
(never through the mesh):

- `SetMode(b"ok" | b"unavailable")`: `Unary` echoes, or answers UNAVAILABLE.
- `Stats()`: JSON `{"name", "mode", "unary", "retried"}`; `retried` counts
  the attempts that arrived with `grpc-previous-rpc-attempts` (retries).

Run as `python tests/integration/flaky_app.py --name b1`; it binds a free
loopback port and prints `flaky-app listening HOST:PORT` once serving.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import grpc

from skein.launch import Daemon, ProcessGroup

__all__ = ["READY_LINE", "FlakyApp", "Stats", "launch_flaky_app", "main"]

SERVICE = "test.Echo"
CONTROL = "test.Flaky"
READY_LINE = "flaky-app listening"
MODES = ("ok", "unavailable")


class _Behaviour:
    """What the app does now, and what it has seen (one event loop: no locks)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = "ok"
        self.calls = 0
        self.retried = 0

    async def unary(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        metadata = dict(context.invocation_metadata())
        if "grpc-previous-rpc-attempts" in metadata:
            self.retried += 1
        if self.mode == "unavailable":
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"{self.name}: unavailable (switched by the test)"
            )
        return request

    async def whoami(self, request: bytes, context: Any) -> bytes:
        return self.name.encode()

    async def set_mode(self, request: bytes, context: Any) -> bytes:
        mode = request.decode()
        if mode not in MODES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"mode {mode!r}: expected one of {MODES}"
            )
        self.mode = mode
        return b"ok"

    async def stats(self, request: bytes, context: Any) -> bytes:
        body = {"name": self.name, "mode": self.mode, "unary": self.calls, "retried": self.retried}
        return json.dumps(body).encode()


async def _serve(name: str) -> None:
    behaviour = _Behaviour(name)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    echo = {
        "Unary": grpc.unary_unary_rpc_method_handler(behaviour.unary),
        "Whoami": grpc.unary_unary_rpc_method_handler(behaviour.whoami),
    }
    control = {
        "SetMode": grpc.unary_unary_rpc_method_handler(behaviour.set_mode),
        "Stats": grpc.unary_unary_rpc_method_handler(behaviour.stats),
    }
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(SERVICE, echo),
            grpc.method_handlers_generic_handler(CONTROL, control),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"{READY_LINE} 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="returned by Whoami, named in errors")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.name))


# -- the test's side ------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    mode: str
    unary: int  # attempts that reached the app
    retried: int  # of which carried grpc-previous-rpc-attempts


class FlakyApp:
    """Handle on one app process: its address, its mode switch, its counters."""

    def __init__(self, name: str, daemon: Daemon) -> None:
        self.name = name
        self.daemon = daemon
        self.address = ""
        self._channel: grpc.Channel | None = None

    def wait_listening(self, timeout: float = 20.0) -> FlakyApp:
        """Block until the process printed its address; raise naming its log if it died."""
        deadline = time.monotonic() + timeout
        assert self.daemon.log_path, f"{self.name}: started without a log file"
        while time.monotonic() < deadline:
            with open(self.daemon.log_path, errors="replace") as log:
                for line in log:
                    if line.startswith(READY_LINE):
                        self.address = line.split()[-1]
                        return self
            if not self.daemon.alive():
                raise RuntimeError(f"{self.name} exited; log: {self.daemon.log_path}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not listening after {timeout}s: {self.daemon.log_path}")

    def _call(self, method: str, request: bytes) -> bytes:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        reply: bytes = self._channel.unary_unary(f"/{CONTROL}/{method}")(request, timeout=5)
        return reply

    def set_mode(self, mode: str) -> None:
        self._call("SetMode", mode.encode())

    def stats(self) -> Stats:
        body = json.loads(self._call("Stats", b""))
        return Stats(body["mode"], body["unary"], body["retried"])

    def kill(self) -> None:
        """SIGKILL the app process: whatever was in flight is lost, nothing is closed."""
        self.daemon.kill()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def launch_flaky_app(procs: ProcessGroup, name: str) -> FlakyApp:
    """Start the process (in `procs`, stopped with it); call `wait_listening` next."""
    argv = [sys.executable, os.path.abspath(__file__), "--name", name]
    return FlakyApp(name, procs.start(f"app-{name}", argv))


if __name__ == "__main__":
    main()
