"""Start the paths under test as real processes, each reachable at one HOST:PORT.

- direct: client → echo server
- skein-hop: client → sidecar (inbound) → echo server
- skein-pair: client → sidecar A (upstream port) → sidecar B (inbound) → echo server
- envoy-pair: client → Envoy A → Envoy B → echo server (h2c on both hops)
- skein-pair-policies: a second sidecar pair whose service has a TrafficPolicy
  turning every resilience policy on (retries with a budget, breaker, outlier
  detection, inbound and outbound token buckets never hit, PEAK_EWMA)
- skein-pair-off: a third pair whose policy turns them all off (one attempt, no
  budget, breaker or outlier detection, no rate limits, round robin), the floor
  the pipeline's cost is measured from
- skein-pair-mtls: skein-pair with mesh TLS (TLS 1.3, mutual) on the hop
  between the two sidecars, certificates from a CA made for the run (files)

skein-pair itself runs the defaults an operator gets without a policy (retries,
budget, breaker and outlier detection on; no rate limits; round robin).

The Skein sidecars run as operators run them: `skein sidecar` processes fed by
a `skein control` daemon over a real etcd. Every process belongs to one
ProcessGroup and is stopped by PID.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench.envoy import envoy_argv, envoy_config, find_envoy, write_config
from bench.grpccheck import check_echo
from skein.launch import Daemon, ProcessGroup, free_port
from skein.localetcd import LocalEtcd
from skein.v1 import operator_pb2, operator_pb2_grpc
from skein.v1 import resources_pb2 as res

__all__ = [
    "ECHO_SERVICE",
    "BenchPath",
    "PolicyNotApplied",
    "PolicyPair",
    "SkeinMesh",
    "full_policy",
    "off_policy",
    "start_echo",
    "start_envoy_pair",
    "start_mtls_pair",
    "start_policy_pair",
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


# -- sidecar pairs under a given TrafficPolicy -----------------------------------------

# Far above anything the benchmark sends: the limiter runs on every call, never rejects.
_NEVER_HIT = 1_000_000


class PolicyNotApplied(RuntimeError):
    """A policy pair's sidecars did not show the policy in /config_dump in time."""


@dataclass(frozen=True)
class PolicyPair:
    """A sidecar pair of its own service, configured by `policy` before it starts.

    `outbound_rule`/`inbound_rule`: rate limit names that must show in the client
    sidecar's cluster dump / the server sidecar's local policy ("" for none).
    """

    path: str  # the path's name in the report
    prefix: str  # daemon names: PREFIX-a (client side), PREFIX-b (server side)
    service: str
    policy: res.Resource
    algorithm: str  # what the client side's cluster dump must show
    outbound_rule: str = ""
    inbound_rule: str = ""
    description: str = ""


def _rate_limit(name: str, direction: res.Direction) -> res.RateLimit:
    rule = res.RateLimit(
        name=name,
        algorithm=res.TOKEN_BUCKET,
        scope=res.SERVICE,
        requests=_NEVER_HIT,
        direction=direction,
    )
    rule.period.seconds = 1
    return rule


def _traffic_policy(spec: res.TrafficPolicySpec) -> res.Resource:
    return res.Resource(
        traffic_policy=res.TrafficPolicy(metadata=res.ObjectMeta(name=spec.service), spec=spec)
    )


