"""Retries in the relay: when an attempt failed before the call committed, ask the
route's Retrier, and replay the call on a new attempt (gRFC A6, Envoy's router).

Only the failure paths come here; a call that succeeds at once pays for none of it.

Invariants:
- nothing is retried once the call committed (any response byte went to the
  caller) or once the request outgrew the replay buffer;
- a float answer of `Retrier.decide` holds a retry slot until the attempt it
  pays for ends; the slot is released (`retry_done()`) before the next
  `decide`, or when the call finishes, exactly once;
- a transparent retry (the stream never reached the peer, or the peer refused
  it unprocessed by GOAWAY) happens at most once per call, is not an attempt
  and does not ask `decide`; it still takes a new pick (`repick`);
- the caller's deadline spans every attempt; the per-try timeout bounds one
  attempt until it commits, and a backoff that would outlast the deadline is
  not waited for;
- an attempt that is retried reports `done(ok)` before the next one starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from sidecar.transport.contract import (
    ENDPOINT_FAILURE_GRPC,
    FAIL_GRPC,
    FAIL_HTTP,
    FAIL_PER_TRY_TIMEOUT,
    NoRoute,
    Pick,
)
from sidecar.transport.flush import flush_dirty
from sidecar.transport.headers import Header, parse_pushback

if TYPE_CHECKING:
    from sidecar.transport.exchange import Exchange

__all__ = [
    "ATTEMPT_COUNT",
    "PREVIOUS_ATTEMPTS",
    "arm_per_try",
    "attempt_failed",
    "committed_failure",
    "explain",
    "response_failed",
    "tag_response",
    "transparent_retry",
]

_log = structlog.get_logger("sidecar.transport")

PREVIOUS_ATTEMPTS = b"grpc-previous-rpc-attempts"  # gRFC A6: attempts before this one
ATTEMPT_COUNT = b"x-skein-attempt-count"  # HTTP callers: this attempt's number
_PUSHBACK = b"grpc-retry-pushback-ms"
_DEADLINE_EXCEEDED = 4
_INTERNAL = 13


def response_failed(ex: Exchange, headers: Sequence[Header], end: bool) -> bool:
    """A response head that may be a retriable failure arrived, before commit.

    A gRPC trailers-only answer is FAIL_GRPC (its grpc-status, pushback from
    `grpc-retry-pushback-ms`); a :status 5xx or 409 is FAIL_HTTP. True when
    the attempt is being retried (the head is dropped, never relayed).
    """
    status = ex.http_status
    if end and ex.is_grpc and status == 200:
        code = ex.grpc_status
        if code <= 0:
            return False
        pushback: float | None = None
        for name, value in headers:
            if name == _PUSHBACK:
                pushback = parse_pushback(value)
                break
        return attempt_failed(ex, FAIL_GRPC, code, pushback)
    if status >= 500 or status == 409:
        return attempt_failed(ex, FAIL_HTTP, status, None)
    return False


def attempt_failed(ex: Exchange, failure: int, code: int, pushback: float | None) -> bool:
    """Ask the retrier about a failed, uncommitted attempt; True when a retry is scheduled.

    False leaves the failure to the caller's usual path, with `ex.reason` saying
    why there is no retry.
    """
    retry = ex.retry
    if retry is None or ex.resp_started or ex.finished:
        return False
    if ex.replay_size < 0:
        ex.reason = (
            f"the request outgrew the retry buffer ({retry.buffer_limit} bytes); "
            "it can not be replayed"
        )
        return False
    if ex.slot:  # the attempt this slot paid for has ended
        ex.slot = False
        retry.retry_done()
    try:
        answer = retry.decide(ex.attempts, failure, code, pushback)
    except Exception as exc:  # a bug in policy must cost this call its retry, nothing more
        _log.warning("retry_decide_failed", cluster=ex.cluster, error=repr(exc))
        ex.reason = f"the retry policy failed: {exc!r}"
        return False
    if isinstance(answer, str):
        ex.reason = answer
        return False
    loop = ex.loop
    now = loop.time()  # type: ignore[union-attr]
    if ex.deadline and now + answer >= ex.deadline:
        retry.retry_done()
        ex.reason = f"the next attempt (in {answer:.3g} s) would start after the call's deadline"
        return False
    stats = ex.stats
    if stats is not None:
        stats.retried(failure)
    _end_attempt(ex, now, _attempt_ok(failure, code))
    ex.slot = True
    if answer > 0:
        ex.wait = loop.call_at(now + answer, _resume, ex, True)  # type: ignore[union-attr]
    else:
        ex.wait = loop.call_soon(_resume, ex, True)  # type: ignore[union-attr]
    return True


def transparent_retry(ex: Exchange) -> bool:
    """Retry at once an attempt the peer never saw; True when scheduled (once per call)."""
    if ex.transparent or ex.replay_size < 0 or ex.resp_started or ex.finished:
        return False
    ex.transparent = True
    stats = ex.stats
    if stats is not None:
        stats.retried(0)
    loop = ex.loop
    _end_attempt(ex, loop.time(), True)  # type: ignore[union-attr]
    ex.wait = loop.call_soon(_resume, ex, False)  # type: ignore[union-attr]
    return True


def committed_failure(ex: Exchange) -> None:
    """Count a call whose attempt failed after it committed (reset, connection lost, or a
    failing status in trailers): the failure reached the caller without a retry."""
    stats = ex.stats
    if stats is not None:
        stats.committed_failures.inc()


def explain(ex: Exchange, message: str) -> str:
    """A failure the proxy synthesizes, with why it was not retried (when retries are on)."""
    retry = ex.retry
    if ex.reason and retry is not None and retry.max_attempts > 1:
        return f"{message}; not retried: {ex.reason}"
    return message


def tag_response(ex: Exchange, headers: Sequence[Header]) -> list[Header]:
    """The response block with the attempt count the caller may want to see."""
    if ex.is_grpc:
        return [*headers, (PREVIOUS_ATTEMPTS, b"%d" % (ex.attempts - 1))]
    return [*headers, (ATTEMPT_COUNT, b"%d" % ex.attempts)]


def arm_per_try(ex: Exchange, now: float, per_try: float) -> None:
    """Bound the attempt starting at `now` by `per_try` seconds (unless the call's deadline
    comes first: then that one fires)."""
    ex.try_deadline = at = now + per_try
    if ex.deadline and ex.deadline <= at:
        return
    ex.wait = ex.loop.call_at(at, _per_try_expired, ex)  # type: ignore[union-attr]


# -- internals ------------------------------------------------------------------------


def _attempt_ok(failure: int, code: int) -> bool:
    """What a retried attempt reports to its pick's `done` (see Pick)."""
    if failure == FAIL_GRPC:
        return code not in ENDPOINT_FAILURE_GRPC
    if failure == FAIL_HTTP:
        return code < 500
    return False


