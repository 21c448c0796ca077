"""Operators file parsing, token lookup, bearer metadata and audit records."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from control import audit
from control.auth import (
    ANONYMOUS,
    Principal,
    Role,
    bearer_token,
    hash_token,
    new_token,
    parse_operators,
)
from control.store import KeyLayout
from skein.errors import ConfigError
from skein.v1 import operator_pb2


def entry(name: str = "ana", role: str = "viewer", token: str = "t1") -> dict[str, str]:
    return {"name": name, "role": role, "token_sha256": hash_token(token)}


def test_roles_are_ordered_and_parse_any_case() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.parse(" Operator ") is Role.OPERATOR
    assert ANONYMOUS.role is Role.ADMIN
    with pytest.raises(ConfigError, match="expected viewer, operator or admin"):
        Role.parse("root")


def test_table_finds_each_token_and_nothing_else() -> None:
    table = parse_operators(
        {"operators": [entry("ana", "viewer", "t1"), entry("bo", "admin", "t2")]}, "ops.yaml"
    )
    assert table.lookup("t1") == Principal("ana", Role.VIEWER)
    assert table.lookup("t2") == Principal("bo", Role.ADMIN)
    assert table.lookup("t3") is None
    assert table.lookup("") is None
    assert table.lookup(hash_token("t1")) is None  # the digest is not a token


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "non-empty list"),
        ({"operators": "x"}, "non-empty list"),
        (["x"], "operators[0]: operators: expected"),
        ([{**entry(), "extra": 1}], "operators[0]: extra: unknown field"),
        ([{**entry(), "name": ""}], "operators[0]: name: required"),
        ([entry(), entry(token="t2")], "operators[1]: name: 'ana' appears twice"),
        ([entry(role="root")], "operators[0]: role: unknown role 'root'"),
        ([{**entry(), "token_sha256": "abc"}], "operators[0]: token_sha256: must be the 64"),
        ([entry("a"), entry("b")], "operators[1]: token_sha256: same token as 'a'"),
    ],
)
def test_bad_files_name_the_entry(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_operators(data, "ops.yaml")
    assert str(info.value).startswith("ops.yaml")
    assert message in str(info.value)


def test_uppercase_digest_is_accepted() -> None:
    table = parse_operators([{**entry(token="t9"), "token_sha256": hash_token("t9").upper()}], "f")
    assert table.lookup("t9") is not None


def test_new_tokens_are_random_and_long() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t) >= 40 for t in tokens)


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        (None, None),
        ((("x-other", "v"),), None),
        ((("authorization", "Bearer abc"),), "abc"),
        ((("authorization", "bearer  abc "),), "abc"),
        ((("authorization", b"Bearer abc"),), "abc"),
        ((("authorization", "Basic abc"),), ""),  # present but not a bearer token: refused
        ((("authorization", "Bearer"),), ""),
    ],
)
def test_bearer_token(metadata: tuple[tuple[str, object], ...] | None, token: str | None) -> None:
    assert bearer_token(metadata) == token


def test_diff_shows_field_changes_and_absence() -> None:
    before = b'{"metadata":{"name":"a"},"spec":{"port":80}}'
    after = b'{"metadata":{"name":"a"},"spec":{"port":81}}'
    text = audit.diff("Service", "a", before, after)
    assert text.splitlines()[:2] == ["--- Service/a", "+++ Service/a"]
    assert '-    "port": 80' in text and '+    "port": 81' in text
    assert audit.diff("Service", "a", None, after).startswith("--- /dev/null\n+++ Service/a")
    assert audit.diff("Service", "a", before, None).startswith("--- Service/a\n+++ /dev/null")
    assert audit.diff("Service", "a", before, before) == ""


def test_record_is_a_put_under_audit_holding_who_and_what() -> None:
    layout = KeyLayout("/mesh/")
    op = audit.record(
        layout,
        Principal("ana", Role.OPERATOR),
        "apply",
        "Service",
        "a",
        None,
        b'{"spec":{}}',
        now=1_700_000_000.5,
    )
    assert op.key.startswith(b"/mesh/audit/01700000000500000000-")
    assert op.value is not None
    entry = json_format.Parse(op.value, operator_pb2.AuditEntry())
    assert (entry.principal, entry.role, entry.action, entry.kind, entry.name) == (
        "ana",
        "operator",
        "apply",
        "Service",
        "a",
    )
    assert entry.time == 1_700_000_000.5
    assert "+++ Service/a" in entry.diff
    json.loads(op.value)


@given(st.lists(st.floats(min_value=1e9, max_value=4e9), min_size=2, max_size=20))
def test_record_keys_sort_by_time(times: list[float]) -> None:
    layout = KeyLayout("/m/")
    who = Principal("x", Role.ADMIN)
    keys = [
        audit.record(layout, who, "apply", "Service", "s", None, None, now=t).key for t in times
    ]
    by_key = [t for _k, t in sorted(zip(keys, times, strict=True))]
    assert [int(t * 1e9) for t in by_key] == sorted(int(t * 1e9) for t in times)
