"""The sidecar's admin HTTP pages: /ready /healthz /config_dump /clusters /metrics.

Every stateful part dumps itself here (Envoy's config_dump idea); /ready says
why it is not ready, so an operator never has to guess.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sidecar.discovery.client import DiscoveryClient
from sidecar.dispatch import ConfigHolder
from sidecar.registration import Registration
from skein.addr import format_hostport
from skein.adminhttp import AdminServer, Response, json_response, text_response
from skein.metrics import Registry

__all__ = ["SidecarAdmin"]


class _Listener(Protocol):
    @property
    def address(self) -> tuple[str, int]: ...

    def stats(self) -> Mapping[str, Any]: ...


class SidecarAdmin:
    """Builds the admin routes over the sidecar's live objects."""

    def __init__(
        self,
        *,
        service: str,
        instance: str,
        holder: ConfigHolder,
        discovery: DiscoveryClient,
        registration: Registration | None,
        metrics: Registry,
        listeners: Callable[[], Mapping[str, _Listener]],
        cache_path: str,
        collect: Callable[[], None] | None = None,
        health: Callable[[], Mapping[str, Any]] | None = None,
        auth: Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.service = service
        self.instance = instance
        self.holder = holder
        self.discovery = discovery
        self.registration = registration
        self.metrics = metrics
        self.listeners = listeners
        self.cache_path = cache_path
        self.collect = collect  # refreshes metrics kept as plain counters
        self.health = health  # the local app's active health checks
        self.auth = auth  # the inbound side's JWT / API key / authorization state
        self.draining = False

    def server(self) -> AdminServer:
        return AdminServer(
            {
                "/ready": self.ready,
                "/healthz": self.healthz,
                "/config_dump": self.config_dump,
                "/clusters": self.clusters,
                "/metrics": self.render_metrics,
            }
        )

    def ready(self, _params: dict[str, str]) -> Response:
        if self.draining:
            return text_response("not ready: draining for shutdown\n", 503)
        current = self.holder.current
        if current is None:
            status = self.discovery.status
            why = status.last_error or status.state
            return text_response(
                f"not ready: no configuration applied yet (control {status.control or '-'}: "
                f"{why}; disk cache {self.cache_path} not usable or empty)\n",
                503,
            )
        return text_response(f"ready: version {current.config.version} from {current.source}\n")

    def healthz(self, _params: dict[str, str]) -> Response:
        return text_response("ok\n")

    def config_dump(self, _params: dict[str, str]) -> Response:
        current = self.holder.current
        status = dataclasses.asdict(self.discovery.status)
        status.pop("extra", None)
        body: dict[str, Any] = {
            "node": {"service": self.service, "instance": self.instance},
            "version": current.config.version if current else None,
            "source": current.source if current else None,
            "applied_at": current.applied_at if current else None,
            "local_timeout": current.config.local_timeout if current else None,
            "local_policy": self.holder.local.dump(),
            "health_check": self.health() if self.health is not None else None,
            "inbound_auth": self.auth() if self.auth is not None else None,
            "clusters": current.dump_clusters() if current else {},
            "last_nack": self.discovery.status.last_nack,
            "control": status,
            "registration": self.registration.dump() if self.registration else None,
            "cache_path": self.cache_path,
        }
        return json_response(body)

    def clusters(self, _params: dict[str, str]) -> Response:
        current = self.holder.current
        listeners = {
            name: {"address": format_hostport(listener.address[:2]), **listener.stats()}
            for name, listener in self.listeners().items()
        }
        return json_response(
            {
                "version": current.config.version if current else None,
                "clusters": current.dump_clusters() if current else {},
                "listeners": listeners,
            }
        )

    def render_metrics(self, _params: dict[str, str]) -> Response:
        if self.collect is not None:
            self.collect()
        return Response(200, self.metrics.render().encode(), "text/plain; version=0.0.4")
