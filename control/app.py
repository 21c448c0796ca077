"""Wiring and lifecycle of the control daemon (`skein control ...`).

Start: bind gRPC and admin, then load the mirror from etcd and keep it
current. If etcd is unreachable the daemon stays up, not ready, and retries
with backoff; it never exits for it. SIGTERM/SIGINT: stop accepting, close
the streams (sidecars fail over to another replica), revoke the replica's
lease (its status records vanish), exit 0.

TLS (opt-in, see control/tls.py): `--tls` issues the replica a server
certificate from the mesh CA before the gRPC port is bound, so with --tls the
replica waits for etcd (retrying) before it listens at all; `--tls-cert/
--tls-key` serve an operator's certificate instead. Clients verify it with
the bundle `--print-bundle` prints.

Default ports: gRPC 127.0.0.1:15010 (DESIGN.md), admin 127.0.0.1:15014
(istiod's monitoring port; 15000 is the sidecar's admin).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

import grpc

from control.admin import ControlAdmin
from control.auth import Authorizer, OperatorTable, Role, load_operators
from control.ca import run_ca_command
from control.cache import SnapshotCache
from control.discovery import DiscoveryService
from control.identity import IdentityService
from control.mirror import Mirror
from control.operator import OperatorService
from control.stats import ControlMetrics
from control.status import StatusWriter
from control.store import DEFAULT_PREFIX, EtcdStore, KeyLayout, StoreError
from control.tls import (
    DEFAULT_SERVER_TTL,
    ServerTls,
    TlsOptions,
    file_credentials,
    server_names,
)
from control.translate import NodeKey, translate
from control.watch import MirrorWatcher
from skein.addr import HostPort, format_hostport, parse_hostport, parse_hostport_list
from skein.clock import MonotonicClock
from skein.errors import AddressError, ConfigError, StoreUnavailableError
from skein.logging import configure, get_logger
from skein.pki import (
    DEFAULT_TRUST_DOMAIN,
    MAX_LEAF_TTL,
    CertificateAuthority,
    check_trust_domain,
)
from skein.pki.errors import PkiError
from skein.runtime import run

__all__ = ["ControlOptions", "add_arguments", "bind_error", "main", "options_from_args", "serve"]

log = get_logger("control")

DEFAULT_LISTEN = "127.0.0.1:15010"
DEFAULT_ADMIN = "127.0.0.1:15014"


class WallClock:
    """Unix seconds, for timestamps operators read (connected_at)."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()


@dataclass(frozen=True, slots=True)
class ControlOptions:
    etcd: list[HostPort]
    listen: HostPort
    admin: HostPort
    prefix: str = DEFAULT_PREFIX
    lease_ttl: int = 10
    coalesce: float = 0.002
    coalesce_max: float = 0.1
    operators: OperatorTable | None = None  # None: the operator API is open
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    ca_passphrase: bytes | None = None  # None: the replica issues no certificates
    operator_ca: CertificateAuthority | None = None
    tls: TlsOptions | None = None  # None: plaintext gRPC


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--etcd",
        default=os.environ.get("SKEIN_ETCD", "127.0.0.1:2379"),
        metavar="HOST:PORT[,...]",
        help="etcd endpoints (env SKEIN_ETCD; default 127.0.0.1:2379)",
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"gRPC address for sidecars and operators (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--admin",
        default=DEFAULT_ADMIN,
        metavar="HOST:PORT",
        help=f"admin HTTP: /healthz /ready /metrics /config_dump (default {DEFAULT_ADMIN})",
    )
    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help=f"etcd key prefix of this mesh (default {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--lease-ttl",
        type=int,
        default=10,
        metavar="SECONDS",
        help="default lease TTL of registered endpoints and of this replica (default 10)",
    )
    parser.add_argument(
        "--coalesce-ms",
        type=float,
        default=2.0,
        metavar="MS",
        help="rebuild snapshots once watch events have been quiet this long (default 2)",
    )
    parser.add_argument(
        "--coalesce-max-ms",
        type=float,
        default=100.0,
        metavar="MS",
        help="but at most this long after the first event of a burst (default 100)",
    )
    parser.add_argument(
        "--operators",
        default=None,
        metavar="FILE",
        help="YAML list of {name, role, token_sha256}: operator calls then need a bearer "
        "token of a listed operator (default: the operator API is open to anyone)",
    )
    parser.add_argument(
        "--trust-domain",
        default=DEFAULT_TRUST_DOMAIN,
        help=f"SPIFFE trust domain of the mesh (default {DEFAULT_TRUST_DOMAIN})",
    )
    parser.add_argument(
        "--ca-key-passphrase-file",
        metavar="FILE",
        help="passphrase encrypting the mesh CA key in etcd (or env SKEIN_CA_PASSPHRASE); "
        "without it this replica issues no certificates",
    )
    parser.add_argument(
        "--ca-cert",
        metavar="PEM",
        help="issue from this CA (root or intermediate, chain issuing-first) instead of a "
        "generated one; needs --ca-key and a passphrase",
    )
    parser.add_argument("--ca-key", metavar="PEM", help="private key of --ca-cert")
    once = parser.add_mutually_exclusive_group()
    once.add_argument(
        "--rotate-ca",
        action="store_true",
        help="once, then exit: make a new CA (or --ca-cert) the issuing CA and trust it "
        "next to the old ones",
    )
    once.add_argument(
        "--retire-ca",
        metavar="SHA256",
        help="once, then exit: stop trusting the CA anchor with this fingerprint",
    )
    once.add_argument(
        "--print-bundle",
        action="store_true",
        help="once, then exit: print the mesh trust bundle (PEM) from etcd, for clients' "
        "--control-ca",
    )
    _add_tls_arguments(parser)
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )


