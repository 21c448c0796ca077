"""Operator API client with fail-over across control replicas.

Invariants:
- A call goes to the first replica that accepts a connection; a replica that
  cannot be reached, or answers UNAVAILABLE, is skipped and the next is tried.
  Operator calls are declarative (apply/delete state) or read-only, so
  repeating one on another replica is safe.
- Every failure surfaces as one typed error: `ControlUnreachableError` when no
  replica answered (with every address and why), `OperatorCallError` when a
  replica answered with an error status (with its code and message).
- With a token, every call carries `authorization: Bearer <token>`;
  UNAUTHENTICATED and PERMISSION_DENIED are answers, not reasons to fail over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc

from skein.addr import HostPort, format_hostport
from skein.errors import SkeinError
from skein.v1 import (
    identity_pb2,
    identity_pb2_grpc,
    operator_pb2,
    operator_pb2_grpc,
    resources_pb2,
)

__all__ = [
    "DEFAULT_CONTROL",
    "ControlUnreachableError",
    "OperatorCallError",
    "OperatorClient",
]

DEFAULT_CONTROL = "127.0.0.1:15010"

T = TypeVar("T")
S = TypeVar("S")

# Statuses that mean "this replica cannot serve now": try the next one.
_FAILOVER = frozenset({grpc.StatusCode.UNAVAILABLE})


class ControlUnreachableError(SkeinError):
    """No control replica could be reached; `failures` is (address, reason) per replica."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, failures: Sequence[tuple[str, str]]) -> None:
        self.failures = list(failures)
        detail = "; ".join(f"{addr}: {why}" for addr, why in self.failures)
        super().__init__(f"cannot reach the control daemon ({detail})")


class OperatorCallError(SkeinError):
    """A control replica answered the call with an error status."""

    def __init__(self, address: str, code: grpc.StatusCode, message: str) -> None:
        self.address = address
        self.code = code
        self.message = message
        super().__init__(f"control at {address}: {code.name}: {message}")


def _reason(err: grpc.RpcError, tls: bool = False) -> str:
    """A short reason for a replica that could not serve."""
    details: str = err.details() or ""
    if not tls and "Socket closed" in details:
        return (
            f"the connection was closed at once ({details}); if control serves TLS "
            "(--tls), pass --control-ca FILE (from `skein control --print-bundle`)"
        )
    if "CERTIFICATE_VERIFY_FAILED" in details or "certificate verify failed" in details:
        return (
            "TLS: control's certificate does not verify against --control-ca "
            f"(another mesh's CA, or a stale bundle): {details}"
        )
    if "Peer name" in details and "not in peer certificate" in details:
        return f"TLS: control's certificate does not name this address (--tls-san): {details}"
    if "Connection refused" in details:
        return "connection refused (nothing listening there)"
    if "failed to connect" in details or "Deadline" in details:
        return f"no connection: {details}"
    return f"{err.code().name}: {details}"