def full_policy(service: str = "bench-echo-policies") -> PolicyPair:
    """Everything on: the policy pipeline's whole per-call cost, with nothing failing."""
    spec = res.TrafficPolicySpec(
        service=service,
        load_balancer=res.LoadBalancer(algorithm=res.PEAK_EWMA),
        retry=res.RetryPolicy(max_attempts=3),  # retry_on unset: the default conditions
        retry_budget=res.RetryBudget(),  # defaults: 20% + 10/s over 10 s, on
        circuit_breaker=res.CircuitBreaker(),  # defaults, enabled
        outlier_detection=res.OutlierDetection(),  # defaults, enabled
        rate_limits=[
            _rate_limit("bench-inbound", res.INBOUND),
            _rate_limit("bench-outbound", res.OUTBOUND),
        ],
    )
    return PolicyPair(
        "skein-pair-policies",
        "policies",
        service,
        _traffic_policy(spec),
        "PEAK_EWMA",
        outbound_rule="bench-outbound",
        inbound_rule="bench-inbound",
        description="skein-pair with retries, budget, breaker, outlier detection, "
        "inbound and outbound token buckets and PEAK_EWMA on",
    )


def off_policy(service: str = "bench-echo-off") -> PolicyPair:
    """Everything off: what the pipeline costs when no policy has work to do."""
    spec = res.TrafficPolicySpec(
        service=service,
        load_balancer=res.LoadBalancer(algorithm=res.ROUND_ROBIN),
        retry=res.RetryPolicy(max_attempts=1),
        retry_budget=res.RetryBudget(disabled=True),
        circuit_breaker=res.CircuitBreaker(disabled=True),
        outlier_detection=res.OutlierDetection(disabled=True),
    )
    return PolicyPair(
        "skein-pair-off",
        "off",
        service,
        _traffic_policy(spec),
        "ROUND_ROBIN",
        description="skein-pair with one attempt and no budget, breaker, outlier "
        "detection or rate limits",
    )


def _apply(control: str, resource: res.Resource) -> int:
    """Apply through the Operator API; the etcd revision the write got."""
    with grpc.insecure_channel(control) as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        reply = stub.Apply(operator_pb2.ApplyRequest(resources=[resource]), timeout=10)
        return int(reply.version)


def _config_dump(daemon: Daemon) -> dict[str, Any] | None:
    assert daemon.admin is not None
    try:
        url = f"http://{daemon.admin}/config_dump"
        with urllib.request.urlopen(url, timeout=2) as resp:
            dump: dict[str, Any] = json.loads(resp.read())
            return dump
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _policy_gaps(pair: PolicyPair, version: int, client: Daemon, server: Daemon) -> list[str]:
    """What the sidecars' /config_dump does not (yet) show of `pair.policy`; [] when applied."""
    gaps: list[str] = []
    for daemon in (client, server):
        dump = _config_dump(daemon)
        if dump is None or dump.get("version") is None or int(dump["version"]) < version:
            seen = None if dump is None else dump.get("version")
            gaps.append(f"{daemon.name} at version {seen}, policy written at {version}")
    if gaps:
        return gaps
    cluster = (_config_dump(client) or {}).get("clusters", {}).get(pair.service, {})
    if cluster.get("algorithm") != pair.algorithm:
        gaps.append(f"{client.name}: algorithm {cluster.get('algorithm')}, not {pair.algorithm}")
    if pair.outbound_rule and pair.outbound_rule not in json.dumps(cluster.get("rate_limits")):
        gaps.append(f"{client.name}: no outbound rate limit {pair.outbound_rule!r}")
    retry = cluster.get("retry")
    wanted = pair.policy.traffic_policy.spec.retry.max_attempts
    if isinstance(retry, dict) and retry.get("max_attempts") != wanted:
        gaps.append(f"{client.name}: retry max_attempts {retry.get('max_attempts')}, not {wanted}")
    local = (_config_dump(server) or {}).get("local_policy")
    if pair.inbound_rule and pair.inbound_rule not in json.dumps(local):
        gaps.append(f"{server.name}: no inbound rate limit {pair.inbound_rule!r}")
    return gaps


