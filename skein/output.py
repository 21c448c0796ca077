"""What the operator commands print: tables, manifests and summaries (pure).

Kept apart from argument parsing and the calls so the output contract that
scripts read (`version N` as the last line of apply, kubectl-style columns)
is tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from skein.config import resource_kind, resource_message, resource_to_manifest
from skein.v1 import operator_pb2, resources_pb2

__all__ = ["format_apply", "format_resources", "format_status", "table"]

_HEADERS = {
    "Service": ["PROTOCOL", "PORT", "HTTP PATH"],
    "TrafficPolicy": ["SERVICE", "ALGORITHM", "TIMEOUT"],
    "Endpoint": ["SERVICE", "ADDRESS", "WEIGHT", "HEALTH"],
    "AuthorizationPolicy": ["SERVICE", "ACTION", "RULES"],
}


def _duration(d: Any) -> str:
    if d.seconds == 0 and d.nanos == 0:
        return "-"
    return f"{d.seconds + d.nanos / 1e9:g}s"


def _columns(kind: str, body: Any) -> list[str]:
    spec = body.spec
    if kind == "Service":
        proto = resources_pb2.Protocol.Name(spec.protocol or resources_pb2.GRPC)
        return [proto, str(spec.port or "-"), spec.http_path or "-"]
    if kind == "TrafficPolicy":
        algo = spec.load_balancer.algorithm or resources_pb2.ROUND_ROBIN
        timeout = _duration(spec.timeout) if spec.HasField("timeout") else "-"
        return [spec.service, resources_pb2.LoadBalancerAlgorithm.Name(algo), timeout]
    if kind == "AuthorizationPolicy":
        action = resources_pb2.AuthorizationAction.Name(spec.action or resources_pb2.ALLOW)
        return [spec.service, action, str(len(spec.rules))]
    health = resources_pb2.HealthState.Name(spec.health or resources_pb2.HEALTHY)
    return [spec.service, spec.address, str(spec.weight or 1), health]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart (kubectl style)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def format_resources(resources: Sequence[resources_pb2.Resource], output: str) -> str:
    """Render resources as a table (one per kind), YAML documents or JSON.

    A resource without a kind (a newer server's kind this CLI does not know)
    is left out of tables and kept in YAML/JSON as the server sent it.
    """
    if output == "yaml":
        docs = [resource_to_manifest(r) for r in resources]
        return yaml.safe_dump_all(docs, sort_keys=False).rstrip()
    if output == "json":
        items = [resource_to_manifest(r) for r in resources]
        return json.dumps(items[0] if len(items) == 1 else {"items": items}, indent=2)
    by_kind: dict[str, list[Any]] = {}
    for res in resources:
        kind = resource_kind(res)
        if kind:
            by_kind.setdefault(kind, []).append(resource_message(res))
    if not by_kind:
        return "No resources found."
    blocks: list[str] = []
    for kind, bodies in by_kind.items():
        rows = [[b.metadata.name, *_columns(kind, b), str(b.metadata.version)] for b in bodies]
        blocks.append(table(["NAME", *_HEADERS[kind], "VERSION"], rows))
    return "\n\n".join(blocks)


def format_apply(response: operator_pb2.ApplyResponse, *, dry_run: bool) -> str:
    """`service/orders created` per resource, then the version to `skein wait` for."""
    suffix = " (dry run)" if dry_run else ""
    lines = [f"{r.kind.lower()}/{r.name} {r.action}{suffix}" for r in response.results]
    if dry_run:
        lines.append("dry run: nothing was stored")
    else:
        lines.append(f"version {response.version}")
    return "\n".join(lines)


def format_status(response: operator_pb2.StatusResponse) -> str:
    """One row per sidecar, then the configuration version `skein wait` can wait for."""
    footer = f"configuration version {response.revision}"
    if not response.sidecars:
        return f"No sidecars connected ({footer})."
    rows = []
    for s in sorted(response.sidecars, key=lambda s: (s.node.service, s.node.instance)):
        nack = f"{s.nack_version}: {s.nack_error}" if s.nack_error else "-"
        rows.append(
            [
                s.node.instance,
                s.node.service,
                s.control or "-",
                s.acked_version or "-",
                str(s.synced_revision),
                nack,
            ]
        )
    header = ["INSTANCE", "SERVICE", "CONTROL", "ACKED", "SYNCED", "LAST NACK"]
    return f"{table(header, rows)}\n\n{footer}"
