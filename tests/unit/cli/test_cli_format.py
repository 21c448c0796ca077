"""Output formatting and the `wait` loop, without a server (manual time, no sleeping)."""

from __future__ import annotations

import json

import yaml
from hypothesis import given
from hypothesis import strategies as st

from skein import output, waiting
from skein.clock import ManualClock
from skein.v1 import discovery_pb2, operator_pb2, resources_pb2


def service(name: str, port: int, version: int = 7) -> resources_pb2.Resource:
    return resources_pb2.Resource(
        service=resources_pb2.Service(
            metadata=resources_pb2.ObjectMeta(name=name, version=version),
            spec=resources_pb2.ServiceSpec(port=port, http_path=f"/api/v1/{name}"),
        )
    )


def policy(name: str, seconds: int) -> resources_pb2.Resource:
    tp = resources_pb2.TrafficPolicy(metadata=resources_pb2.ObjectMeta(name=name, version=9))
    tp.spec.service = name
    tp.spec.load_balancer.algorithm = resources_pb2.LEAST_REQUEST
    tp.spec.timeout.seconds = seconds
    return resources_pb2.Resource(traffic_policy=tp)


def test_table_groups_by_kind_with_kind_columns() -> None:
    out = output.format_resources(
        [service("users", 8001), policy("orders", 20), service("orders", 8003)],
        "table",
    )
    services, policies = out.split("\n\n")
    assert services.splitlines()[0].split() == [
        "NAME",
        "PROTOCOL",
        "PORT",
        "HTTP",
        "PATH",
        "VERSION",
    ]
    assert services.splitlines()[1].split() == ["users", "GRPC", "8001", "/api/v1/users", "7"]
    assert services.splitlines()[2].split()[0] == "orders"
    assert policies.splitlines()[1].split() == ["orders", "orders", "LEAST_REQUEST", "20s", "9"]


def test_table_when_empty() -> None:
    assert output.format_resources([], "table") == "No resources found."


def test_yaml_round_trips_as_manifests() -> None:
    out = output.format_resources([service("users", 8001), policy("users", 10)], "yaml")
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["Service", "TrafficPolicy"]
    assert docs[0]["spec"]["port"] == 8001
    assert docs[1]["spec"]["timeout"] == "10s"


def test_json_single_is_an_object_many_is_items() -> None:
    one = json.loads(output.format_resources([service("users", 1)], "json"))
    assert one["metadata"]["name"] == "users"
    many = json.loads(output.format_resources([service("a", 1), service("b", 2)], "json"))
    assert [i["metadata"]["name"] for i in many["items"]] == ["a", "b"]


def test_format_apply() -> None:
    response = operator_pb2.ApplyResponse(
        results=[
            operator_pb2.ApplyResult(kind="Service", name="orders", action="created"),
            operator_pb2.ApplyResult(kind="TrafficPolicy", name="orders", action="unchanged"),
        ],
        version=42,
    )
    assert output.format_apply(response, dry_run=False).splitlines() == [
        "service/orders created",
        "trafficpolicy/orders unchanged",
        "version 42",
    ]
    dry = output.format_apply(response, dry_run=True).splitlines()
    assert dry[0] == "service/orders created (dry run)"
    assert dry[-1] == "dry run: nothing was stored"


def sidecar(instance: str, synced: int, nack: str = "") -> operator_pb2.SidecarStatus:
    return operator_pb2.SidecarStatus(
        node=discovery_pb2.Node(service=instance.split("-")[0], instance=instance),
        control="127.0.0.1:15010",
        acked_version=str(synced),
        synced_revision=synced,
        nack_version="12" if nack else "",
        nack_error=nack,
    )


def test_format_status_lists_nacks() -> None:
    response = operator_pb2.StatusResponse(
        sidecars=[sidecar("users-1", 10), sidecar("orders-1", 9, "spec.timeout: must be positive")],
        revision=12,
    )
    lines = output.format_status(response).splitlines()
    assert lines[0].split()[:5] == ["INSTANCE", "SERVICE", "CONTROL", "ACKED", "SYNCED"]
    assert lines[1].split()[:5] == ["orders-1", "orders", "127.0.0.1:15010", "9", "9"]
    assert lines[1].endswith("12: spec.timeout: must be positive")
    assert lines[2].split()[-1] == "-"
    assert lines[-1] == "configuration version 12"


def test_format_status_empty() -> None:
    out = output.format_status(operator_pb2.StatusResponse(revision=3))
    assert out == "No sidecars connected (configuration version 3)."


class FakeTime:
    """Drives wait_for_version: `sleep` moves a manual clock, status follows it."""

    def __init__(self, catch_up_at: float | None) -> None:
        self.clock = ManualClock()
        self.catch_up_at = catch_up_at
        self.polls = 0

    def status(self) -> operator_pb2.StatusResponse:
        self.polls += 1
        late = self.catch_up_at is None or self.clock.now() < self.catch_up_at
        return operator_pb2.StatusResponse(
            sidecars=[sidecar("users-1", 20), sidecar("orders-1", 5 if late else 20)]
        )

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.clock.advance(seconds)


def test_wait_returns_when_every_sidecar_catches_up() -> None:
    t = FakeTime(catch_up_at=1.0)
    left = waiting.wait_for_version(t.status, 20, 5.0, now=t.clock.now, sleep=t.sleep)
    assert left == []
    assert 1.0 <= t.clock.now() < 1.5


def test_wait_times_out_naming_laggards() -> None:
    t = FakeTime(catch_up_at=None)
    left = waiting.wait_for_version(t.status, 20, 2.0, now=t.clock.now, sleep=t.sleep)
    assert [s.node.instance for s in left] == ["orders-1"]
    assert t.clock.now() == 2.0


def test_laggards_boundary() -> None:
    response = operator_pb2.StatusResponse(sidecars=[sidecar("a-1", 7), sidecar("b-1", 8)])
    assert [s.node.instance for s in waiting.laggards(response, 8)] == ["a-1"]
    assert waiting.laggards(response, 7) == []


cells = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)


@given(
    st.integers(1, 5).flatmap(
        lambda n: st.lists(st.lists(cells, min_size=n, max_size=n), min_size=1, max_size=6)
    )
)
def test_table_columns_line_up(rows: list[list[str]]) -> None:
    header, body = rows[0], rows[1:]
    lines = output.table(header, body).splitlines()
    assert len(lines) == len(rows)
    for line, row in zip(lines, rows, strict=True):
        assert line.split() == row
    # every column starts at the same offset on every line
    starts = [
        len("  ".join(c.ljust(max(len(r[i]) for r in rows)) for i, c in enumerate(header[:k])))
        + (2 if k else 0)
        for k in range(len(header))
    ]
    for line, row in zip(lines, rows, strict=True):
        for k, start in enumerate(starts):
            assert line[start:].startswith(row[k])


def test_table_leaves_out_a_resource_without_a_kind() -> None:
    assert output.format_resources([resources_pb2.Resource()], "table") == "No resources found."
    out = output.format_resources([resources_pb2.Resource(), service("users", 1)], "table")
    assert out.splitlines()[1].split()[0] == "users"
