"""Steady unary gRPC load from the test process, recording every call's outcome.

A grpc.aio client on its own event loop thread: `concurrency` workers share
one schedule of `rate` calls per second (call k is due at start + k/rate; a
worker that falls behind sends at once, so at most `concurrency` calls are in
flight). The client's own retries are off, so every success the test sees was
earned by the mesh, not by grpcio retrying on its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

__all__ = ["Outcome", "SteadyLoad", "summarize"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One call: when it was sent (monotonic seconds), how long it took, how it ended."""

    sent: float
    latency: float
    code: grpc.StatusCode
    details: str
    trailers: tuple[tuple[str, Any], ...]

    @property
    def ok(self) -> bool:
        return bool(self.code == grpc.StatusCode.OK)

    def trailer(self, key: str) -> Any:
        for name, value in self.trailers:
            if name == key:
                return value
        return None


class SteadyLoad:
    """Calls `method` on `target` at `rate` per second until `stop()`."""

    def __init__(
        self,
        target: str,
        rate: float,
        *,
        concurrency: int = 8,
        method: str = "/test.Echo/Unary",
        payload: bytes = b"steady" * 16,
        timeout: float = 5.0,
    ) -> None:
        self.target = target
        self.rate = rate
        self.concurrency = concurrency
        self.method = method
        self.payload = payload
        self.timeout = timeout
        self.outcomes: list[Outcome] = []  # appended by the loop thread (list.append is atomic)
        self.started = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stopping = False
        self._next = 0
        self._workers: asyncio.Future[list[None]] | None = None
        self._channel: grpc.aio.Channel | None = None

    def start(self) -> SteadyLoad:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> list[Outcome]:
        """Stop sending, wait for the calls in flight, close; every outcome, in send order."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(self.timeout + 10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
        return sorted(self.outcomes, key=lambda o: o.sent)

    def run_for(self, seconds: float) -> list[Outcome]:
        self.start()
        time.sleep(seconds)
        return self.stop()

    def since(self, moment: float) -> list[Outcome]:
        """Outcomes so far of calls sent at or after `moment` (monotonic seconds)."""
        return [o for o in list(self.outcomes) if o.sent >= moment]

    def __enter__(self) -> SteadyLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop thread ---------------------------------------------------------------
    async def _start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.target, options=[("grpc.enable_retries", 0)])
        call = self._channel.unary_unary(self.method)
        self.started = time.monotonic()
        self._workers = asyncio.gather(*(self._worker(call) for _ in range(self.concurrency)))

    async def _stop(self) -> None:
        self._stopping = True
        if self._workers is not None:
            await self._workers
        if self._channel is not None:
            await self._channel.close()

    async def _worker(self, call: Any) -> None:
        while not self._stopping:
            due = self.started + self._next / self.rate
            self._next += 1
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._stopping:
                return
            sent = time.monotonic()
            try:
                await call(self.payload, timeout=self.timeout)
            except grpc.aio.AioRpcError as err:
                trailers = tuple(err.trailing_metadata() or ())
                outcome = Outcome(
                    sent, time.monotonic() - sent, err.code(), err.details() or "", trailers
                )
            else:
                outcome = Outcome(sent, time.monotonic() - sent, grpc.StatusCode.OK, "", ())
            self.outcomes.append(outcome)


def summarize(outcomes: Sequence[Outcome], limit: int = 5) -> str:
    """Counts by status and the first distinct failure messages (for assertion messages)."""
    counts: dict[str, int] = {}
    messages: list[str] = []
    for outcome in outcomes:
        counts[outcome.code.name] = counts.get(outcome.code.name, 0) + 1
        if not outcome.ok and outcome.details not in messages and len(messages) < limit:
            messages.append(outcome.details)
    return f"{counts}; first failures: {messages}"
