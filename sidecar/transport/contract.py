"""The seam between the data plane (transport) and routing/policy.

A listener asks its Dispatcher, once per downstream stream, where the stream
goes. The dispatcher is synchronous and sans-IO (no awaiting on the hot path).
When an attempt fails, the transport asks the pick's Retrier whether and when
to try again, and for a new pick; it never decides policy itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ENDPOINT_FAILURE_GRPC",
    "FAIL_CONNECT",
    "FAIL_GRPC",
    "FAIL_HTTP",
    "FAIL_PER_TRY_TIMEOUT",
    "FAIL_REFUSED",
    "FAIL_RESET",
    "Dispatcher",
    "NoRoute",
    "Pick",
    "PoolLimits",
    "Retrier",
]

# How an attempt failed (`Retrier.decide(failure=...)`), with what `code` means.
FAIL_GRPC = 1  # trailers-only gRPC answer; code = grpc-status
FAIL_HTTP = 2  # HTTP response head; code = :status
FAIL_RESET = 3  # upstream RST_STREAM, or connection lost mid-stream; code = HTTP/2 error code
FAIL_CONNECT = 4  # no connection (refused, timed out, no SETTINGS); code = 0
FAIL_REFUSED = 5  # REFUSED_STREAM, or GOAWAY past the stream: never processed; code = 0
FAIL_PER_TRY_TIMEOUT = 6  # the attempt's own deadline passed; code = 0

# gRPC statuses that count against the endpoint (breaker, outlier detection):
# UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS. Application
# answers such as NOT_FOUND are the endpoint working.
ENDPOINT_FAILURE_GRPC = frozenset({2, 4, 13, 14, 15})


class PoolLimits:
    """Envoy-style connection limits of one cluster, enforced by the pool.

    The pool counts `connections` it holds open to the cluster's endpoints and
    `pending` exchanges waiting for a connection or a stream slot; a call that
    would exceed either maximum fails fast (UNAVAILABLE / 503) naming the limit.
    """

    __slots__ = ("cluster", "connections", "max_connections", "max_pending", "overflows", "pending")

    def __init__(self, cluster: str, max_connections: int, max_pending: int) -> None:
        self.cluster = cluster
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.connections = 0
        self.pending = 0
        self.overflows = 0  # calls refused by either limit


@dataclass(slots=True)
class Pick:
    """Where one attempt goes. Prebuilt and shared: never mutate one.

    `done(ok, now, elapsed)` is called exactly once per attempt when it ends:
    `ok` is False when the endpoint failed it (a gRPC status in
    ENDPOINT_FAILURE_GRPC, HTTP 5xx, reset, connect failure, per-try timeout)
    and True otherwise (including a caller's cancel); `now` is the loop time,
    `elapsed` the attempt's seconds. Balancers, breakers and outlier detection
    learn from it.
    `timeout` is the policy timeout in seconds (None: caller's deadline only);
    the transport enforces min(policy, caller deadline) over all attempts and
    rewrites `grpc-timeout` to the time that remains.
    `retry`: asked after a failed attempt; None means never retry.
    `delay`: start the call after this many seconds (rate-limit shaping).
    `limits`: the cluster's connection limits (None: unlimited).
    `headers`: a header block to send instead of the one received (inbound
    auth forwarding verified claims); None: the received block.
    """

    cluster: str
    address: tuple[str, int]
    timeout: float | None = None
    done: Callable[[bool, float, float], None] | None = None
    retry: Retrier | None = None
    delay: float = 0.0
    limits: PoolLimits | None = None
    headers: Sequence[tuple[bytes, bytes]] | None = None


class Retrier(Protocol):
    """One route's retry policy, bound to its cluster (budget, breaker, balancer).

    Shared by every call on the route: it holds no per-call state. The
    transport keeps the attempt count and the replay buffer.
    """

    max_attempts: int  # total attempts, the first included
    per_try_timeout: float | None
    buffer_limit: int  # request bytes kept for replay; longer requests are not retried

    def decide(self, attempts: int, failure: int, code: int, pushback: float | None) -> float | str:
        """After `attempts` attempts, the last failing with (`failure`, `code`):
        the delay in seconds before the next attempt, or why there is none.

        `pushback` is the server's `grpc-retry-pushback-ms` in seconds (None if
        absent; negative when the server said not to retry). A float answer
        has already taken a retry from the budget and the concurrent-retry
        limit: the transport must call `retry_done()` when that attempt ends.
        """
        ...

    def repick(self, previous: Pick) -> Pick:
        """The next attempt's endpoint, avoiding `previous` when another exists.

        Raises NoRoute (with the reason) when there is none to offer.
        """
        ...

    def retry_done(self) -> None:
        """A retried attempt ended (releases the concurrent-retry slot)."""
        ...


class NoRoute(Exception):
    """The mesh answers the call itself, at once, without an upstream.

    gRPC callers get `grpc_status` (UNAVAILABLE = 14 by default) with
    `message`; HTTP callers get `http_status` with the message as body.
    `retry_after` > 0 (rate limits) adds `retry-after` (whole seconds,
    rounded up) and, for gRPC, `grpc-retry-pushback-ms`.
    """

    def __init__(
        self,
        message: str,
        grpc_status: int = 14,
        http_status: int = 503,
        retry_after: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.grpc_status = grpc_status
        self.http_status = http_status
        self.retry_after = retry_after


Header = tuple[bytes, bytes]


class Dispatcher(Protocol):
    def pick(self, authority: str, path: str, headers: Sequence[Header], peer_ip: str) -> Pick:
        """Choose the first attempt's upstream for a stream, or raise NoRoute.

        `headers` is the request's header block as received (HTTP/2 names);
        `peer_ip` the downstream connection's remote IP ("" if unknown).
        """
        ...
