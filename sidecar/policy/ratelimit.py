"""Local rate limits: four algorithms, five scopes, one answer encoding (sans-IO).

Every limiter answers `acquire(now)` with one float: `>= 0` admits the call,
to start after that many seconds (only LEAKY_BUCKET shapes, so only it
returns > 0); `< 0` rejects it, and `-result` is the exact wait until a call
would be admitted (the Retry-After). Time is always passed in (monotonic
seconds), so limits are tested on virtual time.

Invariants (rate = requests / period, T = 1 / rate):
- TOKEN_BUCKET holds at most `burst` tokens, starts full and refills
  continuously, so over any span `d` from its start it admits at most
  `burst + rate * d` calls (Envoy's local rate limit refills in steps; the
  continuous form has no step artefacts). It is kept as GCRA (the "virtual
  scheduling" form of the same bucket): one float, the theoretical arrival
  time, and no refill arithmetic per call.
- LEAKY_BUCKET queues instead of rejecting, like nginx `limit_req` without
  `nodelay`: admitted calls start at least T apart, one may start at once
  and at most `burst` wait behind it; a call that would wait longer than
  `burst * T` is rejected.
- FIXED_WINDOW admits at most `requests` per window of `period` aligned to
  the limiter's start. A window after one that left base allowance unused
  carries it over, up to `burst` in all (carry = min(burst - requests,
  requests - previous count)). The time before the limiter existed counts as
  quiet, so the first window may take `burst`, as a token bucket starts full.
  Over n windows it admits at most `n * requests + burst - requests`.
- SLIDING_WINDOW (the sliding-window counter) admits a call only while
  `previous * overlap + current + 1 <= limit`, where `overlap` is the share
  of the sliding interval [now - period, now] still inside the previous
  window and `limit` follows the same carry-over rule. A full previous window
  therefore blocks the start of the next one: no double burst at a boundary.
- Admission allows `_SLACK` (1 us) of clock rounding, so that acquiring at
  exactly `now + retry_after` succeeds; it never compounds.

Scopes: SERVICE has one limiter; METHOD one per path (query string dropped);
CLIENT_IP one per peer address ("" when unknown, shared); HEADER and
CLIENT_IDENTITY one per value of a header (first occurrence; CLIENT_IDENTITY
reads `x-skein-client` unless `header` says otherwise, until mTLS identities
exist). A call without that header is not subject to the rule at all, so
pair such a rule with a SERVICE or CLIENT_IP one when callers can omit it.
Keyed limiters live in an LRU of at most `max_keys`; an evicted key starts
afresh (full bucket, quiet window).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from skein.config.model import RateLimitAlgorithm, RateLimitConfig, RateLimitScope

__all__ = [
    "FixedWindow",
    "LeakyBucket",
    "Limiter",
    "RateLimitRule",
    "RateLimits",
    "SlidingWindow",
    "TokenBucket",
    "make_limiter",
]

Header = tuple[bytes, bytes]

# Clock rounding tolerated at admission: `now + retry_after` lands within a
# few ulps of the admission time, and monotonic clocks of long-running hosts
# are large enough (1e7 s and more) for those ulps to reach nanoseconds.
_SLACK = 1e-6
_ADMITTED = (0.0, None)
_DEFAULT_IDENTITY_HEADER = "x-skein-client"
_DUMPED_KEYS = 16  # most recent keys a keyed rule shows in config_dump


class Limiter(Protocol):
    def acquire(self, now: float) -> float:
        """>= 0: admitted, start after that many seconds; < 0: rejected, retry after -result."""
        ...

    def dump(self, now: float) -> dict[str, Any]:
        """The limiter's state at `now`, for config_dump (does not change it)."""
        ...


class TokenBucket:
    """`burst` tokens, full at start, refilled at `rate`; one token per call."""

    __slots__ = ("_interval", "_tat", "_tolerance", "burst")

    def __init__(self, requests: int, period: float, burst: int, now: float) -> None:
        self.burst = burst
        self._interval = period / requests
        # A call is admitted while the theoretical arrival time runs at most
        # `burst - 1` intervals ahead of the clock.
        self._tolerance = (burst - 1) * self._interval
        self._tat = now

    def acquire(self, now: float) -> float:
        tat = self._tat
        if tat < now:
            tat = now
        allow_at = tat - self._tolerance
        if allow_at > now + _SLACK:
            return now - allow_at
        self._tat = tat + self._interval
        return 0.0

    def dump(self, now: float) -> dict[str, Any]:
        ahead = max(self._tat, now) - now
        tokens = (self._tolerance + self._interval - ahead) / self._interval
        return {"tokens": round(min(max(tokens, 0.0), float(self.burst)), 3)}


