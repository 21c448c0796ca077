"""One relayed stream: a downstream request paired with an upstream stream.

The exchange holds what flow control makes it wait with, and nothing else.

Invariants:
- bytes received on one side are acknowledged (window opened) only once they
  were handed to the other side, so buffering per stream is bounded by the
  window we advertise;
- `finish()` runs exactly once: it cancels the deadline timer, unregisters the
  stream on both connections, calls `Pick.done(ok)` and records metrics;
- after `finish()` every callback is a no-op (late frames are ignored).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from sidecar.transport.deadline import format_grpc_timeout
from sidecar.transport.frames import CANCEL as _CANCEL
from sidecar.transport.headers import Header, grpc_status_of, percent_encode_grpc_message

if TYPE_CHECKING:
    from sidecar.accesslog import AccessLog
    from sidecar.transport.stats import ClusterStats

__all__ = ["DEADLINE_EXCEEDED", "UNAVAILABLE", "Downstream", "Exchange", "Upstream"]

DEADLINE_EXCEEDED = 4
UNAVAILABLE = 14
CANCEL = _CANCEL


class Downstream(Protocol):
    """The client-facing side of an exchange (HTTP/2 or HTTP/1.1 connection)."""

    def d_headers(self, ex: Exchange, headers: Sequence[Header], end: bool) -> None: ...
    def d_data(self, ex: Exchange, data: bytes, end: bool) -> int: ...
    def d_trailers(self, ex: Exchange, headers: Sequence[Header]) -> None: ...
    def d_reset(self, ex: Exchange, code: int) -> None: ...
    def d_ack(self, ex: Exchange, size: int) -> None: ...
    def d_error(self, ex: Exchange, grpc_status: int, http_status: int, message: str) -> None: ...
    def d_done(self, ex: Exchange) -> None:
        """Forget the stream; if the caller may still send, reset it (NO_ERROR)."""
        ...


class Upstream(Protocol):
    """The pooled upstream connection carrying an exchange."""

    address: tuple[str, int]
    label: str  # "host:port", for messages and the access log

    def u_data(self, ex: Exchange, data: bytes, end: bool) -> int: ...
    def u_trailers(self, ex: Exchange, headers: Sequence[Header]) -> None: ...
    def u_ack(self, ex: Exchange, size: int) -> None: ...
    def u_done(self, ex: Exchange) -> None:
        """Forget the stream; reset it upstream (CANCEL) if it is still open."""
        ...


class Exchange:
    __slots__ = (
        "access",
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
        "req_buf",
        "req_end",
        "req_sent_end",
        "req_trailers",
        "resp_buf",
        "resp_end",
        "resp_started",
        "resp_trailers",
        "started_at",
        "stats",
        "timeout_index",
        "timer",
        "up",
        "up_sid",
    )

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
        self.headers = headers
        self.is_grpc = is_grpc
        self.timeout_index = timeout_index
        self.req_end = req_end
        self.req_sent_end = False
        self.req_buf: bytearray | None = None
        self.req_trailers: Sequence[Header] | None = None
        self.resp_buf: bytearray | None = None
        self.resp_end = False
        self.resp_trailers: Sequence[Header] | None = None
        self.resp_started = False
        self.up: Upstream | None = None
        self.up_sid = 0
        self.cluster = ""
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.done_cb: Callable[[bool], None] | None = None
        self.stats: ClusterStats | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # set with `stats`
        self.started_at = 0.0
        self.grpc_status = -1
        self.http_status = 0
        self.finished = False
        self.access: AccessLog | None = None  # set by the listener when it logs
        self.detail = ""  # why the proxy answered itself (no route, deadline, ...)

    # -- request direction (downstream -> upstream) ---------------------------------

    def request_headers(self, now: float) -> Sequence[Header]:
        """The block to send upstream, `grpc-timeout` set to what remains at `now`."""
        headers = self.headers
        if self.deadline and self.timeout_index >= 0:
            # Only a caller's own grpc-timeout is rewritten; none is added for a
            # policy timeout (as Envoy): the proxy enforces that one itself, and a
            # grpc server pays a timer per call for every deadline it is given.
            # (The received block may be shared and immutable: rewrite a copy.)
            value = format_grpc_timeout(self.deadline - now)
            rewritten = list(headers)
            rewritten[self.timeout_index] = (b"grpc-timeout", value)
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

    def req_finished(self, trailers: Sequence[Header] | None = None) -> None:
        if self.req_end or self.finished:
            return
        self.req_end = True
        self.req_trailers = trailers
        if self.up_sid:
            self.drain_req()

    def drain_req(self) -> None:
        """Send buffered request bytes as the upstream window allows, then the end."""
        if self.finished or self.up is None:
            return
        up = self.up
        buf = self.req_buf
        if buf:
            end = self.req_end and self.req_trailers is None
            sent = up.u_data(self, bytes(buf), end)
            if sent:
                del buf[:sent]
                self.down.d_ack(self, sent)
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
                up.u_trailers(self, self.req_trailers)
            else:
                up.u_data(self, b"", True)

    def down_reset(self) -> None:
        """The caller cancelled: cancel upstream too."""
        self.finish(False)

    # -- response direction (upstream -> downstream) --------------------------------

    def resp_headers(self, headers: Sequence[Header], end: bool) -> None:
        if self.finished:
            return
        self.resp_started = True
        for name, value in headers:
            if name == b":status":
                self.http_status = int(value) if value.isdigit() else 0
                break
        if end:
            if self.is_grpc:
                self.grpc_status = grpc_status_of(headers)
            self.down.d_headers(self, headers, True)
            self.finish(self._ok())
        else:
            self.down.d_headers(self, headers, False)

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
            self.grpc_status = grpc_status_of(trailers)
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

    def up_reset(self, code: int) -> None:
        """The upstream reset the stream: pass the reset on with its code."""
        if self.finished:
            return
        self.down.d_reset(self, code)
        self.finish(False)

    def up_failed(self, message: str) -> None:
        """The upstream connection failed or was lost: answer UNAVAILABLE if we still can."""
        if self.finished:
            return
        self.fail(UNAVAILABLE, 503, message)

    def expire(self) -> None:
        """The deadline passed: cancel upstream, answer DEADLINE_EXCEEDED (or 504)."""
        self.timer = None
        if self.finished:
            return
        self.fail(DEADLINE_EXCEEDED, 504, "deadline exceeded in proxy")

    def fail(self, grpc_status: int, http_status: int, message: str) -> None:
        """End the exchange with a synthetic status, in whatever form is still possible."""
        self.detail = message
        if not self.resp_started:
            self.resp_started = True
            self.grpc_status = grpc_status if self.is_grpc else -1
            self.http_status = 200 if self.is_grpc else http_status
            self.down.d_error(self, grpc_status, http_status, message)
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
        self.finish(False)

    # -- end -------------------------------------------------------------------------

    def _ok(self) -> bool:
        if self.is_grpc:
            return self.grpc_status == 0
        return 0 < self.http_status < 500

    def finish(self, ok: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # Bytes dropped unforwarded still reopen the connection windows.
        dropped = self.req_buf
        self.req_buf = None
        if dropped:
            self.down.d_ack(self, len(dropped))
        dropped = self.resp_buf
        self.resp_buf = None
        if dropped and self.up is not None:
            self.up.u_ack(self, len(dropped))
        self.down.d_done(self)
        if self.up is not None:
            self.up.u_done(self)
        if self.done_cb is not None:
            self.done_cb(ok)
        stats = self.stats
        if stats is not None:
            stats.in_flight.dec()
            stats.duration.observe(self.loop.time() - self.started_at)  # type: ignore[union-attr]
            stats.response(self.grpc_status if self.is_grpc else -1, self.http_status)
        access = self.access
        if access is not None and access.sampled():
            access.write(self, self.up.label if self.up is not None else "-")