def start_policy_pair(
    group: ProcessGroup, control: Daemon, app: str, workdir: str, pair: PolicyPair
) -> BenchPath:
    """Apply `pair.policy`, start its two sidecars, and check both applied it.

    Raises PolicyNotApplied when /config_dump does not show the policy within
    10 s: figures measured without it would be meaningless.
    """
    listen = control.addresses["listen"]
    version = _apply(listen, pair.policy)
    server_side = group.sidecar(
        f"{pair.prefix}-b",
        pair.service,
        listen,
        app,
        "--state-dir",
        os.path.join(workdir, f"{pair.prefix}-b"),
    )
    upstream = _addr()
    client_side = group.sidecar(
        f"{pair.prefix}-a",
        f"{pair.prefix}-client",
        listen,
        _addr(),
        "--upstream",
        f"{pair.service}={upstream}",
        "--state-dir",
        os.path.join(workdir, f"{pair.prefix}-a"),
    )
    server_side.wait_ready(timeout=30.0)
    client_side.wait_ready(timeout=30.0)
    check_echo(upstream)
    deadline = time.monotonic() + 10.0
    gaps = _policy_gaps(pair, version, client_side, server_side)
    while gaps and time.monotonic() < deadline:
        time.sleep(0.1)
        gaps = _policy_gaps(pair, version, client_side, server_side)
    if gaps:
        raise PolicyNotApplied(f"{pair.path}: policy not applied: {'; '.join(gaps)}")
    return BenchPath(
        pair.path,
        upstream,
        [client_side, server_side],
        f"client → {pair.prefix}-a (upstream port) → {pair.prefix}-b (inbound) → echo server"
        f" ({pair.description})",
    )


# -- a sidecar pair with mesh TLS between them ------------------------------------------


def _mesh_files(workdir: str, ca: Any, name: str, service: str, now: float) -> tuple[str, ...]:
    """Certificate, key and bundle files for `service`, signed by `ca`."""
    from skein.pki import certificates_pem, generate_key, key_pem, make_csr, spiffe_id

    key = generate_key()
    leaf = ca.sign(make_csr(key), spiffe_id("skein.local", service), now)
    paths = tuple(os.path.join(workdir, f"{name}.{ext}") for ext in ("crt", "key", "bundle"))
    contents = (certificates_pem([leaf]), key_pem(key), certificates_pem([ca.anchor]))
    for path, data in zip(paths, contents, strict=True):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)
    return paths


def start_mtls_pair(
    group: ProcessGroup, control: Daemon, app: str, workdir: str, service: str = "bench-echo-mtls"
) -> BenchPath:
    """Two sidecars with --tls-cert/--tls-key/--tls-bundle: the A → B hop is TLS 1.3."""
    from skein.pki import CertificateAuthority

    now = time.time()
    ca = CertificateAuthority.generate("skein.local", now)
    b_files = _mesh_files(workdir, ca, "mtls-b", service, now)
    a_files = _mesh_files(workdir, ca, "mtls-a", "bench-mtls-client", now)

    def tls(files: tuple[str, ...]) -> tuple[str, ...]:
        return ("--tls-cert", files[0], "--tls-key", files[1], "--tls-bundle", files[2])

    listen = control.addresses["listen"]
    server_side = group.sidecar(
        "mtls-b",
        service,
        listen,
        app,
        "--state-dir",
        os.path.join(workdir, "mtls-b"),
        *tls(b_files),
    )
    upstream = _addr()
    client_side = group.sidecar(
        "mtls-a",
        "bench-mtls-client",
        listen,
        _addr(),
        "--upstream",
        f"{service}={upstream}",
        "--state-dir",
        os.path.join(workdir, "mtls-a"),
        *tls(a_files),
    )
    server_side.wait_ready(timeout=30.0)
    client_side.wait_ready(timeout=30.0)
    deadline = time.monotonic() + 10.0
    while True:  # until A has discovered B (its first calls would fail fast)
        try:
            check_echo(upstream)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return BenchPath(
        "skein-pair-mtls",
        upstream,
        [client_side, server_side],
        "client → mtls-a (upstream port) → TLS 1.3, mutual → mtls-b (inbound) → echo server",
    )
