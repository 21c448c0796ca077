"""`skein get authz` prints a table with the policy's service, action and rule count."""

from __future__ import annotations

from skein import output
from skein.v1 import resources_pb2


def test_authorization_policy_table() -> None:
    deny = resources_pb2.AuthorizationPolicy()
    deny.metadata.name, deny.metadata.version = "no-admin", 7
    deny.spec.service, deny.spec.action = "orders", resources_pb2.DENY
    deny.spec.rules.add(paths=["/admin*"])
    lockdown = resources_pb2.AuthorizationPolicy()
    lockdown.metadata.name, lockdown.spec.service = "lockdown", "cart"
    text = output.format_resources(
        [
            resources_pb2.Resource(authorization_policy=deny),
            resources_pb2.Resource(authorization_policy=lockdown),
        ],
        "table",
    )
    lines = [line.split() for line in text.splitlines()]
    assert lines == [
        ["NAME", "SERVICE", "ACTION", "RULES", "VERSION"],
        ["no-admin", "orders", "DENY", "1", "7"],
        ["lockdown", "cart", "ALLOW", "0", "0"],
    ]
