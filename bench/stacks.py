"""Start the paths under test as real processes, each reachable at one HOST:PORT.

- direct: client → echo server
- skein-hop: client → sidecar (inbound) → echo server
- skein-pair: client → sidecar A (upstream port) → sidecar B (inbound) → echo server
- envoy-pair: client → Envoy A → Envoy B → echo server (h2c on both hops)

The Skein sidecars run as operators run them: `skein sidecar` processes fed by
a `skein control` daemon over a real etcd. Every process belongs to one
ProcessGroup and is stopped by PID.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from bench.envoy import envoy_argv, envoy_config, find_envoy, write_config
from bench.grpccheck import check_echo
from skein.launch import Daemon, ProcessGroup, free_port
from skein.localetcd import LocalEtcd

__all__ = [
    "ECHO_SERVICE",
    "BenchPath",
    "SkeinMesh",
    "start_echo",
    "start_envoy_pair",
    "start_skein",
]

ECHO_SERVICE = "bench-echo"
_HOST = "127.0.0.1"


@dataclass
class BenchPath:
    """A way to reach the echo server; `proxies` are the processes it adds."""

    name: str
    target: str
    proxies: list[Daemon] = field(default_factory=list)
    description: str = ""


def _addr() -> str:
    return f"{_HOST}:{free_port()}"


def start_echo(group: ProcessGroup) -> tuple[Daemon, BenchPath]:
    listen = _addr()
    server = group.start("echo", [sys.executable, "-m", "bench.echo_server", "--listen", listen])
    check_echo(listen, wait=20.0)
    return server, BenchPath("direct", listen, [], "client → echo server")


def start_envoy_pair(group: ProcessGroup, workdir: str, app: str) -> BenchPath:
    """Envoy B in front of the app, Envoy A in front of B; both ready and checked."""
    binary = find_envoy()
    host, port = app.rsplit(":", 1)
    b_listen, a_listen = free_port(), free_port()
    envoys = []
    for name, listen, upstream in (
        ("envoy-b", b_listen, (host, int(port))),
        ("envoy-a", a_listen, (_HOST, b_listen)),
    ):
        admin = free_port()
        config = envoy_config((_HOST, listen), (_HOST, admin), upstream)
        path = write_config(workdir, name, config)
        daemon = group.start(name, envoy_argv(binary, path), admin=f"{_HOST}:{admin}")
        daemon.wait_ready(timeout=30.0)
        envoys.append(daemon)
    target = f"{_HOST}:{a_listen}"
    check_echo(target)
    return BenchPath("envoy-pair", target, envoys[::-1], "client → Envoy → Envoy → echo server")


@dataclass
class SkeinMesh:
    etcd: LocalEtcd
    control: Daemon
    hop: BenchPath
    pair: BenchPath


def start_skein(group: ProcessGroup, app: str, workdir: str) -> SkeinMesh:
    """etcd, one control daemon and two sidecars; the caller stops etcd (mesh.etcd).

    The sidecars keep their last-good config under `workdir`, which the caller removes.
    """
    etcd = LocalEtcd().start()
    try:
        control = group.control("control", etcd.endpoint)
        control.wait_ready(timeout=30.0)
        listen = control.addresses["listen"]
        server_side = group.sidecar(
            "sidecar-b", ECHO_SERVICE, listen, app, "--state-dir", os.path.join(workdir, "b")
        )
        server_side.wait_ready(timeout=30.0)
        upstream = _addr()
        client_side = group.sidecar(
            "sidecar-a",
            "bench-client",
            listen,
            _addr(),  # the client app receives no calls in this benchmark
            "--upstream",
            f"{ECHO_SERVICE}={upstream}",
            "--state-dir",
            os.path.join(workdir, "a"),
        )
        client_side.wait_ready(timeout=30.0)
        hop = BenchPath(
            "skein-hop",
            server_side.addresses["inbound"],
            [server_side],
            "client → sidecar (inbound) → echo server",
        )
        pair = BenchPath(
            "skein-pair",
            upstream,
            [client_side, server_side],
            "client → sidecar A (upstream port) → sidecar B (inbound) → echo server",
        )
        check_echo(hop.target)
        check_echo(pair.target)
    except BaseException:
        etcd.stop()
        raise
    return SkeinMesh(etcd, control, hop, pair)


def start_bare_relays(group: ProcessGroup, app: str) -> tuple[BenchPath, BenchPath]:
    """Fallback for the Skein paths: bare transport listeners (bench.relay), no control plane."""
    b_listen, a_listen = _addr(), _addr()
    relay_b = group.start(
        "relay-b", [sys.executable, "-m", "bench.relay", "--listen", b_listen, "--upstream", app]
    )
    relay_a = group.start(
        "relay-a",
        [sys.executable, "-m", "bench.relay", "--listen", a_listen, "--upstream", b_listen],
    )
    hop = BenchPath("skein-hop", b_listen, [relay_b], "client → bare transport → echo server")
    pair = BenchPath(
        "skein-pair",
        a_listen,
        [relay_a, relay_b],
        "client → bare transport → bare transport → echo server",
    )
    check_echo(hop.target)
    check_echo(pair.target)
    return hop, pair
