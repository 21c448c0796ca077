"""The validated, immutable configuration a sidecar runs.

Built only by `skein.config.parse_snapshot` (which validates every resource
with the same code the control daemon runs at apply time); never mutated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = ["Algorithm", "ClusterConfig", "EndpointConfig", "Protocol", "SidecarConfig"]


class Protocol(Enum):
    GRPC = "GRPC"
    HTTP = "HTTP"


class Algorithm(Enum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    instance: str
    host: str
    port: int
    weight: int = 1
    healthy: bool = True

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """One upstream service as callers see it."""

    name: str
    protocol: Protocol = Protocol.GRPC
    algorithm: Algorithm = Algorithm.ROUND_ROBIN
    timeout: float | None = None  # seconds; None = only the caller's deadline
    endpoints: tuple[EndpointConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """Everything one sidecar applies from one DiscoveryResponse."""

    version: str
    clusters: dict[str, ClusterConfig] = field(default_factory=dict)
    local_timeout: float | None = None  # own service's policy timeout (inbound)
