"""One relayed call: a downstream request paired with one upstream stream per attempt.

The exchange holds what flow control makes it wait with, the replay copy a
retry needs, and nothing else. Retry decisions live in `retrying.py`.

Invariants:
- bytes received on one side are acknowledged (window opened) only once they
  were handed to the other side, so buffering per stream is bounded by the
  window we advertise; a retry replays bytes already acknowledged without
  acknowledging them again (`req_skip`);
- the replay copy holds the request bytes sent upstream while they total at
  most the retrier's `buffer_limit`; past it the copy is dropped and the call
  is no longer retried (`replay_size` -1);
- the call is committed once anything of the response went to the caller
  (`resp_started`): no attempt starts after that;
- each attempt's `Pick.done(ok, now, elapsed)` runs exactly once; a held
  retry slot is released exactly once (`Retrier.retry_done()`);
- `finish()` runs exactly once: it cancels the timers, unregisters the stream
  on both connections, reports the attempt and records metrics; after it every
  callback is a no-op (late frames are ignored).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from sidecar.transport import retrying
from sidecar.transport.contract import (
    ENDPOINT_FAILURE_GRPC,
    FAIL_REFUSED,
    FAIL_RESET,
    NoRoute,
    Pick,
    Retrier,
)
from sidecar.transport.deadline import format_grpc_timeout
from sidecar.transport.frames import CANCEL as _CANCEL
from sidecar.transport.frames import REFUSED_STREAM
from sidecar.transport.headers import Header, grpc_status_of, percent_encode_grpc_message

if TYPE_CHECKING:
    from sidecar.accesslog import AccessLog
    from sidecar.transport.stats import ClusterStats

__all__ = ["DEADLINE_EXCEEDED", "UNAVAILABLE", "Downstream", "Exchange", "Opener", "Upstream"]

DEADLINE_EXCEEDED = 4
# A caller's cancel this close to the call's deadline is the caller timing out.
CALLER_DEADLINE_SLACK = 0.05
UNAVAILABLE = 14
CANCEL = _CANCEL


class Downstream(Protocol):
    """The client-facing side of an exchange (HTTP/2 or HTTP/1.1 connection)."""

    def d_headers(self, ex: Exchange, headers: Sequence[Header], end: bool) -> None: ...
    def d_data(self, ex: Exchange, data: bytes, end: bool) -> int: ...
    def d_trailers(self, ex: Exchange, headers: Sequence[Header]) -> None: ...
    def d_reset(self, ex: Exchange, code: int) -> None: ...
    def d_ack(self, ex: Exchange, size: int) -> None: ...
    def d_error(
        self,
        ex: Exchange,
        grpc_status: int,
        http_status: int,
        message: str,
        extra: Sequence[Header],
    ) -> None:
        """Answer with a synthetic status; `extra` fields go into the header block."""
        ...

    def d_done(self, ex: Exchange) -> None:
        """Forget the stream; if the caller may still send, reset it (NO_ERROR)."""
        ...


class Upstream(Protocol):
    """The pooled upstream connection carrying an exchange's current attempt."""

    address: tuple[str, int]
    label: str  # "host:port", for messages and the access log

    def u_data(self, ex: Exchange, data: bytes, end: bool) -> int: ...
    def u_trailers(self, ex: Exchange, headers: Sequence[Header]) -> None: ...
    def u_ack(self, ex: Exchange, size: int) -> None: ...
    def u_done(self, ex: Exchange) -> None:
        """Forget the stream; reset it upstream (CANCEL) if it is still open."""
        ...


class Opener(Protocol):
    """The pool: puts an attempt on a connection to `ex.pick.address`."""

    def open(self, ex: Exchange) -> None: ...


