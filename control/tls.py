"""TLS on control's gRPC port, so bearer and join tokens never cross the network in the clear.

Two sources of the server certificate:
- `--tls`: the replica issues itself a certificate from the mesh CA
  (`spiffe://<trust-domain>/control` plus DNS/IP SANs for its listen host and
  every `--tls-san`); clients verify it against the mesh trust bundle
  (`skein control --print-bundle`). The key lives in memory only: nothing
  secret is written to disk.
- `--tls-cert/--tls-key`: an operator's certificate, read once at start.

Renewal: gRPC asks for a certificate configuration at each new handshake
(dynamic server credentials), so a certificate renewed at `renew_share` of its
lifetime serves new connections without a restart; open connections keep the
old one until they close. Client certificates are not requested: callers
authenticate with bearer tokens (operators) and join tokens (sidecars).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from skein.errors import SkeinError
from skein.logging import get_logger
from skein.pki import CertificateAuthority, generate_key, key_pem

__all__ = [
    "DEFAULT_SERVER_TTL",
    "ServerTls",
    "TlsOptions",
    "control_spiffe_id",
    "file_credentials",
    "issue_server_certificate",
    "server_names",
]

log = get_logger("control.tls")

DEFAULT_SERVER_TTL = 86400.0
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})

Authority = Callable[[], Awaitable[tuple[CertificateAuthority, bytes]]]


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How control serves TLS: issued from the mesh CA, or the operator's files."""

    sans: tuple[str, ...] = ()
    ttl: float = DEFAULT_SERVER_TTL
    cert_pem: bytes | None = None  # with key_pem: the operator's certificate
    key_pem: bytes | None = None


def control_spiffe_id(trust_domain: str) -> str:
    return f"spiffe://{trust_domain}/control"


def server_names(listen_host: str, sans: Sequence[str]) -> list[str]:
    """The DNS/IP names the certificate covers: the listen host (unless a wildcard) and SANs."""
    names: list[str] = []
    for name in (listen_host, *sans):
        name = name.strip().strip("[]")
        if name and name not in _WILDCARDS and name not in names:
            names.append(name)
    return names


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_server_certificate(
    ca: CertificateAuthority,
    trust_domain: str,
    names: Sequence[str],
    now: float,
    ttl: float = DEFAULT_SERVER_TTL,
) -> tuple[bytes, bytes, float]:
    """(key PEM, chain PEM leaf-first, not_after) of a fresh server certificate for control."""
    key = generate_key()
    public = key.public_key()
    not_after = min(now + ttl, ca.not_after)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(control_spiffe_id(trust_domain))]
    sans.extend(_general_name(n) for n in names)
    cert = ca.issue(public, sans, [ExtendedKeyUsageOID.SERVER_AUTH], now, not_after)
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.intermediates_pem()
    return key_pem(key), chain, not_after


def file_credentials(options: TlsOptions) -> grpc.ServerCredentials:
    """Server credentials from the operator's --tls-cert/--tls-key."""
    assert options.cert_pem is not None and options.key_pem is not None
    return grpc.ssl_server_credentials([(options.key_pem, options.cert_pem)])


class ServerTls:
    """The replica's own certificate from the mesh CA, renewed in memory."""

    def __init__(
        self,
        authority: Authority,
        *,
        trust_domain: str,
        names: Sequence[str],
        ttl: float = DEFAULT_SERVER_TTL,
        renew_share: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._authority = authority
        self.trust_domain = trust_domain
        self.names = list(names)
        self.ttl = ttl
        self.renew_share = renew_share
        self._clock = clock
        self.issued_at = 0.0
        self.not_after = 0.0
        self.renewals = 0
        self._pending: grpc.ServerCertificateConfiguration | None = None

    async def _issue(self) -> grpc.ServerCertificateConfiguration:
        ca, _bundle = await self._authority()
        now = self._clock()
        key, chain, not_after = issue_server_certificate(
            ca, self.trust_domain, self.names, now, self.ttl
        )
        self.issued_at, self.not_after = now, not_after
        log.info(
            "server certificate issued",
            identity=control_spiffe_id(self.trust_domain),
            names=",".join(self.names) or "-",
            not_after=datetime.datetime.fromtimestamp(not_after, tz=datetime.UTC).isoformat(),
        )
        return grpc.ssl_server_certificate_configuration([(key, chain)])

    async def credentials(self, retry_every: float = 2.0) -> grpc.ServerCredentials:
        """Dynamic server credentials, after the first certificate (retried until etcd answers)."""
        while True:
            try:
                first = await self._issue()
                break
            except (SkeinError, OSError) as err:
                log.warning(
                    "cannot issue the server certificate yet; retrying",
                    error=str(err),
                    fix="check etcd and the CA key passphrase",
                )
                await asyncio.sleep(retry_every)
        return grpc.dynamic_ssl_server_credentials(first, self._fetch)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC at each handshake: a renewed configuration once, else keep the current."""
        pending, self._pending = self._pending, None
        return pending

    def renew_at(self) -> float:
        return self.issued_at + self.renew_share * max(0.0, self.not_after - self.issued_at)

    async def run(self, retry_every: float = 10.0) -> None:
        """Renew at `renew_share` of the lifetime, forever (until cancelled)."""
        while True:
            await asyncio.sleep(max(0.0, self.renew_at() - self._clock()))
            try:
                self._pending = await self._issue()
                self.renewals += 1
            except (SkeinError, OSError) as err:
                log.warning("server certificate renewal failed; retrying", error=str(err))
                await asyncio.sleep(retry_every)