def options_from_args(args: argparse.Namespace) -> ControlOptions:
    """Parse and check flags; raises ConfigError naming the flag."""
    if args.lease_ttl < 1 or args.lease_ttl > 3600:
        raise ConfigError("--lease-ttl", f"must be 1-3600 seconds, got {args.lease_ttl}")
    if not 0 <= args.coalesce_ms <= 1000:
        raise ConfigError("--coalesce-ms", f"must be 0-1000, got {args.coalesce_ms:g}")
    if not args.coalesce_ms <= args.coalesce_max_ms <= 10_000:
        raise ConfigError(
            "--coalesce-max-ms",
            f"must be between --coalesce-ms ({args.coalesce_ms:g}) and 10000, "
            f"got {args.coalesce_max_ms:g}",
        )
    prefix = args.prefix if args.prefix.endswith("/") else args.prefix + "/"
    if not prefix.startswith("/"):
        raise ConfigError("--prefix", f"must start with '/', got {args.prefix!r}")
    passphrase, operator_ca = _ca_options(args)
    tls = _tls_options(args, passphrase)
    return ControlOptions(
        tls=tls,
        trust_domain=check_trust_domain(args.trust_domain),
        ca_passphrase=passphrase,
        operator_ca=operator_ca,
        etcd=parse_hostport_list(args.etcd, flag="--etcd"),
        listen=parse_hostport(args.listen, flag="--listen"),
        admin=parse_hostport(args.admin, flag="--admin"),
        prefix=prefix,
        lease_ttl=args.lease_ttl,
        coalesce=args.coalesce_ms / 1000,
        coalesce_max=args.coalesce_max_ms / 1000,
        operators=load_operators(args.operators) if args.operators else None,
    )


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise ConfigError(flag, f"cannot read {path}: {err.strerror or err}") from None


def _ca_options(args: argparse.Namespace) -> tuple[bytes | None, CertificateAuthority | None]:
    """(CA key passphrase or None, the operator's CA or None); ConfigError naming the flag."""
    passphrase: bytes | None = None
    if args.ca_key_passphrase_file:
        passphrase = _read(args.ca_key_passphrase_file, "--ca-key-passphrase-file").rstrip(b"\r\n")
        if not passphrase:
            raise ConfigError("--ca-key-passphrase-file", "the file is empty")
    elif os.environ.get("SKEIN_CA_PASSPHRASE"):
        passphrase = os.environ["SKEIN_CA_PASSPHRASE"].encode()
    if bool(args.ca_cert) != bool(args.ca_key):
        raise ConfigError("--ca-cert/--ca-key", "give both, or neither")
    if not args.ca_cert:
        return passphrase, None
    if passphrase is None:
        raise ConfigError(
            "--ca-cert",
            "needs a passphrase to store the CA key encrypted: "
            "--ca-key-passphrase-file FILE or env SKEIN_CA_PASSPHRASE",
        )
    cert_pem, key_pem = _read(args.ca_cert, "--ca-cert"), _read(args.ca_key, "--ca-key")
    try:
        ca = CertificateAuthority.from_pem(cert_pem, key_pem, passphrase, now=time.time())
    except PkiError as err:
        raise ConfigError("--ca-cert", str(err)) from None
    return passphrase, ca


