"""Write coalescing: a connection's queued frames go out in one write per callback.

A connection that queued frames marks itself dirty; `flush_dirty()` at the end
of the I/O callback (or timer) that dirtied it writes every dirty connection
once. Tried and measured worse: deferring the flush to one `call_soon` per
loop turn, so reads on several client connections feeding one upstream
connection would share a write (`bench.relay`, relay CPU per request:
108 -> 150 us at c=64, 176 -> 270 us at c=1; the extra loop iteration per
turn costs more than the writes it saves). Retried later with the echo
server's CPU measured too, 6 interleaved rounds at c=64: relay 111-170 vs
109-174 us, server 311-446 vs 308-457 us (deferred vs per callback), so no
gain, also not when deferring only while a connection carries several streams.

The dirty list is per process: the data plane runs on one event loop thread.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Flushable", "flush_dirty", "mark_dirty"]


class Flushable(Protocol):
    dirty: bool

    def flush(self) -> None: ...


_dirty: list[Flushable] = []


def mark_dirty(conn: Flushable) -> None:
    """Schedule `conn.flush()` for the end of the current callback."""
    if not conn.dirty:
        conn.dirty = True
        _dirty.append(conn)


def flush_dirty() -> None:
    """Write out every connection marked dirty since the last call."""
    while _dirty:
        conn = _dirty.pop()
        conn.dirty = False
        conn.flush()
