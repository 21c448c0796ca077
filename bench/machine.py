"""What the figures were measured on: they mean little without it."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from typing import Any

__all__ = ["describe_machine", "load_average", "tool_version"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def tool_version(argv: list[str]) -> str:
    """The first non-empty line a `--version` call prints, or why there is none."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unavailable ({err})"
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip():
            # Name the tool, not where it is installed on this machine.
            named = line.replace(argv[0], os.path.basename(argv[0]))
            return " ".join(named.split())
    return "unknown"


def load_average() -> float | None:
    """1-minute load average: how busy the shared machine was around the run."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def describe_machine() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
