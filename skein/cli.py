"""`skein`: runs the daemons and speaks the operator API.

Exit codes (the contract scripts rely on): 0 success; 1 the control daemon
could not be reached or answered with an error (or `wait` timed out); 2 bad
usage or an invalid manifest, in which case nothing was sent. The daemons
are imported only when their subcommand runs, so `skein get` stays light.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from skein.addr import HostPort, parse_hostport_list
from skein.errors import ConfigError

if TYPE_CHECKING:  # grpcio and yaml load only for operator commands: not in the sidecar
    from skein.client import OperatorClient

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "build_parser", "main"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
_DAEMONS = ("control", "sidecar")
_FIX_UNREACHABLE = (
    "start one with `skein control --etcd HOST:PORT`, or point --control / SKEIN_CONTROL "
    "at a running replica"
)


class UsageError(Exception):
    """Bad flags or input from the operator: exit 2 with this message."""


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
    token = args.token or os.environ.get("SKEIN_TOKEN") or None
    return OperatorClient(
        addresses, connect_timeout=args.connect_timeout, token=token, root_certificates=_roots(args)
    )


def _roots(args: argparse.Namespace) -> bytes | None:
    """The CAs that verify control's TLS certificate (--control-ca / SKEIN_CONTROL_CA), or None."""
    path = args.control_ca or os.environ.get("SKEIN_CONTROL_CA") or None
    if path is None:
        return None
    flag = "--control-ca" if args.control_ca else "SKEIN_CONTROL_CA"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise UsageError(f"{flag}: cannot read {path}: {err.strerror or err}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise UsageError(
            f"{flag}: {path} holds no PEM certificate; get the bundle with "
            "`skein control --print-bundle --etcd HOST:PORT > FILE`"
        )
    return data


