"""Validation of a TrafficPolicy's spec: the rules docs/policies.md lists.

Zero (or unset) numbers and unset messages mean "the default", so a rule
that relates two fields (base_interval <= max_interval, timeout <= interval)
compares the values that will apply, defaults included, and says so.
A field that only one algorithm or scope reads is rejected elsewhere rather
than silently ignored: an operator who switches algorithm learns at apply
time that the old knobs no longer do anything.
"""

from __future__ import annotations

import math

from skein.config.checks import (
    check_duration,
    check_enum,
    check_header,
    check_name,
    check_path_prefix,
    check_ratio,
    format_duration,
    seconds,
)
from skein.config.model import (
    RETRY_ON_GRPC,
    RETRY_ON_TRANSPORT,
    BreakerConfig,
    BudgetConfig,
    HealthCheckConfig,
    OutlierConfig,
    RetryConfig,
)
from skein.config.validate_auth import check_policy_auth
from skein.errors import ConfigError
from skein.v1 import resources_pb2

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_BUFFER_BYTES",
    "MAX_RATE_LIMIT_KEYS",
    "MAX_RING_SIZE",
    "MAX_THRESHOLD",
    "MAX_WEIGHT",
    "RETRY_ON",
    "check_policy_spec",
]

MAX_WEIGHT = 10_000
MAX_ATTEMPTS = 10
MAX_BUFFER_BYTES = 16 * 1024 * 1024
MAX_RING_SIZE = 1_048_576
MAX_THRESHOLD = 100
MAX_RATE_LIMIT_KEYS = 1_000_000
RETRY_ON = (*sorted(RETRY_ON_TRANSPORT), *sorted(RETRY_ON_GRPC))

_RETRY = RetryConfig()
_BUDGET = BudgetConfig()
_BREAKER = BreakerConfig()
_OUTLIER = OutlierConfig()
_HEALTH = HealthCheckConfig()

_HASHING = (resources_pb2.RING_HASH, resources_pb2.MAGLEV)
_KEYED_SCOPES = (
    resources_pb2.METHOD,
    resources_pb2.CLIENT_IP,
    resources_pb2.CLIENT_IDENTITY,
    resources_pb2.HEADER,
)


def _algorithm_name(value: int) -> str:
    if value == resources_pb2.LOAD_BALANCER_ALGORITHM_UNSPECIFIED:
        return "ROUND_ROBIN (the default)"
    return str(resources_pb2.LoadBalancerAlgorithm.Name(value))


def _set_duration(message: object, name: str, at: str) -> float | None:
    """The field's seconds when set (checked positive), else None."""
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    d = getattr(message, name)
    check_duration(d, f"{at}.{name}")
    return seconds(d)


def _at_most(value: int, limit: int, field: str) -> None:
    if value > limit:
        raise ConfigError(field, f"must be at most {limit}, got {value}")


def _finite_positive(value: float, field: str, default: float) -> None:
    """A float > 0, where 0 means the default."""
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ConfigError(
            field,
            f"must be a positive number (0 or unset for the default {default:g}), got {value!r}",
        )


def _check_hash(lb: resources_pb2.LoadBalancer, at: str) -> None:
    algorithm = _algorithm_name(lb.algorithm)
    if lb.algorithm not in _HASHING:
        if lb.HasField("hash"):
            raise ConfigError(
                f"{at}.hash",
                f"only RING_HASH and MAGLEV hash calls; the algorithm is {algorithm}: "
                "remove `hash` or choose a hashing algorithm",
            )
        return
    which = lb.hash.WhichOneof("source") if lb.HasField("hash") else None
    if which is None:
        raise ConfigError(
            f"{at}.hash",
            f"required for {algorithm}: set `header: NAME` or `source_ip: true`",
        )
    if which == "header":
        check_header(lb.hash.header, f"{at}.hash.header")
    elif not lb.hash.source_ip:
        raise ConfigError(
            f"{at}.hash.source_ip", "must be true when given; use `header` to hash a header"
        )


def _check_weights(lb: resources_pb2.LoadBalancer, at: str) -> None:
    if not lb.weights:
        return
    if lb.algorithm != resources_pb2.WEIGHTED_ROUND_ROBIN:
        raise ConfigError(
            f"{at}.weights",
            f"only WEIGHTED_ROUND_ROBIN reads weights; the algorithm is "
            f"{_algorithm_name(lb.algorithm)}: remove `weights` or set "
            "`algorithm: WEIGHTED_ROUND_ROBIN`",
        )
    for instance in sorted(lb.weights):
        field = f"{at}.weights[{instance!r}]"
        check_name(instance, field)
        _at_most(lb.weights[instance], MAX_WEIGHT, field)
    if not any(lb.weights.values()):
        raise ConfigError(
            f"{at}.weights",
            f"every listed weight is 0, which takes all {len(lb.weights)} listed "
            "instances out; give at least one a weight of 1-10000",
        )