class OperatorClient:
    """Blocking client for `skein.v1.Operator`; one channel per replica, opened lazily."""

    def __init__(
        self,
        addresses: Sequence[HostPort],
        *,
        connect_timeout: float = 3.0,
        call_timeout: float = 30.0,
        token: str | None = None,
        root_certificates: bytes | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("at least one control address is needed")
        self._targets = [format_hostport(a) for a in addresses]
        self._connect_timeout = connect_timeout
        self._call_timeout = call_timeout
        self._channels: dict[str, grpc.Channel] = {}
        # Set: TLS to control, its certificate verified against these CAs (--control-ca).
        self._roots = root_certificates
        self._preferred = 0  # index of the replica that answered last
        # Sent on every call when set: the control daemon's --operators file knows its digest.
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )

    @property
    def targets(self) -> list[str]:
        return list(self._targets)

    def _stub(self, target: str) -> operator_pb2_grpc.OperatorStub:
        return operator_pb2_grpc.OperatorStub(self._channel(target))

    def _channel(self, target: str) -> grpc.Channel:
        channel = self._channels.get(target)
        if channel is None:
            # No transparent retries and a short connect timeout: fail-over
            # across the list is ours, so a dead replica must fail fast.
            backoff = int(self._connect_timeout * 1000)
            options = [
                ("grpc.enable_retries", 0),
                ("grpc.min_reconnect_backoff_ms", backoff),
                ("grpc.initial_reconnect_backoff_ms", backoff),
            ]
            if self._roots is None:
                channel = grpc.insecure_channel(target, options=options)
            else:
                credentials = grpc.ssl_channel_credentials(root_certificates=self._roots)
                channel = grpc.secure_channel(target, credentials, options=options)
            self._channels[target] = channel
        return channel

    def _call(self, invoke: Callable[[operator_pb2_grpc.OperatorStub, float], T]) -> T:
        return self._call_on(self._stub, invoke)

    def _call_identity(self, invoke: Callable[[identity_pb2_grpc.IdentityStub, float], T]) -> T:
        def stub(target: str) -> identity_pb2_grpc.IdentityStub:
            return identity_pb2_grpc.IdentityStub(self._channel(target))

        return self._call_on(stub, invoke)

    def _call_on(self, make_stub: Callable[[str], S], invoke: Callable[[S, float], T]) -> T:
        failures: list[tuple[str, str]] = []
        count = len(self._targets)
        for step in range(count):
            index = (self._preferred + step) % count
            target = self._targets[index]
            stub = make_stub(target)
            try:
                result = invoke(stub, self._call_timeout)
            except grpc.RpcError as err:
                code: grpc.StatusCode = err.code()
                message: str = err.details() or ""
                if code in _FAILOVER:
                    failures.append((target, _reason(err, self._roots is not None)))
                    continue
                raise OperatorCallError(target, code, message) from None
            self._preferred = index
            return result
        raise ControlUnreachableError(failures)

    def apply(
        self, resources: Sequence[resources_pb2.Resource], *, dry_run: bool = False
    ) -> operator_pb2.ApplyResponse:
        request = operator_pb2.ApplyRequest(resources=list(resources), dry_run=dry_run)
        response: operator_pb2.ApplyResponse = self._call(
            lambda stub, timeout: stub.Apply(request, timeout=timeout, metadata=self.metadata)
        )
        return response

    def get(self, kind: str, name: str = "") -> operator_pb2.GetResponse:
        request = operator_pb2.GetRequest(kind=kind, name=name)
        response: operator_pb2.GetResponse = self._call(
            lambda stub, timeout: stub.Get(request, timeout=timeout, metadata=self.metadata)
        )
        return response

    def delete(self, kind: str, name: str) -> operator_pb2.DeleteResponse:
        request = operator_pb2.DeleteRequest(kind=kind, name=name)
        response: operator_pb2.DeleteResponse = self._call(
            lambda stub, timeout: stub.Delete(request, timeout=timeout, metadata=self.metadata)
        )
        return response

    def status(self) -> operator_pb2.StatusResponse:
        request = operator_pb2.StatusRequest()
        response: operator_pb2.StatusResponse = self._call(
            lambda stub, timeout: stub.Status(request, timeout=timeout, metadata=self.metadata)
        )
        return response

    def audit(self, since_revision: int = 0, limit: int = 0) -> operator_pb2.AuditResponse:
        request = operator_pb2.AuditRequest(since_revision=since_revision, limit=limit)
        response: operator_pb2.AuditResponse = self._call(
            lambda stub, timeout: stub.Audit(request, timeout=timeout, metadata=self.metadata)
        )
        return response

    def create_api_key(self, service: str, name: str) -> operator_pb2.CreateApiKeyResponse:
        request = operator_pb2.CreateApiKeyRequest(service=service, name=name)
        response: operator_pb2.CreateApiKeyResponse = self._call(
            lambda stub, timeout: stub.CreateApiKey(
                request, timeout=timeout, metadata=self.metadata
            )
        )
        return response

    def revoke_api_key(self, name: str) -> operator_pb2.RevokeApiKeyResponse:
        request = operator_pb2.RevokeApiKeyRequest(name=name)
        response: operator_pb2.RevokeApiKeyResponse = self._call(
            lambda stub, timeout: stub.RevokeApiKey(
                request, timeout=timeout, metadata=self.metadata
            )
        )
        return response

    # -- identity: join tokens and certificates ----------------------------

    def create_token(self, service: str, ttl_seconds: int) -> identity_pb2.CreateTokenResponse:
        request = identity_pb2.CreateTokenRequest(service=service, ttl_seconds=ttl_seconds)
        response: identity_pb2.CreateTokenResponse = self._call_identity(
            lambda stub, timeout: stub.CreateToken(request, timeout=timeout, metadata=self.metadata)
        )
        return response

    def revoke_token(self, token_id: str) -> identity_pb2.RevokeTokenResponse:
        request = identity_pb2.RevokeTokenRequest(id=token_id)
        response: identity_pb2.RevokeTokenResponse = self._call_identity(
            lambda stub, timeout: stub.RevokeToken(request, timeout=timeout, metadata=self.metadata)
        )
        return response

    def list_tokens(self) -> identity_pb2.ListTokensResponse:
        request = identity_pb2.ListTokensRequest()
        response: identity_pb2.ListTokensResponse = self._call_identity(
            lambda stub, timeout: stub.ListTokens(request, timeout=timeout, metadata=self.metadata)
        )
        return response

    def sign(
        self, csr_pem: str, token: str, service: str, ttl_seconds: int = 0
    ) -> identity_pb2.SignResponse:
        request = identity_pb2.SignRequest(
            csr_pem=csr_pem, token=token, service=service, ttl_seconds=ttl_seconds
        )
        response: identity_pb2.SignResponse = self._call_identity(
            lambda stub, timeout: stub.Sign(request, timeout=timeout)
        )
        return response

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
