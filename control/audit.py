"""The audit log: one etcd key per accepted change, written in the change's own txn.

    <prefix>audit/<unix ns, 20 digits>-<random hex>   JSON of an AuditEntry

`record` builds the put for a change; the caller adds it to the transaction
that makes the change, so an entry exists exactly when the change does (a
refused, failed or dry-run call writes none). The entry's revision is the
key's mod_revision, filled in when read: the transaction's revision is not
known before it commits. Entries hold who (principal, role), when, what
(action, kind, name) and a unified diff of the stored JSON; never a secret
(an API key's entry shows its digest only).
"""

from __future__ import annotations

import difflib
import json
import secrets
import time

from google.protobuf import json_format  # type: ignore[import-untyped]

from control.auth import Principal
from control.store import EtcdStore, KeyLayout, KeyValue, TxnOp
from skein.v1 import operator_pb2

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "audit_prefix", "diff", "read_entries", "record"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000


def audit_prefix(layout: KeyLayout) -> bytes:
    return f"{layout.prefix}audit/".encode()


def _pretty(stored: bytes | None) -> list[str]:
    """Stored JSON as sorted, indented lines, so the diff shows one field per line."""
    if not stored:
        return []
    try:
        text = json.dumps(json.loads(stored), indent=2, sort_keys=True)
    except ValueError:
        text = stored.decode(errors="replace")
    return text.splitlines()


def diff(kind: str, name: str, before: bytes | None, after: bytes | None) -> str:
    """Unified diff of the stored JSON; /dev/null stands for absent."""
    label = f"{kind}/{name}"
    lines = difflib.unified_diff(
        _pretty(before),
        _pretty(after),
        fromfile=label if before else "/dev/null",
        tofile=label if after else "/dev/null",
        lineterm="",
    )
    return "\n".join(lines)


def record(
    layout: KeyLayout,
    principal: Principal,
    action: str,
    kind: str,
    name: str,
    before: bytes | None,
    after: bytes | None,
    *,
    now: float | None = None,
) -> TxnOp:
    """The put that logs one change; add it to the change's transaction.

    `action` is a verb such as apply, delete, apikey-create, token-create.
    `before` / `after` are the stored values (None when absent); pass a
    redacted form for anything secret.
    """
    when = time.time() if now is None else now
    entry = operator_pb2.AuditEntry(
        time=when,
        principal=principal.name,
        role=principal.role.label,
        action=action,
        kind=kind,
        name=name,
        diff=diff(kind, name, before, after),
    )
    key = f"{layout.prefix}audit/{int(when * 1e9):020d}-{secrets.token_hex(4)}".encode()
    value: str = json_format.MessageToJson(entry, indent=None)
    return TxnOp(key, value.encode())


def _decode(kv: KeyValue) -> operator_pb2.AuditEntry | None:
    entry = operator_pb2.AuditEntry()
    try:
        json_format.Parse(kv.value, entry, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError):
        return None
    entry.revision = kv.mod_revision
    return entry


async def read_entries(
    store: EtcdStore, layout: KeyLayout, since_revision: int = 0, limit: int = 0
) -> list[operator_pb2.AuditEntry]:
    """Entries with a revision above `since_revision`, oldest first, the newest `limit`."""
    _rev, kvs = await store.range_prefix(audit_prefix(layout))
    entries = []
    for kv in sorted(kvs, key=lambda kv: (kv.mod_revision, kv.key)):
        if kv.mod_revision <= since_revision:
            continue
        entry = _decode(kv)
        if entry is not None:
            entries.append(entry)
    count = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
    return entries[-count:]
