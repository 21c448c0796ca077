"""The exchange's replay and flow-control bookkeeping across retries, as a property.

The Exchange and the retry code are the real ones; the two connections and the event loop
are small doubles with windows and a manual clock, so any interleaving of request chunks,
short writes, window openings and failures can be generated. What must hold: every request
byte is acknowledged downstream exactly once, the attempt that answers received exactly the
request, and each attempt reports to its pick once.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.transport.contract import Pick
from sidecar.transport.exchange import Exchange

Header = tuple[bytes, bytes]
REQUEST = [(b":method", b"POST"), (b":path", b"/x.Y/Z"), (b"content-type", b"application/grpc")]


class Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualLoop:
    """time(), call_at() and call_soon() on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0
        self._queue: list[tuple[float, int, Handle, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, fn: Callable[..., None], *args: Any) -> Handle:
        handle = Handle()
        heapq.heappush(self._queue, (when, next(self._seq), handle, fn, args))
        return handle

    def call_soon(self, fn: Callable[..., None], *args: Any) -> Handle:
        return self.call_at(self.now, fn, *args)

    def run(self) -> None:
        """Run every callback due, moving the clock forward to each."""
        while self._queue:
            when, _, handle, fn, args = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            if not handle.cancelled:
                fn(*args)


class Down:
    def __init__(self) -> None:
        self.acked = 0
        self.answer: list[Any] = []
        self.done = False

    def d_headers(self, ex: Exchange, headers: Sequence[Header], end: bool) -> None:
        self.answer.append(("headers", end))

    def d_data(self, ex: Exchange, data: bytes, end: bool) -> int:
        self.answer.append(("data", data, end))
        return len(data)

    def d_trailers(self, ex: Exchange, headers: Sequence[Header]) -> None:
        self.answer.append(("trailers",))

    def d_reset(self, ex: Exchange, code: int) -> None:
        self.answer.append(("reset", code))

    def d_ack(self, ex: Exchange, size: int) -> None:
        assert size > 0
        self.acked += size

    def d_error(self, ex: Exchange, grpc: int, http: int, message: str, extra: Any) -> None:
        self.answer.append(("error", grpc, message))

    def d_done(self, ex: Exchange) -> None:
        assert not self.done
        self.done = True


class Up:
    """One attempt's upstream stream; takes at most `windows[i]` bytes on its i-th send."""

    address = ("10.0.0.1", 80)
    label = "10.0.0.1:80"

    def __init__(self, windows: list[int]) -> None:
        self.windows = windows
        self.got = bytearray()
        self.ended = False
        self.done = False

    def u_data(self, ex: Exchange, data: bytes, end: bool) -> int:
        window = self.windows.pop(0) if self.windows else len(data)
        sent = min(window, len(data))
        self.got += data[:sent]
        if end and sent == len(data):
            self.ended = True
        return sent

    def u_trailers(self, ex: Exchange, headers: Sequence[Header]) -> None:
        self.ended = True

    def u_ack(self, ex: Exchange, size: int) -> None:
        pass

    def u_done(self, ex: Exchange) -> None:
        self.done = True


class Pool:
    def __init__(self, windows: list[int]) -> None:
        self.windows = windows
        self.attempts: list[Up] = []

    def open(self, ex: Exchange) -> None:
        up = Up(list(self.windows))
        self.attempts.append(up)
        ex.up = up
        ex.started(up, len(self.attempts) * 2 - 1)


class AlwaysRetry:
    def __init__(self, buffer_limit: int) -> None:
        self.max_attempts = 100
        self.per_try_timeout: float | None = None
        self.buffer_limit = buffer_limit
        self.slots = 0
        self.pick: Pick | None = None

    def decide(self, attempts: int, failure: int, code: int, pushback: float | None) -> float | str:
        self.slots += 1
        return 0.5

    def repick(self, previous: Pick) -> Pick:
        assert self.pick is not None
        return self.pick

    def retry_done(self) -> None:
        self.slots -= 1


UNAVAILABLE_TRAILERS_ONLY = [
    (b":status", b"200"),
    (b"content-type", b"application/grpc"),
    (b"grpc-status", b"14"),
]


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.integers(1, 5000), min_size=1, max_size=12),
    windows=st.lists(st.integers(0, 7000), max_size=6),
    failures=st.dictionaries(
        st.integers(0, 14), st.sampled_from(["reset", "unsent", "refused", "status"]), max_size=4
    ),
    opens=st.lists(st.integers(0, 14), max_size=6),
    limit=st.sampled_from([10**9, 8000, 3000]),
)
def test_every_byte_acked_once_and_the_last_attempt_gets_the_whole_request(
    chunks: list[int],
    windows: list[int],
    failures: dict[int, str],
    opens: list[int],
    limit: int,
) -> None:
    loop = ManualLoop()
    down = Down()
    pool = Pool(windows)
    retrier = AlwaysRetry(limit)
    reports: list[bool] = []
    pick = Pick("c", Up.address, None, lambda ok, now, elapsed: reports.append(ok), retrier)
    retrier.pick = pick
    ex = Exchange(down, 1, REQUEST, True, False, -1)
    ex.loop = loop  # type: ignore[assignment]
    ex.pick, ex.done_cb, ex.pool, ex.retry = pick, pick.done, pool, retrier
    ex.replay_limit = limit
    ex.attempts, ex.attempt_at = 1, loop.now  # as StreamStarter.begin
    ex.launch(loop.now)

    request = bytearray()
    failed = 0
    for step, size in enumerate(chunks):
        data = bytes([step % 251]) * size
        request += data
        ex.req_data(data, 0, end=step == len(chunks) - 1)
        if step in opens:
            ex.drain_req()  # a WINDOW_UPDATE
        kind = failures.get(step)
        if kind is not None and not ex.finished:
            # a failure before any response; every kind retries (the one transparent
            # retry first, for those the peer never saw)
            if kind == "reset":
                ex.up_reset(2)  # INTERNAL_ERROR
            elif kind == "unsent":
                ex.up_unsent("connection lost before the stream was written")
            elif kind == "refused":
                ex.up_refused()  # GOAWAY below the stream
            else:
                ex.resp_headers(UNAVAILABLE_TRAILERS_ONLY, True)
            failed += 1
            loop.run()  # the backoff passes, the next attempt starts and replays
    # windows open until everything that can go out went out
    for _ in range(len(request) + len(windows) + 1):
        if ex.finished or ex.req_buf is None:
            break
        ex.drain_req()
    if not ex.finished:
        assert pool.attempts[-1].ended
        ex.resp_headers([(b":status", b"200"), (b"content-type", b"application/grpc")], False)
        ex.resp_data(b"answer", 0)
        ex.resp_finished([(b"grpc-status", b"0")])
        assert bytes(pool.attempts[-1].got) == bytes(request)
        assert reports[-1] is True
    assert ex.finished and down.done
    assert down.acked == len(request), "a request byte was acknowledged twice or never"
    for up in pool.attempts:
        assert bytes(up.got) == bytes(request[: len(up.got)])  # every attempt sent a prefix
    assert len(reports) == len(pool.attempts)  # one report per attempt
    assert retrier.slots == 0
    if limit >= len(request):
        assert len(pool.attempts) == failed + 1  # every failure was retried
