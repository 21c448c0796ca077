"""Drive h2load (nghttp2) with a prebuilt gRPC request and read its results.

h2load posts the same body on every request and counts HTTP 200 as success; it
does not read `grpc-status`, so the benchmark checks gRPC status separately
(see bench.grpccheck). Per-request latencies come from `--log-file` (one row per
request: start µs since the epoch, HTTP status, µs until the end of the response).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

__all__ = [
    "H2loadError",
    "H2loadResult",
    "find_h2load",
    "parse_log",
    "parse_summary",
    "run_h2load",
]

_FINISHED = re.compile(r"finished in ([0-9.]+)(us|ms|s), ([0-9.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


class H2loadError(RuntimeError):
    """h2load is missing, failed, or printed something we cannot read."""


@dataclass(frozen=True, slots=True)
class Summary:
    elapsed_s: float
    rps: float
    total: int
    succeeded: int
    failed: int
    errored: int


@dataclass(frozen=True, slots=True)
class H2loadResult:
    summary: Summary
    # Per-request latencies in µs, for requests that got a response (status != -1).
    latencies_us: list[float]
    non_200: int


def find_h2load() -> str:
    found = shutil.which("h2load")
    if found is None:
        raise H2loadError(
            "h2load not found: install Debian/Ubuntu `nghttp2-client` "
            "(`./dev bench` does it) or put h2load on PATH"
        )
    return found


def parse_summary(output: str) -> Summary:
    """The totals h2load prints at the end of a run."""
    finished = _FINISHED.search(output)
    requests = _REQUESTS.search(output)
    if finished is None or requests is None:
        tail = output.strip().splitlines()[-5:]
        raise H2loadError(f"cannot read h2load's summary; its output ended with: {tail}")
    elapsed = float(finished.group(1)) * _UNIT[finished.group(2)]
    total, _started, _done, ok, failed, errored, _timeout = map(int, requests.groups())
    return Summary(
        elapsed_s=elapsed,
        rps=float(finished.group(3)),
        total=total,
        succeeded=ok,
        failed=failed,
        errored=errored,
    )


def parse_log(text: str) -> tuple[list[float], int]:
    """(latencies in µs of answered requests, count of answers other than HTTP 200).

    Rows whose status is -1 (failed streams) carry no latency and are skipped;
    h2load's summary already counts them as failed.
    """
    latencies: list[float] = []
    non_200 = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 3:
            raise H2loadError(
                f"h2load log line {lineno}: expected 3 tab-separated columns: {line!r}"
            )
        try:
            status, micros = int(cols[1]), float(cols[2])
        except ValueError as err:
            raise H2loadError(f"h2load log line {lineno}: not numbers: {line!r}") from err
        if status == -1:
            continue
        if status != 200:
            non_200 += 1
        latencies.append(micros)
    return latencies, non_200


def run_h2load(
    url: str,
    body_path: str,
    *,
    requests: int,
    clients: int,
    streams: int,
    log_path: str,
    timeout: float = 300.0,
) -> H2loadResult:
    """Post `body_path` to `url` `requests` times over `clients` h2c connections."""
    argv = [
        find_h2load(),
        "-n", str(requests),
        "-c", str(clients),
        "-m", str(streams),
        "-t", "1",
        "-d", body_path,
        "-H", "content-type: application/grpc",
        "-H", "te: trailers",
        f"--log-file={log_path}",
        url,
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise H2loadError(f"h2load did not finish {requests} requests in {timeout}s") from err
    if done.returncode != 0:
        raise H2loadError(f"h2load exited {done.returncode}: {done.stderr.strip()[-400:]}")
    summary = parse_summary(done.stdout)
    with open(log_path) as handle:
        latencies, non_200 = parse_log(handle.read())
    os.unlink(log_path)
    return H2loadResult(summary=summary, latencies_us=latencies, non_200=non_200)
