"""The Discovery service over grpc.aio: the stream, registration and leases.

The stream handler is a thin adapter over SnapshotCache (state first, then
I/O): the cache decides what to write; the handler writes the bytes it is
handed (serialized once per distinct snapshot, so the response serializer
of Stream is the identity) and feeds every request back to the cache.

A burst of watch events is coalesced (control.coalesce): the rebuild runs
once the events have been quiet for `coalesce` seconds, or `coalesce_max`
after the first, and sees everything that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from control.cache import Outcome, SnapshotCache
from control.coalesce import Coalescer
from control.mirror import Mirror
from control.stats import ControlMetrics
from control.status import StatusWriter
from control.store import EtcdStore, KeyLayout, TxnOp
from skein.clock import Clock, MonotonicClock
from skein.config import check_name, make_resource, validate_resource
from skein.errors import ConfigError, ConflictError, NotFoundError, SkeinError
from skein.logging import get_logger
from skein.v1 import discovery_pb2, resources_pb2

__all__ = ["DiscoveryService", "check_node", "parse_request"]

log = get_logger("control.discovery")

_REGISTER_FIELDS = {
    "metadata.name": "instance",
    "spec.service": "service",
    "spec.address": "address",
    "spec.weight": "weight",
}
_REPORT_FIELDS = {"spec.health": "health", "spec.health_reason": "reason"}
_REPORT_ATTEMPTS = 3  # conditional writes lost to a concurrent change before giving up


def check_node(node: Any) -> None:
    """A stream's first request must say who it is; names follow resource rules."""
    check_name(node.service, "node.service")
    if not node.instance or len(node.instance) > 253 or "/" in node.instance:
        raise ConfigError(
            "node.instance", f"required: 1-253 characters without '/', got {node.instance!r}"
        )
    for i, name in enumerate(node.upstreams):
        check_name(name, f"node.upstreams[{i}]")


def _identity(data: bytes) -> bytes:
    return data


def parse_request(raw: bytes, index: int) -> discovery_pb2.DiscoveryRequest:
    """One stream message; ConfigError (-> INVALID_ARGUMENT) when it is not a request.

    Parsed here rather than by gRPC's deserializer, which turns a bad message
    into UNKNOWN with no word of what was wrong.
    """
    try:
        request: discovery_pb2.DiscoveryRequest = discovery_pb2.DiscoveryRequest.FromString(raw)
    except DecodeError as err:
        raise ConfigError(
            "", f"request {index} is not a skein.v1.DiscoveryRequest ({err}); closing the stream"
        ) from None
    return request


