"""Starting an exchange: route it, arm its deadline, hand it to the pool.

The dispatcher sees the request's header block and the caller's IP (each
downstream connection reads its peer address once). A NoRoute is answered at
once, with `retry-after` (and, for gRPC, `grpc-retry-pushback-ms`) when it
carries one; a pick with a delay starts after it, its deadline running.

Shared by the HTTP/2 and HTTP/1.1 front ends so both behave the same.
With mesh TLS on the listener, every request's `x-forwarded-client-cert` is
replaced before routing: a caller can not forge one, and a TLS caller's
verified SPIFFE ID reaches the app as `By=<own id>;URI=<caller id>`.
A dispatcher that fails unexpectedly is a bug in routing, but must not take
the listener down: the caller gets INTERNAL (500) naming the failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from sidecar.accesslog import AccessLog
from sidecar.tls.identity import XFCC
from sidecar.tls.store import InboundTls
from sidecar.transport.contract import Dispatcher, NoRoute
from sidecar.transport.deadline import GrpcTimeoutError, effective_timeout, parse_grpc_timeout
from sidecar.transport.exchange import Exchange
from sidecar.transport.flush import flush_dirty
from sidecar.transport.headers import Header, RequestHead
from sidecar.transport.retrying import arm_per_try
from sidecar.transport.stats import RelayMetrics
from sidecar.transport.upstream import UpstreamPool

__all__ = ["StreamStarter", "peer_ip_of"]

_log = structlog.get_logger("sidecar.transport")
_INTERNAL = 13


class StreamStarter:
    """Routes new exchanges for one listener."""

    __slots__ = ("_loop", "access", "dispatcher", "metrics", "name", "no_route", "pool", "tls")

    def __init__(
        self,
        name: str,
        dispatcher: Dispatcher,
        pool: UpstreamPool,
        metrics: RelayMetrics | None,
        access: AccessLog | None = None,
        tls: InboundTls | None = None,
    ) -> None:
        self.name = name
        self.tls = tls
        self.access = access
        self.dispatcher = dispatcher
        self.pool = pool
        self.metrics = metrics
        self.no_route = 0
        self._loop = asyncio.get_running_loop()

    def begin(self, ex: Exchange, head: RequestHead, peer_ip: str) -> None:
        """Route `ex` and start it (now, or after the pick's delay); on no route answer at once."""
        loop = ex.loop = self._loop
        now = ex.started_at = ex.attempt_at = loop.time()
        ex.access = self.access
        if self.tls is not None:
            _forward_identity(ex)
        try:
            pick = self.dispatcher.pick(
                head.authority.decode("latin-1"), head.path.decode("latin-1"), ex.headers, peer_ip
            )
        except NoRoute as exc:
            self.no_route += 1
            ex.answer_no_route(exc)
            return
        except Exception as exc:
            _log.warning("dispatcher_failed", listener=self.name, error=repr(exc))
            ex.fail(_INTERNAL, 500, f"proxy routing failed: {exc!r}")
            return
        ex.cluster = pick.cluster
        ex.pick = pick
        if pick.headers is not None:
            _replace_headers(ex, pick.headers)
        ex.done_cb = pick.done
        ex.pool = self.pool
        ex.attempts = 1
        retry = pick.retry
        if retry is not None:
            ex.retry = retry
            ex.replay_limit = retry.buffer_limit
        metrics = self.metrics
        if metrics is not None:
            stats = ex.stats = metrics.cluster(pick.cluster)
            stats.requests.inc()
            stats.in_flight.inc()
        caller: float | None = None
        if ex.timeout_index >= 0:
            try:
                caller = parse_grpc_timeout(ex.headers[ex.timeout_index][1])
            except GrpcTimeoutError:
                caller = None  # as Envoy: a malformed caller timeout is ignored
        timeout = effective_timeout(caller, pick.timeout)
        if timeout is not None:
            ex.deadline = now + timeout
            ex.timer = loop.call_at(ex.deadline, _expire, ex)
        if pick.delay > 0:
            ex.wait = loop.call_at(now + pick.delay, _launch_delayed, ex)
            return
        if retry is not None and retry.per_try_timeout is not None:
            arm_per_try(ex, now, retry.per_try_timeout)
        self.pool.open(ex)  # ex.launch(now), inlined: this runs for every call


def _forward_identity(ex: Exchange) -> None:
    """Drop any x-forwarded-client-cert the caller sent; add ours for a TLS caller."""
    headers = ex.headers
    xfcc: bytes = getattr(ex.down, "peer_xfcc", b"")
    has_xfcc = False
    for name, _ in headers:
        if name == XFCC:
            has_xfcc = True
            break
    if not has_xfcc and not xfcc:
        return
    kept = [h for h in headers if h[0] != XFCC]
    if xfcc:
        kept.append((XFCC, xfcc))
    if has_xfcc and ex.timeout_index >= 0:
        ex.timeout_index = next(i for i, h in enumerate(kept) if h[0] == b"grpc-timeout")
    ex.headers = kept


def _replace_headers(ex: Exchange, headers: Sequence[Header]) -> None:
    """Send the dispatcher's header block (inbound auth added claims); re-find grpc-timeout."""
    ex.headers = headers
    if ex.timeout_index >= 0:
        ex.timeout_index = next((i for i, h in enumerate(headers) if h[0] == b"grpc-timeout"), -1)


def peer_ip_of(transport: Any) -> str:
    """The caller's IP address as text ("" when the socket has none, e.g. a Unix socket)."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return ""


def _launch_delayed(ex: Exchange) -> None:
    """A pick's delay is over: start the first attempt (the deadline kept running)."""
    ex.wait = None
    if ex.finished:
        return
    ex.attempt_at = now = ex.loop.time()  # type: ignore[union-attr]
    ex.launch(now)
    flush_dirty()


def _expire(ex: Exchange) -> None:
    """A deadline timer: answer DEADLINE_EXCEEDED and write it now (no I/O callback follows)."""
    ex.expire()
    flush_dirty()
