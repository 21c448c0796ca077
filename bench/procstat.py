"""CPU time and memory of a process, from /proc (Linux).

CPU is utime + stime (fields 14 and 15 of /proc/PID/stat, in clock ticks);
memory is VmRSS (now) and VmHWM (peak RSS) from /proc/PID/status. Parsing is
kept apart from reading so it can be tested on fixed text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = [
    "CLOCK_TICKS",
    "Memory",
    "ProcStatError",
    "cpu_seconds",
    "memory",
    "parse_cpu_ticks",
    "parse_memory",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcStatError(ValueError):
    """/proc text that does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class Memory:
    rss_kib: int
    peak_kib: int

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


def parse_cpu_ticks(stat: str) -> int:
    """utime + stime in clock ticks from the text of /proc/PID/stat.

    Field 2 (comm) is in parentheses and may hold spaces or ')' itself, so the
    fields are counted after the last ')'.
    """
    close = stat.rfind(")")
    if close < 0:
        raise ProcStatError(f"no ')' closing the command name in /proc stat text {stat[:80]!r}")
    rest = stat[close + 1 :].split()
    # rest[0] is field 3 (state); utime is field 14 and stime field 15.
    if len(rest) < 13:
        raise ProcStatError(f"/proc stat text has {len(rest) + 2} fields, need at least 15")
    try:
        return int(rest[11]) + int(rest[12])
    except ValueError as err:
        raise ProcStatError(f"utime/stime are not integers: {rest[11]!r}, {rest[12]!r}") from err


def parse_memory(status: str) -> Memory:
    """VmRSS and VmHWM (KiB) from the text of /proc/PID/status."""
    found: dict[str, int] = {}
    for line in status.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in ("VmRSS", "VmHWM"):
            parts = value.split()
            if len(parts) != 2 or parts[1] != "kB" or not parts[0].isdigit():
                raise ProcStatError(f"unexpected {key} line in /proc status: {line!r}")
            found[key] = int(parts[0])
    missing = {"VmRSS", "VmHWM"} - found.keys()
    if missing:
        raise ProcStatError(f"/proc status lacks {', '.join(sorted(missing))} (a zombie?)")
    return Memory(rss_kib=found["VmRSS"], peak_kib=found["VmHWM"])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far."""
    with open(f"/proc/{pid}/stat") as handle:
        return parse_cpu_ticks(handle.read()) / CLOCK_TICKS


def memory(pid: int) -> Memory:
    with open(f"/proc/{pid}/status") as handle:
        return parse_memory(handle.read())
