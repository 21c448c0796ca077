"""Render a report as the Markdown results section of docs/benchmarks.md.

The document keeps its prose; only the part between the two markers is
replaced, so a rerun updates figures without touching the explanation.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BEGIN", "END", "MarkerError", "render_results", "replace_results"]

BEGIN = "<!-- results:begin (written by `python -m bench.run --docs`) -->"
END = "<!-- results:end -->"


class MarkerError(ValueError):
    """The document lacks the markers that delimit the results section."""


def _num(value: Any, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:{spec}}{suffix}"


def _proxies(case: dict[str, Any], server: str) -> tuple[str, str]:
    names = [n for n in case["cpu_us_per_request"] if n != server]
    if not names:
        return "-", "-"
    cpu = ", ".join(f"{n} {case['cpu_us_per_request'][n]:.0f}" for n in names)
    rss = ", ".join(
        f"{n} {case['rss_mib'].get(n, 0):.0f} ({case['peak_rss_mib'].get(n, 0):.0f})" for n in names
    )
    return cpu, rss


def render_results(report: dict[str, Any], server: str = "echo") -> str:
    machine, settings = report["machine"], report["settings"]
    lines = [
        f"Measured {machine['date']} on {machine['cores']} cores ({machine['cpu']}), "
        f"{machine['memory_gib']} GiB, {machine['kernel']}, Python {machine['python']}; "
        f"{report['tools']['envoy']}; {report['tools']['h2load']}. "
        f"1-minute load average before/after the run: {_num(machine.get('load_before'), '.1f')}"
        f" / {_num(machine.get('load_after'), '.1f')}.",
        f"{settings['rounds']} interleaved rounds; per round "
        f"{settings['c1']['requests']} requests at c=1 and {settings['c64']['requests']} at "
        f"c=64 (`-c {settings['c64']['clients']} -m {settings['c64']['streams']}`); "
        f"{settings['payload_bytes']}-byte payload. Whole run: {report['duration_s']} s.",
        "",
        "| path | c | rps | p50 ms | p99 ms | vs direct | vs Envoy pair | added p50 ms "
        "| CPU µs/request per proxy | RSS MiB (peak) per proxy | server CPU µs/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for case in report["cases"]:
        cpu, rss = _proxies(case, server)
        lines.append(
            f"| {case['path']} | {case['concurrency']} | {case['rps']:.0f} "
            f"| {_num(case['p50_ms'], '.2f')} | {_num(case['p99_ms'], '.2f')} "
            f"| {_num(case['rps_vs_direct'], '.0%')} | {_num(case['rps_vs_envoy'], '.0%')} "
            f"| {_num(case['p50_added_ms'], '+.2f')} | {cpu} | {rss} "
            f"| {_num(case['cpu_us_per_request'].get(server), '.0f')} |"
        )
    lines += _policy_cost(report.get("policy_cost") or [])
    push = report.get("push")
    lines.append("")
    if push:
        lines.append(
            f"Config push, an Operator Apply (etcd write) until all {push['streams']} discovery "
            f"streams ACKed, {push['writes']} writes: p50 {_num(push['p50_ms'], '.1f')} ms, "
            f"p99 {_num(push['p99_ms'], '.1f')} ms, max {_num(push['max_ms'], '.1f')} ms"
            + (f"; {len(push['failures'])} writes not ACKed by all." if push["failures"] else ".")
        )
    lines += ["", "| target | goal | this run | |", "|---|---|---:|---|"]
    for t in report["targets"]:
        state = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        lines.append(
            f"| {t['name']} | {t['goal']} | {_num(t['value'], '.2f', ' ' + t['unit'])} | {state} |"
        )
    for name, reason in report.get("skipped", {}).items():
        lines.append(f"\nSkipped {name}: {reason.splitlines()[0]}")
    for note in report.get("notes", []):
        lines.append(f"\nNote: {note.splitlines()[0]}")
    return "\n".join(lines)


def _spread(ratios: list[float] | None) -> str:
    return f"{min(ratios):.0%} to {max(ratios):.0%}" if ratios else "-"


def _policy_cost(rows: list[dict[str, Any]]) -> list[str]:
    """The full-policy pair next to skein-pair (defaults) and skein-pair-off."""
    if not rows:
        return []
    lines = [
        "",
        "Policy pipeline cost (CPU: both sidecars of the pair together):",
        "",
        "| c | policies rps | vs skein-pair (rounds) | vs skein-pair-off (rounds) "
        "| CPU µs/request policies | skein-pair | skein-pair-off | added vs skein-pair "
        "| added vs off |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cpu = row["pair_cpu_us_per_request"]
        lines.append(
            f"| {row['concurrency']} | {_num(row['rps']['skein-pair-policies'], '.0f')} "
            f"| {_num(row['rps_vs_pair'], '.0%')} ({_spread(row.get('rounds_vs_pair'))}) "
            f"| {_num(row['rps_vs_off'], '.0%')} ({_spread(row.get('rounds_vs_off'))}) "
            f"| {_num(cpu['skein-pair-policies'], '.0f')} | {_num(cpu['skein-pair'], '.0f')} "
            f"| {_num(cpu['skein-pair-off'], '.0f')} "
            f"| {_num(row['cpu_added_vs_pair_us'], '+.0f')} "
            f"| {_num(row['cpu_added_vs_off_us'], '+.0f')} |"
        )
    return lines


def replace_results(document: str, results: str) -> str:
    """`document` with the text between the markers replaced by `results`."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise MarkerError(
            f"the document needs the lines {BEGIN!r} and {END!r} (in that order) around "
            "the results section"
        )
    return f"{document[: start + len(BEGIN)]}\n{results}\n{document[end:]}"
