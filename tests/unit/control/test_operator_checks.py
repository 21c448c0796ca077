"""Apply's pure checks: one TrafficPolicy per service."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.operator import check_policy_targets
from skein.errors import ConfigError
from skein.v1 import resources_pb2


def tp(name: str, service: str) -> tuple[str, Any]:
    message = resources_pb2.TrafficPolicy()
    message.metadata.name, message.spec.service = name, service
    return "TrafficPolicy", message


def test_second_policy_names_both() -> None:
    with pytest.raises(ConfigError) as info:
        check_policy_targets([tp("b", "orders")], {"a": "orders"})
    assert str(info.value) == (
        "resources[0] (TrafficPolicy/b): spec.service: service 'orders' already has "
        "TrafficPolicy/a; a service takes one TrafficPolicy: change TrafficPolicy/a or "
        "delete it first"
    )


def test_reapplying_or_moving_a_policy_is_fine() -> None:
    check_policy_targets([tp("a", "orders")], {"a": "orders"})
    check_policy_targets([tp("a", "users"), tp("b", "orders")], {"a": "orders"})
    check_policy_targets([("Service", resources_pb2.Service())], {"a": "orders", "b": "users"})


names = st.sampled_from(["a", "b", "c", "d"])
services = st.sampled_from(["orders", "users", "payments"])


@given(st.dictionaries(names, services), st.dictionaries(names, services))
def test_accepts_exactly_when_the_result_has_one_policy_per_service(
    stored: dict[str, str], applying: dict[str, str]
) -> None:
    items = [tp(name, service) for name, service in applying.items()]
    # What etcd would hold after the apply; only new conflicts are the apply's fault.
    after = {**stored, **applying}
    clash = any(
        other != name and after[other] == service
        for name, service in applying.items()
        for other in stored
        if other not in applying
    )
    if clash:
        with pytest.raises(ConfigError):
            check_policy_targets(items, stored)
    else:
        check_policy_targets(items, stored)