class DiscoveryService:
    """Serves Stream/Register/Renew/Deregister/ReportHealth for one control replica."""

    def __init__(
        self,
        store: EtcdStore,
        layout: KeyLayout,
        mirror: Mirror,
        cache: SnapshotCache,
        status: StatusWriter,
        metrics: ControlMetrics,
        *,
        lease_ttl: int = 10,
        coalesce: float = 0.002,
        coalesce_max: float = 0.1,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.mirror = mirror
        self.cache = cache
        self.status = status
        self.metrics = metrics
        self.lease_ttl = lease_ttl
        self._clock = clock or MonotonicClock()
        self._coalescer = Coalescer(coalesce, max(coalesce, coalesce_max))
        self._changed = asyncio.Event()
        self._push_count = metrics.pushes.labels()
        self._acks = metrics.acks.labels()
        self._nacks = metrics.nacks.labels()
        self._stale = metrics.stale.labels()
        self._latency = metrics.push_latency.labels()

    # -- rebuilds --------------------------------------------------------

    def mirror_changed(self) -> None:
        """Called by the watcher; cheap and synchronous."""
        self._coalescer.event(self._clock.now())
        self._changed.set()

    async def run_rebuilds(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            # Sleep to the due time, then look again: events meanwhile moved it on.
            # (Waking on every event instead would only recompute the same deadline.)
            while delay := self._coalescer.wait_time(self._clock.now()) or 0.0:  # noqa: ASYNC110
                await asyncio.sleep(delay)
            self._coalescer.fired()
            if not self.mirror.loaded:
                continue
            self.cache.rebuild(self.mirror.revision)
            self.metrics.rebuilds.inc()

    # -- grpc wiring -----------------------------------------------------

    def handlers(self) -> grpc.GenericRpcHandler:
        methods = {
            "Stream": grpc.stream_stream_rpc_method_handler(
                self.Stream,
                request_deserializer=_identity,  # parsed in Stream: bad bytes -> INVALID_ARGUMENT
                response_serializer=_identity,
            ),
            "Register": grpc.unary_unary_rpc_method_handler(
                self.Register,
                request_deserializer=discovery_pb2.RegisterRequest.FromString,
                response_serializer=discovery_pb2.RegisterResponse.SerializeToString,
            ),
            "Renew": grpc.unary_unary_rpc_method_handler(
                self.Renew,
                request_deserializer=discovery_pb2.RenewRequest.FromString,
                response_serializer=discovery_pb2.RenewResponse.SerializeToString,
            ),
            "Deregister": grpc.unary_unary_rpc_method_handler(
                self.Deregister,
                request_deserializer=discovery_pb2.DeregisterRequest.FromString,
                response_serializer=discovery_pb2.DeregisterResponse.SerializeToString,
            ),
            "ReportHealth": grpc.unary_unary_rpc_method_handler(
                self.ReportHealth,
                request_deserializer=discovery_pb2.ReportHealthRequest.FromString,
                response_serializer=discovery_pb2.ReportHealthResponse.SerializeToString,
            ),
        }
        return grpc.method_handlers_generic_handler("skein.v1.Discovery", methods)

    # -- Stream ----------------------------------------------------------

    async def Stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        try:
            first = parse_request(await anext(requests), 0)
            check_node(first.node)
        except StopAsyncIteration:
            return
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"first request: {err}")
        wake = asyncio.Event()
        state = self.cache.open(first.node, first.version_info, wake.set)
        self.metrics.streams.labels().inc()
        log.info(
            "stream opened",
            service=first.node.service,
            instance=first.node.instance,
            peer=context.peer(),
            version=first.version_info,
        )

        async def read() -> str:
            """Feed ACKs/NACKs to the cache; returns why the stream must end, "" if it ended."""
            index = 0
            try:
                async for raw in requests:
                    index += 1
                    try:
                        req = parse_request(raw, index)
                    except ConfigError as err:
                        return str(err)
                    outcome, latency = self.cache.on_request(state, req)
                    if outcome is Outcome.ACK:
                        self._acks.inc()
                        self._latency.observe(latency)
                    elif outcome is Outcome.NACK:
                        self._nacks.inc()
                        self._latency.observe(latency)
                        log.warning(
                            "sidecar rejected configuration",
                            instance=state.node.instance,
                            version=state.nack_version,
                            error=state.nack_error,
                        )
                    else:
                        self._stale.inc()
            finally:
                wake.set()
            return ""

        reader = asyncio.create_task(read())
        try:
            while not reader.done():
                await wake.wait()
                wake.clear()
                data = self.cache.take(state)
                if data is not None:
                    await context.write(data)
                    self._push_count.inc()
            problem = reader.result()
        finally:
            reader.cancel()
            self.cache.close(state)
            self.status.stream_closed(state)
            self.metrics.streams.labels().dec()
            log.info("stream closed", service=state.node.service, instance=state.node.instance)
        if problem:
            log.warning("bad request on a stream", instance=state.node.instance, error=problem)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

    # -- registration ----------------------------------------------------

    async def _abort(self, context: grpc.aio.ServicerContext, err: SkeinError) -> None:
        if err.code == grpc.StatusCode.UNAVAILABLE:
            self.metrics.etcd_errors.labels("registration").inc()
        await context.abort(err.code, str(err))

    async def Register(
        self, req: Any, context: grpc.aio.ServicerContext
    ) -> discovery_pb2.RegisterResponse:
        ep = resources_pb2.Endpoint()
        ep.metadata.name = req.instance
        ep.metadata.labels.update(req.labels)
        ep.spec.service = req.service
        ep.spec.address = req.address
        ep.spec.weight = req.weight
        ep.spec.health = resources_pb2.HEALTHY
        try:
            try:
                validate_resource(make_resource("Endpoint", ep))
            except ConfigError as err:
                field = _REGISTER_FIELDS.get(err.field, err.field.replace("metadata.", ""))
                raise ConfigError(field, err.reason, where="RegisterRequest") from None
            ttl = int(req.ttl_seconds) or self.lease_ttl
            if ttl > 3600:
                raise ConfigError(
                    "ttl_seconds", f"must be at most 3600, got {ttl}", where="RegisterRequest"
                )
            lease_id = await self.store.grant(ttl)
            value = json_format.MessageToJson(ep, indent=None).encode()
            try:
                await self.store.put(
                    self.layout.endpoint(req.service, req.instance), value, lease=lease_id
                )
            except SkeinError:
                await self.store.revoke(lease_id)
                raise
        except SkeinError as err:
            self.metrics.registrations.labels("error").inc()
            await self._abort(context, err)
            raise AssertionError("unreachable") from None
        self.metrics.registrations.labels("ok").inc()
        log.info(
            "registered",
            service=req.service,
            instance=req.instance,
            address=req.address,
            lease=lease_id,
            ttl=ttl,
        )
        return discovery_pb2.RegisterResponse(lease_id=lease_id, ttl_seconds=ttl)

    async def Renew(
        self, req: Any, context: grpc.aio.ServicerContext
    ) -> discovery_pb2.RenewResponse:
        try:
            ttl = await self.store.keepalive(req.lease_id)
            if ttl <= 0:
                raise NotFoundError(f"lease {req.lease_id} expired or is unknown; register again")
        except SkeinError as err:
            await self._abort(context, err)
            raise AssertionError("unreachable") from None
        return discovery_pb2.RenewResponse(ttl_seconds=ttl)

    async def Deregister(
        self, req: Any, context: grpc.aio.ServicerContext
    ) -> discovery_pb2.DeregisterResponse:
        try:
            if req.service and req.instance:
                await self.store.delete(self.layout.endpoint(req.service, req.instance))
            if req.lease_id:
                await self.store.revoke(req.lease_id)
        except SkeinError as err:
            await self._abort(context, err)
        log.info("deregistered", service=req.service, instance=req.instance)
        return discovery_pb2.DeregisterResponse()

    async def ReportHealth(
        self, req: Any, context: grpc.aio.ServicerContext
    ) -> discovery_pb2.ReportHealthResponse:
        """Store the sidecar's verdict with its endpoint, under the same lease.

        NOT_FOUND when the endpoint is gone or held by another lease (expired,
        deregistered, registered again): the sidecar registers again and then
        repeats its report. The same health and reason write nothing.
        """
        try:
            _check_report(req)
            changed = await self._set_health(req)
        except SkeinError as err:
            await self._abort(context, err)
            raise AssertionError("unreachable") from None
        if changed:
            healthy = req.health == resources_pb2.HEALTHY
            (log.info if healthy else log.warning)(
                "instance healthy" if healthy else "instance unhealthy",
                service=req.service,
                instance=req.instance,
                reason=req.reason,
            )
        return discovery_pb2.ReportHealthResponse()

    async def _set_health(self, req: Any) -> bool:
        """Rewrite the endpoint with the reported health; True when something changed."""
        key = self.layout.endpoint(req.service, req.instance)
        for _ in range(_REPORT_ATTEMPTS):
            kv = await self.store.get(key)
            if kv is None or kv.lease != req.lease_id:
                raise NotFoundError(
                    f"no endpoint {req.service}/{req.instance} under lease {req.lease_id} "
                    "(the lease expired or the instance deregistered); register again"
                )
            ep = resources_pb2.Endpoint()
            try:
                json_format.Parse(kv.value, ep, ignore_unknown_fields=True)
            except json_format.ParseError:
                raise NotFoundError(
                    f"the stored endpoint {req.service}/{req.instance} does not parse; "
                    "register again to rewrite it"
                ) from None
            if (ep.spec.health or resources_pb2.HEALTHY) == req.health and (
                ep.spec.health_reason == req.reason
            ):
                return False
            ep.spec.health = req.health
            ep.spec.health_reason = req.reason
            _validate_report(ep)
            value = json_format.MessageToJson(ep, indent=None).encode()
            done, _ = await self.store.txn(
                {key: kv.mod_revision}, [TxnOp(key, value, lease=req.lease_id)]
            )
            if done:
                return True
        raise ConflictError(
            f"endpoint {req.service}/{req.instance} changed during {_REPORT_ATTEMPTS} attempts "
            "to store its health; report again"
        )


def _check_report(req: Any) -> None:
    where = "ReportHealthRequest"
    try:
        check_name(req.service, "service")
    except ConfigError as err:
        raise ConfigError(err.field, err.reason, where=where) from None
    if not req.instance or len(req.instance) > 253 or "/" in req.instance:
        raise ConfigError(
            "instance", f"required: 1-253 characters without '/', got {req.instance!r}", where=where
        )
    if req.lease_id == 0:
        raise ConfigError("lease_id", "required: the lease Register returned", where=where)
    if req.health not in (resources_pb2.HEALTHY, resources_pb2.UNHEALTHY):
        raise ConfigError("health", f"must be HEALTHY or UNHEALTHY, got {req.health}", where=where)


def _validate_report(ep: resources_pb2.Endpoint) -> None:
    """The endpoint with its new health must still be a valid Endpoint."""
    try:
        validate_resource(make_resource("Endpoint", ep))
    except ConfigError as err:
        field = _REPORT_FIELDS.get(err.field, err.field)
        raise ConfigError(field, err.reason, where="ReportHealthRequest") from None
