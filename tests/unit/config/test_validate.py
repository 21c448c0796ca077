"""validate_resource: exact field paths and reasons."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skein.config import check_name, make_resource, validate_resource
from skein.errors import ConfigError
from skein.v1 import resources_pb2


def policy(**spec: object) -> resources_pb2.Resource:
    tp = resources_pb2.TrafficPolicy()
    tp.metadata.name = "orders"
    tp.spec.service = "orders"
    for key, value in spec.items():
        if key == "timeout":
            assert isinstance(value, tuple)
            tp.spec.timeout.seconds, tp.spec.timeout.nanos = value
        elif key == "algorithm":
            tp.spec.load_balancer.algorithm = value  # type: ignore[assignment]
        else:
            setattr(tp.spec, key, value)
    return make_resource("TrafficPolicy", tp)


def endpoint(address: str = "127.0.0.1:9000", **spec: object) -> resources_pb2.Resource:
    ep = resources_pb2.Endpoint()
    ep.metadata.name = "orders-1"
    ep.spec.service = "orders"
    ep.spec.address = address
    for key, value in spec.items():
        setattr(ep.spec, key, value)
    return make_resource("Endpoint", ep)


def error_of(res: resources_pb2.Resource) -> tuple[str, str]:
    with pytest.raises(ConfigError) as info:
        validate_resource(res)
    return info.value.field, info.value.reason


def test_valid_resources_pass() -> None:
    validate_resource(policy(timeout=(1, 500_000_000), algorithm=resources_pb2.LEAST_REQUEST))
    validate_resource(endpoint())
    svc = resources_pb2.Service()
    svc.metadata.name = "users"
    svc.spec.protocol = resources_pb2.HTTP
    svc.spec.http_path = "/api/v1/users"
    validate_resource(make_resource("Service", svc))


def test_negative_timeout_names_field_and_value() -> None:
    assert error_of(policy(timeout=(-1, 0))) == ("spec.timeout", "must be positive, got -1s")
    assert (
        str(ConfigError("spec.timeout", "must be positive, got -1s", where="TrafficPolicy/o"))
        == "TrafficPolicy/o: spec.timeout: must be positive, got -1s"
    )


def test_zero_timeout_rejected_but_unset_is_fine() -> None:
    assert error_of(policy(timeout=(0, 0)))[0] == "spec.timeout"
    validate_resource(policy())


def test_policy_needs_a_valid_service() -> None:
    assert error_of(policy(service=""))[0] == "spec.service"
    field, reason = error_of(policy(service="Orders"))
    assert field == "spec.service" and "'Orders'" in reason


def test_unknown_enum_value() -> None:
    field, reason = error_of(policy(algorithm=7))
    assert field == "spec.load_balancer.algorithm"
    assert reason == (
        "unknown value 7; expected one of ROUND_ROBIN, LEAST_REQUEST, WEIGHTED_ROUND_ROBIN, "
        "RING_HASH, MAGLEV, PEAK_EWMA"
    )


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("orders-v2", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("-a", False),
        ("a-", False),
        ("A", False),
        ("a.b", False),
        ("a_b", False),
        ("", False),
    ],
)
def test_dns_label_names(name: str, ok: bool) -> None:
    if ok:
        check_name(name, "metadata.name")
    else:
        with pytest.raises(ConfigError) as info:
            check_name(name, "metadata.name")
        assert info.value.field == "metadata.name"


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":80", "host:http", ""]
)
def test_endpoint_address_must_be_host_port(address: str) -> None:
    assert error_of(endpoint(address))[0] == "spec.address"


def test_endpoint_weight_and_health() -> None:
    assert error_of(endpoint(weight=10_001))[0] == "spec.weight"
    assert error_of(endpoint(health=9))[0] == "spec.health"
    validate_resource(endpoint("[::1]:8080", weight=3, health=resources_pb2.UNHEALTHY))


def test_resource_without_kind() -> None:
    assert error_of(resources_pb2.Resource())[0] == "kind"


def test_label_values_checked() -> None:
    res = policy()
    res.traffic_policy.metadata.labels["team"] = "bad value"
    assert error_of(res)[0] == "metadata.labels['team']"


@given(st.integers(min_value=-(10**6), max_value=10**6), st.integers(0, 999_999_999))
def test_timeout_positive_iff_accepted(seconds: int, nanos: int) -> None:
    if seconds < 0:
        nanos = -nanos
    res = policy(timeout=(seconds, nanos))
    positive = seconds > 0 or (seconds == 0 and nanos > 0)
    if positive:
        validate_resource(res)
    else:
        assert error_of(res)[0] == "spec.timeout"


@given(st.text(max_size=70))
def test_names_never_crash(name: str) -> None:
    try:
        check_name(name, "metadata.name")
    except ConfigError as err:
        assert err.field == "metadata.name"


def test_endpoint_health_reason_is_bounded() -> None:
    validate_resource(endpoint(health_reason="3 failed checks: connection refused"))
    assert error_of(endpoint(health_reason="x" * 1025))[0] == "spec.health_reason"
