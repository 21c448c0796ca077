"""The sidecar daemon: flags, wiring and lifecycle.

Start: listeners first (inbound → app, outbound by authority, one port per
--upstream), then admin, registration and the discovery stream. Ready once a
first config is applied (from control or the disk cache). SIGTERM/SIGINT:
report not ready, deregister (the endpoint leaves every caller at once),
close listeners gracefully, exit 0. Control or etcd trouble never stops the
daemon: it keeps serving its last good config and keeps reconnecting.

Mesh TLS (--tls-cert/--tls-key/--tls-bundle): the inbound port speaks TLS 1.3
(and plaintext while the own service's TrafficPolicy says PERMISSIVE), calls
to other sidecars go over TLS, and the files are re-read when they change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from typing import Any

from sidecar.accesslog import AccessLog
from sidecar.admin import SidecarAdmin
from sidecar.discovery import (
    ControlChannels,
    ControlEndpoints,
    DiscoveryClient,
    DiskCache,
    default_state_dir,
)
from sidecar.dispatch import (
    LOCAL_CLUSTER,
    AuthorityDispatcher,
    ConfigHolder,
    InboundDispatcher,
    UpstreamDispatcher,
)
from sidecar.health import AdminHealthService, HealthChecker
from sidecar.policymetrics import PolicyMetrics
from sidecar.registration import Registration
from sidecar.tls import CertificateStore, InboundTls, MtlsPolicy, OutboundTls, TlsError
from sidecar.tls.issuer import Issuer
from sidecar.transport import Dispatcher, Listener, UpstreamPool, start_listener
from skein.addr import HostPort, format_hostport, parse_hostport, parse_hostport_list
from skein.config import check_name, parse_snapshot
from skein.config.model import MtlsMode
from skein.errors import ConfigError
from skein.logging import configure, get_logger
from skein.metrics import Registry
from skein.runtime import run
from skein.v1 import discovery_pb2

__all__ = ["add_arguments", "main"]

log = get_logger("sidecar")

DRAIN_GRACE = 5.0
POLICY_TICK = 0.5  # seconds between ejection-expiry / success-rate checks


# ---- flags ---------------------------------------------------------------------------------


def _flag_type(flag: str, parse: Any) -> Any:
    """An argparse type whose error names the flag and how to fix the value."""

    def convert(text: str) -> Any:
        try:
            return parse(text, flag)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(err.reason) from None

    convert.__name__ = flag.lstrip("-")
    return convert


def _hostport(text: str, flag: str) -> HostPort:
    return parse_hostport(text, flag=flag)


def _hostports(text: str, flag: str) -> list[HostPort]:
    return parse_hostport_list(text, flag=flag)


def _name(text: str, flag: str) -> str:
    check_name(text, flag)
    return text


def _upstream(text: str, flag: str) -> tuple[str, HostPort]:
    name, sep, address = text.partition("=")
    if not sep:
        raise ConfigError(
            flag, f"expected NAME=HOST:PORT (e.g. orders=127.0.0.1:9003), got {text!r}"
        )
    check_name(name, flag)
    return name, parse_hostport(address, flag=flag)


def _label(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(flag, f"expected KEY=VALUE (e.g. version=v2), got {text!r}")
    return key, value


def _share(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigError(flag, f"expected a share from 0 to 1 (e.g. 0.01 for 1%), got {text!r}")
    return value


def _weight(text: str, flag: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise ConfigError(flag, f"expected a whole number 1-1000, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `skein sidecar` flags (the CLI calls this; so does `python -m sidecar.app`)."""
    env_control = os.environ.get("SKEIN_CONTROL")
    parser.add_argument(
        "--service",
        required=True,
        metavar="NAME",
        type=_flag_type("--service", _name),
        help="this instance's service",
    )
    parser.add_argument(
        "--control",
        metavar="HOST:PORT[,...]",
        required=env_control is None,
        default=env_control,
        type=_flag_type("--control", _hostports),
        help="control daemons, tried in turn (env SKEIN_CONTROL)",
    )
    parser.add_argument(
        "--app",
        required=True,
        metavar="HOST:PORT",
        type=_flag_type("--app", _hostport),
        help="the local application",
    )
    parser.add_argument(
        "--inbound",
        default="127.0.0.1:15006",
        metavar="HOST:PORT",
        type=_flag_type("--inbound", _hostport),
        help="inbound listener (registered as this instance's address)",
    )
    parser.add_argument(
        "--outbound",
        default="127.0.0.1:15001",
        metavar="HOST:PORT",
        type=_flag_type("--outbound", _hostport),
        help="outbound listener, routing by :authority / Host",
    )
    parser.add_argument(
        "--admin",
        default="127.0.0.1:15000",
        metavar="HOST:PORT",
        type=_flag_type("--admin", _hostport),
        help="admin HTTP listener",
    )
    parser.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        type=_flag_type("--upstream", _upstream),
        help="a local port for one upstream service (repeatable)",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_flag_type("--label", _label),
        help="instance label (repeatable)",
    )
    parser.add_argument(
        "--subscribe",
        action="append",
        default=[],
        metavar="NAME",
        type=_flag_type("--subscribe", _name),
        help="a service called through the outbound port (repeatable)",
    )
    parser.add_argument(
        "--instance", metavar="ID", default=None, help="instance id (default SERVICE-HOST-PID)"
    )
    parser.add_argument(
        "--weight",
        metavar="N",
        default=1,
        type=_flag_type("--weight", _weight),
        help="load-balancing weight (default 1)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        default=None,
        help="where the last good config is kept (default: per instance under "
        "$XDG_STATE_HOME/skein or the temp dir)",
    )
    parser.add_argument(
        "--access-log-sample",
        metavar="SHARE",
        default=0.0,
        type=_flag_type("--access-log-sample", _share),
        help="share of requests written to the access log, 0-1 (default 0: off)",
    )
    _add_tls_arguments(parser)
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level",
    )


