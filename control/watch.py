"""Keeps the Mirror current: one range read, then one watch from revision+1.

On compaction the mirror is reloaded at once; on any other watch failure it
is reloaded after a capped, jittered backoff (etcd may be away). While etcd
is away the mirror keeps its last content and streams keep their snapshots.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from control.mirror import Mirror
from control.stats import ControlMetrics
from control.store import EtcdStore, KeyLayout, RevisionCompactedError, StoreError
from skein.errors import StoreUnavailableError
from skein.logging import get_logger

__all__ = ["MirrorWatcher", "backoff_delay"]

log = get_logger("control.watch")


def backoff_delay(attempt: int, rng: random.Random, base: float = 0.1, cap: float = 5.0) -> float:
    """Exponential backoff with full jitter in [d/2, d], d = min(cap, base * 2**attempt)."""
    delay: float = min(cap, base * (2 ** min(attempt, 30)))
    return delay / 2 + rng.random() * delay / 2


class MirrorWatcher:
    """Runs until cancelled; calls `on_change` after every load and relevant batch."""

    def __init__(
        self,
        store: EtcdStore,
        layout: KeyLayout,
        mirror: Mirror,
        on_change: Callable[[], None],
        metrics: ControlMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.mirror = mirror
        self.on_change = on_change
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.healthy = False  # the watch is established and current

    async def run(self) -> None:
        prefix = self.layout.prefix.encode()
        attempt = 0
        reason = "start"
        while True:
            try:
                revision, kvs = await self.store.range_prefix(prefix)
                self.mirror.load(revision, kvs)
                self.metrics.watch_reloads.labels(reason).inc()
                self.metrics.revision.set(self.mirror.revision)
                self.on_change()
                if reason != "start":
                    log.info("mirror reloaded", revision=revision, reason=reason)
                attempt = 0
                self.healthy = True
                async for batch in self.store.watch(prefix, revision + 1):
                    if self.mirror.apply(batch):
                        self.metrics.revision.set(self.mirror.revision)
                        self.on_change()
            except RevisionCompactedError as err:
                self.healthy = False
                reason = "compacted"
                log.warning("watch history compacted, reloading", compacted=err.compacted)
            except (StoreUnavailableError, StoreError) as err:
                self.healthy = False
                reason = "watch_failed"
                self.metrics.etcd_errors.labels("watch").inc()
                delay = backoff_delay(attempt, self.rng)
                attempt += 1
                log.warning(
                    "etcd watch failed; keeping the last mirror and retrying",
                    error=str(err),
                    retry_in=round(delay, 3),
                    attempt=attempt,
                )
                await asyncio.sleep(delay)