def _end_attempt(ex: Exchange, now: float, ok: bool) -> None:
    """Report the attempt, cancel its upstream stream, and clear what it held."""
    done = ex.done_cb
    if done is not None:
        ex.done_cb = None
        done(ok, now, now - ex.attempt_at)
    if ex.wait is not None:
        ex.wait.cancel()
        ex.wait = None
    up = ex.up
    if up is not None:
        up.u_done(ex)
    ex.up = None
    ex.up_sid = 0
    ex.req_sent_end = False
    ex.http_status = 0
    ex.grpc_status = -1
    ex.try_deadline = 0.0


def _resume(ex: Exchange, counted: bool) -> None:
    """The backoff is over (or a transparent retry is due): start the next attempt."""
    ex.wait = None
    if ex.finished:
        return
    try:
        pick = ex.retry.repick(ex.pick)  # type: ignore[union-attr, arg-type]
    except NoRoute as exc:
        ex.answer_no_route(exc)
        flush_dirty()
        return
    except Exception as exc:  # a bug in policy must cost this call only
        _log.warning("repick_failed", cluster=ex.cluster, error=repr(exc))
        ex.fail(_INTERNAL, 500, f"proxy retry routing failed: {exc!r}")
        flush_dirty()
        return
    _restart(ex, pick, counted)
    flush_dirty()


def _restart(ex: Exchange, pick: Pick, counted: bool) -> None:
    ex.pick = pick
    ex.done_cb = pick.done
    if counted:
        ex.attempts += 1
        ex.headers = _attempt_headers(ex)
    now = ex.attempt_at = ex.loop.time()  # type: ignore[union-attr]
    replay = ex.replay
    if replay is not None:
        data = replay if isinstance(replay, bytes) else b"".join(replay)
        buf = ex.req_buf
        if buf:  # its first req_skip bytes are the part of the copy not yet re-sent
            buf[: ex.req_skip] = data
        else:
            ex.req_buf = bytearray(data)
        ex.req_skip = ex.replay_size
    ex.launch(now)


def _attempt_headers(ex: Exchange) -> list[Header]:
    """The caller's block with this attempt's number (replacing one the caller sent)."""
    if ex.is_grpc:
        field = (PREVIOUS_ATTEMPTS, b"%d" % (ex.attempts - 1))
    else:
        field = (ATTEMPT_COUNT, b"%d" % ex.attempts)
    headers = list(ex.headers)
    for index, (name, _) in enumerate(headers):
        if name == field[0]:
            headers[index] = field  # in place: ex.timeout_index stays right
            return headers
    headers.append(field)
    return headers


def _per_try_expired(ex: Exchange) -> None:
    ex.wait = None
    if ex.finished or ex.resp_started:
        return
    stats = ex.stats
    if stats is not None:
        stats.per_try_timeouts.inc()
    up = ex.up
    label = up.label if up is not None else "{}:{}".format(*ex.pick.address)  # type: ignore[union-attr]
    per_try = ex.retry.per_try_timeout  # type: ignore[union-attr]
    if not attempt_failed(ex, FAIL_PER_TRY_TIMEOUT, 0, None):
        message = f"upstream {label}: per-try timeout ({per_try:g} s) exceeded"
        ex.fail(_DEADLINE_EXCEEDED, 504, explain(ex, message))
    flush_dirty()