# ---- mesh TLS flags -------------------------------------------------------------------------


def _seconds(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(flag, f"expected seconds above 0 (e.g. 5), got {text!r}")
    return value


def _ttl(text: str, flag: str) -> int:
    if not text.isdigit():
        raise ConfigError(flag, f"expected whole seconds (e.g. 3600), got {text!r}")
    return int(text)


def _renew_share(text: str, flag: str) -> float:
    value = _share(text, flag)
    if not 0.0 < value < 1.0:
        raise ConfigError(flag, f"expected a share between 0 and 1 (e.g. 0.5), got {text!r}")
    return value


def _add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        default=None,
        help="this service's mesh certificate (PEM, a spiffe:// URI SAN); with --tls-key "
        "and --tls-bundle turns on mesh TLS",
    )
    parser.add_argument("--tls-key", metavar="FILE", default=None, help="its private key (PEM)")
    parser.add_argument(
        "--tls-bundle", metavar="FILE", default=None, help="the trusted mesh CAs (PEM)"
    )
    parser.add_argument(
        "--tls-refresh",
        metavar="SECONDS",
        default=5.0,
        type=_flag_type("--tls-refresh", _seconds),
        help="how often the TLS files are checked for a new version (default 5)",
    )
    parser.add_argument(
        "--join-token",
        metavar="TOKEN",
        default=os.environ.get("SKEIN_JOIN_TOKEN"),
        help="get this service's mesh certificate from control with a join token from "
        "`skein token create` (env SKEIN_JOIN_TOKEN); instead of --tls-cert/--tls-key/--tls-bundle",
    )
    parser.add_argument(
        "--cert-ttl",
        metavar="SECONDS",
        default=0,
        type=_flag_type("--cert-ttl", _ttl),
        help="lifetime asked for an issued certificate (default 0: the CA's, 24 h)",
    )
    parser.add_argument(
        "--renew-at",
        metavar="SHARE",
        default=0.5,
        type=_flag_type("--renew-at", _renew_share),
        help="renew an issued certificate at this share of its lifetime (default 0.5)",
    )
    parser.add_argument(
        "--control-ca",
        metavar="FILE",
        default=os.environ.get("SKEIN_CONTROL_CA"),
        help="talk TLS to control and verify its certificate with these CAs (PEM; env "
        "SKEIN_CONTROL_CA; `skein control --print-bundle`); needed to send --join-token safely",
    )
    parser.add_argument(
        "--trust-domain",
        metavar="NAME",
        default="skein.local",
        help="the mesh's SPIFFE trust domain (default skein.local)",
    )


