"""The retry budget: retries may add only a bounded share of load (Linkerd style).

Without a budget, every layer that retries multiplies load exactly when the
upstream is failing. Linkerd's answer, kept here: retries in the last `ttl`
seconds may be at most `min_retries_per_second * ttl` (so quiet clients can
still retry) plus `ratio` times the original requests of that time.

Invariants:
- at every granted `withdraw(now)`, the retries granted in (now - ttl, now],
  this one included, number at most
  `min_retries_per_second * ttl + ratio * requests deposited in (now - ttl, now]`.
- every method is O(1) (a bounded ring of time buckets), allocation-free on
  the hot path, and takes the time as `now` (monotonic seconds); a `now`
  older than the newest seen counts in the newest bucket.
- `enabled=False`: `withdraw` always grants; nothing is counted.

How the bucketing keeps the bound exact: time is cut into buckets of
`ttl / BUCKETS`. Requests count over the newest BUCKETS buckets, which all
lie inside (now - ttl, now]; retries count over one bucket more, which covers
all of (now - ttl, now]. The budget therefore undercounts requests and
overcounts retries by at most one bucket, never the reverse.
"""

from __future__ import annotations

from typing import Any

from skein.config.model import BudgetConfig

__all__ = ["BUCKETS", "RetryBudget"]

BUCKETS = 10

# Before the first call: far enough back that the first call clears the ring.
_NEVER = -(1 << 62)


class RetryBudget:
    """`deposit` per original request, `withdraw` per retry (False: budget spent).

    `exhausted` counts refused withdrawals (a metric).
    """

    __slots__ = (
        "_bucket",
        "_inv_width",
        "_oldest",
        "_requests",
        "_requests_total",
        "_reserve",
        "_retries",
        "_retries_total",
        "_size",
        "_slot",
        "enabled",
        "exhausted",
        "min_retries_per_second",
        "ratio",
        "ttl",
    )

    def __init__(self, config: BudgetConfig) -> None:
        if config.ttl <= 0:
            raise ValueError(f"retry budget: ttl must be positive, got {config.ttl}")
        self.enabled = config.enabled
        self.ratio = config.ratio
        self.min_retries_per_second = config.min_retries_per_second
        self.ttl = config.ttl
        self.exhausted = 0
        self._reserve = config.min_retries_per_second * config.ttl
        self._inv_width = BUCKETS / config.ttl
        self._size = BUCKETS + 1  # one more bucket for retries than for requests
        self._requests = [0] * self._size
        self._retries = [0] * self._size
        self._requests_total = 0  # over all _size buckets
        self._retries_total = 0
        self._bucket = _NEVER  # absolute number of the newest bucket
        self._slot = 0  # its index in the ring
        self._oldest = 1  # index of the bucket only retries count

    def _advance(self, bucket: int) -> None:
        """Make `bucket` the newest, forgetting buckets that fell out of the ring."""
        size = self._size
        if bucket - self._bucket >= size:
            for i in range(size):
                self._requests[i] = 0
                self._retries[i] = 0
            self._requests_total = 0
            self._retries_total = 0
        else:
            for b in range(self._bucket + 1, bucket + 1):
                i = b % size
                self._requests_total -= self._requests[i]
                self._retries_total -= self._retries[i]
                self._requests[i] = 0
                self._retries[i] = 0
        self._bucket = bucket
        self._slot = bucket % size
        self._oldest = (bucket + 1) % size

    def deposit(self, now: float) -> None:
        """One original request (not a retry) started."""
        if not self.enabled:
            return
        bucket = int(now * self._inv_width)
        if bucket > self._bucket:
            self._advance(bucket)
        self._requests[self._slot] += 1
        self._requests_total += 1

    def withdraw(self, now: float) -> bool:
        """Take one retry; False (and `exhausted` += 1) when the budget is spent."""
        if not self.enabled:
            return True
        bucket = int(now * self._inv_width)
        if bucket > self._bucket:
            self._advance(bucket)
        requests = self._requests_total - self._requests[self._oldest]
        if self._retries_total + 1 <= self._reserve + self.ratio * requests:
            self._retries[self._slot] += 1
            self._retries_total += 1
            return True
        self.exhausted += 1
        return False

    def _counts(self, now: float) -> tuple[int, int]:
        """(requests, retries) the budget holds at `now`."""
        bucket = int(now * self._inv_width)
        if bucket > self._bucket:
            self._advance(bucket)
        return self._requests_total - self._requests[self._oldest], self._retries_total

    def available(self, now: float) -> float:
        """Retries that `withdraw` would grant now (0 when spent; inf when disabled)."""
        if not self.enabled:
            return float("inf")
        requests, retries = self._counts(now)
        left = self._reserve + self.ratio * requests - retries
        return left if left > 0.0 else 0.0

    def describe(self, now: float) -> str:
        """The budget and its use, for fail-fast messages."""
        if not self.enabled:
            return "no retry budget (disabled)"
        requests, retries = self._counts(now)
        return (
            f"{self.ratio * 100:g}% of {requests} requests + {self.min_retries_per_second}/s "
            f"over {self.ttl:g} s; {retries} retries used"
        )

    def dump(self, now: float) -> dict[str, Any]:
        requests, retries = self._counts(now) if self.enabled else (0, 0)
        return {
            "enabled": self.enabled,
            "ratio": self.ratio,
            "min_retries_per_second": self.min_retries_per_second,
            "ttl": self.ttl,
            "requests": requests,
            "retries": retries,
            "available": self.available(now) if self.enabled else None,
            "exhausted": self.exhausted,
        }
