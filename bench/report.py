"""Turn raw load runs into the report: per-case figures, ratios, targets, a table.

Pure functions over plain data, so the arithmetic is testable without load.
Each case is measured in several interleaved rounds (the machine is shared and
noisy): throughput is the median round, latencies are pooled over all rounds,
CPU per request is total CPU over total requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.stats import median, percentile

__all__ = [
    "Case",
    "LoadRun",
    "Target",
    "aggregate",
    "evaluate_targets",
    "format_policy_cost",
    "format_table",
    "policy_cost",
]

DIRECT = "direct"
HOP = "skein-hop"
PAIR = "skein-pair"
ENVOY = "envoy-pair"
PAIR_POLICIES = "skein-pair-policies"  # every resilience policy on
PAIR_OFF = "skein-pair-off"  # every resilience policy off
SKEIN_PATHS = (HOP, PAIR, PAIR_POLICIES, PAIR_OFF)
# The most throughput the full policy pipeline may cost against skein-pair.
POLICY_BUDGET = 0.10


@dataclass
class LoadRun:
    """One h2load invocation against one path."""

    path: str
    concurrency: int
    requests: int
    elapsed_s: float
    rps: float
    failed: int
    non_200: int
    latencies_us: list[float]
    # CPU seconds each sampled process spent during the run, by process name.
    cpu_s: dict[str, float]
    # VmRSS (MiB) of each proxy right after the run.
    rss_mib: dict[str, float]


@dataclass
class Case:
    path: str
    concurrency: int
    rounds_rps: list[float]
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int
    cpu_us_per_request: dict[str, float]
    rss_mib: dict[str, float]
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    rps_vs_direct: float | None = None
    rps_vs_envoy: float | None = None
    p50_added_ms: float | None = None
    rps_vs_pair: float | None = None  # policy pairs only: against skein-pair

    def proxy_names(self, server: str) -> list[str]:
        return [name for name in self.cpu_us_per_request if name != server]

    def to_json(self) -> dict[str, Any]:
        return {k: _round(v) for k, v in self.__dict__.items()}


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def aggregate(runs: Sequence[LoadRun], peaks: dict[str, float] | None = None) -> list[Case]:
    """One Case per (path, concurrency), in first-seen order, with ratios filled in."""
    grouped: dict[tuple[str, int], list[LoadRun]] = {}
    for run in runs:
        grouped.setdefault((run.path, run.concurrency), []).append(run)
    cases: list[Case] = []
    for (path, conc), group in grouped.items():
        total = sum(r.requests for r in group)
        latencies = [v for r in group for v in r.latencies_us]
        names = {name for r in group for name in r.cpu_s}
        cpu = {n: 1e6 * sum(r.cpu_s.get(n, 0.0) for r in group) / total for n in sorted(names)}
        rss_names = {name for r in group for name in r.rss_mib}
        rss = {n: max(r.rss_mib.get(n, 0.0) for r in group) for n in sorted(rss_names)}
        cases.append(
            Case(
                path=path,
                concurrency=conc,
                rounds_rps=[r.rps for r in group],
                rps=median([r.rps for r in group]),
                p50_ms=percentile(latencies, 50) / 1000 if latencies else float("nan"),
                p99_ms=percentile(latencies, 99) / 1000 if latencies else float("nan"),
                requests=total,
                failed=sum(r.failed + r.non_200 for r in group),
                cpu_us_per_request=cpu,
                rss_mib=rss,
                peak_rss_mib={n: (peaks or {}).get(n, rss[n]) for n in rss},
            )
        )
    by_key = {(c.path, c.concurrency): c for c in cases}
    for case in cases:
        direct = by_key.get((DIRECT, case.concurrency))
        envoy = by_key.get((ENVOY, case.concurrency))
        pair = by_key.get((PAIR, case.concurrency))
        if case.path in (PAIR_POLICIES, PAIR_OFF) and pair is not None and pair.rps > 0:
            case.rps_vs_pair = case.rps / pair.rps
        if direct is not None and direct.rps > 0:
            case.rps_vs_direct = case.rps / direct.rps
            case.p50_added_ms = case.p50_ms - direct.p50_ms
        if envoy is not None and envoy.rps > 0:
            case.rps_vs_envoy = case.rps / envoy.rps
    return cases


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    value: float | None
    unit: str
    met: bool | None  # None: not measured in this run

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "value": _round(self.value)}


def evaluate_targets(
    cases: Sequence[Case], push_p99_ms: float | None, high: int, low: int, server: str
) -> list[Target]:
    """The foundation issue's targets, met or missed, from this run's figures."""
    by_key = {(c.path, c.concurrency): c for c in cases}
    pair, hop = by_key.get((PAIR, high)), by_key.get((HOP, low))
    skein_cases = [c for c in cases if c.path in SKEIN_PATHS]
    cpu = [v for c in skein_cases if c.concurrency == high for v in _proxy_values(c, server)]
    rss = [v for c in skein_cases for v in c.peak_rss_mib.values()]
    ratio = pair.rps_vs_envoy if pair is not None else None
    added = hop.p50_added_ms if hop is not None else None
    max_cpu = max(cpu) if cpu else None
    max_rss = max(rss) if rss else None

    def check(value: float | None, ok: bool) -> bool | None:
        return None if value is None else ok

    return [
        Target(
            f"Skein pair rps vs Envoy pair, c={high}",
            ">= 90%",
            None if ratio is None else ratio * 100,
            "%",
            check(ratio, ratio is not None and ratio >= 0.9),
        ),
        Target(
            f"one Skein hop added p50, c={low}",
            "<= 0.8 ms",
            added,
            "ms",
            check(added, added is not None and added <= 0.8),
        ),
        Target(
            f"sidecar CPU per request, c={high}",
            "<= 400 µs",
            max_cpu,
            "µs",
            check(max_cpu, max_cpu is not None and max_cpu <= 400),
        ),
        Target(
            "sidecar peak RSS under load",
            "< 40 MB",
            max_rss,
            "MiB",
            check(max_rss, max_rss is not None and max_rss * 1.048576 < 40),
        ),
        Target(
            "config push to 100 streams, p99",
            "<= 100 ms",
            push_p99_ms,
            "ms",
            check(push_p99_ms, push_p99_ms is not None and push_p99_ms <= 100),
        ),
        *(_policy_target(by_key, conc) for conc in (low, high)),
    ]


def _policy_target(by_key: dict[tuple[str, int], Case], concurrency: int) -> Target:
    case = by_key.get((PAIR_POLICIES, concurrency))
    ratio = case.rps_vs_pair if case is not None else None
    floor = 1 - POLICY_BUDGET
    return Target(
        f"policy pipeline rps vs skein-pair, c={concurrency}",
        f">= {floor:.0%}",
        None if ratio is None else ratio * 100,
        "%",
        None if ratio is None else ratio >= floor,
    )


def _proxy_values(case: Case, server: str) -> list[float]:
    return [v for n, v in case.cpu_us_per_request.items() if n != server]


def _pair_cpu(case: Case | None, server: str) -> float | None:
    """CPU µs per request of both sidecars of a pair together."""
    return sum(_proxy_values(case, server)) if case is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def policy_cost(cases: Sequence[Case], server: str) -> list[dict[str, Any]]:
    """Per concurrency: the full-policy pair against skein-pair (defaults) and the off pair.

    CPU is both sidecars of a pair together. Empty when the policy pair was not measured.
    """
    by_key = {(c.path, c.concurrency): c for c in cases}
    rows = []
    for conc in sorted({c.concurrency for c in cases if c.path == PAIR_POLICIES}):
        found = {p: by_key.get((p, conc)) for p in (PAIR_POLICIES, PAIR, PAIR_OFF)}
        rps = {p: (c.rps if c else None) for p, c in found.items()}
        cpu = {p: _pair_cpu(c, server) for p, c in found.items()}
        rows.append(
            {
                "concurrency": conc,
                "rps": rps,
                "rps_vs_pair": _ratio(rps[PAIR_POLICIES], rps[PAIR]),
                "rps_vs_off": _ratio(rps[PAIR_POLICIES], rps[PAIR_OFF]),
                # each round's ratio: the paths ran back to back, so these show the noise
                "rounds_vs_pair": _round_ratios(found[PAIR_POLICIES], found[PAIR]),
                "rounds_vs_off": _round_ratios(found[PAIR_POLICIES], found[PAIR_OFF]),
                "pair_cpu_us_per_request": cpu,
                "cpu_added_vs_pair_us": _diff(cpu[PAIR_POLICIES], cpu[PAIR]),
                "cpu_added_vs_off_us": _diff(cpu[PAIR_POLICIES], cpu[PAIR_OFF]),
                "p50_ms": {p: (c.p50_ms if c else None) for p, c in found.items()},
            }
        )
    return [_round(row) for row in rows]


def _round_ratios(case: Case | None, base: Case | None) -> list[float]:
    if case is None or base is None or len(case.rounds_rps) != len(base.rounds_rps):
        return []
    return [a / b for a, b in zip(case.rounds_rps, base.rounds_rps, strict=True) if b > 0]


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def format_policy_cost(rows: Sequence[dict[str, Any]]) -> str:
    """The policy pipeline's cost as text lines (empty when not measured)."""
    lines = []
    for row in rows:
        cpu = row["pair_cpu_us_per_request"]
        lines.append(
            f"c={row['concurrency']}: policies {_fmt(row['rps'][PAIR_POLICIES], '.0f')} rps = "
            f"{_fmt(row['rps_vs_pair'], '.0%')} of skein-pair, "
            f"{_fmt(row['rps_vs_off'], '.0%')} of skein-pair-off (rounds: "
            f"{_spread(row['rounds_vs_pair'])} and {_spread(row['rounds_vs_off'])}); "
            "pair CPU µs/request "
            f"policies {_fmt(cpu[PAIR_POLICIES], '.0f')}, skein-pair {_fmt(cpu[PAIR], '.0f')}, "
            f"off {_fmt(cpu[PAIR_OFF], '.0f')}"
        )
    return "\n".join(lines)


