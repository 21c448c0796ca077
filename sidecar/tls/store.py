"""The sidecar's certificate, key and trust bundle, and the SSL contexts built from them.

Invariants:
- contexts are built once per certificate change, never per connection; a
  connection takes the context current when it starts and keeps it, so a
  rotation never breaks a connection already open;
- a change that does not load (half-written file, key not matching the
  certificate, unreadable bundle) is logged and the previous material kept;
- TLS 1.3 only; the server asks every caller for a certificate (STRICT
  requires one, PERMISSIVE accepts none) and verifies it against the bundle;
  the client verifies the server against the bundle, then checks its SPIFFE ID
  (certificates carry URI SANs, not host names, so host name checks are off).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from datetime import UTC, datetime

from sidecar.tls.identity import service_id, spiffe_id_of
from sidecar.tls.mode import MtlsPolicy
from skein.logging import get_logger

__all__ = ["CertificateStore", "InboundTls", "OutboundTls", "TlsError"]

log = get_logger("sidecar.tls")

SERVER_ALPN = ["h2", "http/1.1"]
CLIENT_ALPN = ["h2"]


class TlsError(Exception):
    """Certificate material that can not be used (says which file and why)."""


class _Material:
    """One loaded generation: contexts plus what the admin page shows."""

    __slots__ = ("client", "not_after", "own_id", "permissive", "strict", "version")

    def __init__(
        self,
        strict: ssl.SSLContext,
        permissive: ssl.SSLContext,
        client: ssl.SSLContext,
        own_id: str,
        not_after: datetime,
        version: int,
    ) -> None:
        self.strict = strict
        self.permissive = permissive
        self.client = client
        self.own_id = own_id
        self.not_after = not_after
        self.version = version


def _own_identity(
    server: ssl.SSLContext, client: ssl.SSLContext, where: str
) -> tuple[str, datetime]:
    """Our SPIFFE ID and expiry, read by handshaking with ourselves in memory.

    The client context verifies the server's (our) certificate against our own
    bundle, so this also proves the material is consistent: a certificate the
    bundle does not trust, or an expired one, is refused here rather than by
    every peer. (Parsing it with `cryptography` would cost ~10 MB of RSS.)
    """
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = client.wrap_bio(c_in, c_out, server_side=False)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    try:
        for _ in range(8):
            pending = False
            for end in (cli, srv):
                try:
                    end.do_handshake()
                except ssl.SSLWantReadError:
                    pending = True
            s_in.write(c_out.read())
            c_in.write(s_out.read())
            if not pending:
                break
        cert = cli.getpeercert()
    except ssl.SSLError as exc:
        why = getattr(exc, "verify_message", "") or getattr(exc, "reason", "") or exc
        raise TlsError(
            f"{where}: the certificate does not verify against the bundle ({why}); give a "
            "current certificate issued by a CA in the bundle"
        ) from None
    own = spiffe_id_of(cert)
    if not own:
        raise TlsError(
            f"{where}: the certificate has no spiffe:// URI SAN; mesh certificates name "
            "their service as spiffe://<trust-domain>/service/<name>"
        )
    expires = str(cert["notAfter"]) if cert else ""
    not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(expires), UTC)
    return own, not_after


def _server_context(cert: str, key: str, bundle: str, require: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=bundle)
    ctx.verify_mode = ssl.CERT_REQUIRED if require else ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(SERVER_ALPN)
    return ctx


def _client_context(cert: str, key: str, bundle: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identity is the SPIFFE URI SAN, checked after the handshake
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=bundle)
    ctx.set_alpn_protocols(CLIENT_ALPN)
    return ctx


class CertificateStore:
    """Certificate, key and bundle files (`--tls-cert/--tls-key/--tls-bundle`).

    `refresh()` re-reads them when their size or mtime changed; `watch()` calls
    it every `interval` seconds. Callbacks given to `on_change` run after a new
    generation is in place (the upstream pool retires its TLS connections).
    """

    def __init__(self, cert: str, key: str, bundle: str) -> None:
        self.paths = (cert, key, bundle)
        self._stamp: tuple[tuple[int, int], ...] = ()
        self._callbacks: list[Callable[[], None]] = []
        self.rotations = 0
        self.current = self._load()  # raises TlsError: a sidecar must not start half-secured

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    @property
    def own_id(self) -> str:
        return self.current.own_id

    def _stat(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in self.paths:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _load(self) -> _Material:
        cert, key, bundle = self.paths
        try:
            stamp = self._stat()
            permissive = _server_context(cert, key, bundle, False)
            client = _client_context(cert, key, bundle)
            own_id, not_after = _own_identity(permissive, client, cert)
            material = _Material(
                _server_context(cert, key, bundle, True),
                permissive,
                client,
                own_id,
                not_after,
                self.rotations,
            )
        except ssl.SSLError as exc:
            why = getattr(exc, "reason", "") or exc
            raise TlsError(
                f"{cert} / {key} / {bundle}: not usable ({why}); the key must "
                "match the certificate and the bundle must hold PEM CA certificates"
            ) from None
        except OSError as exc:  # after SSLError, its subclass
            raise TlsError(f"{exc.filename or cert}: cannot read ({exc.strerror or exc})") from None
        self._stamp = stamp
        return material

    def refresh(self) -> bool:
        """Load the files again if they changed; True when a new generation is in place."""
        try:
            if self._stat() == self._stamp:
                return False
        except OSError:
            return False  # mid-replacement: try again next time
        try:
            self.rotations += 1
            material = self._load()
        except TlsError as exc:
            self.rotations -= 1
            log.warning("tls_reload_failed", error=str(exc), keeping=self.current.own_id)
            return False
        self.current = material
        log.info(
            "tls_rotated",
            identity=material.own_id,
            not_after=material.not_after.isoformat(),
            generation=material.version,
        )
        for callback in self._callbacks:
            callback()
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the files forever (cheap: three stat calls per interval)."""
        while True:
            await asyncio.sleep(interval)
            self.refresh()

    def dump(self) -> dict[str, object]:
        material = self.current
        return {
            "identity": material.own_id,
            "not_after": material.not_after.isoformat(),
            "generation": material.version,
            "files": list(self.paths),
        }


class InboundTls:
    """What the inbound listener asks per accepted connection."""

    __slots__ = ("policy", "store")

    def __init__(self, store: CertificateStore, policy: MtlsPolicy) -> None:
        self.store = store
        self.policy = policy

    @property
    def strict(self) -> bool:
        return self.policy.strict

    @property
    def own_id(self) -> str:
        return self.store.current.own_id

    def context(self) -> ssl.SSLContext:
        material = self.store.current
        return material.strict if self.policy.strict else material.permissive


class OutboundTls:
    """Client TLS toward other sidecars: the context and the identity expected of `cluster`.

    The local app (cluster `local_cluster`) stays plaintext.
    """

    __slots__ = ("local_cluster", "store", "trust_domain")

    def __init__(self, store: CertificateStore, trust_domain: str, local_cluster: str) -> None:
        self.store = store
        self.trust_domain = trust_domain
        self.local_cluster = local_cluster

    def __call__(self, cluster: str) -> tuple[ssl.SSLContext, str] | None:
        if cluster == self.local_cluster:
            return None
        return self.store.current.client, service_id(self.trust_domain, cluster)
