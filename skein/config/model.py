"""The validated, immutable configuration a sidecar runs.

Built only by `skein.config.parse_snapshot` (which validates every resource
with the same code the control daemon runs at apply time); never mutated.
Every field has the default an operator gets when the policy leaves it
unset, so policy code never has to ask "was this set?". Durations are
float seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "Algorithm",
    "ApiKeyAuthConfig",
    "AuthzAction",
    "AuthzPolicyConfig",
    "AuthzRuleConfig",
    "BreakerConfig",
    "BudgetConfig",
    "ClusterConfig",
    "Direction",
    "EndpointConfig",
    "HashConfig",
    "HealthCheckConfig",
    "JwtRuleConfig",
    "LoadBalancerConfig",
    "LocalConfig",
    "MethodConfig",
    "MtlsMode",
    "OutlierConfig",
    "Protocol",
    "RateLimitAlgorithm",
    "RateLimitConfig",
    "RateLimitScope",
    "RetryConfig",
    "SidecarConfig",
]


class Protocol(Enum):
    GRPC = "GRPC"
    HTTP = "HTTP"


class Algorithm(Enum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"
    WEIGHTED_ROUND_ROBIN = "WEIGHTED_ROUND_ROBIN"
    RING_HASH = "RING_HASH"
    MAGLEV = "MAGLEV"
    PEAK_EWMA = "PEAK_EWMA"


class RateLimitAlgorithm(Enum):
    TOKEN_BUCKET = "TOKEN_BUCKET"
    LEAKY_BUCKET = "LEAKY_BUCKET"
    FIXED_WINDOW = "FIXED_WINDOW"
    SLIDING_WINDOW = "SLIDING_WINDOW"


class RateLimitScope(Enum):
    SERVICE = "SERVICE"
    METHOD = "METHOD"
    CLIENT_IP = "CLIENT_IP"
    CLIENT_IDENTITY = "CLIENT_IDENTITY"
    HEADER = "HEADER"


class Direction(Enum):
    INBOUND = "INBOUND"
    OUTBOUND = "OUTBOUND"


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    instance: str
    host: str
    port: int
    weight: int = 1  # effective weight: policy override, else registration, else 1
    healthy: bool = True
    health_reason: str = ""

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


@dataclass(frozen=True, slots=True)
class HashConfig:
    """What a hashing balancer hashes: a header's value, or the caller's IP."""

    header: str = ""  # lowercase header name; empty when source_ip
    source_ip: bool = False


@dataclass(frozen=True, slots=True)
class LoadBalancerConfig:
    algorithm: Algorithm = Algorithm.ROUND_ROBIN
    hash: HashConfig | None = None  # set for RING_HASH and MAGLEV
    decay: float = 10.0  # PEAK_EWMA
    ring_size: int = 1024  # RING_HASH minimum entries


# Retry conditions, as RetryPolicy.retry_on spells them.
RETRY_ON_TRANSPORT = frozenset(
    {"connect-failure", "refused-stream", "reset", "5xx", "gateway-error", "retriable-4xx"}
)
RETRY_ON_GRPC = {
    "cancelled": 1,
    "unknown": 2,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "aborted": 10,
    "internal": 13,
    "unavailable": 14,
    "data-loss": 15,
}
DEFAULT_RETRY_ON = ("connect-failure", "refused-stream", "unavailable")


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: int = 3
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON
    per_try_timeout: float | None = None
    base_interval: float = 0.025
    max_interval: float = 0.25
    max_buffer_bytes: int = 65536


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    enabled: bool = True
    ratio: float = 0.2
    min_retries_per_second: int = 10
    ttl: float = 10.0


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    enabled: bool = True
    failure_rate_threshold: float = 0.5
    window: float = 10.0
    minimum_requests: int = 20
    open_duration: float = 60.0
    half_open_max_calls: int = 10
    success_threshold: int = 10
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 1024


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    enabled: bool = True
    consecutive_failures: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 50
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: float = 1.9


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    interval: float = 10.0
    timeout: float = 3.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 3
    http_path: str = ""  # set: HTTP GET check; empty: grpc.health.v1 Check
    grpc_service: str = ""


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    name: str
    requests: int
    period: float
    burst: int  # >= requests (defaulted to requests)
    algorithm: RateLimitAlgorithm = RateLimitAlgorithm.TOKEN_BUCKET
    scope: RateLimitScope = RateLimitScope.SERVICE
    prefix: str = ""
    header: str = ""  # lowercase; CLIENT_IDENTITY defaults it to x-skein-client
    direction: Direction = Direction.INBOUND
    max_keys: int = 10000


@dataclass(frozen=True, slots=True)
class MethodConfig:
    """Overrides for calls whose path starts with `prefix` (longest prefix wins)."""

    prefix: str
    timeout: float | None = None  # None: the cluster's timeout
    retry: RetryConfig | None = None  # None: the cluster's retry policy


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """One upstream service as callers see it."""

    name: str
    protocol: Protocol = Protocol.GRPC
    load_balancer: LoadBalancerConfig = LoadBalancerConfig()
    timeout: float | None = None  # seconds; None = only the caller's deadline
    endpoints: tuple[EndpointConfig, ...] = ()
    retry: RetryConfig = RetryConfig()
    budget: BudgetConfig = BudgetConfig()
    breaker: BreakerConfig = BreakerConfig()
    outlier: OutlierConfig = OutlierConfig()
    rate_limits: tuple[RateLimitConfig, ...] = ()  # OUTBOUND ones only
    methods: tuple[MethodConfig, ...] = ()

    @property
    def algorithm(self) -> Algorithm:
        return self.load_balancer.algorithm


class MtlsMode(Enum):
    PERMISSIVE = "PERMISSIVE"  # mesh TLS and plaintext callers both accepted
    STRICT = "STRICT"  # only callers presenting a mesh certificate


class AuthzAction(Enum):
    ALLOW = "ALLOW"
    DENY = "DENY"


@dataclass(frozen=True, slots=True)
class JwtRuleConfig:
    """One accepted JWT issuer; exactly one of jwks_file / jwks_uri is set."""

    issuer: str
    audiences: tuple[str, ...] = ()  # empty: any audience
    jwks_file: str = ""
    jwks_uri: str = ""
    jwks_refresh: float = 300.0
    clock_skew: float = 60.0
    header: str = "authorization"  # lowercase; `authorization` carries "Bearer <jwt>"
    forward_claims: tuple[tuple[str, str], ...] = ()  # (claim, header), sorted
    required: bool = False


@dataclass(frozen=True, slots=True)
class ApiKeyAuthConfig:
    """Where callers put an API key, and the keys of the own service (revoked left out)."""

    header: str = "x-api-key"
    required: bool = False
    keys: tuple[tuple[str, str], ...] = ()  # (sha256 hex digest, key name), sorted


@dataclass(frozen=True, slots=True)
class AuthzRuleConfig:
    """Fields AND, values OR; an empty field matches anything."""

    sources: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    http_methods: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    claims: tuple[tuple[str, str], ...] = ()
    api_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthzPolicyConfig:
    name: str
    action: AuthzAction = AuthzAction.ALLOW
    rules: tuple[AuthzRuleConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class LocalConfig:
    """The sidecar's own service: what its inbound side and health checker apply."""

    timeout: float | None = None
    rate_limits: tuple[RateLimitConfig, ...] = ()  # INBOUND ones only
    methods: tuple[MethodConfig, ...] = ()
    health_check: HealthCheckConfig | None = None  # None: no active checks
    mtls: MtlsMode = MtlsMode.PERMISSIVE
    jwt: tuple[JwtRuleConfig, ...] = ()
    api_keys: ApiKeyAuthConfig | None = None  # None: API keys are not read
    authorization: tuple[AuthzPolicyConfig, ...] = ()  # sorted by name

    @property
    def has_auth(self) -> bool:
        """Whether the inbound side has any per-call authentication or authorization work."""
        return bool(self.jwt or self.api_keys is not None or self.authorization)


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """Everything one sidecar applies from one DiscoveryResponse."""

    version: str
    clusters: dict[str, ClusterConfig] = field(default_factory=dict)
    local: LocalConfig = LocalConfig()

    @property
    def local_timeout(self) -> float | None:
        return self.local.timeout