class Exchange:
    __slots__ = (
        "access",
        "attempt_at",
        "attempts",
        "cluster",
        "deadline",
        "detail",
        "done_cb",
        "down",
        "down_sid",
        "finished",
        "grpc_status",
        "headers",
        "http_status",
        "is_grpc",
        "loop",
        "pick",
        "pool",
        "reason",
        "replay",
        "replay_limit",
        "replay_size",
        "req_buf",
        "req_end",
        "req_sent_end",
        "req_skip",
        "req_trailers",
        "resp_buf",
        "resp_end",
        "resp_started",
        "resp_trailers",
        "retry",
        "slot",
        "started_at",
        "stats",
        "timeout_index",
        "timer",
        "transparent",
        "try_deadline",
        "up",
        "up_mark",
        "up_sid",
        "wait",
    )

    # Set before they are read, never in __init__ (each store there costs every call):
    attempt_at: float  # the current attempt's start (StreamStarter.begin, each retry)
    up_mark: int  # the connection's write count when this stream was opened

    def __init__(
        self,
        down: Downstream,
        down_sid: int,
        headers: Sequence[Header],
        is_grpc: bool,
        req_end: bool,
        timeout_index: int,
    ) -> None:
        self.down = down
        self.down_sid = down_sid
        self.headers = headers  # as received; a retry's gets the attempt number added
        self.is_grpc = is_grpc
        self.timeout_index = timeout_index
        self.req_end = req_end
        self.req_sent_end = False
        self.req_buf: bytearray | None = None
        self.req_skip = 0  # bytes at the head of req_buf already acknowledged (a replay)
        self.req_trailers: Sequence[Header] | None = None
        self.resp_buf: bytearray | None = None
        self.resp_end = False
        self.resp_trailers: Sequence[Header] | None = None
        self.resp_started = False
        self.up: Upstream | None = None
        self.up_sid = 0
        self.cluster = ""
        self.pick: Pick | None = None  # the current (or last) attempt's
        self.pool: Opener | None = None
        self.retry: Retrier | None = None
        self.replay: bytes | list[bytes] | None = None
        self.replay_size = 0  # -1: the request outgrew the buffer, no more retries
        self.replay_limit = -1  # -1: no replay copy kept
        self.attempts = 0  # attempts started that count (transparent retries do not)
        self.slot = False  # holds a retry slot (a float answer of Retrier.decide)
        self.transparent = False  # the one transparent retry was used
        self.reason = ""  # why the retrier said no, for synthesized failures
        self.deadline = 0.0
        self.try_deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None  # the call's deadline
        self.wait: asyncio.Handle | None = None  # start delay, backoff, or per-try timeout
        self.done_cb: Callable[[bool, float, float], None] | None = None
        self.stats: ClusterStats | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started_at = 0.0
        self.grpc_status = -1
        self.http_status = 0
        self.finished = False
        self.access: AccessLog | None = None  # set by the listener when it logs
        self.detail = ""  # why the proxy answered itself (no route, deadline, ...)

    # -- attempts ------------------------------------------------------------------

    def launch(self, now: float) -> None:
        """Start the current attempt on the pool, its per-try timer armed."""
        retry = self.retry
        if retry is not None and retry.per_try_timeout is not None:
            retrying.arm_per_try(self, now, retry.per_try_timeout)
        self.pool.open(self)  # type: ignore[union-attr]

    # -- request direction (downstream -> upstream) ---------------------------------

    def request_headers(self, now: float) -> Sequence[Header]:
        """The block to send upstream, `grpc-timeout` set to what remains at `now`."""
        headers = self.headers
        if self.timeout_index >= 0:
            # Only a caller's own grpc-timeout is rewritten; none is added for a
            # policy timeout (as Envoy): the proxy enforces that one itself, and a
            # grpc server pays a timer per call for every deadline it is given.
            # (The received block may be shared and immutable: rewrite a copy.)
            deadline = self.deadline
            per_try = self.try_deadline
            if per_try and (not deadline or per_try < deadline):
                deadline = per_try
            if deadline:
                rewritten = list(headers)
                rewritten[self.timeout_index] = (
                    b"grpc-timeout",
                    format_grpc_timeout(deadline - now),
                )
                return rewritten
        return headers

    def started(self, up: Upstream, sid: int) -> None:
        """The upstream stream exists; push whatever the caller sent meanwhile."""
        self.up = up
        self.up_sid = sid
        if self.req_end and self.req_buf is None and self.req_trailers is None:
            self.req_sent_end = True  # END_STREAM went with the HEADERS
        else:
            self.drain_req()

    def req_data(self, data: bytes, padding: int, end: bool = False) -> None:
        """Relay request bytes; `end`: they carried END_STREAM.

        The end goes upstream on the same DATA frame when the window lets all of
        `data` through: an empty DATA frame just to end the stream costs the
        server a frame (and often a read) per request.
        """
        if padding:
            self.down.d_ack(self, padding)
        if self.finished:
            self.down.d_ack(self, len(data))
            return
        if self.up_sid and self.req_buf is None:
            sent = self.up.u_data(self, data, end)  # type: ignore[union-attr]
            if sent:
                self.down.d_ack(self, sent)
                if self.replay_limit >= 0:
                    if self.replay is None and sent == len(data) <= self.replay_limit:
                        self.replay = data  # a unary call's one chunk: kept without a copy
                        self.replay_size = sent
                    else:
                        self.keep(data if sent == len(data) else data[:sent])
            if sent == len(data):
                if end:
                    self.req_end = self.req_sent_end = True
                return
            data = data[sent:]
        if self.req_buf is None:
            self.req_buf = bytearray(data)
        else:
            self.req_buf += data
        if end:
            self.req_finished(None)

    def keep(self, chunk: bytes) -> None:
        """Add bytes sent upstream to the replay copy, or drop it past the limit."""
        size = self.replay_size + len(chunk)
        if size > self.replay_limit:
            self.replay = None
            self.replay_size = self.replay_limit = -1
            return
        self.replay_size = size
        replay = self.replay
        if replay is None:
            self.replay = chunk
        elif type(replay) is list:
            replay.append(chunk)
        else:
            self.replay = [replay, chunk]  # type: ignore[list-item]

    def req_finished(self, trailers: Sequence[Header] | None = None) -> None:
        if self.req_end or self.finished:
            return
        self.req_end = True
        self.req_trailers = trailers
        if self.up_sid:
            self.drain_req()

    def drain_req(self) -> None:
        """Send buffered request bytes as the upstream window allows, then the end."""
        if self.finished or not self.up_sid:
            return
        up = self.up
        buf = self.req_buf
        if buf:
            end = self.req_end and self.req_trailers is None
            chunk = bytes(buf)
            sent = up.u_data(self, chunk, end)  # type: ignore[union-attr]
            if sent:
                del buf[:sent]
                fresh = sent
                skip = self.req_skip
                if skip:  # a replay: these bytes were acknowledged by an earlier attempt
                    fresh = sent - skip if sent > skip else 0
                    self.req_skip = skip - sent + fresh
                if fresh:
                    self.down.d_ack(self, fresh)
                    if self.replay_limit >= 0:
                        self.keep(chunk[sent - fresh : sent])
            if buf:
                return
            self.req_buf = None
            if end:
                self.req_sent_end = True
                return
        self.req_buf = None
        if self.req_end and not self.req_sent_end:
            self.req_sent_end = True
            if self.req_trailers is not None:
                up.u_trailers(self, self.req_trailers)  # type: ignore[union-attr]
            else:
                up.u_data(self, b"", True)  # type: ignore[union-attr]

    def down_reset(self) -> None:
        """The caller cancelled: cancel upstream too.

        A cancel is not the endpoint's failure, unless it is the caller giving up at
        its deadline: a gRPC client resets the stream when its deadline passes, a
        hair before the proxy's own timer for the same deadline would fire, so
        counting that as a success would hide an endpoint that never answers from
        the breaker and outlier detection.
        """
        deadline = self.deadline
        self.finish(
            not deadline or self.loop is None or self.loop.time() < deadline - CALLER_DEADLINE_SLACK
        )

    # -- response direction (upstream -> downstream) --------------------------------

    def resp_headers(self, headers: Sequence[Header], end: bool) -> None:
        if self.finished:
            return
        status = 0
        for name, value in headers:
            if name == b":status":
                status = int(value) if value.isdigit() else 0
                break
        self.http_status = status
        if end and self.is_grpc:
            self.grpc_status = grpc_status_of(headers)
        if (
            (end or status != 200)
            and self.retry is not None
            and (status >= 500 or status == 409 or (end and self.grpc_status > 0))
            and retrying.response_failed(self, headers, end)
        ):
            return
        # Committed: from here on the caller sees this attempt's answer.
        self.resp_started = True
        if self.wait is not None:  # the per-try timeout bounds an attempt until it commits
            self.wait.cancel()
            self.wait = None
        if self.attempts > 1:
            headers = retrying.tag_response(self, headers)
        self.down.d_headers(self, headers, end)
        if end:
            self.finish(self._ok())

    def resp_data(self, data: bytes, padding: int, end: bool = False) -> None:
        """Relay response bytes; `end`: they carried END_STREAM (sent along, as above)."""
        up = self.up
        if padding and up is not None:
            up.u_ack(self, padding)
        if self.finished:
            if up is not None:
                up.u_ack(self, len(data))
            return
        if self.resp_buf is None:
            sent = self.down.d_data(self, data, end)
            if sent:
                up.u_ack(self, sent)  # type: ignore[union-attr]
            if sent == len(data):
                if end:
                    self.resp_end = True
                    self.finish(self._ok())
                return
            data = data[sent:]
        if self.resp_buf is None:
            self.resp_buf = bytearray(data)
        else:
            self.resp_buf += data
        if end:
            self.resp_finished(None)

    def resp_finished(self, trailers: Sequence[Header] | None) -> None:
        if self.finished or self.resp_end:
            return
        self.resp_end = True
        self.resp_trailers = trailers
        if trailers is not None and self.is_grpc:
            status = self.grpc_status = grpc_status_of(trailers)
            if status and self.retry is not None and status in ENDPOINT_FAILURE_GRPC:
                retrying.committed_failure(self)
        self.drain_resp()

    def drain_resp(self) -> None:
        """Send buffered response bytes as the downstream window allows, then the end."""
        if self.finished:
            return
        buf = self.resp_buf
        if buf:
            end = self.resp_end and self.resp_trailers is None
            sent = self.down.d_data(self, bytes(buf), end)
            if sent:
                del buf[:sent]
                self.up.u_ack(self, sent)  # type: ignore[union-attr]
            if buf:
                return
            self.resp_buf = None
            if end:
                self.finish(self._ok())
                return
        self.resp_buf = None
        if self.resp_end:
            if self.resp_trailers is not None:
                self.down.d_trailers(self, self.resp_trailers)
            else:
                self.down.d_data(self, b"", True)
            self.finish(self._ok())

    # -- upstream failures ----------------------------------------------------------

    def up_reset(self, code: int) -> None:
        """The upstream reset the stream: retry, or pass the reset on with its code."""
        if self.finished:
            return
        if self.retry is not None:
            if not self.resp_started:
                failure = FAIL_REFUSED if code == REFUSED_STREAM else FAIL_RESET
                if retrying.attempt_failed(self, failure, code, None):
                    return
            else:
                retrying.committed_failure(self)
        self.down.d_reset(self, code)
        self.finish(False)

    def up_refused(self) -> None:
        """A GOAWAY said the peer never processed this stream: retry, or refuse the caller."""
        if self.finished:
            return
        if (
            self.retry is not None
            and not self.resp_started
            and (
                retrying.transparent_retry(self)
                or retrying.attempt_failed(self, FAIL_REFUSED, 0, None)
            )
        ):
            return
        self.down.d_reset(self, REFUSED_STREAM)
        self.finish(True)  # the endpoint is draining, not failing

    def up_unsent(self, message: str) -> None:
        """The connection went away before this stream's HEADERS were written."""
        if self.finished:
            return
        if self.retry is not None and retrying.transparent_retry(self):
            return
        self.up_failed(message, FAIL_RESET, 0)

    def up_failed(self, message: str, failure: int = 0, code: int = 0) -> None:
        """The upstream connection failed (`failure`: a FAIL_* kind, 0 for one never
        retried, such as the pool closing): retry, or answer UNAVAILABLE if we still can."""
        if self.finished:
            return
        if failure and self.retry is not None:
            if not self.resp_started:
                if retrying.attempt_failed(self, failure, code, None):
                    return
                message = retrying.explain(self, message)
            else:
                retrying.committed_failure(self)
        self.fail(UNAVAILABLE, 503, message)

    def expire(self) -> None:
        """The deadline passed: cancel upstream, answer DEADLINE_EXCEEDED (or 504)."""
        self.timer = None
        if self.finished:
            return
        # With no attempt in flight (a start delay) the endpoint is not at fault.
        self.fail(DEADLINE_EXCEEDED, 504, "deadline exceeded in proxy", ok=self.up is None)

    def answer_no_route(self, exc: NoRoute) -> None:
        """The mesh answers itself (no route, rate limited): status, message, retry-after."""
        extra: list[Header] = []
        wait = exc.retry_after
        if wait > 0:
            extra.append((b"retry-after", b"%d" % math.ceil(wait)))
            if self.is_grpc:
                extra.append((b"grpc-retry-pushback-ms", b"%d" % math.ceil(wait * 1000.0)))
        self.fail(exc.grpc_status, exc.http_status, exc.message, extra, ok=True)

    def fail(
        self,
        grpc_status: int,
        http_status: int,
        message: str,
        extra: Sequence[Header] = (),
        ok: bool = False,
    ) -> None:
        """End the exchange with a synthetic status, in whatever form is still possible.

        `ok` is what the current attempt reports (True when the proxy refused the
        call itself, without the endpoint's fault)."""
        self.detail = message
        if not self.resp_started:
            self.resp_started = True
            self.grpc_status = grpc_status if self.is_grpc else -1
            self.http_status = 200 if self.is_grpc else http_status
            if self.attempts > 1:
                extra = retrying.tag_response(self, extra)
            self.down.d_error(self, grpc_status, http_status, message, extra)
        elif self.is_grpc:
            self.resp_buf = None
            self.grpc_status = grpc_status
            self.down.d_trailers(
                self,
                [
                    (b"grpc-status", b"%d" % grpc_status),
                    (b"grpc-message", percent_encode_grpc_message(message)),
                ],
            )
        else:
            self.down.d_reset(self, CANCEL)
        self.finish(ok)

    # -- end -------------------------------------------------------------------------

    def _ok(self) -> bool:
        """Whether the endpoint served the call (application errors included)."""
        if self.is_grpc:
            status = self.grpc_status
            return status >= 0 and status not in ENDPOINT_FAILURE_GRPC
        return 0 < self.http_status < 500

    def finish(self, ok: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.wait is not None:
            self.wait.cancel()
            self.wait = None
        # Bytes dropped unforwarded still reopen the connection windows.
        dropped = self.req_buf
        self.req_buf = None
        if dropped:
            unacked = len(dropped) - self.req_skip
            if unacked > 0:
                self.down.d_ack(self, unacked)
        dropped = self.resp_buf
        self.resp_buf = None
        if dropped and self.up is not None:
            self.up.u_ack(self, len(dropped))
        self.down.d_done(self)
        if self.up is not None:
            self.up.u_done(self)
        loop = self.loop
        if loop is not None:
            now = loop.time()
            done = self.done_cb
            if done is not None:
                self.done_cb = None
                done(ok, now, now - self.attempt_at)
            if self.slot:
                self.slot = False
                self.retry.retry_done()  # type: ignore[union-attr]
            stats = self.stats
            if stats is not None:
                stats.in_flight.dec()
                stats.duration.observe(now - self.started_at)
                stats.response(self.grpc_status if self.is_grpc else -1, self.http_status)
        access = self.access
        if access is not None and access.sampled():
            access.write(self, self.up.label if self.up is not None else "-")
