"""Which discovery streams have ACKed a version, and when the last one did.

A push can reach the streams before the write that caused it has even returned
its revision to the writer, so ACKs are recorded with their time as they come
and matched against the target version once it is known. Sans-IO: the caller
passes timestamps in.
"""

from __future__ import annotations

__all__ = ["AckTracker"]


class AckTracker:
    """ACKs of `streams` discovery streams for one write at a time.

    Invariants: `reached` counts streams whose first ACK at or above `target`
    has been seen; `last_at` is the latest of those first ACK times; complete
    means every stream has reached the target.
    """

    def __init__(self, streams: int) -> None:
        if streams < 1:
            raise ValueError(f"need at least one stream, got {streams}")
        self.streams = streams
        self.target: int | None = None
        self.reached = 0
        self.last_at = 0.0
        self._hit = [False] * streams
        self._early: list[list[tuple[int, float]]] = [[] for _ in range(streams)]

    def begin(self) -> None:
        """Forget the previous write; ACKs from now on count for the next one."""
        self.target = None
        self.reached = 0
        self.last_at = 0.0
        self._hit = [False] * self.streams
        for early in self._early:
            early.clear()

    def ack(self, stream: int, version: int, at: float) -> bool:
        """Record that `stream` ACKed `version` at time `at`; True when all have reached."""
        if self.target is None:
            self._early[stream].append((version, at))
            return False
        if not self._hit[stream] and version >= self.target:
            self._reach(stream, at)
        return self.complete

    def set_target(self, version: int) -> bool:
        """The write's revision is known: count the ACKs that already reached it."""
        self.target = version
        for stream, early in enumerate(self._early):
            for acked, at in early:
                if acked >= version:
                    self._reach(stream, at)
                    break
            early.clear()
        return self.complete

    def _reach(self, stream: int, at: float) -> None:
        self._hit[stream] = True
        self.reached += 1
        self.last_at = max(self.last_at, at)

    @property
    def complete(self) -> bool:
        return self.reached == self.streams

    def missing(self) -> list[int]:
        """Streams that have not reached the target (for error messages)."""
        return [i for i, hit in enumerate(self._hit) if not hit]
