"""load_manifests / parse_manifest / resource_to_manifest."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from skein.config import (
    load_manifests,
    parse_kind,
    parse_manifest,
    resource_kind,
    resource_name,
    resource_to_manifest,
)
from skein.errors import ConfigError
from skein.v1 import resources_pb2

GOOD = """\
apiVersion: skein/v1
kind: Service
metadata: {name: orders, labels: {team: shop}}
spec: {protocol: GRPC, port: 9003}
---
kind: trafficpolicies
metadata: {name: orders}
spec:
  service: orders
  loadBalancer: {algorithm: LEAST_REQUEST}
  timeout: 250ms
---
kind: tp
metadata: {name: users}
spec: {service: users, load_balancer: {algorithm: ROUND_ROBIN}, timeout: 1.5s}
"""


def write(tmp_path: pathlib.Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def error(path: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_manifests(path)
    return info.value


def test_loads_multi_document_camel_and_snake_case(tmp_path: pathlib.Path) -> None:
    resources = load_manifests(write(tmp_path, "a.yaml", GOOD))
    assert [(resource_kind(r), resource_name(r)) for r in resources] == [
        ("Service", "orders"),
        ("TrafficPolicy", "orders"),
        ("TrafficPolicy", "users"),
    ]
    orders = resources[1].traffic_policy
    assert orders.spec.load_balancer.algorithm == resources_pb2.LEAST_REQUEST
    assert (orders.spec.timeout.seconds, orders.spec.timeout.nanos) == (0, 250_000_000)
    assert resources[2].traffic_policy.spec.timeout.nanos == 500_000_000
    assert resources[0].service.metadata.labels["team"] == "shop"


def test_directory_reads_yaml_and_yml_sorted(tmp_path: pathlib.Path) -> None:
    write(tmp_path, "b.yml", "kind: svc\nmetadata: {name: b}\n")
    write(tmp_path, "a.yaml", "kind: svc\nmetadata: {name: a}\n")
    write(tmp_path, "notes.txt", "not a manifest")
    assert [resource_name(r) for r in load_manifests(str(tmp_path))] == ["a", "b"]


def test_error_names_file_document_and_field(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        GOOD + "---\nkind: tp\nmetadata: {name: bad}\nspec: {service: orders, timeout: -1s}\n",
    )
    err = error(path)
    assert (err.where, err.field) == (f"{path}#3", "spec.timeout")
    assert str(err) == f"{path}#3: spec.timeout: must be positive, got -1s"


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        ("kind: Gadget\nmetadata: {name: a}", "kind", "unknown kind 'Gadget'"),
        ("metadata: {name: a}", "kind", "required"),
        (
            "kind: tp\nmetadata: {name: a}\nspec: {service: a, timeut: 1s}",
            "spec.timeut",
            "unknown field",
        ),
        (
            "kind: tp\nmetadata: {name: a}\nspec: {service: a, loadBalancer: {algorithm: FAST}}",
            "spec.load_balancer.algorithm",
            "expected one of ROUND_ROBIN, LEAST_REQUEST",
        ),
        (
            "kind: tp\nmetadata: {name: a}\nspec: {service: a, timeout: soon}",
            "spec.timeout",
            "expected a duration",
        ),
        ("kind: svc\nmetadata: {name: a}\nspec: {port: -1}", "spec.port", "must not be negative"),
        (
            "kind: svc\nmetadata: {name: a}\nspec: {port: eighty}",
            "spec.port",
            "expected an integer",
        ),
        ("kind: svc\nmetadata: {name: a}\nspec: [1]", "spec", "expected a mapping"),
        ("kind: svc\nmetadata: {name: Big}", "metadata.name", "lowercase DNS label"),
        ("kind: svc\nmetadata: {name: a}\nstatus: {}", "status", "unknown field"),
        ("- 1\n- 2", "", "expected a mapping"),
    ],
)
def test_document_errors(tmp_path: pathlib.Path, doc: str, field: str, words: str) -> None:
    path = write(tmp_path, "x.yaml", "kind: svc\nmetadata: {name: ok}\n---\n" + doc + "\n")
    err = error(path)
    assert err.where == f"{path}#1"
    assert err.field == field
    assert words in err.reason


def test_duplicates_across_files_are_rejected(tmp_path: pathlib.Path) -> None:
    write(tmp_path, "a.yaml", "kind: svc\nmetadata: {name: a}\n")
    write(tmp_path, "b.yaml", "kind: Service\nmetadata: {name: a}\n")
    err = error(str(tmp_path))
    assert err.where.endswith("b.yaml#0") and "a.yaml#0" in err.reason


def test_yaml_syntax_and_missing_paths(tmp_path: pathlib.Path) -> None:
    err = error(write(tmp_path, "bad.yaml", "kind: [unclosed\n"))
    assert "not valid YAML at line" in err.reason
    assert "no such file" in error(str(tmp_path / "missing.yaml")).reason
    (tmp_path / "empty").mkdir()
    assert "no *.yaml" in error(str(tmp_path / "empty")).reason


def test_empty_documents_skipped_but_counted(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        "a.yaml",
        "kind: svc\nmetadata: {name: a}\n---\n---\nkind: svc\nmetadata: {name: Bad}\n",
    )
    assert error(path).where == f"{path}#2"


def test_kind_aliases() -> None:
    for text in ("service", "Services", "SVC"):
        assert parse_kind(text) == "Service"
    for text in ("TrafficPolicy", "trafficpolicies", "tp"):
        assert parse_kind(text) == "TrafficPolicy"
    for text in ("endpoint", "Endpoints", "ep"):
        assert parse_kind(text) == "Endpoint"
    with pytest.raises(ConfigError):
        parse_kind("pods")


def test_manifest_round_trip() -> None:
    for doc in yaml.safe_load_all(GOOD):
        res = parse_manifest(doc)
        manifest = resource_to_manifest(res)
        assert manifest["kind"] == resource_kind(res)
        assert parse_manifest(manifest) == res
    out = resource_to_manifest(parse_manifest(yaml.safe_load(GOOD.split("---")[1])))
    assert out["spec"]["loadBalancer"] == {"algorithm": "LEAST_REQUEST"}


def test_policy_reference_example_is_valid() -> None:
    """The full example in docs/policies.md applies as written."""
    doc = pathlib.Path(__file__).resolve().parents[3] / "docs" / "policies.md"
    text = doc.read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    res = parse_manifest(yaml.safe_load(example))
    spec = res.traffic_policy.spec
    assert spec.load_balancer.weights["products-1"] == 3
    assert [r.name for r in spec.rate_limits] == ["per-service", "per-client"]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_name_the_field(value: str) -> None:
    doc = yaml.safe_load(
        f"kind: tp\nmetadata: {{name: a}}\nspec: {{service: a, retryBudget: {{ratio: {value}}}}}"
    )
    with pytest.raises(ConfigError) as info:
        parse_manifest(doc)
    assert info.value.field == "spec.retry_budget.ratio"
    assert "finite number" in info.value.reason