def cmd_apply(args: argparse.Namespace) -> int:
    import grpc

    from skein.client import OperatorCallError
    from skein.config import load_manifests
    from skein.output import format_apply

    if not os.path.exists(args.file):
        raise UsageError(f"-f {args.file}: no such file or directory")
    try:
        resources = load_manifests(args.file)
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
    from skein.output import format_resources

    kind = _kind(args.kind)
    with _client(args) as client:
        response = client.get(kind, args.name or "")
    print(format_resources(response.resources, args.output))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    with _client(args) as client:
        response = client.delete(kind, args.name)
    print(f"{kind.lower()}/{args.name} deleted")
    print(f"version {response.version}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from skein.output import format_status

    with _client(args) as client:
        print(format_status(client.status()))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    from skein.waiting import describe_laggard, wait_for_version

    seen = 0  # sidecars in the last status polled

    with _client(args) as client:

        def status() -> Any:
            nonlocal seen
            response = client.status()
            seen = len(response.sidecars)
            return response

        behind = wait_for_version(status, args.version, args.timeout)
    if behind:
        names = ", ".join(describe_laggard(s) for s in behind)
        print(
            f"error: timed out after {args.timeout:g}s waiting for version {args.version}; "
            f"{len(behind)} sidecar(s) behind: {names}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    if seen == 0:
        print(f"no sidecar is connected; nothing had to sync to version {args.version}")
    else:
        print(f"every connected sidecar ({seen}) is synced to version {args.version} or newer")
    return 0


def _format_audit_table(entries: Sequence[Any], with_diff: bool) -> str:
    import datetime

    header = ("REVISION", "TIME", "PRINCIPAL", "ROLE", "ACTION", "RESOURCE")
    rows = [
        (
            str(e.revision),
            datetime.datetime.fromtimestamp(e.time, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            e.principal,
            e.role,
            e.action,
            f"{e.kind}/{e.name}",
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = []
    for index, row in enumerate((header, *rows)):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if with_diff and index and entries[index - 1].diff:
            lines.extend("    " + d for d in entries[index - 1].diff.splitlines())
    return "\n".join(lines)


def cmd_audit(args: argparse.Namespace) -> int:
    import json

    from google.protobuf import json_format  # type: ignore[import-untyped]

    if not 1 <= args.limit <= 10_000:
        raise UsageError(f"--limit must be 1-10000, got {args.limit}")
    with _client(args) as client:
        response = client.audit(args.since_revision, args.limit)
    entries = list(response.entries)
    if args.output == "json":
        docs = [json_format.MessageToDict(e, preserving_proto_field_name=True) for e in entries]
        print(json.dumps(docs, indent=2))
    elif not entries:
        print("no audit entries")
    else:
        print(_format_audit_table(entries, args.diff))
    return 0


def cmd_apikey_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        response = client.create_api_key(args.service, args.name)
    print(f"apikey/{args.name} created for service {args.service}")
    print(f"key {response.key}")
    print("the key is shown once: only its SHA-256 is stored")
    print(f"version {response.version}")
    return 0


def cmd_apikey_revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        response = client.revoke_api_key(args.name)
    print(f"apikey/{args.name} revoked")
    print(f"version {response.version}")
    return 0


def cmd_operator_token_hash(args: argparse.Namespace) -> int:
    from control.auth import Role, hash_token, new_token

    try:
        role = Role.parse(args.role)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    token = new_token()
    print(f"# token for {args.name} (give it to them; it is stored nowhere): {token}")
    print(f"- {{name: {args.name}, role: {role.label}, token_sha256: {hash_token(token)}}}")
    return 0


def _duration(text: str) -> int:
    """Whole seconds from `90`, `90s`, `30m`, `1h`, `7d`."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        value = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 30m, 1h or 7d, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1s, got {text!r}")
    return int(value)


def _when(unix: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(unix, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_token_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        response = client.create_token(args.service, args.ttl)
    print(response.token)
    print(
        f"join token {response.id} for service {args.service}, expires {_when(response.expires_at)}"
        "; shown once: only its SHA-256 is stored",
        file=sys.stderr,
    )
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.revoke_token(args.id)
    print(f"join token {args.id} revoked")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    import time

    with _client(args) as client:
        tokens = list(client.list_tokens().tokens)
    if not tokens:
        print("no join tokens")
        return 0
    now = time.time()
    rows = [("ID", "SERVICE", "CREATED", "EXPIRES", "STATE")]
    for t in tokens:
        state = "revoked" if t.revoked else ("expired" if t.expires_at <= now else "active")
        rows.append((t.id, t.service, _when(t.created_at), _when(t.expires_at), state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)  # an existing file keeps its mode otherwise
        f.write(data)


def cmd_identity_issue(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization

    from skein.pki import generate_key, key_pem, make_csr

    try:
        os.makedirs(args.out, mode=0o700, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {args.out}: {err.strerror or err}") from None
    key = generate_key()
    csr = make_csr(key).public_bytes(serialization.Encoding.PEM).decode()
    token = args.join_token or os.environ.get("SKEIN_JOIN_TOKEN") or ""
    with _client(args) as client:
        made = ""
        if not token:  # an operator's own call: a short-lived token just for this request
            created = client.create_token(args.service, 300)
            token, made = created.token, created.id
        try:
            response = client.sign(csr, token, args.service, args.ttl)
        finally:
            if made:
                client.revoke_token(made)
    paths = {n: os.path.join(args.out, n) for n in ("key.pem", "cert.pem", "bundle.pem")}
    _write(paths["key.pem"], key_pem(key), 0o600)
    _write(paths["cert.pem"], response.certificate_pem.encode(), 0o644)
    _write(paths["bundle.pem"], response.trust_bundle_pem.encode(), 0o644)
    print(f"issued {response.spiffe_id}, valid until {_when(response.not_after)}")
    for name, path in paths.items():
        print(f"  {name:<10} {path}")
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
    if args.insecure:
        demo_argv.append("--insecure")
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
    api.add_argument(
        "--token",
        metavar="TOKEN",
        help="operator token, sent as a bearer token on every call (env SKEIN_TOKEN)",
    )
    api.add_argument(
        "--control-ca",
        metavar="FILE",
        help="talk TLS to control and verify its certificate with these CAs (PEM; env "
        "SKEIN_CONTROL_CA; get them with `skein control --print-bundle`)",
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

    p = sub.add_parser("audit", parents=[api], help="who changed what, newest last")
    p.add_argument(
        "--since-revision",
        type=int,
        default=0,
        metavar="REV",
        help="only changes after this store revision",
    )
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N, the newest")
    p.add_argument("--diff", action="store_true", help="show each change's diff (table output)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(run=cmd_audit)

    apikey = sub.add_parser("apikey", help="API keys that open a service to its callers")
    keys = apikey.add_subparsers(dest="apikey_command", metavar="ACTION", required=True)
    p = keys.add_parser("create", parents=[api], help="make a key; it is printed once")
    p.add_argument("--service", required=True, help="the service the key opens")
    p.add_argument("name", help="a name for the key (lowercase DNS label)")
    p.set_defaults(run=cmd_apikey_create)
    p = keys.add_parser("revoke", parents=[api], help="revoke a key (its name stays taken)")
    p.add_argument("name")
    p.set_defaults(run=cmd_apikey_revoke)

    optoken = sub.add_parser("operator-token", help="tokens for control's --operators file")
    optok = optoken.add_subparsers(dest="operator_token_command", metavar="ACTION", required=True)
    p = optok.add_parser("hash", help="print a new random token and its operators-file line")
    p.add_argument("--name", default="alice", help="operator name (default alice)")
    p.add_argument("--role", default="operator", help="viewer, operator or admin")
    p.set_defaults(run=cmd_operator_token_hash)

    token = sub.add_parser(
        "token", help="join tokens: a workload's credential for its first certificate"
    )
    tok = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    p = tok.add_parser("create", parents=[api], help="make a token for one service; printed once")
    p.add_argument("--service", required=True, help="the one service the token is good for")
    p.add_argument(
        "--ttl", type=_duration, default=3600, metavar="DURATION", help="lifetime (default 1h)"
    )
    p.set_defaults(run=cmd_token_create)
    p = tok.add_parser("revoke", parents=[api], help="revoke a token by id")
    p.add_argument("id")
    p.set_defaults(run=cmd_token_revoke)
    p = tok.add_parser("list", parents=[api], help="every token: id, service, expiry, state")
    p.set_defaults(run=cmd_token_list)

    identity = sub.add_parser("identity", help="workload certificates from the mesh CA")
    ident = identity.add_subparsers(dest="identity_command", metavar="ACTION", required=True)
    p = ident.add_parser(
        "issue",
        parents=[api],
        help="make a key here and get it a certificate: writes key.pem, cert.pem, bundle.pem",
    )
    p.add_argument("--service", required=True, help="the service the certificate names")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the files to")
    p.add_argument(
        "--ttl",
        type=_duration,
        default=0,
        metavar="DURATION",
        help="certificate lifetime (default: the CA's, 24h)",
    )
    p.add_argument(
        "--join-token",
        metavar="TOKEN",
        help="a join token for --service (env SKEIN_JOIN_TOKEN); without one, a 5-minute token "
        "is created through the operator API and revoked afterwards",
    )
    p.set_defaults(run=cmd_identity_issue)

    p = sub.add_parser("demo", help="run the example shop with live traffic")
    p.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="S",
        help="stop after S seconds (default: until Ctrl-C)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext between sidecars, no identities or authorization, open operator API",
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
