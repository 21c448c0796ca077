"""The Operator service: Apply (with dry-run), Get, Delete, Status, Audit, API keys.

Apply validates every resource before touching etcd and then writes all of
them in one transaction conditional on the mod_revisions it read, so the
reported actions are exactly what happened (all or nothing). A resource
carrying metadata.version is also conditional on it (ConflictError ->
ABORTED). Reads go to etcd, not the mirror, so an operator reads its own
writes through any replica.

Every call first passes `Authorizer.authorize` (viewer for reads, operator
for changes); a refused call touches nothing. Every accepted change writes
its audit entry in the same transaction as the change (control.audit).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format  # type: ignore[import-untyped]

from control import audit
from control.auth import Authorizer, Principal, Role
from control.stats import ControlMetrics
from control.store import EtcdStore, KeyLayout, KeyValue, TxnOp
from skein.config import (
    KINDS,
    check_name,
    kind_message_class,
    make_resource,
    parse_kind,
    resource_kind,
    resource_message,
    validate_resource,
)
from skein.errors import ConfigError, ConflictError, NotFoundError, SkeinError
from skein.logging import get_logger
from skein.v1 import operator_pb2, resources_pb2

__all__ = ["API_KEY_KIND", "OperatorService", "check_policy_targets", "encode_resource"]

log = get_logger("control.operator")

_MAX_ATTEMPTS = 3
API_KEY_KIND = "ApiKey"
# stored kinds the mirror turns into snapshots
_CONFIG_KINDS = ("Service", "TrafficPolicy", "AuthorizationPolicy", API_KEY_KIND)
_API_KEY_PREFIX = "sk_"


def encode_resource(message: Any) -> bytes:
    """Stored form: compact JSON of the message, without metadata.version."""
    copy = type(message)()
    copy.CopyFrom(message)
    copy.metadata.version = 0
    # sorted keys: map fields (labels, weights) must encode the same every time, or an
    # unchanged apply would look 'configured' and push to every sidecar for nothing
    encoded: str = json_format.MessageToJson(copy, indent=None, sort_keys=True)
    return encoded.encode()


def _decode(kind: str, kv: KeyValue) -> Any | None:
    message = kind_message_class(kind)()
    try:
        json_format.Parse(kv.value, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError):
        return None
    message.metadata.version = kv.mod_revision
    return message


def check_policy_targets(items: list[tuple[str, Any]], stored: dict[str, str]) -> None:
    """One TrafficPolicy per service: raise naming both policies when a second one targets it.

    `items` are the (kind, message) pairs being applied, `stored` maps each
    stored policy's name to its target service. A stored policy being
    replaced by this apply does not count (it may move to another service).
    """
    applying = {m.metadata.name for kind, m in items if kind == "TrafficPolicy"}
    owners: dict[str, str] = {}
    for name, service in sorted(stored.items()):
        if name not in applying:
            owners.setdefault(service, name)
    for index, (kind, message) in enumerate(items):
        if kind != "TrafficPolicy":
            continue
        name, service = message.metadata.name, message.spec.service
        other = owners.get(service)
        if other is not None:
            raise ConfigError(
                "spec.service",
                f"service {service!r} already has TrafficPolicy/{other}; a service takes one "
                f"TrafficPolicy: change TrafficPolicy/{other} or delete it first",
                where=f"resources[{index}] (TrafficPolicy/{name})",
            )


def _no_revision() -> int:
    return 0


class OperatorService:
    """Serves skein.v1.Operator for one replica.

    `config_revision` returns the newest configuration revision the replica's
    mirror has seen (it alone knows the revisions of deletes); Status
    combines it with etcd's newest resource and endpoint writes.
    """

    def __init__(
        self,
        store: EtcdStore,
        layout: KeyLayout,
        metrics: ControlMetrics,
        config_revision: Callable[[], int] = _no_revision,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.metrics = metrics
        self.config_revision = config_revision
        self.auth = authorizer or Authorizer(None)

    def handlers(self) -> grpc.GenericRpcHandler:
        def unary(fn: Any, req: Any, resp: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString
            )

        methods = {
            "Apply": unary(self.Apply, operator_pb2.ApplyRequest, operator_pb2.ApplyResponse),
            "Get": unary(self.Get, operator_pb2.GetRequest, operator_pb2.GetResponse),
            "Delete": unary(self.Delete, operator_pb2.DeleteRequest, operator_pb2.DeleteResponse),
            "Status": unary(self.Status, operator_pb2.StatusRequest, operator_pb2.StatusResponse),
            "Audit": unary(self.Audit, operator_pb2.AuditRequest, operator_pb2.AuditResponse),
            "CreateApiKey": unary(
                self.CreateApiKey,
                operator_pb2.CreateApiKeyRequest,
                operator_pb2.CreateApiKeyResponse,
            ),
            "RevokeApiKey": unary(
                self.RevokeApiKey,
                operator_pb2.RevokeApiKeyRequest,
                operator_pb2.RevokeApiKeyResponse,
            ),
        }
        return grpc.method_handlers_generic_handler("skein.v1.Operator", methods)

    async def _abort(self, context: grpc.aio.ServicerContext, err: SkeinError) -> None:
        if err.code == grpc.StatusCode.UNAVAILABLE:
            self.metrics.etcd_errors.labels("operator").inc()
        await context.abort(err.code, str(err))

    # -- Apply -----------------------------------------------------------

    @staticmethod
    def _check(resources: Any) -> list[tuple[str, Any]]:
        """Validate all; returns (kind, message) pairs or raises naming the resource."""
        out: list[tuple[str, Any]] = []
        seen: dict[tuple[str, str], int] = {}
        targets: dict[str, tuple[int, str]] = {}  # service -> (index, policy name)
        for index, res in enumerate(resources):
            kind = resource_kind(res) or "?"
            name = resource_message(res).metadata.name if kind != "?" else ""
            where = f"resources[{index}] ({kind}/{name or '?'})"
            if kind == "Endpoint":
                raise ConfigError(
                    "kind",
                    "Endpoints cannot be applied: they are written by sidecar registration "
                    "(Register) and live under a lease",
                    where=where,
                )
            try:
                validate_resource(res)
            except ConfigError as err:
                raise ConfigError(err.field, err.reason, where=where) from None
            if (kind, name) in seen:
                raise ConfigError(
                    "metadata.name",
                    f"{kind}/{name} appears twice (also resources[{seen[kind, name]}])",
                    where=where,
                )
            seen[kind, name] = index
            message = resource_message(res)
            if kind == "TrafficPolicy":
                service = message.spec.service  # type: ignore[attr-defined]
                if service in targets:
                    first, other = targets[service]
                    raise ConfigError(
                        "spec.service",
                        f"TrafficPolicy/{other} (resources[{first}]) and TrafficPolicy/{name} "
                        f"both target service {service!r}; a service takes one TrafficPolicy: "
                        "merge them",
                        where=where,
                    )
                targets[service] = (index, name)
            out.append((kind, message))
        return out

    async def _stored_policy_targets(self) -> tuple[int, dict[str, str]]:
        """(read revision, stored policy name -> target service)."""
        revision, kvs = await self.store.range_prefix(
            self.layout.resource_kind_prefix("TrafficPolicy")
        )
        targets: dict[str, str] = {}
        for kv in kvs:
            message = _decode("TrafficPolicy", kv)
            if message is not None:
                targets[self.layout.parse(kv.key).name] = message.spec.service
        return revision, targets

    async def _apply(
        self, items: list[tuple[str, Any]], dry_run: bool, principal: Principal
    ) -> Any:
        for _attempt in range(_MAX_ATTEMPTS):
            results = operator_pb2.ApplyResponse()
            expect: dict[bytes, int] = {}
            ops: list[TxnOp] = []
            # The policy check read is guarded in the transaction: a policy written
            # meanwhile (by another operator) makes it fail and this loop read again.
            guards: dict[bytes, int] = {}
            if any(kind == "TrafficPolicy" for kind, _ in items):
                read_at, stored_targets = await self._stored_policy_targets()
                check_policy_targets(items, stored_targets)
                guards[self.layout.resource_kind_prefix("TrafficPolicy")] = read_at
            for kind, message in items:
                key = self.layout.resource(kind, message.metadata.name)
                stored = await self.store.get(key)
                mod = stored.mod_revision if stored else 0
                wanted = message.metadata.version
                if wanted and wanted != mod:
                    raise ConflictError(
                        f"{kind}/{message.metadata.name}: metadata.version is {wanted} but the "
                        f"stored version is {mod or 'absent'}; get it again and reapply"
                    )
                value = encode_resource(message)
                if stored is None:
                    action = "created"
                else:
                    old = _decode(kind, stored)
                    same = old is not None and encode_resource(old) == value
                    action = "unchanged" if same else "configured"
                results.results.add(kind=kind, name=message.metadata.name, action=action)
                expect[key] = mod
                if action != "unchanged":
                    ops.append(TxnOp(key, value))
                    before = stored.value if stored else None
                    ops.append(
                        audit.record(
                            self.layout,
                            principal,
                            "apply",
                            kind,
                            message.metadata.name,
                            before,
                            value,
                        )
                    )
            if dry_run or not ops:
                return results
            ok, revision = await self.store.txn(expect, ops, unchanged_since=guards)
            if ok:
                results.version = revision
                return results
        raise ConflictError("the resources kept changing while applying; try again")

    async def Apply(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        principal = await self.auth.authorize(context, Role.OPERATOR)
        try:
            items = self._check(req.resources)
            response = await self._apply(items, req.dry_run, principal)
        except SkeinError as err:
            self.metrics.applies.labels("error").inc()
            await self._abort(context, err)
            raise AssertionError("unreachable") from None
        self.metrics.applies.labels("dry_run" if req.dry_run else "ok").inc()
        if not req.dry_run:
            log.info(
                "applied",
                principal=principal.name,
                version=response.version,
                results=[f"{r.kind}/{r.name} {r.action}" for r in response.results],
            )
        return response

    # -- Get / Delete ----------------------------------------------------

    async def _list(self, kind: str) -> list[tuple[KeyValue, Any]]:
        prefix = (
            self.layout.endpoints.encode()
            if kind == "Endpoint"
            else self.layout.resource_kind_prefix(kind)
        )
        _rev, kvs = await self.store.range_prefix(prefix)
        out = []
        for kv in kvs:
            message = _decode(kind, kv)
            if message is None:
                log.warning(
                    "stored value does not parse; skipped", key=kv.key.decode(errors="replace")
                )
                continue
            out.append((kv, message))
        return out

    async def Get(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.auth.authorize(context, Role.VIEWER)
        try:
            kind = parse_kind(req.kind)
            if kind not in KINDS:
                raise ConfigError(
                    "kind",
                    f"{kind} is not read with Get: it is made by its own calls (`skein apikey "
                    "create|revoke`) and every change to it shows in `skein audit`",
                )
            found = [
                m
                for _kv, m in await self._list(kind)
                if not req.name or m.metadata.name == req.name
            ]
            if req.name and not found:
                raise NotFoundError(f"{kind}/{req.name} not found")
        except SkeinError as err:
            await self._abort(context, err)
            raise AssertionError("unreachable") from None
        found.sort(key=lambda m: (m.metadata.name, getattr(m.spec, "service", "")))
        return operator_pb2.GetResponse(resources=[make_resource(kind, m) for m in found])

    async def _delete(self, kind: str, name: str, principal: Principal) -> int:
        """Delete and log in one txn conditional on what was read; returns the revision."""
        for _attempt in range(_MAX_ATTEMPTS):
            if kind == "Endpoint":
                found = [kv for kv, m in await self._list(kind) if m.metadata.name == name]
            else:
                stored = await self.store.get(self.layout.resource(kind, name))
                found = [stored] if stored is not None else []
            if not found:
                raise NotFoundError(f"{kind}/{name} not found; nothing deleted")
            ops = [TxnOp(kv.key) for kv in found]
            ops += [
                audit.record(self.layout, principal, "delete", kind, name, kv.value, None)
                for kv in found
            ]
            ok, revision = await self.store.txn({kv.key: kv.mod_revision for kv in found}, ops)
            if ok:
                return revision
        raise ConflictError(f"{kind}/{name} kept changing while deleting; try again")

    async def Delete(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        principal = await self.auth.authorize(context, Role.OPERATOR)
        try:
            kind = parse_kind(req.kind)
            if not req.name:
                raise ConfigError("name", "required: the name of the resource to delete")
            revision = await self._delete(kind, req.name, principal)
        except SkeinError as err:
            await self._abort(context, err)
            raise AssertionError("unreachable") from None
        log.info("deleted", kind=kind, name=req.name, version=revision, principal=principal.name)
        return operator_pb2.DeleteResponse(version=revision)

    # -- Status ----------------------------------------------------------

    async def _config_revision(self) -> int:
        """Newest revision of what sidecars sync to: resources and endpoints, not status.

        etcd gives the newest write of each (read-your-writes through any
        replica); a delete leaves no key behind, so the mirror's figure
        covers deletes once the watch has delivered them.
        """
        prefixes = [self.layout.resource_kind_prefix(kind) for kind in _CONFIG_KINDS]
        prefixes.append(self.layout.endpoints.encode())
        newest = await asyncio.gather(*(self.store.newest_mod_revision(p) for p in prefixes))
        return max(self.config_revision(), *newest)

    async def Status(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.auth.authorize(context, Role.VIEWER)
        try:
            _rev, kvs = await self.store.range_prefix(self.layout.status.encode())
            revision = await self._config_revision()
        except SkeinError as err:
            await self._abort(context, err)
            raise AssertionError("unreachable") from None
        response = operator_pb2.StatusResponse(revision=revision)
        for kv in kvs:
            record = operator_pb2.SidecarStatus()
            try:
                json_format.Parse(kv.value, record, ignore_unknown_fields=True)
            except (json_format.ParseError, ValueError):
                continue
            response.sidecars.append(record)
        return response

    # -- Audit -----------------------------------------------------------

    async def Audit(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.auth.authorize(context, Role.VIEWER)
        try:
            entries = await audit.read_entries(
                self.store, self.layout, req.since_revision, req.limit
            )
        except SkeinError as err:
            await self._abort(context, err)
            raise AssertionError("unreachable") from None
        return operator_pb2.AuditResponse(entries=entries)

    # -- API keys --------------------------------------------------------

    async def CreateApiKey(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        """Store the key's digest only; the key itself is in the response and nowhere else."""
        principal = await self.auth.authorize(context, Role.OPERATOR)
        try:
            check_name(req.service, "service")
            check_name(req.name, "name")
            key = _API_KEY_PREFIX + secrets.token_urlsafe(32)
            message = resources_pb2.ApiKey()
            message.metadata.name = req.name
            message.spec.service = req.service
            message.spec.sha256 = hashlib.sha256(key.encode()).hexdigest()
            message.spec.created_at = time.time()
            value = encode_resource(message)
            where = self.layout.resource(API_KEY_KIND, req.name)
            ops = [
                TxnOp(where, value),
                audit.record(
                    self.layout, principal, "apikey-create", API_KEY_KIND, req.name, None, value
                ),
            ]
            ok, revision = await self.store.txn({where: 0}, ops)
        except SkeinError as err:
            await self._abort(context, err)
            raise AssertionError("unreachable") from None
        if not ok:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"ApiKey/{req.name} already exists; choose another name (a revoked key's "
                "name stays taken)",
            )
        log.info(
            "api key created",
            name=req.name,
            service=req.service,
            version=revision,
            principal=principal.name,
        )
        return operator_pb2.CreateApiKeyResponse(key=key, version=revision)

    async def _revoke_api_key(self, name: str, principal: Principal) -> int:
        where = self.layout.resource(API_KEY_KIND, name)
        for _attempt in range(_MAX_ATTEMPTS):
            stored = await self.store.get(where)
            if stored is None:
                raise NotFoundError(f"ApiKey/{name} not found; nothing revoked")
            message = resources_pb2.ApiKey()
            try:
                json_format.Parse(stored.value, message, ignore_unknown_fields=True)
            except (json_format.ParseError, ValueError):
                raise ConfigError(
                    "name", f"ApiKey/{name}: the stored value does not parse"
                ) from None
            if message.spec.revoked:
                return stored.mod_revision
            message.spec.revoked = True
            value = encode_resource(message)
            record = audit.record(
                self.layout, principal, "apikey-revoke", API_KEY_KIND, name, stored.value, value
            )
            ok, revision = await self.store.txn(
                {where: stored.mod_revision}, [TxnOp(where, value), record]
            )
            if ok:
                return revision
        raise ConflictError(f"ApiKey/{name} kept changing while revoking; try again")

    async def RevokeApiKey(self, req: Any, context: grpc.aio.ServicerContext) -> Any:
        """Mark the key revoked (kept, so its name is not reused); revoking twice is a no-op."""
        principal = await self.auth.authorize(context, Role.OPERATOR)
        try:
            if not req.name:
                raise ConfigError("name", "required: the name of the API key to revoke")
            revision = await self._revoke_api_key(req.name, principal)
        except SkeinError as err:
            await self._abort(context, err)
            raise AssertionError("unreachable") from None
        log.info("api key revoked", name=req.name, version=revision, principal=principal.name)
        return operator_pb2.RevokeApiKeyResponse(version=revision)