def _check_load_balancer(lb: resources_pb2.LoadBalancer, at: str) -> None:
    check_enum(lb.algorithm, resources_pb2.LoadBalancerAlgorithm, f"{at}.algorithm")
    _check_hash(lb, at)
    _check_weights(lb, at)
    if _set_duration(lb, "decay", at) is not None and lb.algorithm != resources_pb2.PEAK_EWMA:
        raise ConfigError(
            f"{at}.decay",
            f"only PEAK_EWMA reads decay; the algorithm is {_algorithm_name(lb.algorithm)}",
        )
    if lb.ring_size:
        if lb.algorithm != resources_pb2.RING_HASH:
            raise ConfigError(
                f"{at}.ring_size",
                f"only RING_HASH reads ring_size; the algorithm is {_algorithm_name(lb.algorithm)}",
            )
        _at_most(lb.ring_size, MAX_RING_SIZE, f"{at}.ring_size")


def _check_retry(
    rp: resources_pb2.RetryPolicy, at: str, timeout: float | None, timeout_field: str
) -> None:
    """`timeout` is the request timeout that applies (`timeout_field` names it)."""
    if rp.max_attempts > MAX_ATTEMPTS:
        raise ConfigError(
            f"{at}.max_attempts",
            f"must be 1-{MAX_ATTEMPTS} (1 turns retries off; 0 or unset for the default "
            f"{_RETRY.max_attempts}), got {rp.max_attempts}",
        )
    seen: set[str] = set()
    for i, cond in enumerate(rp.retry_on):
        if cond not in RETRY_ON_TRANSPORT and cond not in RETRY_ON_GRPC:
            raise ConfigError(
                f"{at}.retry_on[{i}]",
                f"unknown condition {cond!r}; expected one of {', '.join(RETRY_ON)}",
            )
        if cond in seen:
            raise ConfigError(f"{at}.retry_on[{i}]", f"{cond!r} is listed twice")
        seen.add(cond)
    per_try = _set_duration(rp, "per_try_timeout", at)
    if per_try is not None and timeout is not None and per_try > timeout:
        raise ConfigError(
            f"{at}.per_try_timeout",
            f"must not exceed the request timeout {timeout_field} "
            f"({format_duration(timeout)}), got {format_duration(per_try)}",
        )
    base = _set_duration(rp, "base_interval", at) or _RETRY.base_interval
    top = _set_duration(rp, "max_interval", at)
    if top is not None and top < base:
        raise ConfigError(
            f"{at}.max_interval",
            f"must be at least base_interval ({format_duration(base)}), got {format_duration(top)}",
        )
    _at_most(rp.max_buffer_bytes, MAX_BUFFER_BYTES, f"{at}.max_buffer_bytes")


def _check_budget(b: resources_pb2.RetryBudget, at: str) -> None:
    check_ratio(b.ratio, f"{at}.ratio", default=_BUDGET.ratio)
    _set_duration(b, "ttl", at)


def _check_breaker(cb: resources_pb2.CircuitBreaker, at: str) -> None:
    check_ratio(
        cb.failure_rate_threshold,
        f"{at}.failure_rate_threshold",
        default=_BREAKER.failure_rate_threshold,
    )
    _set_duration(cb, "window", at)
    _set_duration(cb, "open_duration", at)
    calls = cb.half_open_max_calls or _BREAKER.half_open_max_calls
    successes = cb.success_threshold or _BREAKER.success_threshold
    if successes > calls:
        raise ConfigError(
            f"{at}.success_threshold",
            f"must not exceed half_open_max_calls ({calls}): a half-open breaker that "
            f"admits {calls} trial calls can never see {successes} successes",
        )


def _check_outlier(od: resources_pb2.OutlierDetection, at: str) -> None:
    _set_duration(od, "interval", at)
    base = _set_duration(od, "base_ejection_time", at) or _OUTLIER.base_ejection_time
    top = _set_duration(od, "max_ejection_time", at) or _OUTLIER.max_ejection_time
    if base > top:
        raise ConfigError(
            f"{at}.base_ejection_time",
            f"must not exceed max_ejection_time ({format_duration(top)}), "
            f"got {format_duration(base)}",
        )
    _at_most(od.max_ejection_percent, 100, f"{at}.max_ejection_percent")
    _finite_positive(
        od.success_rate_stdev_factor,
        f"{at}.success_rate_stdev_factor",
        _OUTLIER.success_rate_stdev_factor,
    )