# -- TLS on the gRPC port ------------------------------------------------


def _add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve gRPC over TLS with a certificate this replica issues itself from the mesh "
        "CA (needs the CA key passphrase); clients verify it with the bundle from "
        "--print-bundle",
    )
    parser.add_argument(
        "--tls-san",
        action="append",
        default=[],
        metavar="NAME",
        help="with --tls: another DNS name or IP address clients use to reach this replica "
        "(repeatable; the --listen host is always included)",
    )
    parser.add_argument(
        "--tls-cert-ttl",
        type=float,
        default=DEFAULT_SERVER_TTL,
        metavar="SECONDS",
        help="with --tls: lifetime of the replica's certificate; a new one serves new "
        f"connections at half of it (default {DEFAULT_SERVER_TTL:.0f})",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="serve gRPC over TLS with this certificate chain instead (with --tls-key)",
    )
    parser.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")


def _tls_options(args: argparse.Namespace, passphrase: bytes | None) -> TlsOptions | None:
    """The TLS mode from the flags, or None for plaintext; ConfigError naming the flag."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert/--tls-key", "give both, or neither")
    if args.tls_cert:
        if args.tls:
            raise ConfigError("--tls", "give --tls or --tls-cert/--tls-key, not both")
        return TlsOptions(
            cert_pem=_read(args.tls_cert, "--tls-cert"), key_pem=_read(args.tls_key, "--tls-key")
        )
    if not args.tls:
        if args.tls_san:
            raise ConfigError("--tls-san", "only applies with --tls")
        return None
    if passphrase is None:
        raise ConfigError(
            "--tls",
            "the replica issues its certificate from the mesh CA and needs its passphrase: "
            "--ca-key-passphrase-file FILE or env SKEIN_CA_PASSPHRASE "
            "(or use --tls-cert/--tls-key)",
        )
    if not 1 <= args.tls_cert_ttl <= MAX_LEAF_TTL:
        raise ConfigError(
            "--tls-cert-ttl", f"must be 1-{MAX_LEAF_TTL:.0f} seconds, got {args.tls_cert_ttl:g}"
        )
    return TlsOptions(sans=tuple(args.tls_san), ttl=args.tls_cert_ttl)


async def _print_bundle(options: ControlOptions) -> int:
    """`skein control --print-bundle`: the trust bundle PEM from etcd on stdout."""
    store = EtcdStore(options.etcd)
    try:
        value = await store.get(KeyLayout(options.prefix).ca_bundle)
    except (StoreUnavailableError, StoreError) as err:
        print(f"error: --print-bundle: cannot read etcd: {err}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    if value is None:
        print(
            f"error: --print-bundle: no mesh CA under {options.prefix} yet; start control with "
            "a CA key passphrase once to create it",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(value.value.decode())
    return 0


async def _server_credentials(
    options: ControlOptions, identity: IdentityService
) -> tuple[grpc.ServerCredentials | None, ServerTls | None]:
    """(credentials for the gRPC port or None for plaintext, the renewer if self-issued)."""
    if options.tls is None:
        return None, None
    if options.tls.cert_pem is not None:
        return file_credentials(options.tls), None
    tls = ServerTls(
        identity.authority,
        trust_domain=options.trust_domain,
        names=server_names(options.listen[0], options.tls.sans),
        ttl=options.tls.ttl,
    )
    return await tls.credentials(), tls


def bind_error(address: HostPort) -> str:
    """Why `address` cannot be bound, found by trying (gRPC only logs the reason)."""
    host, port = address
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
        family, kind, proto, _name, sockaddr = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
    except OSError as err:
        return err.strerror or str(err)
    return "gRPC could not bind it (the address itself can be bound)"


def main(args: argparse.Namespace) -> int:
    configure(args.log_level)
    try:
        options = options_from_args(args)
    except (AddressError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_bundle:
        return run(_print_bundle(options))
    if args.rotate_ca or args.retire_ca:
        return run(_ca_command(options, args.retire_ca))
    return run(serve(options))


async def _ca_command(options: ControlOptions, retire: str | None) -> int:
    store = EtcdStore(options.etcd)
    try:
        return await run_ca_command(
            store,
            KeyLayout(options.prefix),
            passphrase=options.ca_passphrase,
            trust_domain=options.trust_domain,
            operator_ca=options.operator_ca,
            retire=retire,
        )
    finally:
        await store.close()


async def serve(options: ControlOptions) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    metrics = ControlMetrics()
    layout = KeyLayout(options.prefix)
    store = EtcdStore(options.etcd)
    bad_values = metrics.bad_values.labels()

    def on_bad(key: bytes, error: str) -> None:
        bad_values.inc()
        log.warning(
            "stored value does not parse; skipped", key=key.decode(errors="replace"), error=error
        )

    mirror = Mirror(layout, on_bad)

    def build(key: NodeKey) -> object:
        return translate(mirror, key)

    cache = SnapshotCache(build, MonotonicClock(), WallClock())
    authorizer = Authorizer(options.operators)
    identity = IdentityService(
        store,
        layout,
        passphrase=options.ca_passphrase,
        trust_domain=options.trust_domain,
        operator_ca=options.operator_ca,
        authorize_operator=lambda context, _method: authorizer.authorize(context, Role.OPERATOR),
    )
    credentials, server_tls = await _server_credentials(options, identity)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    try:
        address = format_hostport(options.listen)
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if not port:
        log.error(
            "cannot listen (--listen)",
            address=format_hostport(options.listen),
            error=bind_error(options.listen),
            fix="choose a free port on an address of this host",
        )
        return 1
    listen = format_hostport((options.listen[0], port))
    status = StatusWriter(store, layout, cache, listen, metrics, lease_ttl=options.lease_ttl)
    discovery = DiscoveryService(
        store,
        layout,
        mirror,
        cache,
        status,
        metrics,
        lease_ttl=options.lease_ttl,
        coalesce=options.coalesce,
        coalesce_max=options.coalesce_max,
    )
    operator = OperatorService(store, layout, metrics, lambda: mirror.config_revision, authorizer)
    server.add_generic_rpc_handlers(
        (discovery.handlers(), operator.handlers(), identity.handlers())
    )
    watcher = MirrorWatcher(store, layout, mirror, discovery.mirror_changed, metrics)

    def info() -> dict[str, object]:
        return {
            "listen": listen,
            "prefix": options.prefix,
            "etcd": store.endpoint,
            "lease_id": status.lease_id,
            "watch_healthy": watcher.healthy,
        }

    admin = ControlAdmin(store, mirror, cache, metrics, info)
    try:
        admin_addr = await admin.server.start(*options.admin)
    except OSError as err:
        log.error(
            "cannot listen (--admin)",
            address=format_hostport(options.admin),
            error=err.strerror or str(err),
            fix="choose a free port on an address of this host",
        )
        await server.stop(None)
        return 1
    await server.start()
    log.info(
        "control started",
        listen=listen,
        admin=format_hostport(admin_addr),
        etcd=",".join(format_hostport(e) for e in options.etcd),
        prefix=options.prefix,
        tls="off" if options.tls is None else ("files" if server_tls is None else "mesh CA"),
    )
    if options.operators is None:
        log.warning(
            "the operator API is unauthenticated: anyone who can reach it can change the mesh",
            fix="start control with --operators FILE (see `skein operator-token hash`)",
        )
    else:
        log.info(
            "operator API requires tokens",
            operators=len(options.operators.by_digest),
            file=options.operators.source,
        )
    try:
        await store.revision()
    except (StoreUnavailableError, StoreError) as err:
        log.warning("etcd unreachable at start; serving not-ready and retrying", error=str(err))
    else:
        await identity.prepare()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [
        asyncio.create_task(watcher.run(), name="watch"),
        asyncio.create_task(discovery.run_rebuilds(), name="rebuild"),
        asyncio.create_task(status.run(), name="status"),
    ]
    if server_tls is not None:
        tasks.append(asyncio.create_task(server_tls.run(), name="tls"))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for task in done:
        if task is not stopper and not task.cancelled() and task.exception() is not None:
            log.error("internal task failed", task=task.get_name(), error=repr(task.exception()))
            code = 1
    log.info("control stopping")
    await server.stop(grace=1.0)
    for task in (stopper, *tasks):
        task.cancel()
    await asyncio.gather(stopper, *tasks, return_exceptions=True)
    await status.close()
    await admin.server.stop()
    await store.close()
    log.info("control stopped")
    return code


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="control", description="Skein control daemon")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
