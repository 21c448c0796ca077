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

Why upstream connections now flush once per loop turn (`mark_dirty_turn`),
while client-facing ones still flush per callback: the echo server behind a
Skein pair spent more CPU per request than behind an Envoy pair, and what
differs at the server is how often bytes arrive, not what arrives. Counted
with a frame-counting relay and `ss -ti` (data_segs_in) at c=64 (h2load
-c 4 -m 16), real sidecars against Envoy 1 worker, same run:
- frames per request to the server: identical (HEADERS, DATA+END_STREAM;
  no PING/SETTINGS/WINDOW_UPDATE traffic worth counting; one connection
  each), once the empty END_STREAM DATA frame was gone (exchange.py); HPACK
  block 106 bytes against Envoy's ~60 (dynamic table), which did not matter:
  with a relay re-batching writes in front of the server, server CPU per
  request was the same behind both pairs (232-278 vs 239-250 us);
- TCP segments per request into the server: Skein 0.40-0.46, Envoy
  0.21-0.33; into sidecar B from sidecar A: 0.52-0.55 against Envoy's
  0.22-0.35. Server CPU per request follows it (Skein 259-360, Envoy
  220-309 us). Sidecar A turns reads from several client connections into
  one write each; Envoy defers its writes to the end of the loop iteration.
- with upstream flushes deferred to the next turn: A -> B 0.42-0.46, into
  the server 0.36-0.40 segments per request; `bench.run`, 3 rounds, two
  interleaved A/B runs: server CPU behind the pair 335-341 -> 305-311 us,
  pair 65% -> 65-68% of the Envoy pair's rps, sidecar CPU unchanged (87-110
  us). A gain, but Envoy still sends about half as many segments.

Tried next, nothing kept (c=64, 1 KiB unary, interleaved A/B; the load
average rises to 2-3 during a run from the benchmark alone, 0.2-0.3 before):
- TCP_NODELAY off on upstream connections (Nagle). Bare transport relays, 5
  rounds of 20000 requests: pair rps 3221-5885 against 2821-3815 with
  nodelay, server 184-332 against 261-359 us per request, but segments into
  the server went up (0.42-0.60 against 0.31-0.43) and one round reversed.
  Real sidecars (`bench.run`, 6 runs): Skein pair at 73-111% of the Envoy
  pair's rps against 66-98% with nodelay, server 257-344 against 276-336 us,
  c=1 added p50 unchanged (pair 0.38-0.63 against 0.24-0.61 ms). Within the
  noise, and Nagle with delayed ACKs can hold back a streaming RPC's next
  small message for tens of ms, so nodelay stays (Envoy sets it too).
- client-facing writes deferred to the turn as well (`mark_dirty_turn` in
  the downstream connection), alone or with Nagle: bare relays 3947-5169
  against 3715-3815 rps, segments into the server 0.31-0.35 against
  0.31-0.39; real sidecars 75-86% of the Envoy pair alone and 67-70% with
  Nagle, against 81-98% for the current code in the same sets. No
  repeatable gain.
The spread between identical runs (+-15% rps, Envoy pair 2830-5750 rps) is
larger than any of these effects; a decision needs longer runs on a quieter
machine than a 30-minute attempt allows.

The dirty lists are per process: the data plane runs on one event loop thread.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["Flushable", "flush_dirty", "mark_dirty", "mark_dirty_turn", "write_queued"]


class Flushable(Protocol):
    dirty: bool

    def flush(self) -> None: ...


class _Queued(Protocol):
    def data_to_send(self) -> bytes | bytearray: ...


def write_queued(transport: asyncio.WriteTransport | None, codec: _Queued) -> bool:
    """Write what an HTTP/2 codec queued, unless the socket is gone or closing.

    The one body of `flush()` for both sides of the relay; True when bytes
    went to the socket.
    """
    if transport is None:
        return False
    data = codec.data_to_send()
    if data and not transport.is_closing():
        transport.write(data)
        return True
    return False


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


_turn: list[Flushable] = []
_turn_loop: asyncio.AbstractEventLoop | None = None


def mark_dirty_turn(conn: Flushable, loop: asyncio.AbstractEventLoop) -> None:
    """Schedule `conn.flush()` for the next loop turn (after this turn's reads)."""
    global _turn_loop
    if not conn.dirty:
        conn.dirty = True
        if not _turn or _turn_loop is not loop:
            _turn_loop = loop
            loop.call_soon(_flush_turn)
        _turn.append(conn)


def _flush_turn() -> None:
    global _turn_loop
    _turn_loop = None
    while _turn:
        conn = _turn.pop()
        conn.dirty = False
        conn.flush()