def _check_health(hc: resources_pb2.HealthCheck, at: str) -> None:
    interval = _set_duration(hc, "interval", at) or _HEALTH.interval
    timeout = _set_duration(hc, "timeout", at) or _HEALTH.timeout
    if timeout > interval:
        raise ConfigError(
            f"{at}.timeout",
            f"must not exceed interval ({format_duration(interval)}), "
            f"got {format_duration(timeout)}",
        )
    _at_most(hc.healthy_threshold, MAX_THRESHOLD, f"{at}.healthy_threshold")
    _at_most(hc.unhealthy_threshold, MAX_THRESHOLD, f"{at}.unhealthy_threshold")
    if hc.http_path:
        check_path_prefix(hc.http_path, f"{at}.http_path")
        if hc.grpc_service:
            raise ConfigError(
                f"{at}.grpc_service",
                "only gRPC checks send a service name, and `http_path` makes this an HTTP "
                "check: set one of them",
            )
    if any(c.isspace() for c in hc.grpc_service):
        raise ConfigError(
            f"{at}.grpc_service", f"must not contain whitespace, got {hc.grpc_service!r}"
        )


def _check_rate_limit(rl: resources_pb2.RateLimit, at: str) -> None:
    check_name(rl.name, f"{at}.name")
    check_enum(rl.algorithm, resources_pb2.RateLimitAlgorithm, f"{at}.algorithm")
    check_enum(rl.scope, resources_pb2.RateLimitScope, f"{at}.scope")
    check_enum(rl.direction, resources_pb2.Direction, f"{at}.direction")
    if rl.requests == 0:
        raise ConfigError(f"{at}.requests", "required: calls allowed per period, got 0")
    if not rl.HasField("period"):
        raise ConfigError(f"{at}.period", "required: the period `requests` are allowed in")
    check_duration(rl.period, f"{at}.period")
    if rl.burst and rl.burst < rl.requests:
        raise ConfigError(
            f"{at}.burst",
            f"a burst below the rate: must be at least requests ({rl.requests}) or 0 for "
            f"requests, got {rl.burst}",
        )
    if rl.prefix:
        check_path_prefix(rl.prefix, f"{at}.prefix")
    scope = rl.scope
    if scope == resources_pb2.HEADER:
        check_header(rl.header, f"{at}.header")
    elif scope == resources_pb2.CLIENT_IDENTITY:
        if rl.header:
            check_header(rl.header, f"{at}.header")
    elif rl.header:
        raise ConfigError(
            f"{at}.header",
            "only the HEADER and CLIENT_IDENTITY scopes read a header; the scope is "
            f"{resources_pb2.RateLimitScope.Name(scope) if scope else 'SERVICE (the default)'}",
        )
    if rl.max_keys:
        if scope not in _KEYED_SCOPES:
            raise ConfigError(
                f"{at}.max_keys",
                "only keyed scopes (METHOD, CLIENT_IP, CLIENT_IDENTITY, HEADER) track keys; "
                "a SERVICE limit is one counter",
            )
        _at_most(rl.max_keys, MAX_RATE_LIMIT_KEYS, f"{at}.max_keys")


def _check_rate_limits(spec: resources_pb2.TrafficPolicySpec) -> None:
    names: dict[str, int] = {}
    for i, rl in enumerate(spec.rate_limits):
        at = f"spec.rate_limits[{i}]"
        _check_rate_limit(rl, at)
        if rl.name in names:
            raise ConfigError(
                f"{at}.name",
                f"{rl.name!r} is already the name of spec.rate_limits[{names[rl.name]}]; "
                "names must be unique within the policy",
            )
        names[rl.name] = i


def _check_methods(spec: resources_pb2.TrafficPolicySpec, timeout: float | None) -> None:
    prefixes: dict[str, int] = {}
    for i, m in enumerate(spec.methods):
        at = f"spec.methods[{i}]"
        if not m.prefix:
            raise ConfigError(
                f"{at}.prefix",
                "required: a gRPC method '/pkg.Service/Method', a service '/pkg.Service/' "
                "or an HTTP path",
            )
        check_path_prefix(m.prefix, f"{at}.prefix")
        if m.prefix in prefixes:
            raise ConfigError(
                f"{at}.prefix",
                f"{m.prefix!r} is already the prefix of spec.methods[{prefixes[m.prefix]}]",
            )
        prefixes[m.prefix] = i
        own = _set_duration(m, "timeout", at)
        if m.HasField("retry"):
            applies, name = (own, f"{at}.timeout") if own is not None else (timeout, "spec.timeout")
            _check_retry(m.retry, f"{at}.retry", applies, name)


def check_policy_spec(spec: resources_pb2.TrafficPolicySpec) -> None:
    """Raise ConfigError for the first rule the spec breaks, in field order."""
    check_name(spec.service, "spec.service")
    _check_load_balancer(spec.load_balancer, "spec.load_balancer")
    timeout = _set_duration(spec, "timeout", "spec")
    _check_retry(spec.retry, "spec.retry", timeout, "spec.timeout")
    _check_budget(spec.retry_budget, "spec.retry_budget")
    _check_breaker(spec.circuit_breaker, "spec.circuit_breaker")
    _check_outlier(spec.outlier_detection, "spec.outlier_detection")
    _check_health(spec.health_check, "spec.health_check")
    _check_rate_limits(spec)
    _check_methods(spec, timeout)
    check_policy_auth(spec)
