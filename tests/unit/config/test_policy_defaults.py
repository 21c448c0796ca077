"""Property: a policy that passes validation parses to its own values or the documented defaults.

The defaults are written out here as docs/policies.md states them (not read
from the model), so a default that drifts from the reference fails.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from skein.config import make_resource, parse_snapshot, validate_resource
from skein.config.model import ClusterConfig, LocalConfig
from skein.errors import ConfigError
from skein.v1 import discovery_pb2, resources_pb2

LB = {"decay": 10.0, "ring_size": 1024}
RETRY = {"max_attempts": 3, "base_interval": 0.025, "max_buffer_bytes": 65536}
RETRY_ON = ("connect-failure", "refused-stream", "unavailable")
BUDGET = {"ratio": 0.2, "min_retries_per_second": 10, "ttl": 10.0}
BREAKER = {
    "failure_rate_threshold": 0.5,
    "window": 10.0,
    "minimum_requests": 20,
    "open_duration": 60.0,
    "half_open_max_calls": 10,
    "success_threshold": 10,
    "max_connections": 1024,
    "max_pending_requests": 1024,
    "max_requests": 1024,
    "max_retries": 1024,
}
OUTLIER = {
    "consecutive_failures": 5,
    "interval": 10.0,
    "base_ejection_time": 30.0,
    "max_ejection_time": 300.0,
    "max_ejection_percent": 50,
    "success_rate_minimum_hosts": 5,
    "success_rate_request_volume": 100,
    "success_rate_stdev_factor": 1.9,
}
HEALTH = {"interval": 10.0, "timeout": 3.0, "healthy_threshold": 1, "unhealthy_threshold": 3}
DURATIONS = {
    "decay",
    "per_try_timeout",
    "base_interval",
    "max_interval",
    "ttl",
    "window",
    "open_duration",
    "interval",
    "base_ejection_time",
    "max_ejection_time",
    "timeout",
    "period",
}

# Values around every boundary the rules draw, valid and not.
durations = st.one_of(
    st.none(),
    st.sampled_from(["-1s", "0s", "0.001s", "0.025s", "0.5s", "1s", "3s", "10s", "60s", "400s"]),
)
counts = st.one_of(st.none(), st.sampled_from([0, 1, 2, 3, 10, 11, 100, 101, 10000, 20000]))
ratios = st.one_of(
    st.none(), st.sampled_from([0.0, 0.1, 0.5, 1.0, 1.5, -0.2, "NaN", "Infinity"]), st.floats(0, 1)
)
headers = st.sampled_from(["", "x-user", "X-User", "bad header"])


def message(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any] | None]:
    """An optional message whose fields are each optional."""
    body = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(st.none(), body.map(lambda d: {k: v for k, v in d.items() if v is not None}))


load_balancers = message(
    algorithm=st.sampled_from(
        ["ROUND_ROBIN", "LEAST_REQUEST", "WEIGHTED_ROUND_ROBIN", "RING_HASH", "MAGLEV", "PEAK_EWMA"]
    ),
    hash=st.one_of(st.builds(lambda h: {"header": h}, headers), st.just({"source_ip": True})),
    weights=st.dictionaries(
        st.sampled_from(["orders-0", "orders-1", "x"]), counts.filter(lambda c: c is not None)
    ),
    decay=durations,
    ring_size=counts,
)
retries = message(
    max_attempts=counts,
    retry_on=st.lists(
        st.sampled_from(["5xx", "reset", "unavailable", "internal", "nope"]), max_size=3
    ),
    per_try_timeout=durations,
    base_interval=durations,
    max_interval=durations,
    max_buffer_bytes=st.sampled_from([0, 1024, 16 * 1024 * 1024, 16 * 1024 * 1024 + 1]),
)
budgets = message(
    ratio=ratios, min_retries_per_second=counts, ttl=durations, disabled=st.booleans()
)
breakers = message(
    failure_rate_threshold=ratios,
    window=durations,
    minimum_requests=counts,
    open_duration=durations,
    half_open_max_calls=counts,
    success_threshold=counts,
    disabled=st.booleans(),
    max_connections=counts,
    max_pending_requests=counts,
    max_requests=counts,
    max_retries=counts,
)
outliers = message(
    consecutive_failures=counts,
    interval=durations,
    base_ejection_time=durations,
    max_ejection_time=durations,
    max_ejection_percent=counts,
    success_rate_minimum_hosts=counts,
    success_rate_request_volume=counts,
    success_rate_stdev_factor=st.one_of(st.none(), st.sampled_from([0.0, 1.0, 2.5, -1.0])),
    disabled=st.booleans(),
)
health_checks = message(
    interval=durations,
    timeout=durations,
    healthy_threshold=counts,
    unhealthy_threshold=counts,
    http_path=st.sampled_from(["", "/health", "health"]),
    grpc_service=st.sampled_from(["", "shop.Orders"]),
)
rate_limit = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", "B"]),
        "requests": st.sampled_from([0, 1, 100]),
    },
    optional={
        "period": durations.filter(lambda d: d is not None),
        "burst": st.sampled_from([0, 50, 100, 150]),
        "algorithm": st.sampled_from(["TOKEN_BUCKET", "LEAKY_BUCKET", "SLIDING_WINDOW"]),
        "scope": st.sampled_from(["SERVICE", "METHOD", "CLIENT_IDENTITY", "HEADER"]),
        "header": headers,
        "prefix": st.sampled_from(["", "/shop.Orders/", "shop"]),
        "direction": st.sampled_from(["INBOUND", "OUTBOUND"]),
        "max_keys": st.sampled_from([0, 10, 1_000_001]),
    },
)
method = st.fixed_dictionaries(
    {"prefix": st.sampled_from(["/a", "/a/b", "a"])},
    optional={"timeout": durations.filter(lambda d: d is not None), "retry": retries},
)
specs = st.fixed_dictionaries(
    {},
    optional={
        "load_balancer": load_balancers,
        "timeout": durations,
        "retry": retries,
        "retry_budget": budgets,
        "circuit_breaker": breakers,
        "outlier_detection": outliers,
        "health_check": health_checks,
        "rate_limits": st.lists(rate_limit, max_size=2),
        "methods": st.lists(method, max_size=2),
    },
).map(lambda d: {k: v for k, v in d.items() if v is not None})


def sec(text: str) -> float:
    return float(text.removesuffix("s"))


def expect_fields(given: dict[str, Any] | None, defaults: dict[str, Any], model: Any) -> None:
    """Each model field equals the given value, or the default when unset or zero."""
    given = given or {}
    for name, default in defaults.items():
        value = given.get(name)
        if name in DURATIONS:
            value = sec(value) if value is not None else None
        assert getattr(model, name) == (value or default), name


def expect_retry(given: dict[str, Any] | None, model: Any) -> None:
    given = given or {}
    expect_fields(given, RETRY, model)
    assert model.retry_on == (tuple(given["retry_on"]) if given.get("retry_on") else RETRY_ON)
    per_try = given.get("per_try_timeout")
    assert model.per_try_timeout == (sec(per_try) if per_try else None)
    top = given.get("max_interval")
    assert model.max_interval == (sec(top) if top else 10 * model.base_interval)


def expect_rate_limit(given: dict[str, Any], model: Any) -> None:
    assert (model.name, model.requests, model.period) == (
        given["name"],
        given["requests"],
        sec(given["period"]),
    )
    assert model.burst == (given.get("burst") or given["requests"])
    assert model.algorithm.value == given.get("algorithm", "TOKEN_BUCKET")
    assert model.scope.value == given.get("scope", "SERVICE")
    identity = "x-skein-client" if model.scope.value == "CLIENT_IDENTITY" else ""
    assert model.header == (given.get("header") or identity)
    assert model.prefix == given.get("prefix", "")
    assert model.max_keys == (given.get("max_keys") or 10000)


def snapshot_of(spec: dict[str, Any]) -> discovery_pb2.Snapshot:
    tp = resources_pb2.TrafficPolicy()
    json_format.ParseDict(
        {"metadata": {"name": "orders"}, "spec": {"service": "orders", **spec}}, tp
    )
    snap = discovery_pb2.Snapshot()
    cluster = snap.clusters.add(name="orders", policy=tp)
    for i in range(2):
        ep = cluster.endpoints.add()
        ep.metadata.name = f"orders-{i}"
        ep.spec.service = "orders"
        ep.spec.address = f"127.0.0.1:{9000 + i}"
        ep.spec.weight = i
    snap.local_policy.CopyFrom(tp)
    return snap


@settings(max_examples=400, deadline=None)
@given(specs)
def test_valid_policy_parses_to_inputs_or_documented_defaults(spec: dict[str, Any]) -> None:
    snap = snapshot_of(spec)
    try:
        validate_resource(make_resource("TrafficPolicy", snap.local_policy))
    except ConfigError:
        return  # the table tests pin what each rejection says
    cfg = parse_snapshot("1", snap)
    cluster: ClusterConfig = cfg.clusters["orders"]
    local: LocalConfig = cfg.local
    lb = spec.get("load_balancer") or {}
    assert cluster.load_balancer.algorithm.value == lb.get("algorithm", "ROUND_ROBIN")
    expect_fields(lb, LB, cluster.load_balancer)
    hashed = lb.get("hash")
    built = cluster.load_balancer.hash
    assert (built is not None) == (hashed is not None)
    if built is not None and hashed is not None:
        assert built.header == hashed.get("header", "")
        assert built.source_ip == hashed.get("source_ip", False)
    weights = lb.get("weights", {})
    assert [e.weight for e in cluster.endpoints] == [
        weights.get(f"orders-{i}", i or 1) for i in range(2)
    ]
    timeout = spec.get("timeout")
    assert cluster.timeout == local.timeout == (sec(timeout) if timeout else None)
    expect_retry(spec.get("retry"), cluster.retry)
    budget = spec.get("retry_budget") or {}
    expect_fields(budget, BUDGET, cluster.budget)
    assert cluster.budget.enabled is not budget.get("disabled", False)
    breaker = spec.get("circuit_breaker") or {}
    expect_fields(breaker, BREAKER, cluster.breaker)
    assert cluster.breaker.enabled is not breaker.get("disabled", False)
    outlier = spec.get("outlier_detection") or {}
    expect_fields(outlier, OUTLIER, cluster.outlier)
    assert cluster.outlier.enabled is not outlier.get("disabled", False)
    if "health_check" in spec:
        assert local.health_check is not None
        expect_fields(spec["health_check"], HEALTH, local.health_check)
        assert local.health_check.http_path == spec["health_check"].get("http_path", "")
    else:
        assert local.health_check is None
    limits = spec.get("rate_limits", [])
    outbound = [r for r in limits if r.get("direction") == "OUTBOUND"]
    inbound = [r for r in limits if r.get("direction") != "OUTBOUND"]
    assert len(cluster.rate_limits) == len(outbound)
    assert len(local.rate_limits) == len(inbound)
    for given_rl, model_rl in [
        *zip(outbound, cluster.rate_limits, strict=True),
        *zip(inbound, local.rate_limits, strict=True),
    ]:
        expect_rate_limit(given_rl, model_rl)
    methods = spec.get("methods", [])
    assert cluster.methods == local.methods
    assert [m.prefix for m in cluster.methods] == [m["prefix"] for m in methods]
    for given_m, model_m in zip(methods, cluster.methods, strict=True):
        assert model_m.timeout == (sec(given_m["timeout"]) if "timeout" in given_m else None)
        if given_m.get("retry") is None:
            assert model_m.retry is None
        else:
            expect_retry(given_m["retry"], model_m.retry)
