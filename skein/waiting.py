"""What `skein wait --version V` waits for, and the polling loop (time injected).

A sidecar is synced to V when the configuration it ACKed is current for a
revision >= V (`SidecarStatus.synced_revision`). The control daemon moves
that forward without a push for sidecars a change does not touch, so only
the affected ones have to ACK. V comes from `skein apply`/`delete`, or
from `StatusResponse.revision` (the newest configuration revision).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from skein.v1 import operator_pb2

__all__ = ["describe_laggard", "laggards", "wait_for_version"]


def laggards(
    response: operator_pb2.StatusResponse, version: int
) -> list[operator_pb2.SidecarStatus]:
    """Connected sidecars whose configuration is not yet current for `version`."""
    return [s for s in response.sidecars if s.synced_revision < version]


def describe_laggard(s: operator_pb2.SidecarStatus) -> str:
    """`orders/orders-1 (synced 41, last NACK: ...)` for error messages."""
    nack = f", last NACK: {s.nack_error}" if s.nack_error else ""
    return f"{s.node.service}/{s.node.instance} (synced {s.synced_revision}{nack})"


def wait_for_version(
    status: Callable[[], operator_pb2.StatusResponse],
    version: int,
    timeout: float,
    *,
    now: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 0.2,
) -> list[operator_pb2.SidecarStatus]:
    """Poll until no sidecar lags `version`; returns the laggards left at the deadline."""
    deadline = now() + timeout
    while True:
        behind = laggards(status(), version)
        if not behind or now() >= deadline:
            return behind
        sleep(min(interval, max(0.0, deadline - now())))
