"""TrafficPolicySpec (protobuf) → the frozen policy model, defaults filled in.

Proto3 cannot tell an unset scalar from zero, so zero means "the default"
for every number and duration here (a zero ratio, a zero ring size, a
`0s` interval). The defaults live in `skein.config.model`; this module only
decides which one applies. It expects a validated spec: validation rejects
the values (negative durations, unknown enum numbers, a ring hash without
`hash`) that would have no meaning here.

Invariants:
- an unset message (`retry`, `retry_budget`, ...) gives the same model as a
  set one whose fields are all zero;
- header names are lowercase, as HTTP/2 carries them (validation rejects
  any other spelling, so nothing is rewritten here);
- a RateLimit's burst is at least its requests; a keyed CLIENT_IDENTITY
  limit always has a header to read.
"""

from __future__ import annotations

from google.protobuf import duration_pb2  # type: ignore[import-untyped]

from skein.config.checks import seconds
from skein.config.model import (
    DEFAULT_RETRY_ON,
    Algorithm,
    BreakerConfig,
    BudgetConfig,
    Direction,
    HashConfig,
    HealthCheckConfig,
    LoadBalancerConfig,
    MethodConfig,
    OutlierConfig,
    RateLimitAlgorithm,
    RateLimitConfig,
    RateLimitScope,
    RetryConfig,
)
from skein.v1 import resources_pb2

__all__ = [
    "CLIENT_IDENTITY_HEADER",
    "breaker_config",
    "budget_config",
    "endpoint_weight",
    "health_check_config",
    "load_balancer_config",
    "method_configs",
    "outlier_config",
    "rate_limit_configs",
    "retry_config",
    "seconds",
    "timeout_of",
]

# Until mTLS identities exist, a CLIENT_IDENTITY limit keys on this header.
CLIENT_IDENTITY_HEADER = "x-skein-client"

ALGORITHMS: dict[int, Algorithm] = {
    resources_pb2.LOAD_BALANCER_ALGORITHM_UNSPECIFIED: Algorithm.ROUND_ROBIN,
    resources_pb2.ROUND_ROBIN: Algorithm.ROUND_ROBIN,
    resources_pb2.LEAST_REQUEST: Algorithm.LEAST_REQUEST,
    resources_pb2.WEIGHTED_ROUND_ROBIN: Algorithm.WEIGHTED_ROUND_ROBIN,
    resources_pb2.RING_HASH: Algorithm.RING_HASH,
    resources_pb2.MAGLEV: Algorithm.MAGLEV,
    resources_pb2.PEAK_EWMA: Algorithm.PEAK_EWMA,
}
RATE_LIMIT_ALGORITHMS: dict[int, RateLimitAlgorithm] = {
    resources_pb2.RATE_LIMIT_ALGORITHM_UNSPECIFIED: RateLimitAlgorithm.TOKEN_BUCKET,
    resources_pb2.TOKEN_BUCKET: RateLimitAlgorithm.TOKEN_BUCKET,
    resources_pb2.LEAKY_BUCKET: RateLimitAlgorithm.LEAKY_BUCKET,
    resources_pb2.FIXED_WINDOW: RateLimitAlgorithm.FIXED_WINDOW,
    resources_pb2.SLIDING_WINDOW: RateLimitAlgorithm.SLIDING_WINDOW,
}
RATE_LIMIT_SCOPES: dict[int, RateLimitScope] = {
    resources_pb2.RATE_LIMIT_SCOPE_UNSPECIFIED: RateLimitScope.SERVICE,
    resources_pb2.SERVICE: RateLimitScope.SERVICE,
    resources_pb2.METHOD: RateLimitScope.METHOD,
    resources_pb2.CLIENT_IP: RateLimitScope.CLIENT_IP,
    resources_pb2.CLIENT_IDENTITY: RateLimitScope.CLIENT_IDENTITY,
    resources_pb2.HEADER: RateLimitScope.HEADER,
}
DIRECTIONS: dict[int, Direction] = {
    resources_pb2.DIRECTION_UNSPECIFIED: Direction.INBOUND,
    resources_pb2.INBOUND: Direction.INBOUND,
    resources_pb2.OUTBOUND: Direction.OUTBOUND,
}

_DEFAULT_LB = LoadBalancerConfig()
_DEFAULT_RETRY = RetryConfig()
_DEFAULT_BUDGET = BudgetConfig()
_DEFAULT_BREAKER = BreakerConfig()
_DEFAULT_OUTLIER = OutlierConfig()
_DEFAULT_HEALTH = HealthCheckConfig()
_DEFAULT_MAX_KEYS = RateLimitConfig("", 1, 1.0, 1).max_keys


def _or(d: duration_pb2.Duration, default: float) -> float:
    """A duration, or `default` when it is zero (unset)."""
    value = seconds(d)
    return value if value else default


def timeout_of(message: object, field: str = "timeout") -> float | None:
    """An optional Duration field: None when unset."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    return seconds(getattr(message, field))


def load_balancer_config(lb: resources_pb2.LoadBalancer) -> LoadBalancerConfig:
    algorithm = ALGORITHMS[lb.algorithm]
    hash_config = None
    if lb.HasField("hash"):
        which = lb.hash.WhichOneof("source")
        if which == "header":
            hash_config = HashConfig(header=lb.hash.header)
        elif which == "source_ip":
            hash_config = HashConfig(source_ip=True)
    return LoadBalancerConfig(
        algorithm=algorithm,
        hash=hash_config,
        decay=_or(lb.decay, _DEFAULT_LB.decay),
        ring_size=lb.ring_size or _DEFAULT_LB.ring_size,
    )


def endpoint_weight(lb: resources_pb2.LoadBalancer, instance: str, registered: int) -> int:
    """The policy's weight for the instance (0 allowed), else its registration weight, else 1."""
    if instance in lb.weights:
        return int(lb.weights[instance])
    return registered or 1


