"""`skein`: runs the daemons and speaks the operator API.

Exit codes (the contract scripts rely on): 0 success; 1 the control daemon
could not be reached or answered with an error (or `wait` timed out); 2 bad
usage or an invalid manifest, in which case nothing was sent. The daemons
are imported only when their subcommand runs, so `skein get` stays light.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from skein.addr import HostPort, parse_hostport_list
from skein.errors import ConfigError
from skein.v1 import operator_pb2, resources_pb2

if TYPE_CHECKING:  # grpcio and yaml load only for operator commands: not in the sidecar
    from skein.client import OperatorClient

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "build_parser",
    "format_apply",
    "format_resources",
    "format_status",
    "laggards",
    "main",
    "resource_kind",
    "table",
    "wait_for_version",
]

EXIT_FAILURE = 1
EXIT_USAGE = 2
_DAEMONS = ("control", "sidecar")
_KINDS = {"service": "Service", "traffic_policy": "TrafficPolicy", "endpoint": "Endpoint"}
_FIX_UNREACHABLE = (
    "start one with `skein control --etcd HOST:PORT`, or point --control / SKEIN_CONTROL "
    "at a running replica"
)


class UsageError(Exception):
    """Bad flags or input from the operator: exit 2 with this message."""


# ---- formatting (pure; unit-tested) -------------------------------------------------------


def resource_kind(res: resources_pb2.Resource) -> str:
    """The manifest kind of a Resource (`Service`), or raise UsageError if it carries none."""
    which = res.WhichOneof("kind")
    if which is None:
        raise UsageError("the server returned a resource without a kind")
    return _KINDS[which]


def _body(res: resources_pb2.Resource) -> Any:
    return getattr(res, res.WhichOneof("kind") or "service")


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
    health = resources_pb2.HealthState.Name(spec.health or resources_pb2.HEALTHY)
    return [spec.service, spec.address, str(spec.weight or 1), health]


_HEADERS = {
    "Service": ["PROTOCOL", "PORT", "HTTP PATH"],
    "TrafficPolicy": ["SERVICE", "ALGORITHM", "TIMEOUT"],
    "Endpoint": ["SERVICE", "ADDRESS", "WEIGHT", "HEALTH"],
}


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart (kubectl style)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def format_resources(
    resources: Sequence[resources_pb2.Resource],
    output: str,
    to_manifest: Callable[[resources_pb2.Resource], dict[str, Any]],
) -> str:
    """Render resources as a table (one per kind), YAML documents or JSON."""
    if output == "yaml":
        import yaml

        return yaml.safe_dump_all([to_manifest(r) for r in resources], sort_keys=False).rstrip()
    if output == "json":
        items = [to_manifest(r) for r in resources]
        return json.dumps(items[0] if len(items) == 1 else {"items": items}, indent=2)
    if not resources:
        return "No resources found."
    blocks: list[str] = []
    by_kind: dict[str, list[resources_pb2.Resource]] = {}
    for res in resources:
        by_kind.setdefault(resource_kind(res), []).append(res)
    for kind, group in by_kind.items():
        rows = [
            [_body(r).metadata.name, *_columns(kind, _body(r)), str(_body(r).metadata.version)]
            for r in group
        ]
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
    if not response.sidecars:
        return f"No sidecars connected (store revision {response.revision})."
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
    return f"{table(header, rows)}\n\nstore revision {response.revision}"


def laggards(
    response: operator_pb2.StatusResponse, version: int
) -> list[operator_pb2.SidecarStatus]:
    """Connected sidecars whose configuration is not yet current for `version`."""
    return [s for s in response.sidecars if s.synced_revision < version]


def _describe_laggard(s: operator_pb2.SidecarStatus) -> str:
    nack = f", last NACK: {s.nack_error}" if s.nack_error else ""
    return f"{s.node.service}/{s.node.instance} (synced {s.synced_revision}{nack})"


def wait_for_version(
    status: Callable[[], operator_pb2.StatusResponse],
    version: int,
    timeout: float,
    *,
    now: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 0.2,
) -> list[operator_pb2.SidecarStatus]:
    """Poll until no sidecar lags `version`; returns the laggards left at the deadline."""
    deadline = now() + timeout
    while True:
        behind = laggards(status(), version)
        if not behind or now() >= deadline:
            return behind
        sleep(min(interval, max(0.0, deadline - now())))


# ---- commands -----------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> OperatorClient:
    from skein.client import DEFAULT_CONTROL, OperatorClient

    raw = args.control or os.environ.get("SKEIN_CONTROL") or DEFAULT_CONTROL
    source = (
        "--control"
        if args.control
        else ("SKEIN_CONTROL" if "SKEIN_CONTROL" in os.environ else "default")
    )
    try:
        addresses: list[HostPort] = parse_hostport_list(raw, flag=source)
    except ConfigError as err:
        raise UsageError(f"{err}; example: --control 127.0.0.1:15010,10.0.0.2:15010") from None
    return OperatorClient(addresses, connect_timeout=args.connect_timeout)


def _manifest_helpers() -> tuple[
    Callable[[str], list[resources_pb2.Resource]],
    Callable[[resources_pb2.Resource], dict[str, Any]],
]:
    from skein.config import load_manifests, resource_to_manifest

    return load_manifests, resource_to_manifest


def cmd_apply(args: argparse.Namespace) -> int:
    import grpc

    from skein.client import OperatorCallError

    load, _ = _manifest_helpers()
    if not os.path.exists(args.file):
        raise UsageError(f"-f {args.file}: no such file or directory")
    try:
        resources = load(args.file)
    except ConfigError as err:
        raise UsageError(f"invalid manifest: {err}; nothing was applied") from None
    if not resources:
        raise UsageError(f"-f {args.file}: no resources found (empty file or directory)")
    with _client(args) as client:
        try:
            response = client.apply(resources, dry_run=args.dry_run)
        except OperatorCallError as err:
            if err.code != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            raise UsageError(
                f"-f {args.file}: rejected by control at {err.address}: "
                f"{err.message}; nothing was applied"
            ) from None
    print(format_apply(response, dry_run=args.dry_run))
    return 0


def _kind(text: str) -> str:
    """Canonical kind for user input (`svc` -> Service), checked before any call."""
    from skein.config import parse_kind

    try:
        return parse_kind(text, field="KIND")
    except ConfigError as err:
        raise UsageError(str(err)) from None


def cmd_get(args: argparse.Namespace) -> int:
    _, to_manifest = _manifest_helpers()
    kind = _kind(args.kind)
    with _client(args) as client:
        response = client.get(kind, args.name or "")
    print(format_resources(response.resources, args.output, to_manifest))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    with _client(args) as client:
        response = client.delete(kind, args.name)
    print(f"{kind.lower()}/{args.name} deleted")
    print(f"version {response.version}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(format_status(client.status()))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    with _client(args) as client:
        behind = wait_for_version(client.status, args.version, args.timeout)
    if behind:
        names = ", ".join(_describe_laggard(s) for s in behind)
        print(
            f"error: timed out after {args.timeout:g}s waiting for version {args.version}; "
            f"{len(behind)} sidecar(s) behind: {names}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    print(f"every connected sidecar is synced to version {args.version} or newer")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    # The demo lives in the source tree; a console script does not put the
    # working directory on sys.path, so add it when it holds the examples.
    if os.path.exists(os.path.join("examples", "shop", "demo.py")) and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        demo = importlib.import_module("examples.shop.demo")
    except ImportError as err:
        raise UsageError(
            f"the demo needs a source checkout; run it from the repository root (./dev demo): {err}"
        ) from None
    demo_argv = ["--duration", str(args.duration)] if args.duration is not None else []
    code: int = demo.main(demo_argv)
    return code


# ---- parser -------------------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _add_daemon(sub: Any, name: str, chosen: str | None) -> None:
    text = {"control": "run the control daemon", "sidecar": "run a sidecar"}[name]
    parser = sub.add_parser(name, help=text, description=text)
    if chosen == name:  # import the daemon only when it is the one being run
        app = importlib.import_module(f"{name}.app")
        app.add_arguments(parser)
        parser.set_defaults(run=app.main, daemon=True)


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skein", description="Skein service mesh")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _DAEMONS:
        _add_daemon(sub, name, chosen)
    if chosen in _DAEMONS:
        return parser  # a daemon needs none of the operator commands (nor grpcio)
    from skein.client import DEFAULT_CONTROL

    api = argparse.ArgumentParser(add_help=False)
    api.add_argument(
        "--control",
        metavar="HOST:PORT[,...]",
        help=f"control replicas, tried in order (env SKEIN_CONTROL; default {DEFAULT_CONTROL})",
    )
    api.add_argument(
        "--connect-timeout",
        type=_positive,
        default=3.0,
        metavar="S",
        help="seconds to wait for a connection to each replica",
    )

    p = sub.add_parser("apply", parents=[api], help="create or update resources from manifests")
    p.add_argument(
        "-f",
        "--filename",
        dest="file",
        required=True,
        metavar="FILE|DIR",
        help="YAML manifest file, or a directory of *.yaml files",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and report, store nothing")
    p.set_defaults(run=cmd_apply)

    p = sub.add_parser("get", parents=[api], help="show resources")
    p.add_argument("kind", help="Service, TrafficPolicy or Endpoint (plural accepted)")
    p.add_argument("name", nargs="?", help="one resource; all of the kind when omitted")
    p.add_argument("-o", "--output", choices=("table", "yaml", "json"), default="table")
    p.set_defaults(run=cmd_get)

    p = sub.add_parser("delete", parents=[api], help="delete a resource")
    p.add_argument("kind")
    p.add_argument("name")
    p.set_defaults(run=cmd_delete)

    p = sub.add_parser("status", parents=[api], help="connected sidecars and their versions")
    p.set_defaults(run=cmd_status)

    p = sub.add_parser(
        "wait", parents=[api], help="wait until every connected sidecar is synced to a version"
    )
    p.add_argument(
        "--version",
        type=int,
        required=True,
        metavar="V",
        help="store revision, as printed by `skein apply`",
    )
    p.add_argument("--timeout", type=_positive, default=60.0, metavar="S")
    p.set_defaults(run=cmd_wait)

    p = sub.add_parser("demo", help="run the example shop with live traffic")
    p.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="S",
        help="stop after S seconds (default: until Ctrl-C)",
    )
    p.set_defaults(run=cmd_demo)
    return parser


def _error(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point; returns the exit code (see the module docstring)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in _DAEMONS else None)
    args = parser.parse_args(args_list)
    run: Callable[[argparse.Namespace], int] = args.run
    if getattr(args, "daemon", False):
        return run(args)
    import grpc

    from skein.client import ControlUnreachableError, OperatorCallError

    try:
        return run(args)
    except UsageError as err:
        return _error(str(err), EXIT_USAGE)
    except ControlUnreachableError as err:
        where = ", ".join(addr for addr, _ in err.failures)
        why = "; ".join(f"{addr}: {reason}" for addr, reason in err.failures)
        return _error(
            f"cannot reach the control daemon at {where} ({why}); {_FIX_UNREACHABLE}", EXIT_FAILURE
        )
    except OperatorCallError as err:
        if err.code == grpc.StatusCode.INVALID_ARGUMENT:
            return _error(f"rejected by control at {err.address}: {err.message}", EXIT_USAGE)
        return _error(f"control at {err.address}: {err.code.name}: {err.message}", EXIT_FAILURE)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