def _tls_store(args: argparse.Namespace) -> CertificateStore | None:
    """The certificate store from the TLS flags (None: mesh TLS off)."""
    if args.tls_cert is None:
        return None
    try:
        return CertificateStore(args.tls_cert, args.tls_key, args.tls_bundle)
    except TlsError as err:
        raise SystemExit(f"error: --tls-cert/--tls-key/--tls-bundle: {err}") from None


def _control_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """TLS 1.2+ to control, its chain verified against --control-ca and its name checked."""
    if not args.control_ca:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.control_ca)
    except (OSError, ssl.SSLError) as err:
        raise SystemExit(
            f"error: --control-ca: cannot load CA certificates from {args.control_ca}: {err}; "
            "get them with `skein control --print-bundle`"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _check_tls(args: argparse.Namespace) -> str | None:
    given = [args.tls_cert, args.tls_key, args.tls_bundle]
    if any(given) and not all(given):
        return "--tls-cert, --tls-key and --tls-bundle go together; give all three or none"
    if args.join_token and args.tls_cert:
        return "--join-token and --tls-cert both given: use control's CA or your own files"
    return None


def _check(args: argparse.Namespace) -> str | None:
    """Cross-flag checks argparse cannot do; returns the error message."""
    if args.control is None:
        return "--control: required (or set SKEIN_CONTROL), e.g. --control 127.0.0.1:15010"
    if isinstance(args.control, str):  # came from SKEIN_CONTROL unparsed
        try:
            args.control = parse_hostport_list(args.control, flag="SKEIN_CONTROL")
        except ConfigError as err:
            return str(err)
    names = [name for name, _ in args.upstream]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        return f"--upstream: {', '.join(dupes)} given twice; give each service one local port"
    return _check_tls(args)


def _instance_id(args: argparse.Namespace) -> str:
    if args.instance:
        return str(args.instance)
    return f"{args.service}-{socket.gethostname()}-{os.getpid()}"


def _advertised(address: tuple[str, int]) -> str:
    """The inbound address others dial: a wildcard bind is replaced by this host's IP."""
    host, port = address[0], address[1]
    if host in ("0.0.0.0", "::", ""):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    return format_hostport((host, port))


# ---- lifecycle -----------------------------------------------------------------------------


async def _listen(
    flag: str,
    address: HostPort,
    dispatcher: Dispatcher,
    pool: UpstreamPool,
    name: str,
    metrics: Registry,
    access_sample: float,
    tls: InboundTls | None = None,
) -> Listener:
    access = None
    if access_sample > 0:
        clock = asyncio.get_running_loop().time  # the clock the relay stamps streams with
        access = AccessLog(
            access_sample, get_logger("access"), listener=name, rng=random.Random(), clock=clock
        )
    try:
        return await start_listener(
            address[0],
            address[1],
            dispatcher,
            pool,
            name=name,
            metrics=metrics,
            access_log=access,
            tls=tls,
        )
    except OSError as err:
        raise SystemExit(
            f"error: {flag} {format_hostport(address)}: cannot listen ({err.strerror or err}); "
            "choose a free port"
        ) from None


async def serve(args: argparse.Namespace) -> int:
    metrics = Registry()
    holder = ConfigHolder(now=asyncio.get_running_loop().time)
    policy_metrics = PolicyMetrics(metrics)
    store = _tls_store(args)
    issuer: Issuer | None = None
    instance = _instance_id(args)
    state_dir = args.state_dir or default_state_dir(args.service, instance)
    # one connection per control replica, shared; TLS when --control-ca is given
    channels = ControlChannels(tls=_control_tls(args))
    if args.join_token and channels.tls is None:
        log.warning(
            "the join token goes to control in plaintext",
            fix="start control with --tls and give this sidecar --control-ca FILE",
        )
    if args.join_token:
        issuer = Issuer(
            ControlEndpoints(args.control, channels),
            service=args.service,
            token=args.join_token,
            directory=os.path.join(state_dir, "tls"),
            ttl_seconds=args.cert_ttl,
            renew_share=args.renew_at,
        )
        try:
            store = await issuer.first()
        except BaseException:
            await channels.close()
            raise
    mtls = MtlsPolicy()
    inbound_tls = InboundTls(store, mtls) if store is not None else None
    outbound_tls = (
        OutboundTls(store, args.trust_domain, LOCAL_CLUSTER) if store is not None else None
    )
    pool = UpstreamPool(metrics=metrics, tls=outbound_tls)
    if store is not None:
        store.on_change(pool.retire_tls)
    listeners: dict[str, Listener] = {}
    tasks: list[asyncio.Task[None]] = []
    admin_server = None
    registration: Registration | None = None
    checker: HealthChecker | None = None
    inbound = InboundDispatcher(holder, args.app)
    # With mesh TLS the inbound listener replaces every caller's
    # x-forwarded-client-cert, so authorization may read the peer's identity there.
    inbound.identity_from_xfcc = inbound_tls is not None
    try:
        listeners["inbound"] = await _listen(
            "--inbound",
            args.inbound,
            inbound,
            pool,
            "inbound",
            metrics,
            args.access_log_sample,
            inbound_tls,
        )
        listeners["outbound"] = await _listen(
            "--outbound",
            args.outbound,
            AuthorityDispatcher(holder),
            pool,
            "outbound",
            metrics,
            args.access_log_sample,
        )
        for name, address in args.upstream:
            listeners[f"upstream:{name}"] = await _listen(
                "--upstream",
                address,
                UpstreamDispatcher(holder, name),
                pool,
                f"upstream:{name}",
                metrics,
                args.access_log_sample,
            )

        upstreams = sorted({name for name, _ in args.upstream} | set(args.subscribe))
        node = discovery_pb2.Node(
            service=args.service, instance=instance, labels=dict(args.label), upstreams=upstreams
        )
        cache = DiskCache(state_dir)
        parse = _parse_without_tls() if store is None else _parse_with_mtls(mtls, store, issuer)
        discovery = DiscoveryClient(
            ControlEndpoints(args.control, channels), node, holder, cache, metrics, parse
        )
        address = _advertised(listeners["inbound"].address)
        registration = Registration(
            ControlEndpoints(args.control, channels),
            service=args.service,
            instance=instance,
            address=address,
            labels=dict(args.label),
            weight=args.weight,
            metrics=metrics,
        )
        checker = HealthChecker(args.app, metrics, registration.set_health)
        holder.on_apply(lambda applied: checker.configure(applied.config.local.health_check))
        admin = SidecarAdmin(
            service=args.service,
            instance=instance,
            holder=holder,
            discovery=discovery,
            registration=registration,
            metrics=metrics,
            listeners=lambda: listeners,
            cache_path=cache.path,
            collect=lambda: policy_metrics.collect(
                holder.current, holder.local, args.service, inbound.auth_stats
            ),
            health=checker.dump,
            auth=inbound.dump_auth,
        )
        admin_server = admin.server()
        admin_server.h2c = AdminHealthService(
            args.service, lambda: holder.current is not None and not admin.draining
        ).serve_connection
        try:
            await admin_server.start(*args.admin)
        except OSError as err:
            raise SystemExit(
                f"error: --admin {format_hostport(args.admin)}: cannot listen "
                f"({err.strerror or err}); choose a free port"
            ) from None

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks.append(asyncio.create_task(discovery.run(), name="discovery"))
        tasks.append(asyncio.create_task(registration.run(), name="registration"))
        tasks.append(asyncio.create_task(_tick(holder), name="policy-tick"))
        tasks.append(asyncio.create_task(checker.run(), name="health-checks"))
        if issuer is not None and store is not None:
            tasks.append(asyncio.create_task(issuer.run(store), name="tls-renewal"))
        elif store is not None:
            tasks.append(asyncio.create_task(store.watch(args.tls_refresh), name="tls-files"))
        log.info(
            "sidecar started",
            service=args.service,
            instance=instance,
            address=address,
            listeners={k: format_hostport(v.address[:2]) for k, v in listeners.items()},
            upstreams=upstreams,
            control=[format_hostport(c) for c in args.control],
            identity=store.own_id if store is not None else None,
        )
        await stop.wait()
        log.info("shutting down: deregistering and draining")
        admin.draining = True
        await registration.deregister()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(
            *(lst.close(DRAIN_GRACE) for lst in listeners.values()), return_exceptions=True
        )
        if checker is not None:
            await checker.close()
        await pool.close()
        await channels.close()
        if admin_server is not None:
            await admin_server.stop()
    log.info("sidecar stopped")
    return 0


def _parse_without_tls() -> Any:
    """parse_snapshot that warns when the own service asks for STRICT mTLS, which a
    sidecar without a certificate cannot give (it keeps serving plaintext)."""
    strict_seen = False

    def parse(version: str, snapshot: discovery_pb2.Snapshot) -> Any:
        nonlocal strict_seen
        config = parse_snapshot(version, snapshot)
        strict = config.local.mtls is MtlsMode.STRICT
        if strict and not strict_seen:
            log.warning(
                "mtls_strict_without_certificate",
                reason="the service's TrafficPolicy says mtls STRICT, but this sidecar has no "
                "certificate, so it serves plaintext; start it with --join-token or "
                "--tls-cert/--tls-key/--tls-bundle",
            )
        strict_seen = strict
        return config

    return parse


def _parse_with_mtls(mtls: MtlsPolicy, store: CertificateStore, issuer: Issuer | None) -> Any:
    """parse_snapshot that also takes the own service's mTLS mode from a snapshot it accepts
    (and, for an issued certificate, the trust bundle control pushes)."""

    def parse(version: str, snapshot: discovery_pb2.Snapshot) -> Any:
        config = parse_snapshot(version, snapshot)
        before = mtls.strict
        mtls.update(snapshot)
        if mtls.strict != before:
            log.info("mtls_mode", mode=mtls.name)
        if issuer is not None and snapshot.trust_bundle_pem:
            issuer.update_bundle(store, snapshot.trust_bundle_pem)
        return config

    return parse


async def _tick(holder: ConfigHolder) -> None:
    """Let time pass for the policies: ejections expire, success rates are swept."""
    while True:
        await asyncio.sleep(POLICY_TICK)
        try:
            holder.tick()
        except Exception as exc:  # a policy bug must not stop ejections from expiring
            log.error("policy_tick_failed", error=repr(exc))


def main(args: argparse.Namespace) -> int:
    """Run the sidecar until SIGTERM/SIGINT; the exit code."""
    configure(args.log_level)
    problem = _check(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        code = run(serve(args))
        # Shutdown is done; a repeated SIGTERM during interpreter teardown must not
        # turn a clean exit into death by signal.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return code
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 1
        raise


def _standalone(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skein sidecar", description="run a sidecar")
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_standalone())