def retry_config(rp: resources_pb2.RetryPolicy) -> RetryConfig:
    """A RetryPolicy with defaults; max_interval defaults to 10 x base_interval."""
    base = _or(rp.base_interval, _DEFAULT_RETRY.base_interval)
    return RetryConfig(
        max_attempts=rp.max_attempts or _DEFAULT_RETRY.max_attempts,
        retry_on=tuple(rp.retry_on) if rp.retry_on else DEFAULT_RETRY_ON,
        per_try_timeout=timeout_of(rp, "per_try_timeout"),
        base_interval=base,
        max_interval=_or(rp.max_interval, 10 * base),
        max_buffer_bytes=rp.max_buffer_bytes or _DEFAULT_RETRY.max_buffer_bytes,
    )


def budget_config(b: resources_pb2.RetryBudget) -> BudgetConfig:
    d = _DEFAULT_BUDGET
    return BudgetConfig(
        enabled=not b.disabled,
        ratio=b.ratio or d.ratio,
        min_retries_per_second=b.min_retries_per_second or d.min_retries_per_second,
        ttl=_or(b.ttl, d.ttl),
    )


def breaker_config(cb: resources_pb2.CircuitBreaker) -> BreakerConfig:
    d = _DEFAULT_BREAKER
    return BreakerConfig(
        enabled=not cb.disabled,
        failure_rate_threshold=cb.failure_rate_threshold or d.failure_rate_threshold,
        window=_or(cb.window, d.window),
        minimum_requests=cb.minimum_requests or d.minimum_requests,
        open_duration=_or(cb.open_duration, d.open_duration),
        half_open_max_calls=cb.half_open_max_calls or d.half_open_max_calls,
        success_threshold=cb.success_threshold or d.success_threshold,
        max_connections=cb.max_connections or d.max_connections,
        max_pending_requests=cb.max_pending_requests or d.max_pending_requests,
        max_requests=cb.max_requests or d.max_requests,
        max_retries=cb.max_retries or d.max_retries,
    )


def outlier_config(od: resources_pb2.OutlierDetection) -> OutlierConfig:
    d = _DEFAULT_OUTLIER
    return OutlierConfig(
        enabled=not od.disabled,
        consecutive_failures=od.consecutive_failures or d.consecutive_failures,
        interval=_or(od.interval, d.interval),
        base_ejection_time=_or(od.base_ejection_time, d.base_ejection_time),
        max_ejection_time=_or(od.max_ejection_time, d.max_ejection_time),
        max_ejection_percent=od.max_ejection_percent or d.max_ejection_percent,
        success_rate_minimum_hosts=od.success_rate_minimum_hosts or d.success_rate_minimum_hosts,
        success_rate_request_volume=(
            od.success_rate_request_volume or d.success_rate_request_volume
        ),
        success_rate_stdev_factor=od.success_rate_stdev_factor or d.success_rate_stdev_factor,
    )


def health_check_config(hc: resources_pb2.HealthCheck) -> HealthCheckConfig:
    d = _DEFAULT_HEALTH
    return HealthCheckConfig(
        interval=_or(hc.interval, d.interval),
        timeout=_or(hc.timeout, d.timeout),
        healthy_threshold=hc.healthy_threshold or d.healthy_threshold,
        unhealthy_threshold=hc.unhealthy_threshold or d.unhealthy_threshold,
        http_path=hc.http_path,
        grpc_service=hc.grpc_service,
    )


def _rate_limit(rl: resources_pb2.RateLimit) -> RateLimitConfig:
    scope = RATE_LIMIT_SCOPES[rl.scope]
    header = rl.header
    if scope is RateLimitScope.CLIENT_IDENTITY and not header:
        header = CLIENT_IDENTITY_HEADER
    return RateLimitConfig(
        name=rl.name,
        requests=rl.requests,
        period=seconds(rl.period),
        burst=max(rl.burst, rl.requests),
        algorithm=RATE_LIMIT_ALGORITHMS[rl.algorithm],
        scope=scope,
        prefix=rl.prefix,
        header=header,
        direction=DIRECTIONS[rl.direction],
        max_keys=rl.max_keys or _DEFAULT_MAX_KEYS,
    )


def rate_limit_configs(
    spec: resources_pb2.TrafficPolicySpec, direction: Direction
) -> tuple[RateLimitConfig, ...]:
    """The policy's rate limits enforced in `direction` (unspecified = INBOUND), in order."""
    built = (_rate_limit(rl) for rl in spec.rate_limits)
    return tuple(rl for rl in built if rl.direction is direction)


def method_configs(spec: resources_pb2.TrafficPolicySpec) -> tuple[MethodConfig, ...]:
    """Per-method overrides, in the policy's order (the longest prefix wins at lookup).

    A method's `retry` replaces the service's retry policy whole (as an Envoy
    route's retry policy replaces the virtual host's); its unset fields take
    the defaults, not the service's values.
    """
    return tuple(
        MethodConfig(
            prefix=m.prefix,
            timeout=timeout_of(m),
            retry=retry_config(m.retry) if m.HasField("retry") else None,
        )
        for m in spec.methods
    )
