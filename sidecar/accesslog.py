"""Access log: one structured line per sampled request, as Envoy's access log.

Off unless `--access-log-sample` is above 0. The relay asks `sampled()` once
per finished stream (one attribute test when the log is off, one random draw
when on) and builds the line only for the streams that are logged, so a
sampled log costs the hot path nothing for the streams it skips.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = ["AccessLog", "AccessRecord", "request_fields"]

Header = tuple[bytes, bytes]


class _Logger(Protocol):
    def info(self, event: str, **fields: Any) -> Any: ...


class AccessRecord(Protocol):
    """What the relay knows about a finished stream."""

    @property
    def headers(self) -> Sequence[Header]: ...
    @property
    def cluster(self) -> str: ...
    @property
    def is_grpc(self) -> bool: ...
    @property
    def grpc_status(self) -> int: ...
    @property
    def http_status(self) -> int: ...
    @property
    def started_at(self) -> float: ...
    @property
    def detail(self) -> str: ...
    @property
    def attempts(self) -> int: ...


def request_fields(headers: Sequence[Header]) -> dict[str, str]:
    """method, path and authority of a request block (decoded only for logged streams)."""
    fields = {"method": "", "path": "", "authority": ""}
    for name, value in headers:
        if name[:1] != b":":
            break
        key = name[1:].decode("latin-1")
        if key in fields:
            fields[key] = value.decode("latin-1")
    return fields


class AccessLog:
    """Samples finished streams at `rate` (0..1) and writes one line each."""

    __slots__ = ("_draw", "_log", "_now", "listener", "rate")

    def __init__(
        self,
        rate: float,
        log: _Logger,
        *,
        listener: str,
        rng: random.Random,
        clock: Callable[[], float],
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"access log sample rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.listener = listener
        self._log = log
        self._draw = rng.random
        self._now = clock  # the clock `started_at` was read from

    def sampled(self) -> bool:
        rate = self.rate
        return rate >= 1.0 or (rate > 0.0 and self._draw() < rate)

    def write(self, record: AccessRecord, upstream: str) -> None:
        status: dict[str, int] = (
            {"grpc_status": record.grpc_status}
            if record.is_grpc and record.grpc_status >= 0
            else {"http_status": record.http_status}
        )
        self._log.info(
            "access",
            listener=self.listener,
            cluster=record.cluster,
            upstream=upstream,
            duration_ms=round((self._now() - record.started_at) * 1000.0, 3),
            **request_fields(record.headers),
            **status,
            **({"detail": record.detail} if record.detail else {}),
            **({"attempts": record.attempts} if record.attempts > 1 else {}),
        )
