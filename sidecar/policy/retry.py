"""Which failed attempts may be retried, and how long to wait first (sans-IO).

Invariants:
- `RetryRule.retriable()` is a pure function of (failure, code) and the
  compiled `retry_on` conditions: one comparison and one set lookup.
- `RetryRule.backoff()` lies in [0, min(max_interval, base_interval *
  2**(attempts - 1))]: capped exponential backoff with full jitter.
- `parse_pushback()` never raises; -1.0 means "the server said do not retry".

What each `retry_on` condition covers follows Envoy's `retry_on`:

- `connect-failure`: no connection could be made (FAIL_CONNECT).
- `refused-stream`: REFUSED_STREAM or GOAWAY past the stream (FAIL_REFUSED);
  the server never processed the request, so it is always safe to replay.
- `reset`: the upstream reset the stream or the connection dropped mid-call
  (FAIL_RESET), and per-try timeouts.
- `5xx`: any HTTP 500-599, and every way of getting no answer at all
  (connect failure, refused stream, reset, per-try timeout), as Envoy's `5xx`
  includes them.
- `gateway-error`: HTTP 502, 503, 504, and the same no-answer failures: the
  mesh itself answers those with 503 (no connection, reset) or 504 (per-try
  timeout), which are gateway errors.
- `retriable-4xx`: HTTP 409 (a conflict that a replay may not meet again).
- gRPC status names (`unavailable`, `deadline-exceeded`, ...): a gRPC answer
  with that status (FAIL_GRPC). `deadline-exceeded` also covers a per-try
  timeout, the local form of the same event.

A per-try timeout is thus retriable under any of `reset`, `5xx`,
`gateway-error` or `deadline-exceeded` (Envoy treats it as a gateway error).
gRPC names never match HTTP statuses and HTTP conditions never match gRPC
statuses: a gRPC answer is HTTP 200 whatever its status.
"""

from __future__ import annotations

import random
from typing import Any

from sidecar.transport.contract import (
    FAIL_CONNECT,
    FAIL_GRPC,
    FAIL_HTTP,
    FAIL_PER_TRY_TIMEOUT,
    FAIL_REFUSED,
    FAIL_RESET,
)
from skein.config.model import RETRY_ON_GRPC, RetryConfig

__all__ = ["RetryRule", "parse_pushback"]

_NO_ANSWER = (FAIL_CONNECT, FAIL_REFUSED, FAIL_RESET, FAIL_PER_TRY_TIMEOUT)

# Non-gRPC, non-HTTP failures each transport condition covers.
_TRANSPORT_COVERS: dict[str, tuple[int, ...]] = {
    "connect-failure": (FAIL_CONNECT,),
    "refused-stream": (FAIL_REFUSED,),
    "reset": (FAIL_RESET, FAIL_PER_TRY_TIMEOUT),
    "5xx": _NO_ANSWER,
    "gateway-error": _NO_ANSWER,
    "retriable-4xx": (),
    "deadline-exceeded": (FAIL_PER_TRY_TIMEOUT,),
}

# HTTP statuses each condition covers.
_HTTP_COVERS: dict[str, tuple[int, ...]] = {
    "5xx": tuple(range(500, 600)),
    "gateway-error": (502, 503, 504),
    "retriable-4xx": (409,),
}

# Past this many doublings the ceiling is max_interval for any sane config;
# clamping keeps 2**n from overflowing a float.
_MAX_DOUBLINGS = 64

# Pushback beyond this (about 31 years) is treated as this: it only has to
# exceed every deadline the transport could hold.
_MAX_PUSHBACK_MS = 10**12


class RetryRule:
    """A RetryConfig compiled for the hot path. Immutable once built.

    `max_attempts` counts the first attempt; `buffer_limit` is how many
    request bytes the transport keeps to replay (longer requests are not
    retried).
    """

    __slots__ = (
        "_grpc",
        "_http",
        "_transport",
        "base_interval",
        "buffer_limit",
        "max_attempts",
        "max_interval",
        "per_try_timeout",
        "retry_on",
    )

    def __init__(self, config: RetryConfig) -> None:
        grpc: set[int] = set()
        http: set[int] = set()
        transport: set[int] = set()
        for name in config.retry_on:
            known = False
            if name in RETRY_ON_GRPC:
                grpc.add(RETRY_ON_GRPC[name])
                known = True
            if name in _TRANSPORT_COVERS:
                transport.update(_TRANSPORT_COVERS[name])
                http.update(_HTTP_COVERS.get(name, ()))
                known = True
            if not known:
                choices = ", ".join(sorted([*_TRANSPORT_COVERS, *RETRY_ON_GRPC]))
                raise ValueError(
                    f"retry_on: unknown condition {name!r}; expected one of {choices} "
                    "(configuration is validated at apply time, so this is a bug)"
                )
        self._grpc = frozenset(grpc)
        self._http = frozenset(http)
        self._transport = frozenset(transport)
        self.retry_on = tuple(config.retry_on)
        self.max_attempts = config.max_attempts
        self.per_try_timeout = config.per_try_timeout
        self.buffer_limit = config.max_buffer_bytes
        self.base_interval = config.base_interval
        self.max_interval = config.max_interval

    def retriable(self, failure: int, code: int) -> bool:
        """Whether an attempt that failed with (`failure`, `code`) may be retried.

        `failure` is a FAIL_* kind and `code` what the contract says it means
        (grpc-status, :status, HTTP/2 error code, or 0). Says nothing about
        attempts left, budget or deadline: the caller checks those.
        """
        if failure == FAIL_GRPC:
            return code in self._grpc
        if failure == FAIL_HTTP:
            return code in self._http
        return failure in self._transport

    def backoff(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after `attempts` attempts (>= 1) before the next one.

        Full jitter: uniform in [0, min(max_interval, base_interval *
        2**(attempts - 1))], so callers that failed together do not return
        together.
        """
        doublings = attempts - 1
        if doublings < 0:
            doublings = 0
        elif doublings > _MAX_DOUBLINGS:
            doublings = _MAX_DOUBLINGS
        ceiling = self.base_interval * (1 << doublings)
        if ceiling > self.max_interval:
            ceiling = self.max_interval
        return rng.random() * ceiling

    def describe(self) -> str:
        """One line for fail-fast messages and logs."""
        timeout = "none" if self.per_try_timeout is None else f"{self.per_try_timeout:g} s"
        return (
            f"up to {self.max_attempts} attempts on {', '.join(self.retry_on) or 'nothing'}; "
            f"per-try timeout {timeout}"
        )

    def dump(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "retry_on": list(self.retry_on),
            "per_try_timeout": self.per_try_timeout,
            "base_interval": self.base_interval,
            "max_interval": self.max_interval,
            "buffer_limit": self.buffer_limit,
        }


def parse_pushback(value: bytes) -> float:
    """A `grpc-retry-pushback-ms` value in seconds, or -1.0 for "do not retry".

    gRFC A6: the server's pushback is a decimal count of milliseconds; when
    valid, the next attempt waits exactly that long (no jitter); a negative
    or unparseable value means the server asks the client not to retry.
    Only ASCII digits are accepted (no sign, spaces or underscores).
    """
    if not value or not value.isdigit():
        return -1.0
    if len(value) > 13:
        return _MAX_PUSHBACK_MS / 1000.0
    return min(int(value), _MAX_PUSHBACK_MS) / 1000.0