class LeakyBucket:
    """A queue of at most `burst` calls draining at `rate`: calls over the rate wait their turn.

    Only a call that would find the queue full is rejected. A queued call
    keeps its slot even if its caller gives up before its start.
    """

    __slots__ = ("_interval", "_longest", "_next", "burst")

    def __init__(self, requests: int, period: float, burst: int, now: float) -> None:
        self.burst = burst
        self._interval = period / requests
        self._longest = burst * self._interval  # longest wait a call may be given
        self._next = now  # earliest start of the next call

    def acquire(self, now: float) -> float:
        start = self._next
        if start <= now:
            self._next = now + self._interval
            return 0.0
        delay = start - now
        if delay > self._longest + _SLACK:
            return self._longest - delay
        self._next = start + self._interval
        return delay

    def dump(self, now: float) -> dict[str, Any]:
        ahead = self._next - now
        queued = max(0, math.ceil(ahead / self._interval - 1e-9) - 1) if ahead > 0 else 0
        return {"queued": queued, "next_start_in": round(max(ahead, 0.0), 6)}


class FixedWindow:
    """At most `requests` per window aligned to the start, up to `burst` after a quiet window."""

    __slots__ = ("_count", "_end", "_extra", "_index", "_limit", "_origin", "_period", "requests")

    def __init__(self, requests: int, period: float, burst: int, now: float) -> None:
        self.requests = requests
        self._period = period
        self._extra = burst - requests
        self._origin = now
        self._index = 0
        self._end = now + period
        self._count = 0
        self._limit = burst  # before the start counts as a quiet window

    def acquire(self, now: float) -> float:
        if now + _SLACK >= self._end:
            self._advance(now)
        if self._count < self._limit:
            self._count += 1
            return 0.0
        return now - self._end  # the next window always admits at least one

    def _advance(self, now: float) -> int:
        """Move to the window holding `now`; the count of the window before it."""
        index = int((now + _SLACK - self._origin) // self._period)
        if index <= self._index:
            index = self._index + 1
        end = self._origin + (index + 1) * self._period
        if now + _SLACK >= end:  # float rounding put `now` at the next boundary
            index += 1
            end = self._origin + (index + 1) * self._period
        previous = self._count if index == self._index + 1 else 0
        self._index = index
        self._end = end
        self._count = 0
        self._limit = self._window_limit(previous)
        return previous

    def _window_limit(self, previous: int) -> int:
        unused = self.requests - previous
        return self.requests + (min(self._extra, unused) if unused > 0 else 0)

    def dump(self, now: float) -> dict[str, Any]:
        return {
            "window_ends_in": round(self._end - now, 6),
            "count": self._count,
            "limit": self._limit,
        }


class SlidingWindow(FixedWindow):
    """The sliding-window counter: the previous window counts by its overlap."""

    __slots__ = ("_previous",)

    def __init__(self, requests: int, period: float, burst: int, now: float) -> None:
        super().__init__(requests, period, burst, now)
        self._previous = 0

    def acquire(self, now: float) -> float:
        if now + _SLACK >= self._end:
            self._previous = self._advance(now)
        if self._previous + self._count < self._limit:  # even unweighted it fits
            self._count += 1
            return 0.0
        allow_at = self._allow_at()
        if allow_at > now + _SLACK:
            return now - allow_at
        self._count += 1
        return 0.0

    def _allow_at(self) -> float:
        """The earliest time a call fits, assuming none is admitted before it.

        The estimate at `t` is `previous * (end - t) / period + count`; a
        call fits while the estimate plus one stays within the limit.
        """
        period = self._period
        room = self._limit - 1 - self._count
        if room > 0:  # the previous window's weight must fall to `room`
            return self._end - period * room / self._previous
        # Only the next window can admit (with no room left, even the weight
        # of an empty previous window reaches zero only at the boundary).
        count = self._count
        room = self._window_limit(count) - 1
        if room >= count:
            return self._end
        return self._end + period - period * room / count

    def dump(self, now: float) -> dict[str, Any]:
        state = super().dump(now)
        weight = max(0.0, min(1.0, (self._end - now) / self._period))
        state["previous"] = self._previous
        state["estimate"] = round(self._previous * weight + self._count, 3)
        return state


_ALGORITHMS: dict[RateLimitAlgorithm, type[TokenBucket | LeakyBucket | FixedWindow]] = {
    RateLimitAlgorithm.TOKEN_BUCKET: TokenBucket,
    RateLimitAlgorithm.LEAKY_BUCKET: LeakyBucket,
    RateLimitAlgorithm.FIXED_WINDOW: FixedWindow,
    RateLimitAlgorithm.SLIDING_WINDOW: SlidingWindow,
}


def _check_config(config: RateLimitConfig) -> None:
    where = f"rate limit {config.name!r}"
    if config.requests < 1:
        raise ValueError(f"{where}: requests must be >= 1, got {config.requests}")
    if not config.period > 0 or math.isinf(config.period):
        raise ValueError(f"{where}: period must be a positive duration, got {config.period}")
    if config.burst < config.requests:
        raise ValueError(
            f"{where}: burst must be >= requests ({config.requests}), got {config.burst}; "
            "leave burst unset to use requests"
        )
    if config.max_keys < 1:
        raise ValueError(f"{where}: max_keys must be >= 1, got {config.max_keys}")


def make_limiter(config: RateLimitConfig, now: float) -> Limiter:
    """A fresh limiter for `config`, started at `now`. Raises ValueError on a bad config."""
    _check_config(config)
    cls = _ALGORITHMS[config.algorithm]
    return cls(config.requests, config.period, config.burst, now)


_SERVICE, _METHOD, _CLIENT_IP, _HEADER = range(4)
_SCOPE_CODES = {
    RateLimitScope.SERVICE: _SERVICE,
    RateLimitScope.METHOD: _METHOD,
    RateLimitScope.CLIENT_IP: _CLIENT_IP,
    RateLimitScope.CLIENT_IDENTITY: _HEADER,
    RateLimitScope.HEADER: _HEADER,
}
_ALGORITHM_NAMES = {
    RateLimitAlgorithm.TOKEN_BUCKET: "token bucket",
    RateLimitAlgorithm.LEAKY_BUCKET: "leaky bucket",
    RateLimitAlgorithm.FIXED_WINDOW: "fixed window",
    RateLimitAlgorithm.SLIDING_WINDOW: "sliding window",
}


def _header_name(config: RateLimitConfig) -> str:
    if config.scope is RateLimitScope.CLIENT_IDENTITY:
        return config.header or _DEFAULT_IDENTITY_HEADER
    return config.header


def _scope_text(config: RateLimitConfig) -> str:
    scope = config.scope
    if scope is RateLimitScope.SERVICE:
        text = "for all calls"
    elif scope is RateLimitScope.METHOD:
        text = "per method"
    elif scope is RateLimitScope.CLIENT_IP:
        text = "per client IP"
    elif scope is RateLimitScope.CLIENT_IDENTITY:
        text = f"per client identity ({_header_name(config)})"
    else:
        text = f"per value of header {config.header}"
    if config.prefix:
        text += f", on paths under {config.prefix}"
    return text


def _seconds(value: float) -> str:
    if value < 1.0:
        return f"{max(1, math.ceil(value * 1000))} ms"
    return f"{math.ceil(value)} s"


class RateLimitRule:
    """One configured limit: which calls it applies to, and their limiter(s).

    `check` answers like `Limiter.acquire`, and 0.0 for calls the rule does
    not apply to (path outside `prefix`, keying header absent); only calls it
    applies to count in `hits`, and rejected ones in `blocks`.
    """

    __slots__ = (
        "_header",
        "_keyed",
        "_limiter",
        "_prefix",
        "_scope",
        "_text",
        "blocks",
        "config",
        "hits",
    )

    def __init__(self, config: RateLimitConfig, now: float) -> None:
        _check_config(config)
        self.config = config
        self.hits = 0
        self.blocks = 0
        self._prefix = config.prefix
        self._scope = _SCOPE_CODES[config.scope]
        self._header = _header_name(config).encode("latin-1")
        if self._scope == _HEADER and not self._header:
            raise ValueError(
                f"rate limit {config.name!r}: scope HEADER needs `header`, the header to key on"
            )
        self._limiter = make_limiter(config, now)  # used by SERVICE scope only
        self._keyed: OrderedDict[str | bytes, Limiter] = OrderedDict()
        self._text = (
            f"({_ALGORITHM_NAMES[config.algorithm]}, {config.requests} per "
            f"{config.period:g} s, burst {config.burst}, {_scope_text(config)})"
        )

    def check(self, path: str, headers: Sequence[Header], peer_ip: str, now: float) -> float:
        prefix = self._prefix
        if prefix and not path.startswith(prefix):
            return 0.0
        scope = self._scope
        if scope == _SERVICE:
            limiter = self._limiter
        else:
            key: str | bytes
            if scope == _CLIENT_IP:
                key = peer_ip
            elif scope == _METHOD:
                query = path.find("?")
                key = path if query < 0 else path[:query]
            else:
                name = self._header
                for field, value in headers:
                    if field == name:
                        key = value
                        break
                else:
                    return 0.0
            keyed = self._keyed
            found = keyed.get(key)
            if found is None:
                limiter = self._add(key, now)
            else:
                keyed.move_to_end(key)
                limiter = found
        self.hits += 1
        result = limiter.acquire(now)
        if result < 0:
            self.blocks += 1
        return result

    def _add(self, key: str | bytes, now: float) -> Limiter:
        keyed = self._keyed
        if len(keyed) >= self.config.max_keys:
            keyed.popitem(last=False)
        config = self.config  # validated in __init__
        limiter = _ALGORITHMS[config.algorithm](config.requests, config.period, config.burst, now)
        keyed[key] = limiter
        return limiter

    @property
    def keys(self) -> int:
        """Keys tracked now (0 for SERVICE scope)."""
        return len(self._keyed)

    def describe(self, retry_after: float) -> str:
        """The message of the call's 429 / RESOURCE_EXHAUSTED answer.

        `retry_after` is the wait in seconds (the sign is ignored), shown
        rounded up as the `retry-after` header is.
        """
        wait = _seconds(abs(retry_after))
        return f"rate limit {self.config.name!r} exceeded {self._text}; retry after {wait}"

    def dump(self, now: float) -> dict[str, Any]:
        config = self.config
        state: dict[str, Any] = {
            "name": config.name,
            "algorithm": config.algorithm.value,
            "scope": config.scope.value,
            "requests": config.requests,
            "period": config.period,
            "burst": config.burst,
            "prefix": config.prefix,
            "header": _header_name(config),
            "direction": config.direction.value,
            "hits": self.hits,
            "blocks": self.blocks,
        }
        if self._scope == _SERVICE:
            state["state"] = self._limiter.dump(now)
            return state
        state["max_keys"] = config.max_keys
        state["keys"] = len(self._keyed)
        recent: dict[str, Any] = {}
        for key in reversed(self._keyed):
            if len(recent) >= _DUMPED_KEYS:
                break
            text = key.decode("latin-1") if isinstance(key, bytes) else key
            recent[text] = self._keyed[key].dump(now)
        state["recent"] = recent
        return state


class RateLimits:
    """All rules of one direction of one service, applied in order.

    `check` returns `(result, rule)`: the first rule that rejects the call
    (result < 0) stops the walk; otherwise the largest delay, with None.
    Rules that admitted the call before a later one rejected it keep it
    counted (no refund), as Envoy does with several descriptors: a rejected
    caller still spends its allowance in the earlier rules.
    """

    __slots__ = ("rules",)

    def __init__(self, configs: Sequence[RateLimitConfig], now: float) -> None:
        self.rules: tuple[RateLimitRule, ...] = tuple(RateLimitRule(c, now) for c in configs)

    def __len__(self) -> int:
        return len(self.rules)

    def check(
        self, path: str, headers: Sequence[Header], peer_ip: str, now: float
    ) -> tuple[float, RateLimitRule | None]:
        delay = 0.0
        for rule in self.rules:
            result = rule.check(path, headers, peer_ip, now)
            if result < 0:
                return result, rule
            if result > delay:
                delay = result
        if delay == 0.0:
            return _ADMITTED
        return delay, None

    def update(self, configs: Sequence[RateLimitConfig], now: float) -> RateLimits:
        """Rules for `configs`; a rule whose config is unchanged keeps its state and counters.

        A policy push must not refill buckets or reset windows: only a rule
        whose config changed in any field starts afresh. Raises ValueError on
        a bad config, leaving this object untouched.
        """
        if tuple(configs) == tuple(rule.config for rule in self.rules):
            return self
        kept = {rule.config: rule for rule in self.rules}
        rules = []
        for config in configs:
            rule = kept.pop(config, None)
            rules.append(rule if rule is not None else RateLimitRule(config, now))
        updated = RateLimits((), now)
        updated.rules = tuple(rules)
        return updated

    def dump(self, now: float) -> list[dict[str, Any]]:
        return [rule.dump(now) for rule in self.rules]
