"""Admin HTTP of the control daemon: /healthz, /ready, /metrics, /config_dump.

/ready is 200 only while etcd answers (a cheap linearizable read, cached for
`ready_cache` seconds so probes cannot load etcd) and the mirror has loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from control.cache import SnapshotCache
from control.mirror import Mirror
from control.stats import ControlMetrics
from control.store import EtcdStore, StoreError
from skein.adminhttp import AdminServer, Response, json_response, text_response
from skein.errors import StoreUnavailableError

__all__ = ["ControlAdmin"]


class ControlAdmin:
    def __init__(
        self,
        store: EtcdStore,
        mirror: Mirror,
        cache: SnapshotCache,
        metrics: ControlMetrics,
        info: Callable[[], dict[str, Any]],
        *,
        ready_cache: float = 1.0,
    ) -> None:
        self.store = store
        self.mirror = mirror
        self.cache = cache
        self.metrics = metrics
        self.info = info
        self.ready_cache = ready_cache
        self._checked_at = float("-inf")
        self._etcd_ok = False
        self._etcd_error = "not checked yet"
        self.server = AdminServer(
            {
                "/healthz": self.healthz,
                "/ready": self.ready,
                "/metrics": self.metrics_page,
                "/config_dump": self.config_dump,
            }
        )

    def healthz(self, _params: dict[str, str]) -> Response:
        return text_response("ok\n")

    async def etcd_ok(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= self.ready_cache:
            self._checked_at = now
            try:
                await self.store.revision()
                self._etcd_ok, self._etcd_error = True, ""
            except (StoreUnavailableError, StoreError) as err:
                self.metrics.etcd_errors.labels("ready").inc()
                self._etcd_ok, self._etcd_error = False, str(err)
        return self._etcd_ok

    async def ready(self, _params: dict[str, str]) -> Response:
        if not await self.etcd_ok():
            return text_response(f"not ready: {self._etcd_error}\n", 503)
        if not self.mirror.loaded:
            return text_response("not ready: configuration not loaded from etcd yet\n", 503)
        return text_response("ready\n")

    def metrics_page(self, _params: dict[str, str]) -> Response:
        body = self.metrics.registry.render().encode()
        return Response(200, body, "text/plain; version=0.0.4; charset=utf-8")

    def config_dump(self, _params: dict[str, str]) -> Response:
        return json_response(
            {
                **self.info(),
                "mirror": {
                    "loaded": self.mirror.loaded,
                    "revision": self.mirror.revision,
                    **self.mirror.counts(),
                },
                "cache": self.cache.dump(),
            }
        )