def _spread(ratios: Sequence[float]) -> str:
    return f"{min(ratios):.0%}-{max(ratios):.0%}" if ratios else "-"


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:{spec}}{suffix}"


def format_table(cases: Sequence[Case], server: str) -> str:
    """A fixed-width table, one row per case; proxies' CPU and RSS listed per process."""
    header = (
        f"{'path':<19} {'c':>3} {'rps':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'vs direct':>9} {'vs envoy':>8} {'+p50 ms':>7}  proxies: CPU µs/req, RSS MiB (peak)"
    )
    lines = [header, "-" * len(header)]
    for c in cases:
        proxies = ", ".join(
            f"{n} {c.cpu_us_per_request[n]:.0f}µs {c.rss_mib.get(n, 0):.0f}"
            f"({c.peak_rss_mib.get(n, 0):.0f})"
            for n in c.proxy_names(server)
        )
        server_cpu = c.cpu_us_per_request.get(server)
        lines.append(
            f"{c.path:<19} {c.concurrency:>3} {c.rps:>8.0f} {c.p50_ms:>7.2f} {c.p99_ms:>7.2f} "
            f"{_fmt(c.rps_vs_direct, '>8.0%'):>9} {_fmt(c.rps_vs_envoy, '>7.0%'):>8} "
            f"{_fmt(c.p50_added_ms, '>+7.2f'):>7}  {proxies or '-'}"
            f"{'' if server_cpu is None else f'; server {server_cpu:.0f}µs'}"
            f"{'' if not c.failed else f'; FAILED {c.failed}'}"
        )
    return "\n".join(lines)
