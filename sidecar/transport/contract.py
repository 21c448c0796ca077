"""The seam between the data plane (transport) and routing/balancing.

A listener asks its Dispatcher, once per downstream stream, where the stream
goes. The dispatcher is synchronous and sans-IO (no awaiting on the hot path).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Dispatcher", "NoRoute", "Pick"]


@dataclass(slots=True)
class Pick:
    """Where one stream goes.

    `done(ok)` is called exactly once when the stream ends (ok: gRPC status 0,
    or HTTP status below 500, and no reset); balancers use it to track load.
    `timeout` is the policy timeout in seconds (None: caller's deadline only);
    the transport enforces min(policy, caller deadline) and rewrites
    `grpc-timeout` to the time that remains.
    """

    cluster: str
    address: tuple[str, int]
    timeout: float | None = None
    done: Callable[[bool], None] | None = None


class NoRoute(Exception):
    """No endpoint to offer; the transport answers at once without an upstream.

    gRPC callers get `grpc_status` (UNAVAILABLE = 14) with `message`; HTTP
    callers get `http_status` with the message as body.
    """

    def __init__(self, message: str, grpc_status: int = 14, http_status: int = 503) -> None:
        super().__init__(message)
        self.message = message
        self.grpc_status = grpc_status
        self.http_status = http_status


class Dispatcher(Protocol):
    def pick(self, authority: str, path: str) -> Pick:
        """Choose the upstream for a stream, or raise NoRoute."""
        ...
