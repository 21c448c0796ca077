"""Resilience under steady load: real etcd, control, sidecars and app processes.

Three instances of `echo`, each an app process (tests/integration/flaky_app.py)
behind its own sidecar, and one caller sidecar with a per-upstream port. A
grpc.aio client in the test sends a steady ~150 calls/s through the caller
while the test breaks instances: SIGKILL (of the sidecar, or of the app behind
a live sidecar), or every call answered UNAVAILABLE. What the upstream apps
count is the number of attempts that reached them, so retry amplification is
measured where it would hurt, not inferred from the caller's side.

Each test builds its own mesh (its own key prefix and control daemon), so a
breaker, a budget or an ejection never leaks from one scenario into the next.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc
import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]

from skein.launch import Daemon, ProcessGroup, free_port
from skein.localetcd import LocalEtcd
from skein.v1 import resources_pb2
from tests.integration.flaky_app import FlakyApp, launch_flaky_app
from tests.integration.mesh_support import (
    apply,
    config_dump,
    endpoints_of,
    get_json,
    start_control,
    unique_prefix,
    wait_for,
)
from tests.integration.steady_load import Outcome, SteadyLoad, summarize

pytestmark = pytest.mark.integration

RATE = 150  # calls per second from the test's client
CONCURRENCY = 8  # calls in flight at most
LEASE_TTL = 2  # seconds; short so a SIGKILLed instance's registration expires quickly
# Every transport failure of an idempotent unary call is retried, on another endpoint.
RETRY_EVERYTHING = {
    "retry": {
        "max_attempts": 3,
        "retry_on": ["connect-failure", "refused-stream", "unavailable", "reset"],
    }
}


# -- the mesh -------------------------------------------------------------------------


@dataclass
class Instance:
    name: str  # instance id, echo-N
    app: FlakyApp
    sidecar: Daemon


@dataclass
class ResilienceMesh:
    control: Daemon
    instances: list[Instance]
    caller: Daemon
    upstream: str  # the caller sidecar's local port for echo

    def attempts(self, instances: list[Instance] | None = None) -> int:
        """Attempts that reached the apps (of `instances`, default all)."""
        return sum(i.app.stats().unary for i in instances or self.instances)


def _policy(spec: dict[str, Any]) -> resources_pb2.Resource:
    """A TrafficPolicy for echo from its JSON mapping (as a YAML manifest spells it)."""
    document = {"traffic_policy": {"metadata": {"name": "echo"}, "spec": {"service": "echo"}}}
    document["traffic_policy"]["spec"].update(spec)
    resource: resources_pb2.Resource = json_format.ParseDict(document, resources_pb2.Resource())
    return resource


def _applied(daemon: Daemon, version: int) -> bool:
    dump = get_json(daemon, "/config_dump")
    return bool(dump and dump["version"] is not None and int(dump["version"]) >= version)


@pytest.fixture
def build(procs: ProcessGroup, etcd: LocalEtcd) -> Iterator[Callable[..., ResilienceMesh]]:
    """Builds the mesh with `spec` applied before any sidecar starts."""
    apps: list[FlakyApp] = []

    def factory(spec: dict[str, Any], *, instances: int = 3, lease_ttl: int = 10) -> ResilienceMesh:
        control = start_control(
            procs, "control", etcd.endpoint, unique_prefix(), "--lease-ttl", str(lease_ttl)
        )
        version = apply(control, _policy(spec))
        started = [launch_flaky_app(procs, f"b{n}") for n in range(1, instances + 1)]
        apps.extend(started)
        listen = control.addresses["listen"]
        members = []
        for n, app in enumerate(started, start=1):
            app.wait_listening()
            sidecar = procs.sidecar(
                f"sidecar-echo-{n}", "echo", listen, app.address, "--instance", f"echo-{n}"
            )
            members.append(Instance(f"echo-{n}", app, sidecar))
        upstream = f"127.0.0.1:{free_port()}"
        caller = procs.sidecar(
            "sidecar-web",
            "web",
            listen,
            f"127.0.0.1:{free_port()}",  # the caller's own app receives nothing here
            "--instance",
            "web-1",
            "--upstream",
            f"echo={upstream}",
        )
        for daemon in (*(m.sidecar for m in members), caller):
            daemon.wait_ready(20)
        names = sorted(m.name for m in members)
        wait_for(lambda: endpoints_of(caller, "echo") == names, 10, f"{names} at the caller")
        for daemon in (*(m.sidecar for m in members), caller):
            wait_for(partial(_applied, daemon, version), 5, f"the policy at {daemon.name}")
        return ResilienceMesh(control, members, caller, upstream)

    try:
        yield factory
    finally:
        for app in apps:
            app.close()


# -- what the caller sidecar says about itself ------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(daemon: Daemon, name: str, **labels: str) -> float | None:
    """Sum of the samples of `name` whose labels include `labels`; None when there is none."""
    status, body = daemon.get("/metrics")
    assert status == 200, f"{daemon.name}: /metrics answered {status}"
    total: float | None = None
    for line in body.decode().splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        have = dict(_LABEL.findall(match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total = (total or 0.0) + float(match.group(3))
    return total


def echo_cluster(caller: Daemon) -> dict[str, Any]:
    dump = get_json(caller, "/clusters")
    assert dump is not None, f"{caller.name}: /clusters unavailable"
    cluster: dict[str, Any] = dump["clusters"]["echo"]
    return cluster


def endpoint_entry(caller: Daemon, instance: str) -> dict[str, Any] | None:
    for entry in echo_cluster(caller)["endpoints"]:
        if entry["instance"] == instance:
            return dict(entry)
    return None


def ejection_of(caller: Daemon, instance: str) -> str | None:
    """Why `instance` is ejected at the caller, or None when it is not."""
    entry = endpoint_entry(caller, instance)
    if entry is None or not entry.get("ejected"):
        return None
    return str(entry.get("ejection") or "ejected (no reason given)")


def breaker_state(caller: Daemon) -> str:
    return str(echo_cluster(caller)["circuit_breaker"]["state"])


def failed(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not o.ok]


# -- scenarios --------------------------------------------------------------------------


def test_sigkilled_instance_sidecar_fails_no_call(build: Callable[..., ResilienceMesh]) -> None:
    """The instance's sidecar dies: connect failures at the caller are retried elsewhere,
    the endpoint leaves the balancer (ejection or lease expiry), no call fails."""
    mesh = build(RETRY_EVERYTHING, lease_ttl=LEASE_TTL)
    victim, survivors = mesh.instances[2], mesh.instances[:2]
    load = SteadyLoad(mesh.upstream, RATE, concurrency=CONCURRENCY).start()
    try:
        time.sleep(1.5)
        before = mesh.attempts(survivors)
        victim.sidecar.kill()
        killed = time.monotonic()
        wait_for(
            lambda: (
                ejection_of(mesh.caller, victim.name)
                or victim.name not in endpoints_of(mesh.caller, "echo")
            ),
            LEASE_TTL + 3,
            f"{victim.name} out of the caller's rotation",
        )
        out_after = time.monotonic() - killed
        wait_for(
            lambda: victim.name not in endpoints_of(mesh.caller, "echo"),
            LEASE_TTL + 3,
            f"{victim.name}'s lease to expire at the caller",
        )
        time.sleep(0.5)  # and the load goes on without it
    finally:
        outcomes = load.stop()
    after_kill = [o for o in outcomes if o.sent >= killed]
    assert not failed(outcomes), summarize(outcomes)
    assert len(outcomes) >= 0.7 * RATE * (outcomes[-1].sent - outcomes[0].sent)
    assert len(after_kill) >= RATE, f"only {len(after_kill)} calls after the kill"
    assert out_after <= LEASE_TTL + 3
    assert mesh.attempts(survivors) - before >= len(after_kill)


def test_sigkilled_app_behind_live_sidecar_is_ejected(
    build: Callable[..., ResilienceMesh],
) -> None:
    """The app dies, its sidecar lives (and keeps the lease): the instance answers
    UNAVAILABLE, the caller retries elsewhere and outlier detection ejects it."""
    mesh = build(RETRY_EVERYTHING, lease_ttl=LEASE_TTL)
    victim = mesh.instances[0]
    load = SteadyLoad(mesh.upstream, RATE, concurrency=CONCURRENCY).start()
    try:
        time.sleep(1.0)
        victim.app.kill()
        killed = time.monotonic()
        why = wait_for(lambda: ejection_of(mesh.caller, victim.name), 3, "the dead app ejected")
        time.sleep(1.0)
    finally:
        outcomes = load.stop()
    assert not failed(outcomes), summarize(outcomes)
    assert len([o for o in outcomes if o.sent >= killed]) >= RATE
    assert "consecutive" in why, why
    # still registered: its sidecar renews the lease; ejection alone took it out
    assert victim.name in endpoints_of(mesh.caller, "echo")
    ejections = metric(mesh.caller, "skein_sidecar_outlier_ejections_total", cluster="echo")
    assert ejections is not None and ejections >= 1, ejections


def test_unavailable_instance_is_ejected_and_breaker_stays_closed(
    build: Callable[..., ResilienceMesh],
) -> None:
    """One of three answers UNAVAILABLE to everything: retries hide it, consecutive
    failures eject it for base_ejection_time, then it is tried again and ejected again;
    a third of calls failing is under the breaker's 50%, so it never opens."""
    mesh = build(
        {
            "outlier_detection": {
                "consecutive_failures": 5,
                "interval": "1s",
                "base_ejection_time": "3s",
            }
        }
    )
    bad, good = mesh.instances[0], mesh.instances[1:]
    load = SteadyLoad(mesh.upstream, RATE, concurrency=CONCURRENCY).start()
    try:
        time.sleep(1.0)
        bad.app.set_mode("unavailable")
        why = wait_for(lambda: ejection_of(mesh.caller, bad.name), 3, f"{bad.name} ejected")
        at_ejection = bad.app.stats().unary
        time.sleep(2.0)  # well inside the 3 s ejection
        during = bad.app.stats().unary - at_ejection
        # after its ejection time it gets calls again, fails them, and is ejected again
        wait_for(lambda: bad.app.stats().unary > at_ejection + during, 5, "calls after ejection")
        wait_for(
            lambda: (metric(mesh.caller, "skein_sidecar_outlier_ejections_total", cluster="echo")
                     or 0) >= 2,
            3,
            "a second ejection",
        )  # fmt: skip
        time.sleep(0.3)
    finally:
        outcomes = load.stop()
    assert not failed(outcomes), summarize(outcomes)
    assert "consecutive" in why, why
    assert during <= CONCURRENCY, f"{bad.name} got {during} calls while ejected"
    assert sum(i.app.stats().retried for i in good) > 0, "no retry reached a healthy instance"
    by_rule = metric(
        mesh.caller,
        "skein_sidecar_outlier_ejections_total",
        cluster="echo",
        rule="consecutive_failures",
    )
    assert by_rule is not None and by_rule >= 2, by_rule
    assert breaker_state(mesh.caller) == "closed"
    assert metric(mesh.caller, "skein_sidecar_circuit_breaker_opened_total", cluster="echo") == 0


