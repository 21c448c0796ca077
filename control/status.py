"""Sidecar status records in etcd, written off the push path.

Each replica holds one lease; it writes `status/<instance>` for the streams
it holds under that lease, so the records vanish when the replica dies or
shuts down (revoke). Writes are coalesced: every `interval` the writer
drains the cache's dirty set and writes one record per changed stream. A
closed stream's record is deleted only if this replica wrote it last
(compare mod_revision), so a sidecar that already moved to another replica
keeps its record.
"""

from __future__ import annotations

import asyncio
import contextlib

from google.protobuf import json_format  # type: ignore[import-untyped]

from control.cache import SnapshotCache, StreamState
from control.stats import ControlMetrics
from control.store import EtcdStore, KeyLayout, StoreError, TxnOp
from skein.errors import StoreUnavailableError
from skein.logging import get_logger

__all__ = ["StatusWriter"]

log = get_logger("control.status")


class StatusWriter:
    def __init__(
        self,
        store: EtcdStore,
        layout: KeyLayout,
        cache: SnapshotCache,
        control: str,
        metrics: ControlMetrics,
        *,
        lease_ttl: int = 10,
        interval: float = 0.05,
    ) -> None:
        self.store = store
        self.layout = layout
        self.cache = cache
        self.control = control
        self.metrics = metrics
        self.lease_ttl = lease_ttl
        self.interval = interval
        self.lease_id = 0
        self._written: dict[str, tuple[int, int]] = {}  # instance -> (stream id, mod_revision)
        self._closed: list[tuple[str, int]] = []  # (instance, stream id)
        self._retry: set[int] = set()

    def stream_closed(self, state: StreamState) -> None:
        self._closed.append((state.node.instance, state.id))

    async def _ensure_lease(self) -> None:
        if self.lease_id:
            return
        self.lease_id = await self.store.grant(self.lease_ttl)
        self._written.clear()
        for state in self.cache.streams():  # a new lease: every record again
            self.cache.dirty.add(state.id)

    async def _keepalive(self) -> None:
        if self.lease_id and await self.store.keepalive(self.lease_id) <= 0:
            log.warning("replica lease expired; granting a new one", lease=self.lease_id)
            self.lease_id = 0

    async def flush(self) -> None:
        """Write every changed record and delete the closed ones."""
        await self._ensure_lease()
        self.cache.dirty |= self._retry
        self._retry.clear()
        states = self.cache.drain_dirty()
        try:
            for index, state in enumerate(states):
                record = json_format.MessageToJson(state.status(self.control), indent=None)
                key = self.layout.status_key(state.node.instance)
                try:
                    revision = await self.store.put(key, record.encode(), lease=self.lease_id)
                except BaseException:
                    self._retry.update(s.id for s in states[index:])
                    raise
                self._written[state.node.instance] = (state.id, revision)
            while self._closed:
                instance, stream_id = self._closed[0]
                written = self._written.get(instance)
                if written is not None and written[0] == stream_id:
                    await self.store.txn(
                        {self.layout.status_key(instance): written[1]},
                        [TxnOp(self.layout.status_key(instance))],
                    )
                    del self._written[instance]
                self._closed.pop(0)
        except StoreError as err:
            if "lease not found" in str(err):
                self.lease_id = 0
            raise

    async def run(self) -> None:
        keepalive_every = max(self.lease_ttl / 3, 0.2)
        loop = asyncio.get_running_loop()
        next_keepalive = loop.time() + keepalive_every
        while True:
            try:
                if loop.time() >= next_keepalive:
                    await self._keepalive()
                    next_keepalive = loop.time() + keepalive_every
                await self.flush()
            except (StoreUnavailableError, StoreError) as err:
                self.metrics.etcd_errors.labels("status").inc()
                log.warning("cannot write sidecar status; will retry", error=str(err))
                await asyncio.sleep(min(1.0, keepalive_every))
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        """Revoke the replica lease: every record it wrote vanishes at once."""
        if self.lease_id:
            with contextlib.suppress(StoreUnavailableError, StoreError):
                await self.store.revoke(self.lease_id)
            self.lease_id = 0
