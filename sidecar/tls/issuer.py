"""Certificates from control's Identity.Sign, renewed at a share of their lifetime.

The sidecar makes its own P-256 key (it never leaves the host), sends a CSR
with its join token, and writes the answer (certificate chain, key, trust
bundle) into a private directory that a `CertificateStore` loads, so
operator-supplied files and issued ones share one code path.

Invariants:
- the first certificate is fetched before mesh TLS starts (a sidecar told to
  join the mesh never serves plaintext-only by accident); control trouble is
  retried with backoff, every failure logged with control's reason; a token
  control rejects (unknown, revoked, expired, other service) stops the sidecar;
- renewal starts at `renew_share` of the lifetime (default 50%), retried with
  backoff until it succeeds; the current certificate serves meanwhile;
- files are replaced by rename and the store refreshed once all three are
  written, so a half-written generation is never loaded.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from sidecar.discovery.controls import ControlEndpoints
from sidecar.policy.backoff import ExponentialBackoff
from sidecar.tls.store import CertificateStore, TlsError
from skein.grpcclient import RpcError, StatusCode
from skein.logging import get_logger
from skein.v1 import identity_pb2

__all__ = ["Issuer"]

log = get_logger("sidecar.tls")

_SIGN = "/skein.v1.Identity/Sign"
_CALL_TIMEOUT = 10.0
# A first request refused for these reasons will never succeed as given: stop and say why.
_HOPELESS = frozenset(
    {StatusCode.UNAUTHENTICATED, StatusCode.PERMISSION_DENIED, StatusCode.INVALID_ARGUMENT}
)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Issuer:
    """Fetches and renews this sidecar's certificate with a join token."""

    def __init__(
        self,
        controls: ControlEndpoints,
        *,
        service: str,
        token: str,
        directory: str,
        ttl_seconds: int = 0,
        renew_share: float = 0.5,
        backoff: ExponentialBackoff | None = None,
    ) -> None:
        if not 0.0 < renew_share < 1.0:
            raise ValueError(f"renew_share must be between 0 and 1, got {renew_share!r}")
        self._controls = controls
        self.service = service
        self._token = token
        self.directory = Path(directory)
        self.ttl_seconds = ttl_seconds
        self.renew_share = renew_share
        self._backoff = backoff or ExponentialBackoff(0.2, 10.0, floor=0.1)
        self.issued_at = 0.0
        self.not_after = 0.0
        self.renewals = 0
        self.last_error = ""
        self.paths = tuple(
            str(self.directory / name) for name in ("cert.pem", "key.pem", "bundle.pem")
        )

    async def sign_once(self) -> None:
        """One Sign call; the new files are in place when it returns (raises RpcError)."""
        from cryptography.hazmat.primitives import serialization

        from skein.pki import generate_key, key_pem, make_csr

        key = generate_key()
        csr = make_csr(key).public_bytes(serialization.Encoding.PEM).decode()
        request = identity_pb2.SignRequest(
            csr_pem=csr, token=self._token, service=self.service, ttl_seconds=self.ttl_seconds
        )
        response = await self._controls.channel().unary(
            _SIGN, request, identity_pb2.SignResponse, timeout=_CALL_TIMEOUT
        )
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert, key_path, bundle = (Path(p) for p in self.paths)
        _write(key_path, key_pem(key), 0o600)
        _write(cert, response.certificate_pem.encode(), 0o644)
        _write(bundle, response.trust_bundle_pem.encode(), 0o644)
        self.issued_at = time.time()
        self.not_after = response.not_after
        self.last_error = ""
        log.info(
            "certificate obtained",
            identity=response.spiffe_id,
            not_after=response.not_after,
            control=self._controls.current,
        )

    async def _sign_until_done(self, what: str, *, give_up: bool = False) -> None:
        while True:
            try:
                await self.sign_once()
                self._backoff.reset()
                return
            except RpcError as err:
                self.last_error = f"{err.code.name}: {err.message}"
                if give_up and err.code in _HOPELESS:
                    raise SystemExit(
                        f"error: --join-token: control refused a certificate for "
                        f"'{self.service}': {err.message}"
                    ) from None
            except (OSError, TimeoutError) as err:
                self.last_error = str(err) or type(err).__name__
            log.warning(f"{what} failed, retrying", service=self.service, error=self.last_error)
            await self._controls.fail()
            await asyncio.sleep(self._backoff.next_delay())

    async def first(self) -> CertificateStore:
        """The first certificate (retried until control signs it) and its store."""
        await self._sign_until_done("certificate request", give_up=True)
        try:
            return CertificateStore(*self.paths)
        except TlsError as err:
            raise SystemExit(f"error: the certificate control issued is unusable: {err}") from None

    def renew_at(self) -> float:
        """Unix time when renewal starts: `renew_share` of the way through the lifetime."""
        return self.issued_at + self.renew_share * max(0.0, self.not_after - self.issued_at)

    async def run(self, store: CertificateStore) -> None:
        """Renew forever (until cancelled); the store switches once the new files are in."""
        while True:
            await asyncio.sleep(max(0.0, self.renew_at() - time.time()))
            await self._sign_until_done("certificate renewal")
            self.renewals += 1
            store.refresh()

    def update_bundle(self, store: CertificateStore, bundle_pem: str) -> bool:
        """A trust bundle pushed by control (CA rotation): use it for new connections."""
        path = Path(self.paths[2])
        data = bundle_pem.encode()
        if not data or not self.issued_at:
            return False
        try:
            if path.read_bytes() == data:
                return False
            _write(path, data, 0o644)
        except OSError as err:
            log.warning("trust bundle update failed", path=str(path), error=str(err))
            return False
        return store.refresh()