RATIO, MIN_PER_S, TTL = 0.2, 10, 10
BUDGET = {"ratio": RATIO, "min_retries_per_second": MIN_PER_S, "ttl": f"{TTL}s"}


def test_retry_budget_caps_attempts_when_every_instance_fails(
    build: Callable[..., ResilienceMesh],
) -> None:
    """Every instance fails and the breaker is off: only the budget stands between an
    outage and 3x the load on the upstreams (max_attempts 3)."""
    mesh = build(
        {
            "retry_budget": BUDGET,
            "circuit_breaker": {"disabled": True},
            "outlier_detection": {"disabled": True},
        }
    )
    for instance in mesh.instances:
        instance.app.set_mode("unavailable")
    before = mesh.attempts()
    duration = 5.0
    outcomes = SteadyLoad(mesh.upstream, RATE, concurrency=CONCURRENCY).run_for(duration)
    attempts = mesh.attempts() - before
    requests = len(outcomes)
    assert requests >= 0.7 * RATE * duration
    assert all(o.code == grpc.StatusCode.UNAVAILABLE for o in outcomes), summarize(outcomes)
    # the apps' own status and message reach the caller unchanged
    assert all("switched by the test" in o.details for o in outcomes), summarize(outcomes)
    # Linkerd's budget: within any `ttl`, retries <= ratio x requests + min/s x ttl; the
    # min/s x ttl reserve is there from the start, and this run is shorter than ttl, so the
    # bound is exact: no bucket of the sliding window expires during it. +1 for rounding.
    retries = attempts - requests
    ceiling = RATIO * requests + MIN_PER_S * TTL + 1
    assert retries <= ceiling, f"{retries} retries for {requests} requests (max {ceiling:.0f})"
    assert retries >= 0.1 * requests, f"only {retries} retries: the budget was not used"
    exhausted = metric(mesh.caller, "skein_sidecar_retry_budget_exhausted_total", cluster="echo")
    assert exhausted is not None and exhausted > 0, exhausted

    # With the budget spent, failures the caller's sidecar synthesizes (connect failures
    # to dead sidecars, still registered for the 10 s lease) say why they were not retried.
    for instance in mesh.instances:
        instance.sidecar.kill()
    details = []
    with grpc.insecure_channel(mesh.upstream, options=[("grpc.enable_retries", 0)]) as channel:
        call = channel.unary_unary("/test.Echo/Unary")
        for _ in range(20):
            with pytest.raises(grpc.RpcError) as info:
                call(b"x", timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            details.append(info.value.details())
    with_reason = [d for d in details if "retry budget" in d and "'echo'" in d]
    assert len(with_reason) >= len(details) // 2, details[:3]


def test_breaker_opens_and_callers_fail_fast(build: Callable[..., ResilienceMesh]) -> None:
    """Every instance fails with the breaker on: it opens after minimum_requests, and
    from then on calls fail at the caller's sidecar at once, naming the breaker."""
    mesh = build(
        {"circuit_breaker": {"minimum_requests": 10}, "outlier_detection": {"disabled": True}}
    )
    for instance in mesh.instances:
        instance.app.set_mode("unavailable")
    load = SteadyLoad(mesh.upstream, RATE, concurrency=CONCURRENCY).start()
    try:
        wait_for(lambda: breaker_state(mesh.caller) == "open", 5, "the breaker to open")
        opened = time.monotonic()
        at_open = mesh.attempts()
        time.sleep(2.0)
    finally:
        outcomes = load.stop()
    after_open = [o for o in outcomes if o.sent >= opened + 0.1]
    assert len(after_open) >= RATE, f"only {len(after_open)} calls after the breaker opened"
    assert all(o.code == grpc.StatusCode.UNAVAILABLE for o in after_open), summarize(after_open)
    message = after_open[0].details
    named = [o for o in after_open if "circuit breaker for 'echo'" in o.details]
    assert len(named) == len(after_open), summarize(after_open)
    assert "open" in message, message
    assert "failed" in message and "%" in message, f"the message does not say why: {message}"
    latencies = [o.latency for o in after_open]
    assert statistics.median(latencies) < 0.01, f"median {statistics.median(latencies):.4f}s"
    assert max(latencies) < 0.25, f"slowest fail-fast took {max(latencies):.3f}s"
    # nothing reaches the apps while it is open, bar the calls already in flight then
    assert mesh.attempts() - at_open <= CONCURRENCY * 3
    assert breaker_state(mesh.caller) == "open"
    assert metric(mesh.caller, "skein_sidecar_circuit_breaker_opened_total", cluster="echo") == 1
    open_gauge = metric(
        mesh.caller, "skein_sidecar_circuit_breaker_state", cluster="echo", state="open"
    )
    assert open_gauge == 1
    rejected = metric(
        mesh.caller,
        "skein_sidecar_circuit_breaker_rejections_total",
        cluster="echo",
        reason="breaker_open",
    )
    assert rejected is not None and rejected >= len(after_open), rejected


def test_inbound_rate_limit_rejects_excess_with_retry_after(
    build: Callable[..., ResilienceMesh],
) -> None:
    """A token bucket of 5 on the instance's inbound side: a burst of 30 gets 5 (plus
    what refills meanwhile) through; the rest RESOURCE_EXHAUSTED with retry-after."""
    limit = {"name": "tiny", "requests": 5, "period": "1s", "burst": 5, "direction": "INBOUND"}
    mesh = build({"rate_limits": [limit]}, instances=1)
    instance = mesh.instances[0]
    local_policy = json.dumps(config_dump(instance.sidecar).get("local_policy"))
    assert "tiny" in local_policy, f"the rule is not applied inbound: {local_policy}"
    before = mesh.attempts()
    with grpc.insecure_channel(mesh.upstream, options=[("grpc.enable_retries", 0)]) as channel:
        call = channel.unary_unary("/test.Echo/Unary")
        started = time.monotonic()
        futures = [call.future(b"x", timeout=5) for _ in range(30)]
        errors = [f.exception() for f in futures]
        elapsed = time.monotonic() - started
        admitted = sum(1 for e in errors if e is None)
        blocked = [e for e in errors if e is not None]
        time.sleep(1.0)  # a second later the bucket has refilled
        assert call(b"again", timeout=5) == b"again"
    assert 5 <= admitted <= 5 + 5 * elapsed + 1, f"{admitted} admitted in {elapsed:.2f}s"
    for err in blocked:
        assert isinstance(err, grpc.Call)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (err.code(), err.details())
        assert "rate limit 'tiny'" in (err.details() or ""), err.details()
        trailers = dict(err.trailing_metadata() or ())
        assert int(trailers["retry-after"]) >= 1, trailers
        assert int(trailers["grpc-retry-pushback-ms"]) > 0, trailers
    # rejected calls never reach the app, and the instance's sidecar counts them
    assert mesh.attempts() - before == admitted + 1
    labels = {"direction": "inbound", "service": "echo", "rule": "tiny"}
    assert metric(instance.sidecar, "skein_sidecar_rate_limit_blocks_total", **labels) == len(
        blocked
    )
    assert metric(instance.sidecar, "skein_sidecar_rate_limit_hits_total", **labels) == 31
