"""TrafficPolicy rules: each rejected spec names its field and says what was wrong."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]

from skein.config import make_resource, validate_resource
from skein.errors import ConfigError
from skein.v1 import resources_pb2

RL = {"name": "per-hour", "requests": 100, "period": "3600s"}


def policy(spec: dict[str, Any]) -> resources_pb2.Resource:
    tp = resources_pb2.TrafficPolicy()
    json_format.ParseDict(
        {"metadata": {"name": "orders"}, "spec": {"service": "orders", **spec}}, tp
    )
    return make_resource("TrafficPolicy", tp)


def rl(**fields: Any) -> dict[str, Any]:
    return {**RL, **fields}


INVALID: list[tuple[dict[str, Any], str, str]] = [
    # durations, everywhere one is given
    ({"timeout": "-1s"}, "spec.timeout", "must be positive, got -1s"),
    ({"timeout": "0s"}, "spec.timeout", "must be positive, got 0s; leave it unset"),
    ({"retry": {"per_try_timeout": "-0.5s"}}, "spec.retry.per_try_timeout", "got -0.5s"),
    ({"retry": {"base_interval": "0s"}}, "spec.retry.base_interval", "must be positive"),
    ({"retry": {"max_interval": "-2s"}}, "spec.retry.max_interval", "must be positive"),
    ({"retry_budget": {"ttl": "-10s"}}, "spec.retry_budget.ttl", "must be positive"),
    ({"circuit_breaker": {"window": "-1s"}}, "spec.circuit_breaker.window", "positive"),
    (
        {"circuit_breaker": {"open_duration": "0s"}},
        "spec.circuit_breaker.open_duration",
        "positive",
    ),
    ({"outlier_detection": {"interval": "-1s"}}, "spec.outlier_detection.interval", "positive"),
    (
        {"outlier_detection": {"base_ejection_time": "-1s"}},
        "spec.outlier_detection.base_ejection_time",
        "positive",
    ),
    (
        {"outlier_detection": {"max_ejection_time": "-1s"}},
        "spec.outlier_detection.max_ejection_time",
        "positive",
    ),
    ({"health_check": {"interval": "-5s"}}, "spec.health_check.interval", "positive"),
    ({"health_check": {"timeout": "0s"}}, "spec.health_check.timeout", "positive"),
    ({"rate_limits": [rl(period="-1s")]}, "spec.rate_limits[0].period", "must be positive"),
    ({"methods": [{"prefix": "/a", "timeout": "-3s"}]}, "spec.methods[0].timeout", "got -3s"),
    (
        {"load_balancer": {"algorithm": "PEAK_EWMA", "decay": "0s"}},
        "spec.load_balancer.decay",
        "positive",
    ),
    # unknown enum values
    ({"load_balancer": {"algorithm": 9}}, "spec.load_balancer.algorithm", "unknown value 9"),
    ({"rate_limits": [rl(algorithm=7)]}, "spec.rate_limits[0].algorithm", "TOKEN_BUCKET"),
    ({"rate_limits": [rl(scope=8)]}, "spec.rate_limits[0].scope", "CLIENT_IDENTITY, HEADER"),
    ({"rate_limits": [rl(direction=3)]}, "spec.rate_limits[0].direction", "INBOUND, OUTBOUND"),
    # load balancer
    (
        {"load_balancer": {"algorithm": "RING_HASH"}},
        "spec.load_balancer.hash",
        "required for RING_HASH",
    ),
    ({"load_balancer": {"algorithm": "MAGLEV", "hash": {}}}, "spec.load_balancer.hash", "MAGLEV"),
    (
        {"load_balancer": {"algorithm": "MAGLEV", "hash": {"source_ip": False}}},
        "spec.load_balancer.hash.source_ip",
        "must be true",
    ),
    (
        {"load_balancer": {"algorithm": "RING_HASH", "hash": {"header": "X-User"}}},
        "spec.load_balancer.hash.header",
        "must be lowercase",
    ),
    (
        {"load_balancer": {"algorithm": "RING_HASH", "hash": {"header": "x user"}}},
        "spec.load_balancer.hash.header",
        "must be a header name",
    ),
    (
        {"load_balancer": {"algorithm": "LEAST_REQUEST", "hash": {"source_ip": True}}},
        "spec.load_balancer.hash",
        "only RING_HASH and MAGLEV hash calls; the algorithm is LEAST_REQUEST",
    ),
    (
        {"load_balancer": {"hash": {"header": "x-user"}}},
        "spec.load_balancer.hash",
        "ROUND_ROBIN (the default)",
    ),
    (
        {"load_balancer": {"algorithm": "WEIGHTED_ROUND_ROBIN", "weights": {"a": 0, "b": 0}}},
        "spec.load_balancer.weights",
        "every listed weight is 0",
    ),
    (
        {"load_balancer": {"algorithm": "WEIGHTED_ROUND_ROBIN", "weights": {"a": 10001}}},
        "spec.load_balancer.weights['a']",
        "must be at most 10000, got 10001",
    ),
    (
        {"load_balancer": {"algorithm": "WEIGHTED_ROUND_ROBIN", "weights": {"A": 1}}},
        "spec.load_balancer.weights['A']",
        "lowercase DNS label",
    ),
    (
        {"load_balancer": {"algorithm": "LEAST_REQUEST", "weights": {"a": 1}}},
        "spec.load_balancer.weights",
        "only WEIGHTED_ROUND_ROBIN reads weights; the algorithm is LEAST_REQUEST",
    ),
    (
        {"load_balancer": {"algorithm": "ROUND_ROBIN", "decay": "5s"}},
        "spec.load_balancer.decay",
        "only PEAK_EWMA",
    ),
    (
        {"load_balancer": {"algorithm": "MAGLEV", "hash": {"source_ip": True}, "ring_size": 8}},
        "spec.load_balancer.ring_size",
        "only RING_HASH",
    ),
    (
        {
            "load_balancer": {
                "algorithm": "RING_HASH",
                "hash": {"source_ip": True},
                "ring_size": 1_048_577,
            }
        },
        "spec.load_balancer.ring_size",
        "at most 1048576",
    ),
    # retry
    ({"retry": {"max_attempts": 11}}, "spec.retry.max_attempts", "must be 1-10"),
    ({"retry": {"retry_on": ["5xx", "boom"]}}, "spec.retry.retry_on[1]", "unknown condition"),
    ({"retry": {"retry_on": ["5XX"]}}, "spec.retry.retry_on[0]", "connect-failure"),
    ({"retry": {"retry_on": ["reset", "reset"]}}, "spec.retry.retry_on[1]", "listed twice"),
    (
        {"timeout": "1s", "retry": {"per_try_timeout": "2s"}},
        "spec.retry.per_try_timeout",
        "must not exceed the request timeout spec.timeout (1s), got 2s",
    ),
    (
        {"retry": {"base_interval": "1s", "max_interval": "0.5s"}},
        "spec.retry.max_interval",
        "must be at least base_interval (1s), got 0.5s",
    ),
    (
        {"retry": {"max_interval": "0.01s"}},
        "spec.retry.max_interval",
        "base_interval (0.025s)",
    ),
    (
        {"retry": {"max_buffer_bytes": 16 * 1024 * 1024 + 1}},
        "spec.retry.max_buffer_bytes",
        "at most 16777216",
    ),
    # retry budget
    ({"retry_budget": {"ratio": 1.5}}, "spec.retry_budget.ratio", "must be in (0, 1]"),
    ({"retry_budget": {"ratio": -0.1}}, "spec.retry_budget.ratio", "got -0.1"),
    ({"retry_budget": {"ratio": "NaN"}}, "spec.retry_budget.ratio", "got nan"),
    # circuit breaker
    (
        {"circuit_breaker": {"failure_rate_threshold": 1.01}},
        "spec.circuit_breaker.failure_rate_threshold",
        "(0, 1]",
    ),
    (
        {"circuit_breaker": {"failure_rate_threshold": "NaN"}},
        "spec.circuit_breaker.failure_rate_threshold",
        "(0, 1]",
    ),
    (
        {"circuit_breaker": {"success_threshold": 11}},
        "spec.circuit_breaker.success_threshold",
        "must not exceed half_open_max_calls (10)",
    ),
    (
        {"circuit_breaker": {"half_open_max_calls": 5}},
        "spec.circuit_breaker.success_threshold",
        "can never see 10 successes",
    ),
    # outlier detection
    (
        {"outlier_detection": {"max_ejection_percent": 101}},
        "spec.outlier_detection.max_ejection_percent",
        "at most 100",
    ),
    (
        {"outlier_detection": {"success_rate_stdev_factor": -1}},
        "spec.outlier_detection.success_rate_stdev_factor",
        "positive number",
    ),
    (
        {"outlier_detection": {"success_rate_stdev_factor": "Infinity"}},
        "spec.outlier_detection.success_rate_stdev_factor",
        "got inf",
    ),
    (
        {"outlier_detection": {"base_ejection_time": "60s", "max_ejection_time": "30s"}},
        "spec.outlier_detection.base_ejection_time",
        "must not exceed max_ejection_time (30s), got 60s",
    ),
    (
        {"outlier_detection": {"base_ejection_time": "400s"}},
        "spec.outlier_detection.base_ejection_time",
        "(300s)",
    ),
    # health check
    (
        {"health_check": {"interval": "2s", "timeout": "3s"}},
        "spec.health_check.timeout",
        "must not exceed interval (2s), got 3s",
    ),
    ({"health_check": {"http_path": "health"}}, "spec.health_check.http_path", "start with '/'"),
    (
        {"health_check": {"healthy_threshold": 101}},
        "spec.health_check.healthy_threshold",
        "at most 100",
    ),
    (
        {"health_check": {"unhealthy_threshold": 1000}},
        "spec.health_check.unhealthy_threshold",
        "at most 100",
    ),
    (
        {"health_check": {"http_path": "/h", "grpc_service": "shop"}},
        "spec.health_check.grpc_service",
        "set one of them",
    ),
    # rate limits
    ({"rate_limits": [rl(name="Per_Hour")]}, "spec.rate_limits[0].name", "DNS label"),
    ({"rate_limits": [rl(name="")]}, "spec.rate_limits[0].name", "required"),
    ({"rate_limits": [RL, RL]}, "spec.rate_limits[1].name", "spec.rate_limits[0]"),
    ({"rate_limits": [rl(requests=0)]}, "spec.rate_limits[0].requests", "required"),
    (
        {"rate_limits": [{"name": "a", "requests": 1}]},
        "spec.rate_limits[0].period",
        "required",
    ),
    (
        {"rate_limits": [RL, rl(name="b", burst=50)]},
        "spec.rate_limits[1].burst",
        "a burst below the rate: must be at least requests (100) or 0 for requests, got 50",
    ),
    ({"rate_limits": [rl(scope="HEADER")]}, "spec.rate_limits[0].header", "required"),
    (
        {"rate_limits": [rl(scope="HEADER", header="X-Tenant")]},
        "spec.rate_limits[0].header",
        "must be lowercase",
    ),
    (
        {"rate_limits": [rl(scope="CLIENT_IDENTITY", header="who?")]},
        "spec.rate_limits[0].header",
        "header name",
    ),
    (
        {"rate_limits": [rl(header="x-tenant")]},
        "spec.rate_limits[0].header",
        "the scope is SERVICE (the default)",
    ),
    ({"rate_limits": [rl(prefix="orders")]}, "spec.rate_limits[0].prefix", "start with '/'"),
    (
        {"rate_limits": [rl(scope="CLIENT_IP", max_keys=1_000_001)]},
        "spec.rate_limits[0].max_keys",
        "at most 1000000",
    ),
    ({"rate_limits": [rl(max_keys=10)]}, "spec.rate_limits[0].max_keys", "keyed scopes"),
    # per-method overrides
    ({"methods": [{"timeout": "1s"}]}, "spec.methods[0].prefix", "required"),
    ({"methods": [{"prefix": "shop.Orders/"}]}, "spec.methods[0].prefix", "start with '/'"),
    (
        {"methods": [{"prefix": "/a"}, {"prefix": "/a"}]},
        "spec.methods[1].prefix",
        "already the prefix of spec.methods[0]",
    ),
    (
        {"methods": [{"prefix": "/a", "retry": {"max_attempts": 12}}]},
        "spec.methods[0].retry.max_attempts",
        "must be 1-10",
    ),
    (
        {"methods": [{"prefix": "/a", "timeout": "1s", "retry": {"per_try_timeout": "2s"}}]},
        "spec.methods[0].retry.per_try_timeout",
        "spec.methods[0].timeout (1s)",
    ),
    (
        {"timeout": "1s", "methods": [{"prefix": "/a", "retry": {"per_try_timeout": "2s"}}]},
        "spec.methods[0].retry.per_try_timeout",
        "spec.timeout (1s)",
    ),
]


@pytest.mark.parametrize(("spec", "field", "reason"), INVALID, ids=[f for _, f, _ in INVALID])
def test_invalid_spec_names_field_and_reason(spec: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_resource(policy(spec))
    assert (info.value.field, reason in info.value.reason) == (field, True), info.value.reason


VALID: list[dict[str, Any]] = [
    {},
    {"retry": {}, "retry_budget": {}, "circuit_breaker": {}, "outlier_detection": {}},
    {"load_balancer": {"algorithm": "WEIGHTED_ROUND_ROBIN", "weights": {"a": 0, "b": 10000}}},
    {"load_balancer": {"algorithm": "RING_HASH", "hash": {"header": "x-user"}, "ring_size": 1}},
    {"load_balancer": {"algorithm": "MAGLEV", "hash": {"source_ip": True}}},
    {"load_balancer": {"algorithm": "PEAK_EWMA", "decay": "2s"}},
    {"retry": {"max_attempts": 1}},
    {"retry": {"max_attempts": 10, "retry_on": ["5xx", "gateway-error", "data-loss"]}},
    {"timeout": "1s", "retry": {"per_try_timeout": "1s"}},
    {"retry": {"base_interval": "1s"}},  # max_interval defaults to 10s, above it
    {"retry": {"base_interval": "0.1s", "max_interval": "0.1s"}},
    {"retry": {"max_buffer_bytes": 16 * 1024 * 1024}},
    {"retry_budget": {"ratio": 1.0, "disabled": True}},
    {"circuit_breaker": {"failure_rate_threshold": 1.0, "success_threshold": 10}},
    {"circuit_breaker": {"half_open_max_calls": 3, "success_threshold": 3}},
    {"outlier_detection": {"max_ejection_percent": 100, "base_ejection_time": "300s"}},
    {"health_check": {"interval": "3s", "timeout": "3s", "unhealthy_threshold": 100}},
    {"health_check": {"http_path": "/healthz"}},
    {"health_check": {"grpc_service": "shop.Orders"}},
    {"rate_limits": [rl(burst=100), rl(name="b", burst=150, scope="CLIENT_IDENTITY")]},
    {"rate_limits": [rl(scope="HEADER", header="x-tenant", max_keys=1_000_000)]},
    {"rate_limits": [rl(scope="METHOD", prefix="/shop.Orders/", direction="OUTBOUND")]},
    {"methods": [{"prefix": "/a", "retry": {}}, {"prefix": "/a/b", "timeout": "5s"}]},
]


@pytest.mark.parametrize("spec", VALID)
def test_valid_edges_pass(spec: dict[str, Any]) -> None:
    validate_resource(policy(spec))
