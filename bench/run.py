"""Run the benchmark: `python -m bench.run [--quick]` (or `./dev bench`).

Starts every path side by side (direct, one Skein hop, a Skein sidecar pair, the
same pair with every resilience policy on and with every one off, an Envoy
pair), checks gRPC status through each, then loads them in interleaved
rounds with h2load at concurrency 1 and 64, sampling the proxies' CPU and
memory from /proc. Then times config push to 100 discovery streams. Prints a
table and writes JSON (default bench/results/latest.json). A path that cannot
start is reported as skipped with the reason; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from bench import envoy as envoy_mod
from bench.grpcframe import ECHO_METHOD, grpc_frame, payload
from bench.h2load import H2loadError, find_h2load, run_h2load
from bench.machine import describe_machine, load_average, tool_version
from bench.markdown import MarkerError, render_results, replace_results
from bench.procstat import cpu_seconds, memory
from bench.push import PushResult, measure_push
from bench.report import (
    LoadRun,
    aggregate,
    evaluate_targets,
    format_policy_cost,
    format_table,
    policy_cost,
)
from bench.stacks import (
    BenchPath,
    SkeinMesh,
    full_policy,
    off_policy,
    start_bare_relays,
    start_echo,
    start_envoy_pair,
    start_mtls_pair,
    start_policy_pair,
    start_skein,
)
from bench.stats import percentile
from skein.launch import Daemon, ProcessGroup

__all__ = ["Settings", "main"]

SERVER = "echo"
DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "results", "latest.json")


@dataclass(frozen=True)
class Load:
    """One load shape: `clients` connections times `streams` concurrent streams each."""

    clients: int
    streams: int
    requests: int

    @property
    def concurrency(self) -> int:
        return self.clients * self.streams


@dataclass(frozen=True)
class Settings:
    rounds: int
    low: Load
    high: Load
    warmup: int
    size: int
    push_streams: int
    push_writes: int
    out: str
    docs: str | None = None


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short round (~1 minute)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per case (default 3)")
    parser.add_argument("--requests-c1", type=int, help="requests per round at c=1")
    parser.add_argument("--requests-c64", type=int, help="requests per round at c=64")
    parser.add_argument("--size", type=int, default=1024, help="request payload bytes")
    parser.add_argument("--push-streams", type=int, default=100)
    parser.add_argument("--push-writes", type=int, help="timed writes (default 30)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON report path")
    parser.add_argument(
        "--docs",
        metavar="MARKDOWN",
        help="also replace the results section of this document (docs/benchmarks.md)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    settings = Settings(
        rounds=args.rounds or (1 if quick else 3),
        low=Load(1, 1, args.requests_c1 or (1000 if quick else 3000)),
        high=Load(4, 16, args.requests_c64 or (4000 if quick else 15000)),
        warmup=200 if quick else 1000,
        size=args.size,
        push_streams=args.push_streams,
        push_writes=args.push_writes or (10 if quick else 30),
        out=args.out,
        docs=args.docs,
    )
    for name in ("rounds", "warmup", "push_streams", "push_writes"):
        if getattr(settings, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if settings.low.requests < 1 or settings.high.requests < 1:
        parser.error("request counts must be at least 1")
    return settings


def _log_tail(daemon: Daemon | None, lines: int = 8) -> str:
    if daemon is None or not daemon.log_path or not os.path.exists(daemon.log_path):
        return ""
    with open(daemon.log_path, errors="replace") as handle:
        tail = handle.read().splitlines()[-lines:]
    return f"\n    last lines of {daemon.name}'s log:\n      " + "\n      ".join(tail)


def _load(path: BenchPath, load: Load, body: str, work: str, server: Daemon) -> LoadRun:
    """One h2load run, with the CPU each proxy and the server spent during it."""
    sampled = {d.name: d.pid for d in path.proxies}
    sampled[SERVER] = server.pid
    before = {name: cpu_seconds(pid) for name, pid in sampled.items()}
    result = run_h2load(
        f"http://{path.target}{ECHO_METHOD}",
        body,
        requests=load.requests,
        clients=load.clients,
        streams=load.streams,
        log_path=os.path.join(work, "h2load.log"),
    )
    after = {name: cpu_seconds(pid) for name, pid in sampled.items()}
    summary = result.summary
    return LoadRun(
        path=path.name,
        concurrency=load.concurrency,
        requests=summary.succeeded,
        elapsed_s=summary.elapsed_s,
        rps=summary.rps,
        failed=summary.failed + summary.errored,
        non_200=result.non_200,
        latencies_us=result.latencies_us,
        cpu_s={name: after[name] - before[name] for name in sampled},
        rss_mib={d.name: memory(d.pid).rss_mib for d in path.proxies},
    )


def _start_paths(
    group: ProcessGroup, work: str, skipped: dict[str, str], notes: list[str]
) -> tuple[Daemon, list[BenchPath], SkeinMesh | None]:
    server, direct = start_echo(group)
    paths = [direct]
    mesh: SkeinMesh | None = None
    print("starting Skein: etcd, control, two sidecars ...", flush=True)
    try:
        mesh = start_skein(group, direct.target, work)
        paths += [mesh.hop, mesh.pair]
    except Exception as err:
        tails = "".join(
            _log_tail(d) for d in group.daemons if d.name.startswith(("control", "side"))
        )
        print(f"  Skein sidecars did not start: {err}{tails}", file=sys.stderr, flush=True)
        reason = f"{type(err).__name__}: {err}"
        skipped["push"] = f"no control daemon ({reason})"
        _stop_named(group, ("control", "sidecar"))
        try:
            paths += start_bare_relays(group, direct.target)
            notes.append(
                "skein-hop and skein-pair ran on bare transport listeners with a static "
                f"dispatcher (bench.relay), since the sidecars did not start: {reason}"
            )
        except Exception as relay_err:
            skipped["skein-hop"] = skipped["skein-pair"] = f"{reason}; fallback: {relay_err}"
    paths += _start_policy_pairs(group, work, direct.target, mesh, skipped)
    print("starting Envoy pair ...", flush=True)
    try:
        paths.append(start_envoy_pair(group, work, direct.target))
    except Exception as err:
        tails = "".join(_log_tail(d) for d in group.daemons if d.name.startswith("envoy"))
        skipped["envoy-pair"] = f"{type(err).__name__}: {err}"
        print(f"  Envoy pair skipped: {err}{tails}", file=sys.stderr, flush=True)
    return server, paths, mesh


def _start_policy_pairs(
    group: ProcessGroup, work: str, app: str, mesh: SkeinMesh | None, skipped: dict[str, str]
) -> list[BenchPath]:
    """The pair with every policy on and with every policy off, each checked applied."""
    pairs = (full_policy(), off_policy())
    if mesh is None:
        for pair in pairs:
            skipped[pair.path] = "no control daemon (Skein did not start)"
        return []
    started = []
    for pair in pairs:
        print(f"starting {pair.path} ...", flush=True)
        try:
            started.append(start_policy_pair(group, mesh.control, app, work, pair))
        except Exception as err:
            skipped[pair.path] = f"{type(err).__name__}: {err}"
            tails = "".join(_log_tail(d) for d in group.daemons if d.name.startswith(pair.prefix))
            print(f"  {pair.path} skipped: {err}{tails}", file=sys.stderr, flush=True)
            _stop_named(group, (f"{pair.prefix}-",))
    print("starting skein-pair-mtls ...", flush=True)
    try:
        started.append(start_mtls_pair(group, mesh.control, app, work))
    except Exception as err:
        skipped["skein-pair-mtls"] = f"{type(err).__name__}: {err}"
        tails = "".join(_log_tail(d) for d in group.daemons if d.name.startswith("mtls-"))
        print(f"  skein-pair-mtls skipped: {err}{tails}", file=sys.stderr, flush=True)
        _stop_named(group, ("mtls-",))
    return started


def _stop_named(group: ProcessGroup, prefixes: tuple[str, ...]) -> None:
    """Stop (by PID) the daemons of a stack that failed half-way."""
    for daemon in group.daemons:
        if daemon.name.startswith(prefixes):
            daemon.stop()


def _push(mesh: SkeinMesh | None, settings: Settings, skipped: dict[str, str]) -> PushResult | None:
    if mesh is None:
        skipped.setdefault("push", "no control daemon (Skein did not start)")
        return None
    print(f"config push: {settings.push_streams} streams, {settings.push_writes} writes ...")
    try:
        return measure_push(
            mesh.control.addresses["listen"],
            streams=settings.push_streams,
            writes=settings.push_writes,
        )
    except Exception as err:
        skipped["push"] = f"{type(err).__name__}: {err}"
        print(f"  push skipped: {err}{_log_tail(mesh.control)}", file=sys.stderr)
        return None


def _push_json(push: PushResult | None) -> dict[str, Any] | None:
    if push is None:
        return None
    samples = push.samples_ms
    return {
        "streams": push.streams,
        "writes": len(samples) + len(push.failures),
        "p50_ms": round(percentile(samples, 50), 3) if samples else None,
        "p99_ms": round(percentile(samples, 99), 3) if samples else None,
        "max_ms": round(max(samples), 3) if samples else None,
        "samples_ms": [round(s, 3) for s in samples],
        "failures": push.failures,
    }


def measure(settings: Settings) -> dict[str, Any]:
    find_h2load()
    skipped: dict[str, str] = {}
    notes: list[str] = []
    runs: list[LoadRun] = []
    peaks: dict[str, float] = {}
    push: PushResult | None = None
    started = time.monotonic()
    load_before = load_average()
    with (
        tempfile.TemporaryDirectory(prefix="skein-bench-") as work,
        ProcessGroup(log_dir=work) as group,
    ):
        mesh: SkeinMesh | None = None
        try:
            server, paths, mesh = _start_paths(group, work, skipped, notes)
            body = os.path.join(work, "request.bin")
            with open(body, "wb") as handle:
                handle.write(grpc_frame(payload(settings.size)))
            for path in paths:
                _load(path, Load(4, 16, settings.warmup), body, work, server)
            for rnd in range(1, settings.rounds + 1):
                for load in (settings.low, settings.high):
                    for path in paths:
                        print(f"round {rnd}/{settings.rounds}: {path.name} c={load.concurrency}",
                              flush=True)  # fmt: skip
                        try:
                            runs.append(_load(path, load, body, work, server))
                        except H2loadError as err:
                            skipped[path.name] = f"h2load failed: {err}"
                            print(f"  {err}{''.join(_log_tail(d) for d in path.proxies)}",
                                  file=sys.stderr)  # fmt: skip
            for path in paths:
                for daemon in path.proxies:
                    peaks[daemon.name] = memory(daemon.pid).peak_mib
            push = _push(mesh, settings, skipped)
        finally:
            group.stop_all()
            if mesh is not None:
                mesh.etcd.stop()
        # The work directory is gone now; keep its name out of the report.
        skipped = {name: reason.replace(work, "<workdir>") for name, reason in skipped.items()}
    cases = aggregate([r for r in runs if r.path not in skipped], peaks)
    push_json = _push_json(push)
    targets = evaluate_targets(
        cases,
        push_json["p99_ms"] if push_json else None,
        settings.high.concurrency,
        settings.low.concurrency,
        SERVER,
    )
    try:
        envoy_version = tool_version([envoy_mod.find_envoy(), "--version"])
    except envoy_mod.EnvoyMissing as err:
        envoy_version = str(err)
    return {
        "machine": {**describe_machine(), "load_before": load_before, "load_after": load_average()},
        "tools": {"h2load": tool_version([find_h2load(), "--version"]), "envoy": envoy_version},
        "settings": {
            "rounds": settings.rounds,
            "payload_bytes": settings.size,
            "c1": settings.low.__dict__,
            "c64": settings.high.__dict__,
            "warmup_requests": settings.warmup,
        },
        "duration_s": round(time.monotonic() - started, 1),
        "cases": [c.to_json() for c in cases],
        "table": format_table(cases, SERVER),
        "push": push_json,
        "policy_cost": policy_cost(cases, SERVER),
        "targets": [t.to_json() for t in targets],
        "skipped": skipped,
        "notes": [note.replace(work, "<workdir>") for note in notes],
    }


def _print(report: dict[str, Any]) -> None:
    print()
    print(report["table"])
    push = report["push"]
    if push:
        print(
            f"\nconfig push, {push['streams']} streams, {push['writes']} writes: "
            f"p50 {push['p50_ms']} ms, p99 {push['p99_ms']} ms, max {push['max_ms']} ms"
            + (f", {len(push['failures'])} failed" if push["failures"] else "")
        )
    if report["policy_cost"]:
        print("\npolicy pipeline cost:\n" + format_policy_cost(report["policy_cost"]))
    print("\ntargets:")
    for t in report["targets"]:
        state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.2f} {t['unit']}"
        print(f"  {t['name']:<40} {t['goal']:<10} {value:>14}  {state}")
    for name, reason in report["skipped"].items():
        print(f"skipped {name}: {reason}")
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"\n{report['duration_s']} s on {report['machine']['cores']} cores")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # Unwind through the finally blocks, which stop every process started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        report = measure(settings)
    except H2loadError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 2
    _print(report)
    os.makedirs(os.path.dirname(os.path.abspath(settings.out)), exist_ok=True)
    with open(settings.out, "w") as handle:
        json.dump(report, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
    print(f"wrote {settings.out}")
    if settings.docs:
        with open(settings.docs) as handle:
            document = handle.read()
        try:
            document = replace_results(document, render_results(report, SERVER))
        except MarkerError as err:
            print(f"bench: {settings.docs}: {err}", file=sys.stderr)
            return 2
        with open(settings.docs, "w") as handle:
            handle.write(document)
        print(f"updated {settings.docs}")
    return 1 if report["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
