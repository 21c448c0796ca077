"""The Identity service: signs workload CSRs for holders of a join token; manages tokens.

Invariants:
- Every replica issues from the one CA stored at `ca/current` (control/ca.py
  creates it once and rotates it); a replica without the passphrase that
  seals its key issues nothing (FAILED_PRECONDITION saying how to enable it).
- Sign refuses, with the precise reason in the answer and in the log, any
  token that is malformed, unknown, has the wrong secret, is revoked or
  expired (UNAUTHENTICATED), or is for another service (PERMISSION_DENIED).
- Token management calls go through `authorize_operator` first: the hook
  where operator authentication puts its role checks (it allows all by default).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from control import audit
from control.auth import Principal
from control.ca import NO_PASSPHRASE, bootstrap_ca
from control.store import EtcdStore, KeyLayout, TxnOp
from skein.config import check_name
from skein.errors import ConfigError, ConflictError, NotFoundError, SkeinError
from skein.logging import get_logger
from skein.pki import (
    DEFAULT_TOKEN_TTL,
    MAX_TOKEN_TTL,
    CaRecord,
    CertificateAuthority,
    JoinTokenRecord,
    PkiError,
    certificates_pem,
    check_token,
    decode_bundle,
    encode_bundle,
    fingerprint,
    load_csr,
    new_token,
    parse_token,
    spiffe_id,
    with_anchor,
)
from skein.v1 import identity_pb2

__all__ = ["IdentityService", "OperatorCheck"]

log = get_logger("control.identity")

_ATTEMPTS = 3

OperatorCheck = Callable[[grpc.aio.ServicerContext, str], Awaitable[object]]


async def _allow_all(context: grpc.aio.ServicerContext, method: str) -> None:
    """Default operator check: no operator authentication configured."""


class IdentityService:
    """Serves skein.v1.Identity for one replica.

    `operator_ca`: the CA an operator supplied with --ca-cert/--ca-key; it is
    stored if etcd holds none, and a different stored CA is an error (the
    replica would issue certificates the others' bundle may not trust).
    """

    def __init__(
        self,
        store: EtcdStore,
        layout: KeyLayout,
        *,
        passphrase: bytes | None,
        trust_domain: str,
        operator_ca: CertificateAuthority | None = None,
        clock: Callable[[], float] = time.time,
        authorize_operator: OperatorCheck = _allow_all,
    ) -> None:
        self.store = store
        self.layout = layout
        self.passphrase = passphrase
        self.trust_domain = trust_domain
        self.operator_ca = operator_ca
        self.clock = clock
        self.authorize_operator = authorize_operator
        self._ca: tuple[bytes, CertificateAuthority] | None = None  # (stored value, opened)

    def handlers(self) -> grpc.GenericRpcHandler:
        def unary(fn: Any, req: Any, resp: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString
            )

        pb = identity_pb2
        methods = {
            "Sign": unary(self.Sign, pb.SignRequest, pb.SignResponse),
            "CreateToken": unary(self.CreateToken, pb.CreateTokenRequest, pb.CreateTokenResponse),
            "RevokeToken": unary(self.RevokeToken, pb.RevokeTokenRequest, pb.RevokeTokenResponse),
            "ListTokens": unary(self.ListTokens, pb.ListTokensRequest, pb.ListTokensResponse),
        }
        return grpc.method_handlers_generic_handler("skein.v1.Identity", methods)

    # -- CA --------------------------------------------------------------

    async def prepare(self) -> None:
        """Create or load the CA at start (logged; Sign retries lazily on failure)."""
        if self.passphrase is None:
            log.info("certificate issuance off", fix=NO_PASSPHRASE)
            return
        try:
            await self.authority()
        except SkeinError as err:
            log.error("mesh CA unusable; Sign will fail until fixed", error=str(err))

    async def authority(self) -> tuple[CertificateAuthority, bytes]:
        """(the issuing CA, the trust bundle PEM), read from etcd; opened once per change."""
        if self.passphrase is None:
            raise PkiError(NO_PASSPHRASE)
        current = await self.store.get(self.layout.ca_current)
        if current is None:
            candidate = self.operator_ca or CertificateAuthority.generate(
                self.trust_domain, self.clock()
            )
            record = await bootstrap_ca(
                self.store, self.layout, candidate, self.passphrase, self.clock()
            )
            value = record.encode()
            current = await self.store.get(self.layout.ca_current)
            if current is not None:
                value = current.value
        else:
            value = current.value
        if self._ca is None or self._ca[0] != value:
            ca = CaRecord.decode(value).open(self.passphrase)
            if self.operator_ca is not None and fingerprint(ca.certificate) != fingerprint(
                self.operator_ca.certificate
            ):
                raise PkiError(
                    "the CA stored in etcd (ca/current) is not the one given with --ca-cert; "
                    "rotate the stored CA to it, or start this replica without --ca-cert/--ca-key"
                )
            self._ca = (value, ca)
        bundle = await self.store.get(self.layout.ca_bundle)
        anchors = decode_bundle(bundle.value) if bundle else []
        ca = self._ca[1]
        return ca, encode_bundle(with_anchor(anchors, ca.anchor))

    # -- Sign ------------------------------------------------------------

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext,
        code: grpc.StatusCode,
        reason: str,
        service: str,
        token_id: str = "",
    ) -> None:
        log.warning(
            "certificate refused",
            service=service,
            token=token_id,
            reason=reason,
            peer=context.peer(),
        )
        await context.abort(code, reason)

    async def Sign(
        self, request: identity_pb2.SignRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.SignResponse:
        service = request.service
        if self.passphrase is None:
            await self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, NO_PASSPHRASE, service)
        try:
            check_name(service, "service")
        except ConfigError as err:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(err), service)
        unauth = grpc.StatusCode.UNAUTHENTICATED
        if not request.token:
            await self._refuse(
                context,
                unauth,
                f"no join token: pass one created with `skein token create --service {service}`",
                service,
            )
        parsed = parse_token(request.token)
        if parsed is None:
            await self._refuse(
                context, unauth, "malformed join token: expected skt_<id>.<secret>", service
            )
        assert parsed is not None
        token_id, secret = parsed
        try:
            stored = await self.store.get(self.layout.token(token_id))
        except SkeinError as err:
            await self._refuse(context, err.code, f"token store unavailable: {err}", service)
            raise
        if stored is None:
            await self._refuse(
                context, unauth, f"join token {token_id} is unknown", service, token_id
            )
        assert stored is not None
        try:
            record = JoinTokenRecord.decode(stored.value)
        except (ValueError, KeyError, TypeError):
            await self._refuse(
                context,
                unauth,
                f"join token {token_id}: stored record unreadable",
                service,
                token_id,
            )
            raise
        refusal = check_token(record, secret, service, self.clock())
        if refusal is not None:
            code = grpc.StatusCode.PERMISSION_DENIED if refusal.denied else unauth
            await self._refuse(context, code, refusal.reason, service, token_id)
        try:
            csr = load_csr(request.csr_pem)
            ca, bundle = await self.authority()
            now = self.clock()
            spiffe = spiffe_id(self.trust_domain, service)
            leaf = ca.sign(csr, spiffe, now, float(request.ttl_seconds))
        except SkeinError as err:
            await self._refuse(context, err.code, str(err), service, token_id)
            raise
        log.info(
            "certificate issued",
            spiffe_id=spiffe,
            token=token_id,
            serial=f"{leaf.serial_number:x}",
            not_after=leaf.not_valid_after_utc.isoformat(),
            peer=context.peer(),
        )
        return identity_pb2.SignResponse(
            certificate_pem=(certificates_pem([leaf]) + ca.intermediates_pem()).decode(),
            trust_bundle_pem=bundle.decode(),
            spiffe_id=spiffe,
            not_after=leaf.not_valid_after_utc.timestamp(),
        )

    # -- tokens ----------------------------------------------------------

    async def _abort(self, context: grpc.aio.ServicerContext, err: SkeinError) -> None:
        await context.abort(err.code, str(err))

    def _audit(
        self, who: object, action: str, token_id: str, before: bytes | None, after: bytes | None
    ) -> list[TxnOp]:
        """The audit write for a token change, when the caller is a known principal."""
        if not isinstance(who, Principal):
            return []
        return [audit.record(self.layout, who, action, "JoinToken", token_id, before, after)]

    async def create_token(
        self, service: str, ttl: float, who: object = None
    ) -> tuple[str, JoinTokenRecord]:
        check_name(service, "service")
        ttl = ttl or DEFAULT_TOKEN_TTL
        if not 0 < ttl <= MAX_TOKEN_TTL:
            raise ConfigError(
                "ttl_seconds", f"must be 1-{MAX_TOKEN_TTL:.0f} (30 days), got {ttl:.0f}"
            )
        text, record = new_token(service, self.clock(), ttl)
        stored = record.encode()  # holds the secret's digest only, never the secret
        won, _ = await self.store.txn(
            {self.layout.token(record.id): 0},
            [
                TxnOp(self.layout.token(record.id), stored),
                *self._audit(who, "token-create", record.id, None, stored),
            ],
        )
        if not won:  # 64 random bits collided
            raise ConflictError("token id already in use; retry")
        log.info(
            "join token created", token=record.id, service=service, expires_at=record.expires_at
        )
        return text, record

    async def revoke_token(self, token_id: str, who: object = None) -> JoinTokenRecord:
        key = self.layout.token(token_id)
        for _ in range(_ATTEMPTS):
            stored = await self.store.get(key) if token_id else None
            if stored is None:
                raise NotFoundError(
                    f"join token {token_id!r} not found; `skein token list` shows ids"
                )
            record = JoinTokenRecord.decode(stored.value)
            revoked = JoinTokenRecord(
                record.id, record.service, record.sha256, record.created_at, record.expires_at, True
            )
            after = revoked.encode()
            won, _ = await self.store.txn(
                {key: stored.mod_revision},
                [
                    TxnOp(key, after),
                    *self._audit(who, "token-revoke", token_id, stored.value, after),
                ],
            )
            if won:
                log.info("join token revoked", token=token_id, service=record.service)
                return revoked
        raise ConflictError(f"join token {token_id} changed during each of 3 attempts; retry")

    async def list_tokens(self) -> list[JoinTokenRecord]:
        _, kvs = await self.store.range_prefix(self.layout.tokens)
        out = []
        for kv in kvs:
            try:
                out.append(JoinTokenRecord.decode(kv.value))
            except (ValueError, KeyError, TypeError) as err:
                log.warning(
                    "stored token does not parse; skipped", key=kv.key.decode(), error=repr(err)
                )
        return sorted(out, key=lambda r: (r.created_at, r.id))

    async def CreateToken(
        self, request: identity_pb2.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.CreateTokenResponse:
        who = await self.authorize_operator(context, "CreateToken")
        try:
            text, record = await self.create_token(request.service, float(request.ttl_seconds), who)
        except SkeinError as err:
            await self._abort(context, err)
            raise
        return identity_pb2.CreateTokenResponse(
            token=text, id=record.id, expires_at=record.expires_at
        )

    async def RevokeToken(
        self, request: identity_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.RevokeTokenResponse:
        who = await self.authorize_operator(context, "RevokeToken")
        try:
            await self.revoke_token(request.id, who)
        except SkeinError as err:
            await self._abort(context, err)
            raise
        return identity_pb2.RevokeTokenResponse()

    async def ListTokens(
        self, request: identity_pb2.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.ListTokensResponse:
        await self.authorize_operator(context, "ListTokens")
        try:
            records = await self.list_tokens()
        except SkeinError as err:
            await self._abort(context, err)
            raise
        return identity_pb2.ListTokensResponse(
            tokens=[
                identity_pb2.JoinToken(
                    id=r.id,
                    service=r.service,
                    created_at=r.created_at,
                    expires_at=r.expires_at,
                    revoked=r.revoked,
                )
                for r in records
            ]
        )
